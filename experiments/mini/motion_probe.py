"""Do a model's visual tokens say that a hand is moving, or which frame is nearest an event? A linear
probe on the vision tower, per frame.

    python -m experiments.mini.motion_probe --model M --data EGOSYNTH_FOLDER [--clips 400] [--out FILE]

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

Written by hand for the same reason as place_probe: a one-layer probe is a few lines of torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from egovlm.frames import Frame

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


def frame_tokens(model_dir: str, data: Path, clips: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(mean tokens [N, D], labels [N, 2], clip index [N])`` over every frame of the clips' sets."""
    from experiments.mini.place_probe import load_tower, tower_tokens
    from experiments.mini.pretrain_data import decode_frame_sets, load_truth

    model, processor, size = load_tower(model_dir)
    rng = np.random.default_rng(seed)
    feats, labels, groups = [], [], []
    for c, clip in enumerate(load_truth(data)[:clips]):
        for frames in decode_frame_sets(clip, 8, 2, size, rng):
            feats.append(tower_tokens(model, processor, frames).mean(1).numpy())
            labels.append(frame_motion_labels(clip, frames))
            groups += [c] * len(frames)
    return np.concatenate(feats), np.concatenate(labels), np.array(groups)


def probe(feats: Any, labels: Any, groups: Any, steps: int = 1000) -> dict[str, Any]:
    """Fit one logistic probe per label on the first three quarters of the clips, AUROC on the rest."""
    import torch

    from experiments.mini.vision_aux import auroc

    train = groups < np.quantile(groups, 0.75)
    out: dict[str, Any] = {"frames_train": int(train.sum()), "frames_test": int((~train).sum())}
    x, x_test = torch.tensor(feats[train]), torch.tensor(feats[~train])
    for k, name in enumerate(LABELS):
        torch.manual_seed(0)
        y = torch.tensor(labels[train, k])
        head = torch.nn.Linear(feats.shape[1], 1)
        opt = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-3)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(head(x).squeeze(-1), y).backward()
            opt.step()
        with torch.no_grad():
            scores = head(x_test).squeeze(-1)
        out[name] = {
            "positive_rate": float(labels[:, k].mean()),
            "auroc": auroc(scores, torch.tensor(labels[~train, k])),
        }
    return out


def main() -> None:
    from experiments.mini.place_probe import probe_main

    probe_main(__doc__ or "", 400, lambda a: probe(*frame_tokens(a.model, a.data, a.clips)))


if __name__ == "__main__":
    main()
