"""Does GRPO have something to amplify? ``k`` answers sampled per question, as GRPO's rollouts are.

    python -m experiments.mini.passk --model M --data QA.jsonl --out DIR [--k 8] [--temperature 0.8]

Per question: ``k`` completions at ``temperature`` (top-k and top-p off, TRL's rollout defaults; at most
``--max-new-tokens``, 64 as in the eval, where GRPO's rollouts stop at 48) in the
contract's prompt, multiple-choice answers restricted to the options (``--answers options``, the rule
of eval and GRPO's rollouts; :mod:`egovlm.choice`), each scored by :func:`egovlm.train.eval.score`
(the eval's and the accuracy reward's rule). Reported overall and per question type, multiple-choice
and open apart:

- ``pass_at_k``: share of questions with at least one correct answer among the ``k``;
- ``mean_accuracy``: share of the ``k x questions`` answers that are correct (pass@1 at temperature);
- ``informative``: share of questions whose ``k`` answers are neither all right nor all wrong: a
  GRPO group with a non-zero advantage. A question all wrong teaches nothing, and so does one all right.

Chance for a five-option question answered uniformly at random: pass@k = 1 - 0.8^k (0.83 at k = 8),
mean accuracy 0.2. Writes ``DIR/passk.json`` (metrics) and ``DIR/samples.jsonl`` (every sample's row).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from egovlm.atomic import atomic_write_text
from egovlm.choice import ANSWER_RULES
from egovlm.schema import QAItem, read_jsonl

CHANCE_OPTIONS = 5


def chance_pass_at_k(k: int, options: int = CHANCE_OPTIONS) -> float:
    """pass@k of an answerer that picks one of ``options`` uniformly at random each time."""
    return 1.0 - (1.0 - 1.0 / options) ** k


def summarise(correct: dict[str, list[bool]], types: dict[str, str]) -> dict[str, Any]:
    """Metrics (module docstring) from each question's ``k`` correctness flags, overall and per type."""

    def block(ids: list[str]) -> dict[str, Any]:
        flags = [correct[i] for i in ids]
        n = len(flags)
        return {
            "questions": n,
            "pass_at_k": sum(any(f) for f in flags) / n,
            "mean_accuracy": sum(sum(f) for f in flags) / sum(len(f) for f in flags),
            "informative": sum(0 < sum(f) < len(f) for f in flags) / n,
        }

    by_type: dict[str, list[str]] = defaultdict(list)
    for i in correct:
        by_type[types[i]].append(i)
    return {
        "overall": block(list(correct)),
        "per_question_type": {t: block(ids) for t, ids in sorted(by_type.items())},
    }


def run(
    model_id: str,
    data: Path,
    out: Path,
    k: int,
    temperature: float,
    frames: int,
    seed: int,
    max_new_tokens: int = 64,
    answers: str = "options",
) -> dict[str, Any]:
    import torch

    from egovlm.train.dataset import FrameSpec
    from egovlm.train.eval import EvalOptions, load_for_eval, prompt_batches, restricted, score
    from egovlm.train.generation import sampled

    items: list[QAItem] = [i for i in read_jsonl(data) if i.answer is not None]
    if not items:
        raise SystemExit(f"{data}: no questions with an answer to score")
    model, processor, size = load_for_eval(model_id, "cpu")
    spec, opts = (
        FrameSpec(frames, "uniform", size),
        EvalOptions(frames=frames, answers=answers, progress=False),
    )
    cache = out / "frame_cache"
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    correct: dict[str, list[bool]] = {}
    with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
        for batch in prompt_batches(items, 4, data.parent, spec, cache):
            options = [p.item.options for p in batch.prepared] if restricted(opts) else None
            for p, texts in zip(
                batch.prepared,
                sampled(
                    model, processor, batch.messages, batch.images, max_new_tokens, k, temperature, options
                ),
                strict=True,
            ):
                rows = [score(p, t, opts) for t in texts]
                correct[p.item.id] = [bool(r["correct"]) for r in rows]
                f.writelines(json.dumps(r) + "\n" for r in rows)
    kind = {i.id: ("open" if i.is_open else "mc") for i in items}
    result: dict[str, Any] = {
        "model": model_id,
        "data": str(data),
        "k": k,
        "temperature": temperature,
        "answers": answers,
        "seed": seed,
        "chance_pass_at_k": chance_pass_at_k(k),
    }
    for form in ("mc", "open"):
        ids = {i: c for i, c in correct.items() if kind[i] == form}
        if ids:
            result[form] = summarise(ids, {i.id: i.question_type or "unknown" for i in items})
    atomic_write_text(out / "passk.json", json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)  # the GRPO recipes' (grpo_a.yaml)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    # the eval's limit (repro.EVAL); GRPO's rollouts stop at 48 (grpo_a.yaml), answer-only answers are shorter
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--answers", choices=ANSWER_RULES, default="options")  # as egovlm eval's
    args = ap.parse_args()
    result = run(
        args.model,
        args.data,
        args.out,
        args.k,
        args.temperature,
        args.frames,
        args.seed,
        args.max_new_tokens,
        args.answers,
    )
    for form in ("mc", "open"):
        if form not in result:
            continue
        for name, b in [("all", result[form]["overall"]), *result[form]["per_question_type"].items()]:
            rates = f"pass@{args.k} {b['pass_at_k']:.1%}, mean {b['mean_accuracy']:.1%}"
            print(f"{form} {name}: {rates}, informative {b['informative']:.1%} ({b['questions']} questions)")


if __name__ == "__main__":
    main()
