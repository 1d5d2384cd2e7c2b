"""Head motion of a head-mounted camera: gaze shifts, slow drift, walking bob, and the blur they cause.

The head path is a list of gaze moves (smooth minimum-jerk turns, quick ones when the target is
far, walks between the table and the counter) planned by the script, plus closed-form drift,
tremor and walking bob. Everything is a function of time alone, so any frame can be rendered
on its own (tests, previews) and the live source can run forever without accumulating state
beyond the moves still ahead.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from egovlm.synth.scene import REF_H, WORLD_H, WORLD_W

View = tuple[float, float, float]  # world x, world y the head points at, zoom


@dataclass(frozen=True)
class GazeMove:
    """One head movement from ``src`` to ``dst`` over [t0, t1]; ``walking`` adds bob and sway."""

    t0: float
    t1: float
    src: View
    dst: View
    walking: bool = False
    quick: bool = False
    target: str = ""  # what the wearer turns to look at (a place name, "window", "around")


@dataclass(frozen=True)
class CameraPose:
    cx: float
    cy: float
    zoom: float
    roll: float  # radians


def min_jerk(u: float) -> float:
    """The minimum-jerk profile 0->1: how heads and hands accelerate and brake."""
    u = min(1.0, max(0.0, u))
    return u * u * u * (10.0 - 15.0 * u + 6.0 * u * u)


def _sines(rng: np.random.Generator, amps: tuple[float, ...], freqs: tuple[float, ...]) -> np.ndarray:
    """Rows of (amplitude, angular frequency, phase) with per-seed jittered frequencies."""
    rows = [
        (a, 2 * math.pi * f * rng.uniform(0.8, 1.25), rng.uniform(0, 2 * math.pi))
        for a, f in zip(amps, freqs, strict=False)
    ]
    return np.array(rows, dtype=np.float64)


def _eval(table: np.ndarray, t: float) -> float:
    return float(np.sum(table[:, 0] * np.sin(table[:, 1] * t + table[:, 2])))


class HeadPath:
    """The camera's pose over time. ``moving=False`` pins a wide static view of the whole room."""

    def __init__(self, start: View, rng: np.random.Generator, moving: bool = True) -> None:
        self.start = start
        self.moving = moving
        self.moves: list[GazeMove] = []
        self._t0s: list[float] = []
        self._dx = _sines(rng, (9.0, 5.0, 2.0), (0.06, 0.17, 0.41))
        self._dy = _sines(rng, (6.0, 3.5, 1.5), (0.05, 0.15, 0.37))
        self._droll = _sines(rng, (0.010, 0.005), (0.07, 0.23))
        self._tremor = _sines(rng, (0.6, 0.4), (4.3, 7.1))
        self._step_hz = rng.uniform(1.7, 2.1)

    def view_at(self, t: float) -> View:
        """Where the gaze plan points at ``t`` (no drift): the planner chains moves from this."""
        i = bisect.bisect_right(self._t0s, t) - 1
        if i < 0:
            return self.start
        m = self.moves[i]
        if t >= m.t1:
            return m.dst
        u = min_jerk((t - m.t0) / (m.t1 - m.t0))
        return tuple(a + (b - a) * u for a, b in zip(m.src, m.dst, strict=False))  # type: ignore[return-value]

    def end_time(self) -> float:
        return self.moves[-1].t1 if self.moves else 0.0

    def add_move(
        self, t0: float, duration: float, dst: View, *, walking: bool = False, target: str = ""
    ) -> GazeMove:
        """Append a move starting at ``t0`` (or when the previous one ends, if later)."""
        t0 = max(t0, self.end_time())
        src = self.view_at(t0)
        dist = math.hypot(dst[0] - src[0], dst[1] - src[1])
        quick = not walking and dist / max(duration, 1e-3) > 600.0
        move = GazeMove(t0, t0 + duration, src, dst, walking, quick, target)
        self.moves.append(move)
        self._t0s.append(t0)
        return move

    def prune(self, before: float) -> None:
        """Forget moves that ended before ``before`` (the live source runs forever)."""
        keep = 0
        while keep < len(self.moves) - 1 and self.moves[keep + 1].t1 < before:
            keep += 1
        if keep:
            self.start = self.moves[keep - 1].dst
            del self.moves[:keep]
            del self._t0s[:keep]

    def walking_weight(self, t: float) -> float:
        i = bisect.bisect_right(self._t0s, t) - 1
        if i < 0 or not self.moves[i].walking or t >= self.moves[i].t1:
            return 0.0
        m = self.moves[i]
        u = (t - m.t0) / (m.t1 - m.t0)
        return min(1.0, 5.0 * u, 5.0 * (1.0 - u))

    def pose(self, t: float) -> CameraPose:
        """The full head pose at ``t``: planned gaze + drift + tremor + walking bob."""
        if not self.moving:
            return CameraPose(WORLD_W / 2, WORLD_H / 2, 0.0, 0.0)  # zoom 0: fit the room (see matrix)
        x, y, zoom = self.view_at(t)
        w = self.walking_weight(t)
        phase = math.pi * self._step_hz * t
        x += _eval(self._dx, t) + _eval(self._tremor, t) + 6.0 * w * math.sin(phase)
        y += _eval(self._dy, t) + _eval(self._tremor, t + 11.0) + 10.0 * w * abs(math.sin(phase)) - 5.0 * w
        roll = _eval(self._droll, t) + 0.02 * w * math.sin(phase)
        return CameraPose(x, y, zoom, roll)


def camera_matrix(pose: CameraPose, size: tuple[int, int]) -> np.ndarray:
    """2x3 matrix mapping world units to output pixels for a frame of ``size`` (w, h)."""
    w, h = size
    base = h / REF_H
    zoom = pose.zoom if pose.zoom > 0 else min(w / (WORLD_W * base), h / (WORLD_H * base))
    s = zoom * base
    c, sn = math.cos(pose.roll) * s, math.sin(pose.roll) * s
    tx = w / 2 - (c * pose.cx - sn * pose.cy)
    ty = h / 2 - (sn * pose.cx + c * pose.cy)
    return np.array([[c, -sn, tx], [sn, c, ty]], dtype=np.float64)


def invert(m: np.ndarray) -> np.ndarray:
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


def blur_extent(
    m_now: np.ndarray, m_prev: np.ndarray, size: tuple[int, int], shutter: float
) -> tuple[float, float]:
    """Pixel smear (dx, dy) of the image centre while the shutter is open (fraction of a frame)."""
    w, h = size
    inv = invert(m_now)
    centre = np.array([w / 2, h / 2, 1.0])
    world = inv @ centre
    before = m_prev @ np.array([world[0], world[1], 1.0])
    return (float(before[0] - w / 2) * shutter, float(before[1] - h / 2) * shutter)
