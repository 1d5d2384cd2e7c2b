"""Do a model's visual tokens say where each object lies? A linear probe on the vision tower.

    python -m experiments.mini.place_probe --model M --data EGOSYNTH_FOLDER [--clips 40] [--out FILE]

Every object token of ``--clips`` clips (8 random-time frames each; a token whose box overlaps
exactly one *resting* object, labelled with that object's place by
:func:`experiments.mini.vision_aux.frame_labels`) is taken from the model's vision tower (its merger
output, as the vision head reads it: :func:`experiments.mini.vision_aux.head_features`). A
softmax-regression probe is fitted on the first three quarters of the clips and scored on the rest,
per place, beside the majority class of the training tokens (what a probe that reads nothing
scores). A tower that encodes places is what the where-questions need (start_place, overall's
activities, the held-out where_ended); the base stage's place column (``vision.places``) trains for
it.

Written by hand: a one-layer probe on a few thousand tokens, which torch does in a few lines
(no scikit-learn in the environment).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from egovlm.atomic import atomic_write_text

Tower: TypeAlias = tuple[Any, Any, tuple[int, int]]  # (model, processor, keyframe size)


def load_tower(model_dir: str) -> Tower:
    """``(model, processor, keyframe size)``: a model folder for probing its vision tower, at the
    keyframe size it was built for (as the base stage reads it)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from egovlm.models.files import keyframe_size_of

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, processor, keyframe_size_of(model_dir)


def tower_tokens(model: Any, processor: Any, frames: list[Any]) -> Any:
    """``[frames, tokens, D]``: the vision tower's merged tokens of each frame, as the vision head
    reads them (:func:`experiments.mini.vision_aux.head_features`)."""
    import torch

    from experiments.mini.vision_aux import head_features

    inputs = processor.image_processor(images=[f.pil() for f in frames], return_tensors="pt")
    with torch.no_grad():
        out = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
    return head_features(out).reshape(len(frames), -1, out.shape[-1])


def token_places(model_dir: str, data: Path, clips: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(features [N, D], place index [N], clip index [N])`` of the single-place object tokens."""
    from experiments.mini.pretrain_data import load_truth
    from experiments.mini.vision_aux import frame_labels, object_names, sample_frames

    model, processor, size = load_tower(model_dir)
    n_objects = len(object_names())
    feats, places, groups = [], [], []
    for c, (clip, frames) in enumerate(
        sample_frames(load_truth(data)[:clips], 8, size, np.random.default_rng(seed))
    ):
        cells, _ = frame_labels(clip, frames, size, places=True)
        tokens = tower_tokens(model, processor, frames)
        for f in range(len(frames)):
            for t in range(cells.shape[1]):
                where = np.flatnonzero(cells[f, t, n_objects:])
                if len(where) == 1:
                    feats.append(tokens[f, t].numpy())
                    places.append(int(where[0]))
                    groups.append(c)
    return np.stack(feats), np.array(places), np.array(groups)


def probe(feats: Any, places: Any, groups: Any, n_places: int, steps: int = 1500) -> dict[str, Any]:
    """Fit on the first three quarters of the clips, score on the rest (module docstring)."""
    import torch

    torch.manual_seed(0)
    train = groups < np.quantile(groups, 0.75)
    x, y = torch.tensor(feats[train]), torch.tensor(places[train])
    head = torch.nn.Linear(feats.shape[1], n_places)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
    with torch.no_grad():
        pred = head(torch.tensor(feats[~train])).argmax(-1).numpy()
    truth = places[~train]
    majority = int(np.bincount(places[train], minlength=n_places).argmax())
    return {
        "tokens_train": int(train.sum()),
        "tokens_test": int((~train).sum()),
        "probe_accuracy": float((pred == truth).mean()),
        "majority_accuracy": float((truth == majority).mean()),
        "per_place": {
            k: float((pred[truth == k] == k).mean()) for k in range(n_places) if (truth == k).any()
        },
    }


def probe_main(
    doc: str,
    default_clips: int,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The probes' command line: ``--model --data [--clips] [--out]`` and ``extra``'s arguments;
    prints ``run(args)`` as JSON (with the arguments) and writes it to ``--out`` too."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True, help="an EgoSynth folder (clips.jsonl, events.jsonl)")
    ap.add_argument("--clips", type=int, default=default_clips)
    ap.add_argument("--out", type=Path, help="write the result as JSON here too")
    if extra is not None:
        extra(ap)
    args = ap.parse_args()
    result = run(args) | {"model": args.model, "data": str(args.data), "clips": args.clips}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.mini.vision_aux import place_names

    names = place_names()
    result = probe(*token_places(args.model, args.data, args.clips), len(names))
    result["per_place"] = {names[k]: v for k, v in result["per_place"].items()}
    return result


def main() -> None:
    probe_main(__doc__ or "", 40, _run)


if __name__ == "__main__":
    main()
