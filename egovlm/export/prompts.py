"""Prompts for calibration and parity: frame sets + questions, rendered through the prompt contract.

Two sources:
- a QA JSONL in the project schema (EgoSynth's ``qa.jsonl`` from ``egovlm data synth``, or any imported
  dataset): K frames sampled uniformly from each item's video or frame folder;
- generated frames (no data needed): a table-top scene from a head-mounted camera's point of view
  (floor/table/wall bands, a few coloured objects, a skin-toned hand blob, small head motion, a little
  sensor noise), deterministic per seed. They are NOT EgoSynth; they exist so an export can calibrate
  and check parity with no dataset at all, and they exercise the real vision tower with image-like
  statistics (smooth regions, edges) rather than white noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egovlm.frames import Frame, frame_set, resize_for_model

QUESTIONS = (
    ("What did I pick up first?", {"A": "the cup", "B": "the book", "C": "the phone", "D": "the apple"}),
    ("Where did the red object end up?", {"A": "on the shelf", "B": "on the table", "C": "in the sink"}),
    (
        "Which object was never touched?",
        {"A": "the bowl", "B": "the keys", "C": "the bottle", "D": "the box"},
    ),
    ("What was the wearer doing overall?", {"A": "cooking", "B": "tidying", "C": "reading", "D": "packing"}),
    ("How many times did I put something down?", {"A": "once", "B": "twice", "C": "three times"}),
)


@dataclass
class Prompt:
    frames: list[Frame]
    question: str
    options: dict[str, str] | None
    answer: str | None = None
    source: str = "generated"


def generated_frame(rng: np.random.Generator, size: tuple[int, int], t: float) -> np.ndarray:
    """One synthetic egocentric keyframe of ``size`` (w, h), uint8 RGB."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = h * (0.35 + 0.05 * np.sin(t))  # head pitch
    img = np.empty((h, w, 3), dtype=np.float32)
    wall = rng.uniform(150, 220, 3)
    table = rng.uniform(80, 160, 3)
    img[:] = np.where((yy < horizon)[..., None], wall, table)
    img += (yy / h)[..., None] * rng.uniform(-30, 30, 3)  # lighting gradient
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.45, 0.9) * h
        rx, ry = rng.uniform(0.04, 0.12) * w, rng.uniform(0.04, 0.12) * h
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        if rng.random() < 0.5:
            inside = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
        img[inside] = rng.uniform(0, 255, 3)
    hx, hy = w * (0.55 + 0.2 * np.sin(0.7 * t)), h * 0.95
    hand = ((xx - hx) / (0.14 * w)) ** 2 + ((yy - hy) / (0.22 * h)) ** 2 < 1
    img[hand] = np.array([224, 172, 140]) * rng.uniform(0.8, 1.1)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generated_prompts(
    n: int, keyframe_size: tuple[int, int], frames_per_prompt: int = 2, seed: int = 0
) -> list[Prompt]:
    """``n`` prompts of generated frames, cycling through :data:`QUESTIONS`."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        times = sorted(float(t) for t in rng.uniform(0, 60, frames_per_prompt))
        images = [generated_frame(rng, keyframe_size, t) for t in times]
        question, options = QUESTIONS[i % len(QUESTIONS)]
        prompts.append(Prompt(frame_set(images, times), question, dict(options)))
    return prompts


def dataset_prompts(
    jsonl: Path, n: int, keyframe_size: tuple[int, int], frames_per_prompt: int = 2
) -> list[Prompt]:
    """Up to ``n`` prompts from a QA JSONL: frames sampled uniformly from each item's media."""
    from egovlm.schema import iter_jsonl
    from egovlm.video import VideoReader, read_frame_dir, uniform_times

    prompts: list[Prompt] = []
    base = jsonl.parent
    for item in iter_jsonl(jsonl):
        if len(prompts) >= n:
            break
        media = item.media_path(base)
        if item.video:
            reader = VideoReader(media)
            shots = reader.frames_at(uniform_times(reader.info.duration_s, frames_per_prompt))
        else:
            shots = _sample(read_frame_dir(media), frames_per_prompt)
        images = [resize_for_model(img, keyframe_size) for _, img in shots]
        frames = frame_set(images, [t for t, _ in shots])
        options = dict(item.options) if item.options is not None else None  # None: an open question
        prompts.append(Prompt(frames, item.question, options, item.answer, item.source))
    if not prompts:
        raise ValueError(f"{jsonl}: no QA items")
    return prompts


def _sample(shots: Sequence[tuple[float, np.ndarray]], k: int) -> list[tuple[float, np.ndarray]]:
    idx = np.linspace(0, len(shots) - 1, num=min(k, len(shots))).round().astype(int)
    return [shots[i] for i in idx]
