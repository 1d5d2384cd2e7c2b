"""Publish the miniature EgoVLM experiment's chosen model as the demo's default (``models/egovlm-mini``).

The choice is made on the **val** split (``<runs>/eval_val/<model>/metrics.json``): the GRPO model
with the highest val accuracy, ties broken by val keyframe F1, then by name. The test split only
reports; choosing on it would make the published test number optimistic. The model's files
(safetensors weights, config, tokenizer, processor, ``egovlm.json``) are copied into a hidden
folder beside ``--out`` with a model card, then renamed into place, so an interrupted publish
never leaves a half-written model where the demo looks for one.

    .venv/bin/python -m experiments.mini.publish --runs runs/mini --out models/egovlm-mini \\
        --results docs/mini_experiment/results.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

from egovlm.atomic import replace_dir

MAX_BYTES = 20 * 1024 * 1024  # the bound for committing the model
# weights and what loading needs; optimizer states, trainer states and logs stay behind
KEEP_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")
NEVER = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def choose(runs: Path) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    """(name, its val metrics, every candidate's val metrics) of the best GRPO model on val."""
    cands: dict[str, dict[str, Any]] = {}
    for f in sorted((runs / "eval_val").glob("grpo_*/metrics.json")):
        cands[f.parent.name] = json.loads(f.read_text())
    if not cands:
        raise SystemExit(
            f"no val evals under {runs / 'eval_val'}: run python -m experiments.mini.repro first"
        )

    def key(item: tuple[str, dict[str, Any]]) -> tuple[float, float, str]:
        name, m = item
        return (-(m.get("accuracy") or 0.0), -(m.get("keyframe_f1") or 0.0), name)

    name, best = min(cands.items(), key=key)
    return name, best, cands


def model_dir(runs: Path, name: str) -> Path:
    """``grpo_a-seed1`` → ``<runs>/grpo_a/seed1/final``."""
    arm, _, seed = name.partition("-")
    return runs / arm / seed / "final"


def copy_model(src: Path, dst: Path) -> int:
    """Copy the files a model needs; returns their total size in bytes."""
    total = 0
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.suffix in NEVER or f.suffix not in KEEP_SUFFIXES:
            continue
        if f.name.startswith(("trainer_state", "training_args", "optimizer", "scheduler", "rng_state")):
            continue
        shutil.copy2(f, dst / f.name)
        total += f.stat().st_size
    if not (dst / "model.safetensors").is_file():
        raise SystemExit(f"{src}: no model.safetensors to publish")
    return total


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def made_by(runs: Path) -> str:
    """Which code produced the run and how long it took, from the run's own records
    (``code.json`` and the total of ``timings.jsonl``, both written by ``experiments/mini/repro.py``)."""
    code_path, timings = runs / "code.json", runs / "timings.jsonl"
    code = json.loads(code_path.read_text()) if code_path.is_file() else {}
    rows = [json.loads(line) for line in timings.read_text().splitlines()] if timings.is_file() else []
    total = next((r["seconds"] for r in rows if r.get("stage") == "total"), None)
    text = "`make repro-mini`"
    if code.get("commit"):
        text += f" at commit {code['commit']}" + (" with local changes" if code.get("local_changes") else "")
    if total is not None:
        text += f", {total / 60:.1f} minutes on this 2-core CPU"
    return text


def card(
    name: str, val: dict[str, Any], results: dict[str, Any] | None, size: int, made: str = "`make repro-mini`"
) -> str:
    """The model card: what it is, what it was trained on, what it is not; ``made``: by what run."""
    evals = (results or {}).get("evals") or {}
    key = name.split("-")[0][-1]  # "a" or "b"
    test = evals.get(key, {}).get(name)
    test_other = evals.get(f"{key}_otherclip", {}).get(name)  # keyed by run, as the report writes it
    base = evals.get("base")
    arm = "format + accuracy + keyframe" if name.startswith("grpo_b") else "format + accuracy"
    lines = [
        "# egovlm-mini: the demo's built-in model",
        "",
        "A 2.5 M-parameter `Qwen2_5_VLForConditionalGeneration` (the offline `nano` preset: windowed ViT,",
        "2x2 merger, GQA decoder with M-RoPE; 112x84 keyframes, 12 visual tokens per frame) trained on CPU",
        "by this project's own scripts, entirely on **EgoSynth** synthetic egocentric clips:",
        "",
        "1. base stage (`python -m experiments.mini pretrain`), standing in for Qwen2.5-VL's pre-training",
        "   and instruction tuning: the vision tower learns which objects each visual token shows (labels",
        "   from EgoSynth's renderer); then next-token training on *descriptions* of frame sets (what each",
        "   hand holds, pick-ups and put-downs with their nearest frame, where objects start and end) and",
        "   on single-frame *perception* questions in the answer grammar (what a hand holds in frame k,",
        "   what frame k shows, which option names an object), with text-only *lookup drills* mixed in",
        "   (which of five lettered object names is the asked one); never the QA's questions about the",
        "   clip's events, their answers or any reasoning about them;",
        f"2. **GRPO** (R1-Zero style, `egovlm train`) on EgoSynth multiple-choice QA, rewards {arm};",
        f"   this is run `{name}`, chosen among 6 GRPO runs (2 reward arms x 3 seeds) by accuracy on the",
        "   EgoSynth **val** split.",
        "",
        "| split | accuracy | format failures | keyframe F1 |",
        "|---|---|---|---|",
        f"| EgoSynth val (selection) | {_pct(val.get('accuracy'))} | "
        f"{_pct(val.get('format_failure_rate'))} | {val.get('keyframe_f1') or 0:.3f} |",
    ]
    if test:
        lines.append(
            f"| EgoSynth test (held out) | {_pct(test.get('accuracy'))} | "
            f"{_pct(test.get('format_failure_rate'))} | {test.get('keyframe_f1') or 0:.3f} |"
        )
    if test_other:  # what the question text alone is worth to it
        lines.append(
            f"| EgoSynth test, each question shown another clip's frames | "
            f"{_pct(test_other.get('accuracy'))} | {_pct(test_other.get('format_failure_rate'))} | "
            f"{test_other.get('keyframe_f1') or 0:.3f} |"
        )
    if base:
        lines.append(
            f"| base stage, test (for reference) | {_pct(base.get('accuracy'))} | "
            f"{_pct(base.get('format_failure_rate'))} | {base.get('keyframe_f1') or 0:.3f} |"
        )
    lines += [
        "",
        "Chance is 20% (five options). The whole experiment, the table over seeds and the analysis:",
        "[docs/mini_experiment](../../docs/mini_experiment/README.md). This folder was made by",
        f"{made}.",
        "Accuracy with another clip's frames close to accuracy with the right ones means the answers",
        "come mostly from the question text.",
        "",
        "## What it is not",
        "",
        "It has only ever seen EgoSynth's rendered tables, hands and coloured objects. On **real footage**",
        "its answers are meaningless: for real cameras use a real checkpoint (Qwen2.5-VL-3B fine-tuned with",
        "`egovlm train --config configs/egovlm_3b.yaml`, or any Qwen2.5-VL checkpoint by local path or hub",
        "id: `egovlm edge run --model PATH`). It exists so that `make demo` shows the whole path answering",
        "questions about synthetic footage, offline, in seconds.",
        "",
        f"Files: safetensors weights and the processor, {size / 1e6:.1f} MB. Loads with plain",
        "`AutoModelForImageTextToText.from_pretrained(DIR)` and `AutoProcessor.from_pretrained(DIR)`.",
        "",
    ]
    return "\n".join(lines)


CHANCE = 0.2  # five options
ALPHA = 0.05  # one-sided significance level for "above chance"


def p_above_chance(correct: int, n: int, chance: float = CHANCE) -> float:
    """One-sided exact binomial p-value: P(X >= correct) for X ~ Binomial(n, chance)."""
    return sum(math.comb(n, k) * chance**k * (1 - chance) ** (n - k) for k in range(correct, n + 1))


def unfit(val: dict[str, Any]) -> str | None:
    """Why a model must not become the demo's default, or None: the demo exists to show answers
    about the footage, so a model that never completes the answer grammar, or whose val accuracy
    is not *significantly* above chance (one-sided binomial test at ALPHA; 192 val questions need
    about 25%), would replace the random model's noise with trained noise."""
    acc, failures = val.get("accuracy") or 0.0, val.get("format_failure_rate")
    if failures is not None and failures >= 1.0:
        return "no val completion followed the answer grammar"
    n = val.get("answered_items")
    if not n:  # no item count: the plain comparison is all we can do
        return None if acc > CHANCE else f"val accuracy {_pct(acc)} is not above chance ({_pct(CHANCE)})"
    correct = round(acc * n)
    p = p_above_chance(correct, int(n))
    if p >= ALPHA:
        return (
            f"val accuracy {_pct(acc)} ({correct} of {n}) is not significantly above chance "
            f"({_pct(CHANCE)}): one-sided binomial p = {p:.3f}, needs < {ALPHA}"
        )
    return None


def publish(runs: Path, out: Path, results: Path | None) -> Path | None:
    name, val, _ = choose(runs)
    reason = unfit(val)
    if reason:
        print(f"not published: the best GRPO model on val ({name}) is unfit for the demo: {reason}")
        return None
    src = model_dir(runs, name)
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    size = copy_model(src, tmp)
    if size > MAX_BYTES:
        shutil.rmtree(tmp)
        raise SystemExit(
            f"{src}: {size / 1e6:.1f} MB is over the {MAX_BYTES / 1e6:.0f} MB bound for committing"
        )
    data = json.loads(results.read_text()) if results and results.is_file() else None
    (tmp / "README.md").write_text(card(name, val, data, size, made_by(runs)), encoding="utf-8")
    meta_path = tmp / "egovlm.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(published_as="egovlm-mini", chosen_run=name, chosen_by="val accuracy", val_metrics=val)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out)
    print(f"published {name} (val accuracy {_pct(val.get('accuracy'))}) to {out}, {size / 1e6:.1f} MB")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/mini"))
    ap.add_argument("--out", type=Path, default=Path("models/egovlm-mini"))
    ap.add_argument("--results", type=Path, default=Path("docs/mini_experiment/results.json"))
    args = ap.parse_args()
    publish(args.runs, args.out, args.results)


if __name__ == "__main__":
    main()
