"""The rolling keyframe buffer: the last minutes of the camera, in at most K frames.

Keyframes come from :class:`egovlm.keyframes.KeyframeSelector`. The buffer holds at most
``capacity`` of them and none older than ``horizon_s`` before the newest frame seen. Over
capacity it evicts by **redundancy** (:func:`egovlm.keyframes.redundancy_victim`: of the two
most similar keyframes, the less sharp; on a tie, one kept only for coverage, then the older),
not FIFO, so a long static stretch does not push out the one frame where something happened.

Thread-safe: the ingest thread adds, the engine's worker and the HTTP server read. Every change
bumps :attr:`KeyframeBuffer.version`; :meth:`KeyframeBuffer.snapshot` returns an immutable,
time-ordered tuple of keyframes with the version it belongs to. Keyframes carry no prompt index:
the contract's 1..N indices are assigned when a prompt is built (:func:`keyframe_frames`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from egovlm.descriptor import Descriptor
from egovlm.frames import Frame
from egovlm.keyframes import reason_priority, redundancy_victim


@dataclass(frozen=True, eq=False)
class Keyframe:
    """One buffered keyframe. ``id`` is unique for the buffer's lifetime (cache key for the
    engine's vision features); ``image`` is the model-size RGB frame, read-only; ``wall``: the
    ``time.monotonic()`` at which it was taken, what the retention limit counts from (stream time
    stops when the camera does; the wall clock does not)."""

    id: int
    t: float
    image: np.ndarray
    thumb: np.ndarray
    sharpness: float
    reason: str = ""
    wall: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        return (
            f"Keyframe(id={self.id}, t={self.t:.2f}, sharpness={self.sharpness:.1f}, reason={self.reason!r})"
        )


@dataclass(frozen=True)
class BufferSnapshot:
    """The buffer at one version: keyframes in time order."""

    version: int
    keyframes: tuple[Keyframe, ...]

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(k.id for k in self.keyframes)

    def frames(self) -> list[Frame]:
        """The contract's frame set: indices 1..N in time order."""
        return keyframe_frames(self.keyframes)


def keyframe_frames(keyframes: Sequence[Keyframe]) -> list[Frame]:
    """The contract's frame set for keyframes in time order: prompt indices 1..N, the stream's
    timestamps. Every prompt (cached prefix, from scratch, every backend) is built from this."""
    return [Frame(index=i + 1, timestamp_s=k.t, image=k.image) for i, k in enumerate(keyframes)]


@dataclass
class BufferStats:
    added: int = 0
    evicted_redundant: int = 0
    evicted_age: int = 0
    rejected_redundant: int = 0  # a new keyframe that was itself the redundancy victim
    rejected_age: int = 0  # a new keyframe already older than the horizon


@dataclass
class _State:
    keyframes: list[Keyframe] = field(default_factory=list)
    version: int = 0
    newest_t: float = float("-inf")


