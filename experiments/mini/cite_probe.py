"""Where does a model's citation point before it looks? The first cited frame's distribution.

    python -m experiments.mini.cite_probe --model M [--model M2 ...] --data QA.jsonl --out DIR

For every multiple-choice row with salient moments: the contract's prompt with the answer-only
opening ``<think></think>`` + newline + ``<keyframes>`` forced (what every completion of the
answer-only models starts with), one forward pass, and the next-token probabilities of the frame
numbers ``1..n`` renormalised among themselves: the distribution the first citation is sampled from
at temperature 1. Reported per question type: the mean probability of a salient frame, the share of
rows whose most likely frame is salient (what greedy decoding cites first), the mean probability of
that most likely frame (near 1: a habit no sampling temperature varies), and the most likely frames.

Why a probe beside ``passk``: sampling says *that* a group's rollouts all cite one frame; this says
*how far* from the salient frames the citation is, so one can tell whether GRPO's keyframe reward can
ever be paid there (it needs a group whose rollouts cite differently). Writes ``DIR/cite_probe.json``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from egovlm.atomic import atomic_write_text
from egovlm.schema import QAItem, read_jsonl

OPENING = "<think></think>\n<keyframes>"  # every answer-only completion starts so (base_data.answer_target)


def frame_token_ids(tokenizer: Any, n: int) -> list[int]:
    """The token of each frame number 1..n as the model writes it first in a ``<keyframes>`` block."""
    from egovlm.choice import token_ids

    ids = [token_ids(tokenizer, str(k)) for k in range(1, n + 1)]
    if any(len(i) != 1 for i in ids):
        raise SystemExit(f"frame numbers 1..{n} are not single tokens for this tokenizer: {ids}")
    return [i[0] for i in ids]


def first_citations(model_id: str, items: list[QAItem], folder: Path, frames: int, cache: Path) -> list[dict]:
    """Per item: its type, salient frames and the first citation's distribution over frames 1..frames."""
    import torch

    from egovlm.train.dataset import FrameSpec
    from egovlm.train.eval import load_for_eval, prompt_batches
    from egovlm.train.rewards import salient_set

    model, processor, size = load_for_eval(model_id, "cpu")
    spec = FrameSpec(frames, "uniform", size)
    tokenizer = processor.tokenizer
    ids = frame_token_ids(tokenizer, frames)
    tokenizer.padding_side = "left"
    rows: list[dict] = []
    for batch in prompt_batches(items, 8, folder, spec, cache):
        texts = [
            processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) + OPENING
            for m in batch.messages
        ]
        inputs = processor(text=texts, images=batch.images, padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**inputs).logits[:, -1, :].float()
        for p, row in zip(batch.prepared, torch.softmax(logits, dim=-1), strict=True):
            dist = row[ids] / row[ids].sum()
            rows.append(
                {
                    "id": p.item.id,
                    "question_type": p.item.question_type or "untyped",
                    "salient_frames": salient_set(p.frame_times, p.item.salient_times, None, None),
                    "p": [round(float(x), 6) for x in dist],
                }
            )
    return rows


def _top(p: list[float]) -> int:
    """The most likely frame (1-based; the earlier one on a tie)."""
    return max(range(len(p)), key=p.__getitem__) + 1


def summarise(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Per question type (module docstring)."""
    by_type: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_type[r["question_type"]].append(r)
    out: dict[str, dict[str, Any]] = {}
    for qt, group in sorted(by_type.items()):
        top = [_top(r["p"]) for r in group]
        out[qt] = {
            "rows": len(group),
            "p_salient": sum(sum(r["p"][f - 1] for f in r["salient_frames"]) for r in group) / len(group),
            "top_is_salient": sum(t in r["salient_frames"] for t, r in zip(top, group, strict=True))
            / len(group),
            "p_top": sum(max(r["p"]) for r in group) / len(group),
            "top_frames": Counter(top).most_common(3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="a model folder; repeat for several")
    ap.add_argument(
        "--data", type=Path, required=True, help="a QA JSONL (its multiple-choice rows are probed)"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument(
        "--cache-dir", type=Path, default=None, help="decoded frame sets (default: DIR/frame_cache)"
    )
    args = ap.parse_args()
    items = [i for i in read_jsonl(args.data) if not i.is_open and i.salient_times]
    if not items:
        raise SystemExit(f"{args.data}: no multiple-choice row with salient_times to probe")
    cache = args.cache_dir or args.out / "frame_cache"
    result: dict[str, Any] = {"data": str(args.data), "frames": args.frames, "models": {}}
    for model in args.model:
        summary = summarise(first_citations(model, items, args.data.parent, args.frames, cache))
        result["models"][model] = summary
        print(model)
        for qt, s in summary.items():
            print(
                f"  {qt:14s} rows {s['rows']:3d}  p(salient) {s['p_salient']:.3f}  "
                f"top salient {s['top_is_salient']:.2f}  p(top) {s['p_top']:.3f}  top {s['top_frames']}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "cite_probe.json", json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
