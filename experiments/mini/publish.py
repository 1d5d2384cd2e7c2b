"""Publish the miniature EgoVLM experiment's chosen model as the demo's default (``models/egovlm-mini``).

The choice is made on the **val** split's multiple-choice questions (``<runs>/eval_val/<model>/``:
``metrics.json`` and the per-question ``completions.jsonl``), among the six GRPO models and the base:
:func:`experiments.mini.stats.publish_decision` tests each against chance (one-sided exact binomial),
corrects for the seven candidates (Bonferroni: picking the best of seven is seven chances to be lucky)
and picks the most accurate significant one, ties broken by val keyframe F1; if none is significant,
nothing is published. A model that never completes the answer grammar is never published. The test
split only reports; choosing on it would make the published test number optimistic. The model's files
(safetensors weights, config, tokenizer, processor, ``egovlm.json``) are copied into a hidden
folder beside ``--out`` with a model card, then renamed into place, so an interrupted publish
never leaves a half-written model where the demo looks for one.

    .venv/bin/python -m experiments.mini.publish --runs runs/mini --out models/egovlm-mini \\
        --results docs/mini_experiment/results.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.atomic import staged_dir
from experiments.mini.stats import PublishDecision, publish_decision

MAX_BYTES = 20 * 1024 * 1024  # the bound for committing the model
# weights and what loading needs; optimizer states, trainer states and logs stay behind
KEEP_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")
NEVER = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


CHANCE = 0.2  # five options
ALPHA = 0.05  # family-wise: one-sided, Bonferroni-corrected over the candidates
BASE = "base"  # the base stage's model: a candidate like the GRPO runs (<runs>/pretrain/final)


def val_correctness(eval_dir: Path) -> np.ndarray:
    """1.0 / 0.0 per answered multiple-choice question of an eval, in its ``completions.jsonl`` order
    (read as the report reads it, :func:`experiments.mini.report.correctness`); a candidate without
    that file cannot be judged, so it is an error here, not an empty record."""
    from experiments.mini.report import correctness

    if not (eval_dir / "completions.jsonl").is_file():
        raise FileNotFoundError(f"{eval_dir / 'completions.jsonl'}: the val eval the publish rule reads")
    return np.array([c for c, _ in correctness(eval_dir).values()])


def candidates(runs: Path) -> dict[str, dict[str, Any]]:
    """Every candidate's val metrics: the base and the GRPO runs with a val eval."""
    ev = runs / "eval_val"
    names = [BASE, *sorted(p.parent.name for p in ev.glob("grpo_*/metrics.json"))]
    files = {n: ev / n / "metrics.json" for n in names}
    cands = {n: json.loads(f.read_text()) for n, f in files.items() if f.is_file()}
    if not cands:
        raise SystemExit(f"no val evals under {ev}: run python -m experiments.mini.repro first")
    return cands


def choose(runs: Path) -> tuple[PublishDecision, dict[str, dict[str, Any]]]:
    """The publish decision over every candidate on val (module docstring), and their val metrics."""
    cands = candidates(runs)
    correct = {n: val_correctness(runs / "eval_val" / n) for n in cands}
    tiebreak = {n: float(m.get("keyframe_f1") or 0.0) for n, m in cands.items()}
    decision = publish_decision(correct, CHANCE, ALPHA, "bonferroni", tiebreak=tiebreak)
    return decision, cands


def model_dir(runs: Path, name: str) -> Path:
    """``grpo_a-seed1`` → ``<runs>/grpo_a/seed1/final``; ``base`` → ``<runs>/pretrain/final``."""
    if name == BASE:
        return runs / "pretrain" / "final"
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


def _row(label: str, m: dict[str, Any]) -> str:
    return (
        f"| {label} | {_pct(m.get('accuracy'))} | {_pct(m.get('format_failure_rate'))} | "
        f"{m.get('keyframe_f1') or 0:.3f} | {_pct(m.get('open_accuracy'))} |"
    )