class KeyframeBuffer:
    """At most ``capacity`` keyframes, none older than ``horizon_s`` (None: no age limit)."""

    def __init__(self, capacity: int, horizon_s: float | None = None, sharp_tie: float = 0.2) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        if horizon_s is not None and horizon_s <= 0:
            raise ValueError(f"buffer horizon_s must be > 0, got {horizon_s}")
        self.capacity = capacity
        self.horizon_s = horizon_s
        self.sharp_tie = sharp_tie
        self.stats = BufferStats()
        self._s = _State()
        self._ids = itertools.count(1)
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._s.keyframes)

    @property
    def version(self) -> int:
        with self._cond:
            return self._s.version

    def snapshot(self) -> BufferSnapshot:
        with self._cond:
            return BufferSnapshot(self._s.version, tuple(self._s.keyframes))

    def thumbs(self) -> np.ndarray | None:
        """Thumbnails of the held keyframes (n x gh x gw), the selector's novelty bank."""
        with self._cond:
            if not self._s.keyframes:
                return None
            return np.stack([k.thumb for k in self._s.keyframes])

    def add(self, t: float, image: np.ndarray, descriptor: Descriptor, reason: str = "") -> Keyframe | None:
        """Insert a keyframe, then evict by age and redundancy. Returns the new keyframe, or
        None when it was itself the most redundant one (the buffer is then unchanged)."""
        image = np.array(image, dtype=np.uint8, copy=True)
        image.flags.writeable = False
        thumb = np.array(descriptor.thumb, dtype=np.float32, copy=True)
        thumb.flags.writeable = False
        with self._cond:
            kf = Keyframe(next(self._ids), float(t), image, thumb, float(descriptor.sharpness), reason)
            kfs = [*self._s.keyframes, kf]
            kfs.sort(key=lambda k: k.t)
            self._s.newest_t = max(self._s.newest_t, kf.t)
            aged = self._expired(kfs)
            kfs = [k for k in kfs if k not in aged]
            self.stats.evicted_age += sum(k is not kf for k in aged)
            self.stats.rejected_age += any(k is kf for k in aged)
            while len(kfs) > self.capacity:
                v = redundancy_victim(
                    np.stack([k.thumb for k in kfs]),
                    [k.sharpness for k in kfs],
                    [k.t for k in kfs],
                    self.sharp_tie,
                    [reason_priority(k.reason) for k in kfs],
                )
                victim = kfs.pop(v)
                if victim is kf:
                    self.stats.rejected_redundant += 1
                else:
                    self.stats.evicted_redundant += 1
            kept = any(k is kf for k in kfs)
            if kept:
                self.stats.added += 1
            if kept or len(kfs) != len(self._s.keyframes):
                self._commit(kfs)
            return kf if kept else None

    def expire(self, now_t: float) -> int:
        """Drop keyframes older than the horizon before ``now_t`` (stream time). Returns how many."""
        with self._cond:
            self._s.newest_t = max(self._s.newest_t, float(now_t))
            aged = self._expired(self._s.keyframes)
            if aged:
                self.stats.evicted_age += len(aged)
                self._commit([k for k in self._s.keyframes if k not in aged])
            return len(aged)

    def expire_older_than(self, max_age_s: float, now: float | None = None) -> int:
        """Drop keyframes taken more than ``max_age_s`` wall-clock seconds before ``now``
        (``time.monotonic()``): the privacy retention limit, enforced whether or not frames still
        arrive. Returns how many."""
        now = time.monotonic() if now is None else now
        with self._cond:
            old = [k for k in self._s.keyframes if now - k.wall > max_age_s]
            if old:
                self.stats.evicted_age += len(old)
                self._commit([k for k in self._s.keyframes if k not in old])
            return len(old)

    def clear(self) -> int:
        """Drop every keyframe and forget the stream's time (forget: a later stream may start at
        t=0 again). Always bumps the version, so a state built before it is recognisably older.
        Returns the new version."""
        with self._cond:
            self._s.newest_t = float("-inf")
            self._commit([])
            return self._s.version

    def wait_for_change(self, after_version: int, timeout: float | None = None) -> int:
        """Block until the version differs from ``after_version`` (or timeout); return the version."""
        with self._cond:
            self._cond.wait_for(lambda: self._s.version != after_version, timeout)
            return self._s.version

    def wake(self) -> None:
        """Wake every :meth:`wait_for_change` waiter (they re-check and time out as usual)."""
        with self._cond:
            self._cond.notify_all()

    def _expired(self, kfs: list[Keyframe]) -> list[Keyframe]:
        if self.horizon_s is None:
            return []
        cutoff = self._s.newest_t - self.horizon_s
        return [k for k in kfs if k.t < cutoff]

    def _commit(self, kfs: list[Keyframe]) -> None:
        self._s.keyframes = kfs
        self._s.version += 1
        self._cond.notify_all()
