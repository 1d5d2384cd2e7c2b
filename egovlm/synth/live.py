"""EgoSynth as an endless real-time camera: the generator behind the edge runtime's ``synth://``.

:class:`LiveSynth` plans the same scripts as the dataset generator (activities, two hands, head
turns, walks, idle stretches), a chunk ahead of the frame being rendered, switching to another
activity whenever the current one has nothing left to do, and forgetting history it no longer
needs, so memory stays flat however long it runs.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from egovlm.synth import seeds
from egovlm.synth.renderer import RenderConfig, Renderer
from egovlm.synth.script import Event, Planner

log = logging.getLogger("egovlm.synth.live")

_PLAN_AHEAD_S = 20.0  # script horizon kept ahead of the frame being rendered
_KEEP_BEHIND_S = 5.0  # history kept for the renderer (steps still finishing, head moves)


class LiveFrame(NamedTuple):
    """One frame: unpacks as ``timestamp_s, frame, events``."""

    timestamp_s: float  # nominal capture time, frame_index / fps, from 0
    frame: np.ndarray  # HxWx3 uint8 RGB, a fresh array the caller may keep
    events: tuple[Event, ...]  # ground-truth events whose moment is this frame (usually empty)


class LiveSynth:
    """An endless synthetic head-mounted camera.

    API::

        src = LiveSynth(size=(640, 480), fps=30.0, seed=0, realtime=True)
        for timestamp_s, frame, events in src:   # or: item = src.read()
            ...                                   # frame: HxWx3 uint8 RGB; events: tuple[Event, ...]
        src.stop()                                # from any thread: iteration ends, read() returns None

    - ``realtime=True`` paces frames to the wall clock (frame ``i`` is returned no earlier than
      ``i / fps`` seconds after the first ``read``); if the consumer or the renderer falls behind,
      frames are not skipped: ``late_frames`` counts how many were returned after their time.
      ``realtime=False`` returns frames as fast as they render.
    - Timestamps are nominal (``index / fps``), like a camera's presentation timestamps.
    - ``events`` carries the ground truth (pick-ups and put-downs, with object, place and hand)
      on the frame where it happens; each is also logged on the ``egovlm.synth.live`` logger and
      kept in ``recent_events`` (the last 1000).
    - Thread use: drive ``read()`` or the iterator from one producer thread (e.g. a GStreamer
      appsrc feeder); ``stop()``, ``recent_events`` and ``frame_index`` are safe from others.
      ``stop()`` also wakes a producer sleeping for real-time pacing.
    - Deterministic: the same (size, fps, seed) gives the same frames and events.
    """

    def __init__(
        self,
        size: tuple[int, int] = (640, 480),
        fps: float = 30.0,
        seed: int = 0,
        *,
        realtime: bool = True,
        head_motion: bool = True,
        noise: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        seq = seeds.clip_sequence("live", seed, 0)
        self.size = (int(size[0]), int(size[1]))
        self.fps = float(fps)
        self.realtime = realtime
        self._planner = Planner(
            seeds.rng(seq, seeds.SCRIPT),
            self.fps,
            head_motion=head_motion,
            head_rng=seeds.rng(seq, seeds.HEAD),
        )
        self._planner.plan_until(_PLAN_AHEAD_S)
        config = RenderConfig(
            self.size, head_motion=head_motion, noise=noise, exposure=noise, blur=head_motion
        )
        self._renderer = Renderer(self._planner.script, config, seeds.child(seq, seeds.RENDER))
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._index = 0
        self._t_start: float | None = None
        self._recent: collections.deque[Event] = collections.deque(maxlen=1000)
        self._emitted = -1  # highest event index already delivered
        self.late_frames = 0

    @property
    def frame_index(self) -> int:
        """Index of the next frame to be returned."""
        with self._lock:
            return self._index

    @property
    def recent_events(self) -> list[Event]:
        with self._lock:
            return list(self._recent)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def _events_at(self, frame: int) -> tuple[Event, ...]:
        out = [e for e in self._planner.script.events if e.frame == frame and e.index > self._emitted]
        for e in out:
            log.info("t=%.3f frame=%d %s %s %s (%s hand)", e.t, e.frame, e.action, e.object, e.place, e.hand)
        if out:
            self._emitted = max(e.index for e in out)
        return tuple(out)

    def _extend(self, t: float) -> None:
        planner = self._planner
        if planner.t < t + _PLAN_AHEAD_S / 2:
            planner.script.prune(t - _KEEP_BEHIND_S)
            planner.plan_until(t + _PLAN_AHEAD_S)

    def read(self) -> LiveFrame | None:
        """The next frame (waiting for its time in real-time mode); ``None`` once stopped."""
        if self._stop.is_set():
            return None
        i = self._index
        t = i / self.fps
        self._extend(t)
        frame = self._renderer.render(t, i)
        events = self._events_at(i)
        if self.realtime:
            if self._t_start is None:
                self._t_start = self._clock()
            wait = self._t_start + t - self._clock()
            if wait > 0:
                if self._stop.wait(wait):
                    return None
            elif wait < -0.5 / self.fps:
                self.late_frames += 1
        with self._lock:
            self._index = i + 1
            self._recent.extend(events)
        return LiveFrame(t, frame, events)

    def __iter__(self) -> Iterator[LiveFrame]:
        while True:
            item = self.read()
            if item is None:
                return
            yield item
