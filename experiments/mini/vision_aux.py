"""Dense object labels for the vision tower: the base stage's stand-in for a pre-trained ViT.

Qwen2.5-VL's ViT arrives trained on billions of images; the nano model's starts random. Trained by
next-token loss alone, it does not learn to see within the base stage's budget: the validation loss
with another clip's frames stays equal to the loss with the right ones (docs/mini_experiment/LOG.md,
run 2). The reason is signal: a 28x28 visual token of a 112x84 keyframe is mostly table, wall or
counter, the object in it a few pixels, and the language loss reaches the ViT only through attention
that has not yet learned to look. So during the base stage a small linear head (dropped afterwards;
the saved model is plain Qwen2.5-VL) reads every visual token the language model gets and is
trained, with binary cross-entropy, to say

* which objects' boxes overlap that token's region (per token, from EgoSynth's renderer), and
* which objects a hand holds in that frame (per frame, from the mean of its tokens),

which makes object identity a linear feature of the tokens, one the language model can read.
Boxes come from re-planning the clip from its seed (nothing is drawn), like the descriptions.

Positives are rare (about 2% of (token, object) pairs), so the BCE weights them by ``pos_weight``:
with plain mean BCE the loss is ruled by the label rate and a head that predicts the rates, reading
nothing, is near the optimum. Progress is reported as held-out AUROC, which a constant predictor
cannot raise above 0.5 (docs/mini_experiment/LOG.md, "redesign, development A/B").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from egovlm.frames import Frame
from experiments.mini.pretrain_data import ClipTruth, PretrainDataError, held_at, planned_clip, resting_at

log = logging.getLogger("experiments.mini.pretrain")
MERGE = 28  # pixels of a keyframe per visual token (patch 14 x spatial merge 2)


def object_names() -> list[str]:
    from egovlm.synth.objects import CATALOGUE

    return [k.name for k in CATALOGUE]


def place_names() -> list[str]:
    """EgoSynth's places in catalogue order ("table_left", ..., "drawer")."""
    from egovlm.synth.scene import PLACES

    return [p.name for p in PLACES]


def place_labels() -> list[str]:
    """How captions name each place ("table left", "shelf"): the words a place column is read against."""
    from egovlm.synth.scene import PLACES

    return [p.label for p in PLACES]