def card(
    name: str,
    val: dict[str, Any],
    results: dict[str, Any] | None,
    size: int,
    made: str = "`make repro-mini`",
    decision: PublishDecision | None = None,
) -> str:
    """The model card: what it is, what it was trained on, what it is not; ``made``: by what run;
    ``decision``: why this model was published (the selection rule, its reason and adjusted p)."""
    evals = (results or {}).get("evals") or {}
    if name == BASE:
        test, test_other = evals.get("base"), evals.get("base_otherclip")
        stage = "the base stage only (no GRPO)"
    else:
        key = name.split("-")[0][-1]  # "a" or "b"
        test = evals.get(key, {}).get(name)
        test_other = evals.get(f"{key}_otherclip", {}).get(name)  # keyed by run, as the report writes it
        arm = "format + accuracy + keyframe" if name.startswith("grpo_b") else "format + accuracy"
        stage = f"GRPO with the rewards {arm}"
    base = evals.get("base") if name != BASE else None
    lines = [
        "# egovlm-mini: the demo's built-in model",
        "",
        "A 2.5 M-parameter `Qwen2_5_VLForConditionalGeneration` (the offline `nano` preset: windowed ViT,",
        "2x2 merger, GQA decoder with M-RoPE; 112x84 keyframes, 12 visual tokens per frame) trained on CPU",
        "by this project's own scripts, entirely on **EgoSynth** synthetic egocentric clips:",
        "",
        "1. base stage (`python -m experiments.mini pretrain`), standing in for Qwen2.5-VL's pre-training",
        "   and instruction tuning: the vision tower learns which objects each visual token shows (labels",
        "   from EgoSynth's renderer); then answer-only training, in the exact prompt the model is asked",
        "   in, on the base question types (what a hand holds, what a frame shows, where an object",
        "   started, which object was picked up, the first pick-up, counts, the overall activity, which",
        "   statement is true; options and open questions answered in words, questions in several",
        "   wordings); never the GRPO types;",
        "2. **GRPO** (R1-Zero style, `egovlm train`) on the question types held out of the base stage",
        "   (the last pick-up, where an object ended up, the order of actions), mixed with half as many",
        "   base-type questions, 2 reward arms x 3 seeds.",
        "",
        f"This is `{name}`: {stage}, chosen among the base and the 6 GRPO runs on the EgoSynth **val**",
        "split's multiple-choice accuracy.",
    ]
    if decision is not None:
        lines += [
            "",
            f"Selection: {decision.reason}. Rule: one-sided exact binomial test of each candidate's val",
            f"accuracy against chance ({_pct(CHANCE)}), {decision.correction} correction for the "
            f"{len(decision.p_values)} candidates, family-wise alpha {decision.alpha}; adjusted p of "
            f"the chosen model: {decision.adjusted[name]:.3g}.",
        ]
    lines += [
        "",
        "| split | accuracy | format failures | keyframe F1 | open questions, exact answer |",
        "|---|---|---|---|---|",
        _row("EgoSynth val (selection)", val),
    ]
    if test:
        lines.append(_row("EgoSynth test (held out)", test))
    if test_other:  # what the question text alone is worth to it
        lines.append(_row("EgoSynth test, each question shown another clip's frames", test_other))
    if base:
        lines.append(_row("base stage, test (for reference)", base))
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


def unfit(val: dict[str, Any]) -> str | None:
    """Why a model must not become the demo's default whatever its accuracy, or None: the demo exists
    to show answers in the contract's grammar, so a model none of whose val completions follows it is
    never published. (Whether its accuracy is above chance is :func:`choose`'s test.)"""
    failures = val.get("format_failure_rate")
    if failures is not None and failures >= 1.0:
        return "no val completion followed the answer grammar"
    return None


def publish(runs: Path, out: Path, results: Path | None) -> Path | None:
    decision, cands = choose(runs)
    if decision.chosen is None:
        print(f"not published: {decision.reason}")
        return None
    name, val = decision.chosen, cands[decision.chosen]
    reason = unfit(val)
    if reason:
        print(f"not published: the chosen model on val ({name}) is unfit for the demo: {reason}")
        return None
    src = model_dir(runs, name)
    with staged_dir(out) as tmp:
        size = copy_model(src, tmp)
        if size > MAX_BYTES:  # staged_dir removes the partial copy
            raise SystemExit(
                f"{src}: {size / 1e6:.1f} MB is over the {MAX_BYTES / 1e6:.0f} MB bound for committing"
            )
        data = json.loads(results.read_text()) if results and results.is_file() else None
        (tmp / "README.md").write_text(card(name, val, data, size, made_by(runs), decision), encoding="utf-8")
        meta_path = tmp / "egovlm.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        selection = {
            "reason": decision.reason,
            "candidates": sorted(decision.p_values),
            "test": f"one-sided exact binomial against chance {CHANCE}",
            "correction": decision.correction,
            "alpha": decision.alpha,
            "p_value": decision.p_values[name],
            "adjusted_p": decision.adjusted[name],
        }
        meta.update(published_as="egovlm-mini", chosen_run=name, chosen_by="val accuracy", val_metrics=val)
        meta["selection"] = selection
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
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
