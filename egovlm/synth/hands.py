"""The wearer's hands and forearms, seen from the head camera: they enter from the bottom edge.

A hand is drawn from two points in world units, the shoulder (fixed relative to the camera, below
the frame) and the palm (moved by the script), plus how far the fingers are curled. The same
geometry serves reaching, grasping (fingers curl over the object), carrying and releasing; the
hand is drawn over whatever it holds or touches, so it occludes objects as a real hand does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from egovlm.synth.objects import Circle, Ellipse, Line, Poly, Shape, draw_shapes

RGB = tuple[int, int, int]

SKIN_TONES: tuple[RGB, ...] = ((236, 196, 164), (214, 168, 128), (178, 128, 92), (132, 92, 62), (96, 64, 44))
SLEEVES: tuple[RGB, ...] = (
    (52, 60, 84),
    (110, 30, 36),
    (60, 96, 70),
    (150, 150, 156),
    (36, 36, 40),
    (200, 160, 60),
)

# Camera-relative anchors (fractions of the frame width/height): where shoulders sit, where an idle
# hand rests out of view, and where a hand holds an object it carries in front of the body.
SHOULDER = {"right": (0.86, 1.55), "left": (0.14, 1.55)}
REST = {"right": (0.80, 1.32), "left": (0.20, 1.32)}
HOLD = {"right": (0.68, 0.86), "left": (0.32, 0.86)}
GRIP_OFFSET = 24.0  # world units from the palm centre to the held object's centre, along the arm


@dataclass(frozen=True)
class HandStyle:
    skin: RGB
    sleeve: RGB

    @staticmethod
    def sample(rng: np.random.Generator) -> HandStyle:
        return HandStyle(
            SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], SLEEVES[int(rng.integers(len(SLEEVES)))]
        )


def _dark(c: RGB, f: float) -> RGB:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def _rot(v: tuple[float, float], a: float) -> tuple[float, float]:
    c, s = math.cos(a), math.sin(a)
    return (v[0] * c - v[1] * s, v[0] * s + v[1] * c)


def hand_shapes(
    palm: tuple[float, float], shoulder: tuple[float, float], curl: float, side: str, style: HandStyle
) -> list[Shape]:
    """Primitives (world units) of one forearm and hand; ``curl`` 0 = open, 1 = closed grip."""
    dx, dy = palm[0] - shoulder[0], palm[1] - shoulder[1]
    norm = math.hypot(dx, dy) or 1.0
    d = (dx / norm, dy / norm)
    n = (-d[1], d[0])
    inner = -1.0 if side == "right" else 1.0  # the thumb sits towards the body's midline

    def at(along: float, across: float) -> tuple[float, float]:
        return (palm[0] + d[0] * along + n[0] * across, palm[1] + d[1] * along + n[1] * across)

    wrist_along, cuff_along = -30.0, -95.0
    skin, edge = style.skin, _dark(style.skin, 0.72)
    shapes: list[Shape] = []

    def slab(a0: float, w0: float, a1: float, w1: float, colour: RGB) -> Poly:
        return Poly(colour, (at(a0, -w0), at(a1, -w1), at(a1, w1), at(a0, w0)))

    # forearm: skin from cuff to wrist, sleeve from the shoulder to the cuff
    shapes.append(slab(cuff_along - 4, 26, wrist_along + 6, 21, edge))
    shapes.append(slab(cuff_along, 24, wrist_along + 4, 19, skin))
    far = -norm  # the shoulder, below the frame
    shapes.append(slab(far, 46, cuff_along, 30, _dark(style.sleeve, 0.75)))
    shapes.append(slab(far, 42, cuff_along + 2, 27, style.sleeve))
    shapes.append(Line(_dark(style.sleeve, 0.55), at(far, 18 * inner), at(cuff_along, 12 * inner), 5))
    shapes.append(slab(cuff_along - 2, 30, cuff_along + 8, 29, _dark(style.sleeve, 0.6)))
    # palm (back of the hand)
    ang = math.degrees(math.atan2(d[1], d[0]))
    shapes.append(Ellipse(edge, palm, (33, 25), ang))
    shapes.append(Ellipse(skin, palm, (31, 23), ang))
    # four fingers, curling shortens them and bends them inwards over what they hold
    lengths = (30.0, 36.0, 34.0, 27.0)
    # across-the-hand offsets: the first finger sits next to the thumb, the little finger outermost
    offsets = tuple(-inner * o for o in (-15.0, -5.0, 5.0, 15.0))
    for length_f, off in zip(lengths, offsets, strict=True):
        base = at(22.0, off * 0.9)
        spread = off * 0.012
        fd = _rot(d, spread)
        ln = length_f * (1.0 - 0.55 * curl)
        tip = (base[0] + fd[0] * ln, base[1] + fd[1] * ln)
        shapes.append(Line(edge, base, tip, 12.5))
        shapes.append(Line(skin, base, tip, 10))
        shapes.append(Circle(_dark(skin, 1.0 if curl < 0.5 else 0.85), tip, 4.0))
    shapes.append(Line(edge, at(14.0, -16), at(14.0, 16), 2))
    # thumb
    tbase = at(-4.0, 20.0 * inner)
    tang = math.radians(48.0 * (1.0 - 0.5 * curl)) * (-inner if side == "right" else inner)
    td = _rot(d, tang)
    tl = 30.0 * (1.0 - 0.3 * curl)
    ttip = (tbase[0] + td[0] * tl, tbase[1] + td[1] * tl)
    shapes.append(Line(edge, tbase, ttip, 13.5))
    shapes.append(Line(skin, tbase, ttip, 11))
    return shapes


def draw_hand(
    img: np.ndarray,
    m: np.ndarray,
    palm: tuple[float, float],
    shoulder: tuple[float, float],
    curl: float,
    side: str,
    style: HandStyle,
) -> None:
    """Draw a forearm and hand onto a camera frame; ``m`` maps world units to pixels."""
    draw_shapes(img, hand_shapes(palm, shoulder, curl, side, style), m)