def frame_labels(
    clip: ClipTruth,
    frames: Sequence[Frame],
    keyframe_size: tuple[int, int],
    min_px: int = 3,
    places: bool = False,
    event_window_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(cells, held)``: ``cells[f, r * cols + c, k]`` is 1 when object ``k``'s box overlaps
    token (r, c) of frame ``f`` by at least ``min_px`` keyframe pixels each way; ``held[f, k]``
    is 1 when a hand holds object ``k`` in frame ``f``. Token order is the merged grid's raster
    order, the order of the vision tower's output. With ``places`` the cells have one more column
    per place (:func:`place_names`), 1 where the box of an object *resting* in that place overlaps
    the token: the tower learns where each object lies, which where-questions read.

    With ``event_window_s`` the per-frame labels have two more blocks of a column per object:
    ``held[f, C + k]`` is 1 when a pick-up of ``k`` lies within that many seconds of frame ``f``,
    ``held[f, 2C + k]`` the same for a put-down. With half the prompt's frame spacing as the window
    these are the frames a keyframe citation of that event is scored against (its nearest frame):
    whether a frame is the one nearest an event shows only in the motion around it (a hand reaching,
    lifting, lowering), which the held state alone does not tell (docs/mini_experiment/LOG.md,
    "What a citation must see")."""
    if clip.render is None:
        raise PretrainDataError(f"{clip.clip_id}: no clips.jsonl row, so object boxes are unknown")
    planned = planned_clip(*clip.render, clip.duration_s)
    names = object_names()
    where = place_names()
    width, height = keyframe_size
    cols, rows = width // MERGE, height // MERGE
    render_w, render_h = planned.renderer.size
    sx, sy = width / render_w, height / render_h
    columns = len(names) + (len(where) if places else 0)
    cells = np.zeros((len(frames), rows * cols, columns), dtype=np.float32)
    blocks = 1 if event_window_s is None else 3
    held = np.zeros((len(frames), blocks * len(names)), dtype=np.float32)
    for f, frame in enumerate(frames):
        resting = resting_at(planned.script, frame.timestamp_s) if places else {}
        for obj in planned.script.objects:
            x0, y0, x1, y1 = planned.renderer.object_box(obj.name, frame.timestamp_s)
            x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
            for r in range(rows):
                for c in range(cols):
                    dx = min(x1, (c + 1) * MERGE) - max(x0, c * MERGE)
                    dy = min(y1, (r + 1) * MERGE) - max(y0, r * MERGE)
                    if dx >= min_px and dy >= min_px:
                        cells[f, r * cols + c, names.index(obj.name)] = 1.0
                        if obj.name in resting:
                            cells[f, r * cols + c, len(names) + where.index(resting[obj.name])] = 1.0
        for name in held_at(clip.events, frame.timestamp_s).values():
            held[f, names.index(name)] = 1.0
        if event_window_s is not None:
            for e in clip.events:
                if abs(float(e["t"]) - frame.timestamp_s) <= event_window_s + 1e-6:
                    block = 1 if e["action"] == "pick_up" else 2
                    held[f, block * len(names) + names.index(str(e["object"]))] = 1.0
    return cells, held


def head_features(feats: Any) -> Any:
    """The vision tower's merged tokens ``[tokens, D]`` as the vision head reads them (and the place
    probe, experiments/mini/place_probe.py): layer-normed, like the language model's RMSNorm sees
    them; the centred tokens are as small as text embeddings (center_visual_features), too small for
    a linear head to read at this lr."""
    from torch.nn.functional import layer_norm

    return layer_norm(feats, feats.shape[-1:])


class NameHead:
    """Per-token object logits read against the language model's own word embeddings: the logit of
    object k is a learned scale times the cosine between the token and the mean input embedding of
    k's name (" yellow banana"), plus a bias. Trained this way the vision tower puts a banana's tokens
    near the words "yellow banana", which is what a real VLM's pre-training does for its merger
    (the visual tokens arrive in the language model's space) and what a linear head does not: with
    tied embeddings, a visual token that looks like a name is one attention hop from being said.
    The embedding is read, not owned: the vision steps leave it fixed, the language steps train it."""

    def __init__(self, embedding: Any, name_tokens: Sequence[Sequence[int]]) -> None:
        import torch

        width = max(len(t) for t in name_tokens)
        self.embedding = embedding
        self.ids = torch.tensor([[*t, *[0] * (width - len(t))] for t in name_tokens])
        self.mask = torch.tensor([[1.0] * len(t) + [0.0] * (width - len(t)) for t in name_tokens])
        self.scale = torch.nn.Parameter(torch.tensor(10.0))
        self.bias = torch.nn.Parameter(torch.full((len(name_tokens),), -3.0))

    def names(self) -> Any:
        """``[C, D]``: each name's mean token embedding."""
        rows = self.embedding.weight[self.ids] * self.mask[..., None]
        return rows.sum(1) / self.mask.sum(1, keepdim=True)

    def __call__(self, feats: Any) -> Any:
        from torch.nn.functional import normalize

        return self.scale * normalize(feats, dim=-1) @ normalize(self.names(), dim=-1).T + self.bias

    def parameters(self) -> list[Any]:
        return [self.scale, self.bias]


class VisionAux:
    """The two heads and a hook that captures the vision tower's output on every forward. With
    ``name_tokens`` (each object's token ids) the per-token head is a :class:`NameHead`, else linear."""

    def __init__(
        self,
        model: Any,
        n_classes: int,
        tokens_per_frame: int,
        pos_weight: float = 1.0,
        name_tokens: Sequence[Sequence[int]] | None = None,
        places: bool = False,
        events: bool = False,
    ) -> None:
        import torch

        self.places = places  # the per-token head has a column per place after the objects'
        columns = n_classes + (len(place_names()) if places else 0)
        if name_tokens is not None and len(name_tokens) != columns:
            raise ValueError(
                f"name_tokens names {len(name_tokens)} columns, the per-token head has {columns}"
            )
        width = model.config.text_config.hidden_size
        self.cells: Any = (
            NameHead(model.get_input_embeddings(), name_tokens)
            if name_tokens is not None
            else torch.nn.Linear(width, columns)
        )
        # per frame: held, then with ``events`` near a pick-up and near a put-down (frame_labels)
        self.events = events
        self.held = torch.nn.Linear(width, n_classes * (3 if events else 1))
        self.tokens_per_frame = tokens_per_frame
        self.pos_weight = torch.tensor(pos_weight)
        self.features: Any = None
        self._hook = model.model.visual.register_forward_hook(self._capture)

    def _capture(self, module: Any, args: Any, output: Any) -> None:
        self.features = output.pooler_output

    def parameters(self) -> list[Any]:
        return [*self.cells.parameters(), *self.held.parameters()]

    @staticmethod
    def name_tokens(tokenizer: Any, places: bool = False) -> list[list[int]]:
        """Each catalogue object's token ids as it appears mid-sentence (" yellow banana"), then
        with ``places`` each place's caption label (" table left", " shelf")."""
        words = object_names() + (place_labels() if places else [])
        return [tokenizer(" " + name, add_special_tokens=False)["input_ids"] for name in words]

    def logits(self, n_tokens: int) -> tuple[Any, Any]:
        """Both heads' logits on the last captured features: ``[tokens, C]`` and ``[frames, C]``."""
        feats = self.features
        if feats is None or feats.shape[0] != n_tokens:
            got = None if feats is None else feats.shape[0]
            raise RuntimeError(f"captured {got} visual tokens, labels for {n_tokens}")
        feats = head_features(feats)
        per_frame = feats.reshape(-1, self.tokens_per_frame, feats.shape[-1]).mean(1)
        return self.cells(feats), self.held(per_frame)

    def loss(self, cells: Any, held: Any) -> Any:
        """Positive-weighted BCE of both heads; ``cells`` [tokens, C], ``held`` [frames, C]."""
        from torch.nn.functional import binary_cross_entropy_with_logits as bce

        cell_logits, held_logits = self.logits(cells.shape[0])
        w = self.pos_weight
        return bce(cell_logits, cells, pos_weight=w) + bce(held_logits, held, pos_weight=w)

    def remove(self) -> None:
        self._hook.remove()


PIXEL_CHUNK = 512  # frames per image-processor call in train_vision (bounds its float copies)


def sample_frames(
    clips: Sequence[ClipTruth], per_clip: int, size: tuple[int, int], rng: np.random.Generator
) -> list[tuple[ClipTruth, list[Frame]]]:
    """``per_clip`` frames at uniformly random times of every clip (one decode pass per clip)."""
    from egovlm.frames import resize_for_model
    from egovlm.video import VideoReader

    out = []
    for clip in clips:
        times = sorted(float(t) for t in rng.uniform(0.0, clip.duration_s, per_clip))
        decoded = VideoReader(clip.video).frames_at(times)
        out.append(
            (clip, [Frame(i + 1, t, resize_for_model(img, size)) for i, (t, img) in enumerate(decoded)])
        )
    return out


def train_vision(
    model: Any,
    processor: Any,
    head: VisionAux,
    clips: Sequence[ClipTruth],
    size: tuple[int, int],
    steps: int,
    batch_frames: int,
    lr: float,
    per_clip: int,
    seed: int,
    prompt_frames: int = 8,
) -> list[dict[str, float | None]]:
    """Train the vision tower (ViT + merger) and the heads alone on object labels of single frames,
    before any language: the stand-in for arriving with a pre-trained ViT. A quarter of the
    frames is held out; returns log rows with the held-out loss and the loss of a constant
    predictor of the label rates (what "learned nothing" scores). With the head's ``events`` the
    window of the event columns is half the spacing of a ``prompt_frames`` prompt of the clip."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    frames, cells, held = [], [], []
    for clip, fs in sample_frames(clips, per_clip, size, rng):
        window = clip.duration_s / (2 * prompt_frames) if head.events else None
        c, h = frame_labels(clip, fs, size, places=head.places, event_window_s=window)
        frames += fs
        cells.append(torch.from_numpy(c))
        held.append(torch.from_numpy(h))
    all_cells, all_held = torch.cat(cells), torch.cat(held)
    n_train = len(frames) * 3 // 4
    visual = model.model.visual
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=lr, weight_decay=0.01)

    def pixels_of(idx: Any) -> tuple[Any, Any]:
        """The processor's patches of some frames, made when needed (chunked): all frames' float
        patches at once cost ~9 MB per clip at peak, 18 GB for 2000 clips; the frames stay uint8."""
        chunks = [idx[k : k + PIXEL_CHUNK] for k in range(0, len(idx), PIXEL_CHUNK)]
        process = processor.image_processor
        parts = [process(images=[frames[int(i)].pil() for i in c], return_tensors="pt") for c in chunks]
        return torch.cat([p["pixel_values"] for p in parts]), torch.cat([p["image_grid_thw"] for p in parts])

    held_out = torch.arange(n_train, len(frames))
    held_pixels = pixels_of(held_out)  # every evaluation reads the same held-out quarter

    def loss_on(idx: Any, pixels: tuple[Any, Any] | None = None) -> Any:
        values, grid = pixels_of(idx) if pixels is None else pixels
        visual(values, grid_thw=grid)
        return head.loss(all_cells[idx].reshape(-1, all_cells.shape[-1]), all_held[idx])

    out_cells = all_cells[held_out].reshape(-1, all_cells.shape[-1])
    rows: list[dict[str, float | None]] = [
        {"constant_predictor": constant_loss(out_cells, all_held[held_out], head.pos_weight)}
    ]

    def evaluate(step: int, train_loss: float | None) -> None:
        with torch.no_grad():
            held_out_loss = float(loss_on(held_out, held_pixels))
            cell_logits, held_logits = head.logits(out_cells.shape[0])
        rows.append(
            {
                "vision_step": step,
                "train": train_loss,
                "held_out": held_out_loss,
                "auroc_cells": auroc(cell_logits, out_cells),
                "auroc_held": auroc(held_logits, all_held[held_out]),
            }
        )
        log.info(
            "vision step %d: loss %s, held-out %.4f (constant %.4f), AUROC cells %.3f, held %.3f",
            step,
            "-" if train_loss is None else f"{train_loss:.4f}",
            held_out_loss,
            rows[0]["constant_predictor"],
            rows[-1]["auroc_cells"],
            rows[-1]["auroc_held"],
        )

    evaluate(0, None)
    for step in range(steps):
        loss = loss_on(torch.from_numpy(rng.integers(0, n_train, batch_frames)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
            evaluate(step + 1, float(loss.detach()))
    return rows


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``labels``, pooled over every entry
    (Mann-Whitney U with mid-ranks for ties); NaN when a class is absent. 0.5 = reads nothing."""
    import torch

    s, y = scores.reshape(-1).double(), labels.reshape(-1).bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = torch.argsort(s)
    sorted_s = s[order]
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(s.dtype)
    mid = ends - (counts.to(s.dtype) - 1) / 2  # average rank of each run of ties
    ranks = torch.empty_like(s)
    ranks[order] = mid[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def constant_loss(cells: Any, held: Any, pos_weight: Any = 1.0) -> float:
    """The weighted BCE of the best constant per label (what a head that reads nothing reaches):
    with positives weighted by w, the optimum predicts w*r / (w*r + 1 - r) for label rate r."""
    import torch

    w = torch.as_tensor(pos_weight, dtype=torch.float32)

    def one(y: Any) -> float:
        y = y.reshape(-1, y.shape[-1])
        r = y.mean(0)
        p = (w * r / (w * r + 1 - r)).clamp(1e-4, 1 - 1e-4)
        logit = torch.log(p / (1 - p)).expand_as(y)
        return float(torch.nn.functional.binary_cross_entropy_with_logits(logit, y, pos_weight=w))

    return one(cells) + one(held)
