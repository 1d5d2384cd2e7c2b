"""Which frames of a clip a training (or eval) prompt shows.

* ``uniform``: N frames at the centres of N equal segments (:func:`egovlm.video.uniform_times`).
* ``salient``: N frames chosen by the same keyframe selector the edge buffer runs
  (:mod:`egovlm.keyframes`), over candidate frames decoded at ``CANDIDATE_FPS``. Training on
  what the device's buffer would have kept is the point: the model learns on the input it meets.

Both modes take a row's clip window (``QAItem.start_s`` / ``end_s``): only frames shown inside it
are decoded, so a question cut from a long video (an EgoPlan task up to its observation frame, an
Ego4D narration window) never sees what happens after its end. Timestamps stay in the source video's
timebase, like the rows' ``salient_times``.

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


def _window_times(lo: float, hi: float, n: int) -> list[float]:
    """``n`` uniform times (segment centres) in [lo, hi], in the source video's timebase."""
    return [lo + t for t in uniform_times(hi - lo, n)]


def _clip_window(
    media: Path, length_s: float, start_s: float | None, end_s: float | None
) -> tuple[float, float]:
    """The window actually sampled: [start_s, end_s], its end clamped to the media's length (annotation
    times may round past the last frame). A window that starts at or past the end of the media means
    the row names the wrong video (or the import used the wrong frame rate): an error, never a silent
    fallback to the whole video."""
    lo = 0.0 if start_s is None else float(start_s)
    hi = length_s if end_s is None else min(float(end_s), length_s)
    if lo < 0 or hi <= lo:
        raise SamplingError(
            f"{media}: clip window [start_s={start_s}, end_s={end_s}] is empty within the media's "
            f"{length_s:.3f} s; check the row's start_s/end_s (and the frame rate used at import)"
        )
    return lo, hi


def _frames_in(media: Path, frames: list[Timed], lo: float, hi: float) -> list[Timed]:
    inside = [f for f in frames if lo - 1e-6 <= f[0] <= hi + 1e-6]
    if not inside:
        raise SamplingError(f"{media}: no frame of the folder lies in the clip window [{lo:.3f}, {hi:.3f}] s")
    return inside


def _folder_frames(
    media: Path, start_s: float | None, end_s: float | None
) -> tuple[list[Timed], float, float]:
    """A frame folder's frames inside the window, and the window (folder times are its timebase)."""
    frames = read_frame_dir(media)
    if not frames:
        raise SamplingError(f"frame folder {media} is empty")
    lo, hi = _clip_window(media, _duration(frames), start_s, end_s)
    return _frames_in(media, frames, lo, hi), lo, hi


def decode_uniform(
    media: Path, n: int, start_s: float | None = None, end_s: float | None = None
) -> list[Timed]:
    """``n`` uniformly spaced frames of a video file or a frame folder (egovlm.video.read_frame_dir),
    within [start_s, end_s] when given; each is the frame shown at its time, so none is later than end_s."""
    if media.is_dir():
        frames, lo, hi = _folder_frames(media, start_s, end_s)
        return pick_at(frames, _window_times(lo, hi, n))
    reader = VideoReader(media)
    lo, hi = _clip_window(media, reader.info.duration_s, start_s, end_s)
    return reader.frames_at(_window_times(lo, hi, n))


def decode_candidates(media: Path, start_s: float | None = None, end_s: float | None = None) -> list[Timed]:
    """Candidate frames for the selector within the window: every frame of a folder, or a video at
    CANDIDATE_FPS."""
    if media.is_dir():
        return _folder_frames(media, start_s, end_s)[0]
    reader = VideoReader(media)
    lo, hi = _clip_window(media, reader.info.duration_s, start_s, end_s)
    count = min(MAX_CANDIDATES, max(1, round((hi - lo) * CANDIDATE_FPS)))
    picked = reader.frames_at(_window_times(lo, hi, count))
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


def decode_salient(
    media: Path,
    n: int,
    params: dict[str, Any] | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
) -> list[Timed]:
    candidates = decode_candidates(media, start_s, end_s)
    if len(candidates) <= n:  # too few to select from: spread n picks over the window
        lo = 0.0 if start_s is None else float(start_s)
        hi = _duration(candidates) if end_s is None else min(float(end_s), _duration(candidates))
        return pick_at(candidates, _window_times(lo, hi, n))
    return [candidates[i] for i in select(candidates, n, params)]


def sample(
    media: Path,
    n: int,
    mode: str,
    params: dict[str, Any] | None = None,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
) -> list[Timed]:
    """The (timestamp, RGB) frames a prompt shows, in time order, taken only from the clip window
    [start_s, end_s] of the source (None: its start / end). Timestamps stay in the source's timebase."""
    if n < 1:
        raise SamplingError(f"{media}: need at least one frame, got {n}")
    if mode == "uniform":
        return decode_uniform(media, n, start_s, end_s)
    if mode == "salient":
        return decode_salient(media, n, params, start_s, end_s)
    raise SamplingError(f"unknown frame sampling {mode!r}; choose uniform or salient")


def selector_frames(frames: Sequence[Frame], k: int, params: dict[str, Any] | None = None) -> list[int]:
    """1-based indices of the k prompt frames the selector rates salient (keyframe-reward fallback);
    empty when the selector is not available or the prompt has no more than k frames."""
    if not selector_available() or len(frames) <= k:
        return []
    return [i + 1 for i in select([(f.timestamp_s, f.image) for f in frames], k, params)]
