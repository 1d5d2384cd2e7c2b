"""Do a model's visual tokens say that a hand is moving, or which frame is nearest an event? A linear
probe on the vision tower, per frame.

    python -m experiments.mini.motion_probe --model M --data EGOSYNTH_FOLDER [--clips 400] [--out FILE]
        [--questions runs/mini8/data/test/eval.jsonl --test-data runs/mini8/data/test]

Each of ``--clips`` clips is shown as two 8-frame sets (uniform, then jittered: the base stage's
frame sets) and each frame gets two labels: **moving**, a hand is in the middle of a pick-up or
put-down (EgoSynth's planned step, from the reach to the end of the lift, or from the carry to the end
of the release), and **nearest**, the frame is the one of its set nearest some pick-up or put-down
(what a keyframe citation of that event is scored against). A linear score per visual token,
averaged over the frame's tokens (the same as a linear probe of the mean token, as the vision head
reads a frame), is fitted on the first three quarters of the clips and scored by AUROC on the rest
(0.5: the tokens say nothing). Why it matters (docs/mini_experiment/LOG.md, "What a citation must
see"): the frame nearest an event usually shows its movement (203 of 236 events on test), so a
model that sees motion can cite it, and one that sees only what each frame holds cannot tell which
of two frames is nearer.

With ``--questions`` the probe, refitted on every clip, also gives the **placement bound**
(:func:`placement_bound`): the keyframe F1 of citations derived from the true events of the test
clips, each placed at whichever of the two frames around it the probe scores higher: how far
citations could go on this tower's motion read if every frame's state were known (LOG.md, "The
tower sees enough; the language model does not read it").

Written by hand for the same reason as place_probe: a one-layer probe is a few lines of torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from egovlm.frames import Frame

if TYPE_CHECKING:
    from experiments.mini.place_probe import Tower

LABELS = ("moving", "nearest")


def frame_motion_labels(clip: Any, frames: list[Frame]) -> np.ndarray:
    """``[frames, 2]``: per frame of one set, (a hand mid-move, nearest some event of the clip)."""
    from experiments.mini.pretrain_data import nearest_frame, planned_script

    steps = planned_script(clip).steps
    out = np.zeros((len(frames), 2), dtype=np.float32)
    for i, f in enumerate(frames):
        out[i, 0] = float(any(s.t_move <= f.timestamp_s <= s.t_end for s in steps))
    for e in clip.events:
        out[nearest_frame(frames, float(e["t"])) - 1, 1] = 1.0
    return out


def frame_tokens(tower: Tower, data: Path, clips: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(mean tokens [N, D], labels [N, 2], clip index [N])`` over every frame of the clips' sets,
    read by ``tower`` (:func:`experiments.mini.place_probe.load_tower`)."""
    from experiments.mini.place_probe import tower_tokens
    from experiments.mini.pretrain_data import decode_frame_sets, load_truth

    model, processor, size = tower
    rng = np.random.default_rng(seed)
    feats, labels, groups = [], [], []
    for c, clip in enumerate(load_truth(data)[:clips]):
        for frames in decode_frame_sets(clip, 8, 2, size, rng):
            feats.append(tower_tokens(model, processor, frames).mean(1).numpy())
            labels.append(frame_motion_labels(clip, frames))
            groups += [c] * len(frames)
    return np.concatenate(feats), np.concatenate(labels), np.array(groups)


def fit_heads(feats: Any, labels: Any, steps: int = 1000) -> list[Any]:
    """One logistic probe (``torch.nn.Linear(D, 1)``) per label, fitted full-batch on all of ``feats``."""
    import torch

    x = torch.tensor(feats)
    heads = []
    for k in range(len(LABELS)):
        torch.manual_seed(0)
        y = torch.tensor(labels[:, k])
        head = torch.nn.Linear(feats.shape[1], 1)
        opt = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-3)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(head(x).squeeze(-1), y).backward()
            opt.step()
        heads.append(head)
    return heads


