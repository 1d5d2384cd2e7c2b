"""Render a :class:`~egovlm.synth.script.Script` into head-camera frames (RGB uint8).

Per frame: warp the cached world layer (room + resting objects, redrawn only when an object is
picked up or put down) through the head pose, draw the hands and whatever they hold in camera
space, smear by head motion during fast turns, then apply the sensor (exposure, vignette, noise).
Every frame is a pure function of its time, so frames can be rendered in any order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from egovlm.synth.camera import CameraPose, blur_extent, camera_matrix, invert, min_jerk
from egovlm.synth.hands import GRIP_OFFSET, REST, SHOULDER, HandStyle, draw_hand
from egovlm.synth.objects import compose, draw_shapes, similarity
from egovlm.synth.scene import REF_H, WORLD_H, WORLD_W, draw_resting_object, render_background
from egovlm.synth.script import HANDS, Script, Step
from egovlm.synth.seeds import child
from egovlm.synth.sensor import Sensor

Vec = tuple[float, float]


@dataclass(frozen=True)
class RenderConfig:
    """What to render. Tests switch effects off to compare pixels exactly.

    ``head_motion=False`` pins a static wide view of the whole room (no drift, turns or bob)."""

    size: tuple[int, int] = (640, 480)
    head_motion: bool = True
    noise: bool = True
    exposure: bool = True
    blur: bool = True
    shutter: float = 0.5  # fraction of the frame time the shutter is open (motion blur length)


@dataclass(frozen=True)
class HandState:
    palm: Vec
    shoulder: Vec
    curl: float
    held: int | None
    held_scale: float
    visible: bool


def _lerp(a: Vec, b: Vec, u: float) -> Vec:
    return (a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u)


def _unit(a: Vec, b: Vec) -> Vec:
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy) or 1.0
    return (dx / n, dy / n)


class Renderer:
    """Frames of one script. ``render(t)`` is the whole API the writer and the live source use."""

    def __init__(self, script: Script, config: RenderConfig, seed_seq: np.random.SeedSequence) -> None:
        w, h = config.size
        if w < 64 or h < 48:
            raise ValueError(f"frame size {w}x{h} is too small (at least 64x48)")
        self.script = script
        self.config = config
        self.size = (w, h)
        bg_seq, hand_seq, sensor_seq = (child(seed_seq, k) for k in range(3))
        base = h / REF_H
        if config.head_motion:
            self.world_scale = base
        else:
            self.world_scale = base * min(w / (WORLD_W * base), h / (WORLD_H * base))
        self.background = render_background(np.random.default_rng(bg_seq), self.world_scale)
        self.style = HandStyle.sample(np.random.default_rng(hand_seq))
        self.sensor = Sensor(config.size, sensor_seq, noise=config.noise, exposure=config.exposure)
        self._layer_key: tuple[tuple[int, float, float], ...] | None = None
        self._layer = self.background
        self._to_world_px = np.diag([self.world_scale, self.world_scale, 1.0])

    # -- geometry --------------------------------------------------------------------------------
    def pose(self, t: float) -> CameraPose:
        return self.script.head.pose(t)

    def matrix(self, t: float) -> np.ndarray:
        """World units -> output pixels at time ``t``."""
        return camera_matrix(self.pose(t), self.size)

    def _cam_point(self, inv: np.ndarray, uv: Vec) -> Vec:
        w, h = self.size
        p = inv @ np.array([uv[0] * w, uv[1] * h, 1.0])
        return (float(p[0]), float(p[1]))

    def hand_state(self, hand: str, t: float, m: np.ndarray) -> HandState:
        """Where ``hand`` is at ``t`` (world units): follows the script's steps for that hand."""
        inv = invert(m)
        shoulder = self._cam_point(inv, SHOULDER[hand])
        rest = self._cam_point(inv, REST[hand])
        cur: Step | None = None
        for s in self.script.steps:
            if s.hand == hand and s.t_move <= t and (cur is None or s.t_move >= cur.t_move):
                cur = s
        if cur is None:
            return HandState(rest, shoulder, 0.3, None, 1.0, False)
        hold = self._cam_point(inv, cur.hold)

        def grip(pos: Vec) -> Vec:
            d = _unit(shoulder, pos)
            return (pos[0] - d[0] * GRIP_OFFSET, pos[1] - d[1] * GRIP_OFFSET)

        def ph(a: float, b: float) -> float:
            return min_jerk((t - a) / max(b - a, 1e-6))

        if t >= cur.t_end:
            if cur.kind == "pick":
                return HandState(hold, shoulder, 1.0, cur.obj, cur.hold_scale, True)
            return HandState(rest, shoulder, 0.3, None, 1.0, False)
        g = grip(cur.pos)
        if cur.kind == "pick":
            if t < cur.t_contact:
                u = ph(cur.t_move, cur.t_contact)
                return HandState(_lerp(rest, g, u), shoulder, 0.3 * (1 - u), None, 1.0, True)
            if t < cur.t_event:
                return HandState(g, shoulder, ph(cur.t_contact, cur.t_event), None, 1.0, True)
            u = ph(cur.t_event, cur.t_end)
            return HandState(
                _lerp(g, hold, u), shoulder, 1.0, cur.obj, 1.0 + (cur.hold_scale - 1.0) * u, True
            )
        if t < cur.t_contact:
            u = ph(cur.t_move, cur.t_contact)
            return HandState(
                _lerp(hold, g, u), shoulder, 1.0, cur.obj, cur.hold_scale + (1.0 - cur.hold_scale) * u, True
            )
        if t < cur.t_event:
            return HandState(g, shoulder, 1.0, cur.obj, 1.0, True)
        if t < cur.t_settle:
            return HandState(g, shoulder, 1.0 - 0.9 * ph(cur.t_event, cur.t_settle), None, 1.0, True)
        u = ph(cur.t_settle, cur.t_end)
        return HandState(_lerp(g, rest, u), shoulder, 0.1 + 0.2 * u, None, 1.0, True)

    def object_centre(self, name: str, t: float) -> Vec:
        """World position of an object at ``t``, resting or in a hand (tests and previews)."""
        obj = self.script.obj_by_name(name)
        for r in self.script.resting_at(t):
            if r.obj == obj.id:
                return r.pos
        m = self.matrix(t)
        for hand in HANDS:
            st = self.hand_state(hand, t, m)
            if st.held == obj.id:
                d = _unit(st.shoulder, st.palm)
                return (st.palm[0] + d[0] * GRIP_OFFSET, st.palm[1] + d[1] * GRIP_OFFSET)
        raise ValueError(f"object {name!r} is neither resting nor held at t={t:.3f}")

    def object_box(self, name: str, t: float) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) of an object at ``t``, resting or held (clipped to the frame)."""
        kind = self.script.obj_by_name(name).kind
        return self.world_box(self.object_centre(name, t), kind.size, t)

    def world_box(self, centre: Vec, size: Vec, t: float) -> tuple[int, int, int, int]:
        """Pixel box at ``t`` of a world-space box of ``size`` around ``centre`` (clipped)."""
        cx, cy = centre
        w, h = size
        corners = np.array([[cx + sx * w / 2, cy + sy * h / 2, 1.0] for sx in (-1, 1) for sy in (-1, 1)])
        px = corners @ self.matrix(t).T
        x0, y0 = np.floor(px.min(axis=0)).astype(int)
        x1, y1 = np.ceil(px.max(axis=0)).astype(int)
        fw, fh = self.size
        return (max(0, int(x0)), max(0, int(y0)), min(fw, int(x1)), min(fh, int(y1)))

    # -- drawing ---------------------------------------------------------------------------------
    def _world_layer(self, t: float) -> np.ndarray:
        rests = sorted(self.script.resting_at(t), key=lambda r: (r.pos[1], r.obj))
        key = tuple((r.obj, r.pos[0], r.pos[1]) for r in rests)
        if key != self._layer_key:
            layer = self.background.copy()
            for r in rests:
                draw_resting_object(layer, self.world_scale, self.script.objects[r.obj].kind, r.pos)
            # kept as RGBA: OpenCV's 4-channel warp is vectorised and ~3x faster than 3-channel
            self._layer, self._layer_key = cv2.cvtColor(layer, cv2.COLOR_RGB2RGBA), key
        return self._layer

    def _blur_samples(self, t: float, m: np.ndarray) -> tuple[int, tuple[int, int]]:
        """Shutter sub-samples the head's motion at ``t`` needs (1: none), and the small box
        that smooths the steps between samples."""
        if not (self.config.blur and self.config.head_motion):
            return 1, (1, 1)
        m_prev = self.matrix(t - 1.0 / self.script.fps)
        bx, by = blur_extent(m, m_prev, self.size, self.config.shutter)
        smear = math.hypot(bx, by)
        if smear < 2.0:
            return 1, (1, 1)
        n = min(12, max(2, math.ceil(smear / 3.0)))
        return n, (1 + round(abs(bx) / (n - 1)), 1 + round(abs(by) / (n - 1)))

    def _warp_room(self, t: float, m: np.ndarray) -> np.ndarray:
        """The room and resting objects through the head pose, as RGB.

        Motion blur integrates the view over the open shutter: the room is warped at a few
        sub-frame head poses and averaged, which smears along the true (rotating, zooming)
        motion rather than a box. Hands are drawn afterwards, sharp: they move with the head.
        """
        layer = self._world_layer(t)
        to_px = invert(self._to_world_px[:2])
        n, box = self._blur_samples(t, m)
        if n == 1:
            warped = cv2.warpAffine(
                layer, compose(m, to_px), self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            rgb: np.ndarray = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
            return rgb
        w, h = self.size
        acc = np.zeros((h, w, 4), np.uint16)
        span = self.config.shutter / self.script.fps
        for k in range(n):
            mk = m if k == 0 else self.matrix(t - span * k / (n - 1))
            warped = cv2.warpAffine(
                layer, compose(mk, to_px), self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            cv2.add(acc, warped, dst=acc, dtype=cv2.CV_16U)
        mean = cv2.convertScaleAbs(acc, alpha=1.0 / n)
        if max(box) > 1:
            mean = cv2.blur(mean, box)
        blurred: np.ndarray = cv2.cvtColor(mean, cv2.COLOR_RGBA2RGB)
        return blurred

    def render_empty(self, t: float) -> np.ndarray:
        """The empty room through the same head pose (no objects, hands or sensor effects):
        what tests compare frames with to tell an object's pixels from its background."""
        m_px = compose(self.matrix(t), invert(self._to_world_px[:2]))
        empty: np.ndarray = cv2.warpAffine(
            self.background, m_px, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return empty

    def render(self, t: float, frame_index: int | None = None) -> np.ndarray:
        """The frame at time ``t`` as HxWx3 uint8 RGB."""
        index = frame_index if frame_index is not None else round(t * self.script.fps)
        m = self.matrix(t)
        frame = self._warp_room(t, m)
        states = [(hand, self.hand_state(hand, t, m)) for hand in HANDS]
        for hand, st in sorted(states, key=lambda hs: hs[1].palm[1]):
            if not st.visible:
                continue
            if st.held is not None:
                d = _unit(st.shoulder, st.palm)
                c = (st.palm[0] + d[0] * GRIP_OFFSET, st.palm[1] + d[1] * GRIP_OFFSET)
                kind = self.script.objects[st.held].kind
                draw_shapes(frame, kind.shapes, compose(m, similarity(st.held_scale, 0.0, c[0], c[1])))
            draw_hand(frame, m, st.palm, st.shoulder, st.curl, hand, self.style)
        lag = self.pose(max(0.0, t - 0.35))
        gain = (
            self.sensor.gain(t, (lag.cx, lag.cy))
            if self.config.head_motion
            else self.sensor.gain(t, (0.0, 0.0))
        )
        return self.sensor.apply(frame, gain, index)
