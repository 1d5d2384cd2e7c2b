"""Does a base model place events in its descriptions? The `events` description (phases 2-4 train it:
every pick-up and put-down with its nearest prompt frame) generated greedily on each clip's uniform
frame set, each event's written frame compared with the truth.

The question it answers (docs/mini_experiment/LOG.md, "Teaching the base to cite put-downs"): when a
model does not cite an event for a question, is the event beyond what it sees in the frames, or is
the skill there (it writes the right frame in a description) and only not bound to ``<keyframes>``?
Events are matched by (action, object, occurrence): the k-th put-down of the cup in the truth with
the k-th one the model wrote, whatever times and places the sentences give.

    python -m experiments.mini.events_probe --model models/egovlm-mini-base \
        --data runs/mini_base/data/val --clips 30 --out runs/events_probe
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.atomic import atomic_write_text

ACTIONS = ("pick_up", "put_down")
_FRAME = re.compile(r"\(frame (\d+)\)")
_PICK = re.compile(r"picks up the (.+?) from")
_PUT = re.compile(r"puts the (.+?) down")


def events_written(text: str) -> list[tuple[str, str, int, int]]:
    """(action, object, occurrence, frame) of each event sentence of an `events` description: the
    k-th pick-up (or put-down) of an object has occurrence k. Lines that are not such sentences, or
    give no frame, are skipped."""
    seen: Counter[tuple[str, str]] = Counter()
    out = []
    for line in text.splitlines():
        frame, pick, put = _FRAME.search(line), _PICK.search(line), _PUT.search(line)
        if frame is None:
            continue
        if pick is not None:
            action, name = "pick_up", pick.group(1)
        elif put is not None:
            action, name = "put_down", put.group(1)
        else:
            continue
        seen[action, name] += 1
        out.append((action, name, seen[action, name], int(frame.group(1))))
    return out


def score(truth: str, written: str) -> dict[str, dict[str, int]]:
    """Per action: events in the truth, how many the model wrote, with the right frame, within one."""
    wrote = {(a, n, k): f for a, n, k, f in events_written(written)}
    out = {a: {"events": 0, "written": 0, "frame_right": 0, "within_one": 0} for a in ACTIONS}
    for action, name, k, frame in events_written(truth):
        row = out[action]
        row["events"] += 1
        got = wrote.get((action, name, k))
        if got is not None:
            row["written"] += 1
            row["frame_right"] += int(got == frame)
            row["within_one"] += int(abs(got - frame) <= 1)
    return out


def run(
    model_id: str, folder: Path, clips: int, frames: int = 8, max_new_tokens: int = 256
) -> dict[str, Any]:
    """The probe over the first ``clips`` clips of an EgoSynth folder (per clip rows and totals)."""
    from egovlm.train.eval import load_for_eval
    from egovlm.train.generation import greedy
    from experiments.mini.pretrain_data import Example, decode_frame_sets, describe, load_truth

    model, processor, size = load_for_eval(model_id, "cpu")
    rng = np.random.default_rng(0)  # decode_frame_sets draws only for jittered sets; the uniform one is fixed
    per_clip = []
    totals = {a: Counter[str]() for a in ACTIONS}
    for clip in load_truth(folder)[:clips]:
        shown = decode_frame_sets(clip, frames, 1, size, rng)[0]
        ex = Example(clip.clip_id, [("events", "events")], shown, "")
        truth = describe(clip, shown, "events")
        text = greedy(model, processor, [ex.prompt()], [[f.pil() for f in shown]], max_new_tokens)[0]
        s = score(truth, text)
        for a in ACTIONS:
            totals[a].update(s[a])
        per_clip.append({"clip_id": clip.clip_id, "truth": truth, "written": text, "score": s})
    return {
        "model": model_id,
        "data": str(folder),
        "clips": len(per_clip),
        "totals": {a: dict(totals[a]) for a in ACTIONS},
        "per_clip": per_clip,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument(
        "--data", type=Path, required=True, help="an EgoSynth folder (clips.jsonl, captions, videos)"
    )
    ap.add_argument("--clips", type=int, default=30)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    result = run(args.model, args.data, args.clips)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "events_probe.json", json.dumps(result, indent=2) + "\n")
    for action, t in result["totals"].items():
        print(
            f"{action:8s} events {t.get('events', 0):3d}  written {t.get('written', 0):3d}  "
            f"frame right {t.get('frame_right', 0):3d}  within one {t.get('within_one', 0):3d}"
        )


if __name__ == "__main__":
    main()