def probe(feats: Any, labels: Any, groups: Any, steps: int = 1000) -> dict[str, Any]:
    """Fit one logistic probe per label on the first three quarters of the clips, AUROC on the rest."""
    import torch

    from experiments.mini.vision_aux import auroc

    train = groups < np.quantile(groups, 0.75)
    out: dict[str, Any] = {"frames_train": int(train.sum()), "frames_test": int((~train).sum())}
    x_test = torch.tensor(feats[~train])
    for k, (name, head) in enumerate(zip(LABELS, fit_heads(feats[train], labels[train], steps), strict=True)):
        with torch.no_grad():
            scores = head(x_test).squeeze(-1)
        out[name] = {
            "positive_rate": float(labels[:, k].mean()),
            "auroc": auroc(scores, torch.tensor(labels[~train, k])),
        }
    return out


def placement_bound(tower: Tower, heads: Sequence[Any], test_data: Path, questions: Path) -> dict[str, Any]:
    """How far citations could go on ``questions`` with this tower's motion read and every frame's
    state known: each true event of a test clip placed at whichever of the two frames around it a
    probe of ``heads`` (:func:`fit_heads`, one per label) scores higher, once per label, the
    citations derived by events_probe's rules and scored like eval, and the share of the events in a
    two-frame bracket placed at the nearer frame (``choice_right_<label>``; events_probe's
    ``placement`` counts the same for a model's descriptions). Beside it events_probe's references:
    the first frame after (state alone) and the frame of the motion (EgoSynth's steps)."""
    import torch

    from egovlm.schema import read_jsonl
    from experiments.mini.events_probe import derived_scores, event_brackets, placed_events, placement
    from experiments.mini.place_probe import tower_tokens
    from experiments.mini.pretrain_data import decode_frame_sets, describe, load_truth

    model, processor, size = tower
    asked = read_jsonl(questions)
    wanted = {str(q.meta["clip_id"]) for q in asked}
    test_clips = {c.clip_id: c for c in load_truth(test_data) if c.clip_id in wanted}
    if not test_clips:
        raise ValueError(f"{questions} asks about none of the clips in {test_data}")
    rng = np.random.default_rng(0)  # only jittered sets draw; the uniform one (as eval shows) is fixed
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in LABELS}
    choices = {name: [0, 0] for name in LABELS}  # two-frame choices right, made
    for clip in test_clips.values():
        shown = decode_frame_sets(clip, 8, 1, size, rng)[0]
        times = [f.timestamp_s for f in shown]
        with torch.no_grad():
            mean = tower_tokens(model, processor, shown).mean(1)
            scores = [head(mean).squeeze(-1).tolist() for head in heads]
        truth = describe(clip, shown, "events")
        brackets = event_brackets(clip, times)
        for name, s in zip(LABELS, scores, strict=True):
            written = placed_events(clip, times, "scores", s)
            where = placement(brackets, written)
            choices[name][0] += where["choice_right"]
            choices[name][1] += where["choice_asked"]
            rows[name].append({"clip_id": clip.clip_id, "times": times, "truth": truth, "written": written})
    out: dict[str, Any] = {"test_clips": len(test_clips)}
    for name in LABELS:
        derived = derived_scores(asked, rows[name], test_clips)
        out[f"placed_by_{name}"] = {t: row["model"] for t, row in derived.items()}
        right, made = choices[name]
        out[f"choice_right_{name}"] = right / made if made else 0.0
    out["references"] = {
        t: {k: row[k] for k in ("truth_after", "truth_motion", "best_fixed_set", "questions")}
        for t, row in derived.items()
    }
    return out


def _run(args: Any) -> dict[str, Any]:
    if args.questions and args.test_data is None:
        raise SystemExit("--questions needs --test-data, the EgoSynth folder of the clips it asks about")
    from experiments.mini.place_probe import load_tower

    tower = load_tower(args.model)
    feats, labels, groups = frame_tokens(tower, args.data, args.clips)
    result = probe(feats, labels, groups)
    if args.questions:  # the probe refitted on every clip of --data, then used on the test clips
        heads = fit_heads(feats, labels)
        result["bound"] = placement_bound(tower, heads, args.test_data, args.questions)
    return result


def _extra(ap: Any) -> None:
    ap.add_argument("--questions", type=Path, help="questions about --test-data's clips: the placement bound")
    ap.add_argument("--test-data", type=Path, help="the EgoSynth folder --questions asks about")


def main() -> None:
    from experiments.mini.place_probe import probe_main

    probe_main(__doc__ or "", 400, _run, _extra)


if __name__ == "__main__":
    main()
