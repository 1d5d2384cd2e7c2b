"""Which frames of a clip a training (or eval) prompt shows.

* ``uniform``: N frames at the centres of N equal segments (:func:`egovlm.video.uniform_times`).
* ``salient``: N frames chosen by the same keyframe selector the edge buffer runs
  (:mod:`egovlm.keyframes`), over candidate frames decoded at ``CANDIDATE_FPS``. Training on
  what the device's buffer would have kept is the point: the model learns on the input it meets.

The selector also supplies the keyframe reward's salient set for rows without temporal
annotations (:func:`selector_frames`).
"""

from __future__ import annotations

import bisect
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.frames import Frame
from egovlm.video import VideoReader, read_frame_dir, uniform_times

CANDIDATE_FPS = 4.0  # salient mode decodes candidates at this rate (a 3-min clip: 720 frames)
MAX_CANDIDATES = 1024

Timed = tuple[float, np.ndarray]


class SamplingError(RuntimeError):
    """Frames cannot be sampled as asked; the message names the clip."""


def selector_available() -> bool:
    return importlib.util.find_spec("egovlm.keyframes") is not None


def pick_at(frames: Sequence[Timed], times: Sequence[float]) -> list[Timed]:
    """For each time, the frame shown then (the last one at or before it; the first before the start)."""
    stamps = [t for t, _ in frames]
    out = []
    for t in times:
        i = max(bisect.bisect_right(stamps, t + 1e-6) - 1, 0)
        out.append(frames[i])
    return out


def _duration(frames: Sequence[Timed]) -> float:
    if len(frames) < 2:
        return frames[0][0] + 1.0 if frames else 0.0
    step = (frames[-1][0] - frames[0][0]) / (len(frames) - 1)
    return frames[-1][0] + step


def decode_uniform(media: Path, n: int) -> list[Timed]:
    """``n`` uniformly spaced frames of a video file or a frame folder (egovlm.video.read_frame_dir)."""
    if media.is_dir():
        frames = read_frame_dir(media)
        if not frames:
            raise SamplingError(f"frame folder {media} is empty")
        return pick_at(frames, uniform_times(_duration(frames), n))
    reader = VideoReader(media)
    return reader.frames_at(uniform_times(reader.info.duration_s, n))


def decode_candidates(media: Path) -> list[Timed]:
    """Candidate frames for the selector: every frame of a folder, or a video at CANDIDATE_FPS."""
    if media.is_dir():
        return read_frame_dir(media)
    reader = VideoReader(media)
    info = reader.info
    count = min(MAX_CANDIDATES, max(1, round(info.duration_s * CANDIDATE_FPS)))
    picked = reader.frames_at(uniform_times(info.duration_s, count))
    dedup: dict[float, np.ndarray] = {t: img for t, img in picked}  # short clips repeat frames
    return sorted(dedup.items(), key=lambda x: x[0])


def selector_params(params: dict[str, Any] | None, source: str = "data.selector") -> Any:
    """The edge selector's thresholds (egovlm.keyframes.SelectorParams) from a recipe mapping."""
    if not selector_available():
        raise SamplingError(_MISSING)
    from egovlm.keyframes import SelectorParams

    return SelectorParams.from_mapping(params, source)


_MISSING = (
    "salient sampling needs the keyframe selector egovlm.keyframes, which is not in this checkout; "
    "use data.sampling=uniform"
)


def select(frames: Sequence[Timed], k: int, params: dict[str, Any] | None = None) -> list[int]:
    """Positions (0-based, time order) of the k frames the edge selector keeps among ``frames``."""
    if not selector_available():
        raise SamplingError(_MISSING)
    from egovlm.keyframes import select_keyframes

    chosen = select_keyframes(list(frames), k, selector_params(params))
    return sorted(int(c.index) for c in chosen)


def decode_salient(media: Path, n: int, params: dict[str, Any] | None = None) -> list[Timed]:
    candidates = decode_candidates(media)
    if len(candidates) <= n:
        return pick_at(candidates, uniform_times(_duration(candidates), n))
    return [candidates[i] for i in select(candidates, n, params)]


def sample(media: Path, n: int, mode: str, params: dict[str, Any] | None = None) -> list[Timed]:
    """The (timestamp, RGB) frames a prompt shows, in time order."""
    if n < 1:
        raise SamplingError(f"{media}: need at least one frame, got {n}")
    if mode == "uniform":
        return decode_uniform(media, n)
    if mode == "salient":
        return decode_salient(media, n, params)
    raise SamplingError(f"unknown frame sampling {mode!r}; choose uniform or salient")


def selector_frames(frames: Sequence[Frame], k: int, params: dict[str, Any] | None = None) -> list[int]:
    """1-based indices of the k prompt frames the selector rates salient (keyframe-reward fallback);
    empty when the selector is not available or the prompt has no more than k frames."""
    if not selector_available() or len(frames) <= k:
        return []
    return [i + 1 for i in select([(f.timestamp_s, f.image) for f in frames], k, params)]
