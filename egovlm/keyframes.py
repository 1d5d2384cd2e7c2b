"""Salient-frame (keyframe) selection, shared by the edge buffer and the training stage.

Every frame gets a cheap descriptor (:func:`egovlm.descriptor.describe`: a 24x32 luma thumbnail
and a Laplacian-variance sharpness). A frame becomes a keyframe when

* it is **novel**: its thumbnail differs from the last keyframe by at least ``novelty`` luma
  levels (mean absolute difference, MAD), and from every keyframe still held (the *bank*: the
  edge buffer's contents, or the selector's own memory offline) by at least ``bank_novelty``,
  so a view the buffer already holds is not added twice;
* it is **sharp enough**: its sharpness is at least ``blur_ratio`` x the median sharpness of the
  last ``blur_window`` frames (relative, so it adapts to the scene and the camera), and at
  least ``min_sharpness`` (an absolute floor that rejects flat or black frames);
* the **interval** bounds hold: never two keyframes closer than ``min_interval_s``; after
  ``max_interval_s`` without one, the next sharp frame is taken even in a static scene (and
  after a further ``blur_grace_s``, even a blurry one), so the buffer always covers time.

:class:`KeyframeSelector` is the online form (one frame at a time, O(bank) per frame).
:func:`select_keyframes` is the offline form for a whole clip with a budget of ``k`` frames:
it runs the same online rule, then trims with the same redundancy rule the edge buffer evicts
with (:func:`redundancy_victim`), or fills the largest time gaps with their sharpest frames.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from egovlm.descriptor import DEFAULT_GRID, Descriptor, describe, mean_abs_diff

_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_STRICT)
class SelectorParams:
    """Keyframe selection thresholds. MAD values are in luma levels (0-255) on the thumbnail."""

    novelty: float = Field(default=8.0, ge=0)
    bank_novelty: float = Field(default=5.0, ge=0)
    min_interval_s: float = Field(default=0.5, ge=0)
    max_interval_s: float = Field(default=8.0, gt=0)
    blur_ratio: float = Field(default=0.5, ge=0, le=1)
    blur_window: int = Field(default=30, ge=1)
    min_sharpness: float = Field(default=2.0, ge=0)
    blur_grace_s: float = Field(default=2.0, ge=0)
    bank_size: int = Field(default=32, ge=1)  # offline memory when no external bank is given

    def __post_init__(self) -> None:
        if self.max_interval_s < self.min_interval_s:
            raise ValueError(
                f"max_interval_s ({self.max_interval_s}) must be >= min_interval_s ({self.min_interval_s})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, source: str = "selector") -> SelectorParams:
        """Validate a mapping (e.g. a YAML section). Errors name ``source`` and the field."""
        try:
            return cls(**(data or {}))
        except ValidationError as e:
            raise ValueError(f"{source}: {_first_error(e)}") from None
        except TypeError as e:  # not a mapping of keywords
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = None) -> SelectorParams:
        """Load from a YAML file, optionally from one top-level ``section`` of it."""
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        where = str(path)
        if section is not None:
            data = data.get(section, {}) if isinstance(data, dict) else None
            where = f"{path}: {section}"
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of selector parameters")
        return cls.from_mapping(data, where)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"field {field!r}: {err['msg']}"


@dataclass(frozen=True)
class Decision:
    """What the selector decided about one frame, and why (for logs, the UI and tests)."""

    keyframe: bool
    reason: str  # first | novel | forced | too_soon | not_novel | in_bank | blurry
    t: float
    sharpness: float
    sharp_ref: float  # median recent sharpness the blur test compared against
    mad_last: float  # MAD to the last keyframe (inf for the first frame)
    mad_bank: float  # smallest MAD to the bank (inf when the bank is empty)


class KeyframeSelector:
    """Online keyframe selection. Not thread-safe: one ingest thread calls :meth:`offer`."""

    def __init__(self, params: SelectorParams | None = None, grid: tuple[int, int] = DEFAULT_GRID) -> None:
        self.params = params or SelectorParams()
        self.grid = grid
        self.reset()

    def reset(self) -> None:
        self._recent_sharpness: deque[float] = deque(maxlen=self.params.blur_window)
        self._memory: deque[np.ndarray] = deque(maxlen=self.params.bank_size)
        self._last_thumb: np.ndarray | None = None
        self._last_t: float | None = None
        self._prev_t: float | None = None

    @property
    def last_keyframe_t(self) -> float | None:
        return self._last_t

    def offer(
        self,
        t: float,
        frame: np.ndarray | None = None,
        *,
        descriptor: Descriptor | None = None,
        bank: np.ndarray | None = None,
    ) -> Decision:
        """Decide whether the frame at ``t`` seconds is a keyframe.

        Give the RGB ``frame`` or its precomputed ``descriptor``. ``bank`` (n x gh x gw) is the
        thumbnails of the keyframes currently held (the edge buffer's); without it the selector
        compares against its own memory of the last ``bank_size`` keyframes.
        """
        if descriptor is None:
            if frame is None:
                raise ValueError(f"frame at t={t}: give the RGB frame or its descriptor")
            descriptor = describe(frame, self.grid)
        if self._prev_t is not None and t < self._prev_t:
            raise ValueError(f"frame timestamps must not go backwards: t={t} after t={self._prev_t}")
        self._prev_t = t
        decision = self._decide(t, descriptor, bank)
        self._recent_sharpness.append(descriptor.sharpness)
        if decision.keyframe:
            self._last_thumb = descriptor.thumb
            self._last_t = t
            self._memory.append(descriptor.thumb)
        return decision

    def _decide(self, t: float, d: Descriptor, bank: np.ndarray | None) -> Decision:
        p = self.params
        ref = float(np.median(self._recent_sharpness)) if self._recent_sharpness else d.sharpness
        mad_last = (
            float(mean_abs_diff(d.thumb, self._last_thumb)[0]) if self._last_thumb is not None else np.inf
        )
        if bank is None:
            bank = np.stack(self._memory) if self._memory else None
        mad_bank = float(mean_abs_diff(d.thumb, bank).min()) if bank is not None and len(bank) else np.inf

        def out(keyframe: bool, reason: str) -> Decision:
            return Decision(keyframe, reason, t, d.sharpness, ref, mad_last, mad_bank)

        sharp = d.sharpness >= max(p.min_sharpness, p.blur_ratio * ref)
        if self._last_t is None:
            return out(sharp, "first" if sharp else "blurry")
        since = t - self._last_t
        if since < p.min_interval_s:
            return out(False, "too_soon")
        if since >= p.max_interval_s:
            # A static scene still gets a keyframe now and then; a blurry one only when overdue.
            if sharp or since >= p.max_interval_s + p.blur_grace_s:
                return out(True, "forced")
            return out(False, "blurry")
        if mad_last < p.novelty:
            return out(False, "not_novel")
        if mad_bank < p.bank_novelty:
            return out(False, "in_bank")
        return out(sharp, "novel" if sharp else "blurry")


def pairwise_mad(thumbs: np.ndarray) -> np.ndarray:
    """n x n matrix of thumbnail MADs (diagonal = inf), with the native kernel row by row."""
    n = len(thumbs)
    out = np.full((n, n), np.inf, dtype=np.float64)
    for i in range(n - 1):
        out[i, i + 1 :] = mean_abs_diff(thumbs[i], thumbs[i + 1 :])
        out[i + 1 :, i] = out[i, i + 1 :]
    return out


# Keyframes taken because something changed outrank those taken for coverage (forced, fill,
# manual) when two of them show the same view: the change's moment is what questions ask about.
CHANGE_REASONS = frozenset({"first", "novel"})


def reason_priority(reason: str) -> int:
    return 1 if reason in CHANGE_REASONS else 0


def redundancy_victim(
    thumbs: np.ndarray,
    sharpness: Sequence[float],
    times: Sequence[float],
    sharp_tie: float = 0.2,
    priority: Sequence[int] | None = None,
) -> int:
    """Which keyframe to drop when over budget. Of the most similar pair (smallest thumbnail
    MAD): the clearly less sharp one; if their sharpness is within ``sharp_tie`` (relative), the
    one of lower ``priority`` (see :func:`reason_priority`); then the older one (recency wins).
    Returns an index into the inputs."""
    if len(thumbs) < 2:
        raise ValueError("redundancy eviction needs at least two keyframes")
    mad = pairwise_mad(np.asarray(thumbs, dtype=np.float32))
    i, j = divmod(int(np.argmin(mad)), len(mad))
    si, sj = float(sharpness[i]), float(sharpness[j])
    if abs(si - sj) > sharp_tie * max(si, sj, 1e-12):
        return i if si < sj else j
    if priority is not None and priority[i] != priority[j]:
        return i if priority[i] < priority[j] else j
    return i if times[i] < times[j] or (times[i] == times[j] and i < j) else j


@dataclass(frozen=True)
class Chosen:
    """A keyframe picked from a clip: its position in the input sequence and its time."""

    index: int
    t: float
    reason: str


def select_keyframes(
    frames: Iterable[tuple[float, np.ndarray]],
    k: int | None = None,
    params: SelectorParams | None = None,
    grid: tuple[int, int] = DEFAULT_GRID,
) -> list[Chosen]:
    """Pick up to ``k`` salient frames of a clip given as ``(t, rgb)`` pairs in time order.

    The online rule proposes candidates; over budget, the redundancy rule (the edge buffer's)
    drops the most similar, least sharp (then coverage-only) ones; under budget, the sharpest
    frame of the middle of the largest time gap is added until ``k`` are chosen (so a short or
    static clip still yields ``k`` frames, spread in time). ``k=None`` returns the online rule's
    picks unchanged. Returns the choices in time order.
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    selector = KeyframeSelector(params, grid)
    times: list[float] = []
    thumbs: list[np.ndarray] = []
    sharp: list[float] = []
    picked: list[int] = []
    reasons: dict[int, str] = {}
    for i, (t, rgb) in enumerate(frames):
        d = describe(rgb, grid)
        decision = selector.offer(float(t), descriptor=d)
        times.append(float(t))
        thumbs.append(d.thumb)
        sharp.append(d.sharpness)
        if decision.keyframe:
            picked.append(i)
            reasons[i] = decision.reason
    if not times:
        return []
    if k is not None:
        picked = _trim(picked, np.stack(thumbs), sharp, times, k, reasons)
        picked = _fill(picked, sharp, times, k, reasons)
    return [Chosen(i, times[i], reasons[i]) for i in sorted(picked)]


def _trim(
    picked: list[int],
    thumbs: np.ndarray,
    sharp: list[float],
    times: list[float],
    k: int,
    reasons: dict[int, str],
) -> list[int]:
    picked = list(picked)
    while len(picked) > k:
        v = redundancy_victim(
            thumbs[picked],
            [sharp[i] for i in picked],
            [times[i] for i in picked],
            priority=[reason_priority(reasons[i]) for i in picked],
        )
        del picked[v]
    return picked


def _fill(
    picked: list[int], sharp: list[float], times: list[float], k: int, reasons: dict[int, str]
) -> list[int]:
    chosen = set(picked)
    n = len(times)
    while len(chosen) < min(k, n):
        # Gaps between consecutive choices; a gap at a clip end counts double, since uniform
        # sampling would leave only half a gap there.
        bounds = [-1, *sorted(chosen), n]
        gaps = []
        for a, b in itertools.pairwise(bounds):
            if b - a > 1:
                ta, tb = times[max(a, 0)], times[min(b, n - 1)]
                weight = 2.0 if a < 0 or b >= n else 1.0
                gaps.append((weight * (tb - ta), b - a, a, b))
        _, _, a, b = max(gaps)
        inner = list(range(a + 1, b))
        quarter = len(inner) // 4
        middle = inner[quarter : len(inner) - quarter] or inner
        best = max(middle, key=lambda i: sharp[i])
        chosen.add(best)
        reasons[best] = "fill"
    return sorted(chosen)
