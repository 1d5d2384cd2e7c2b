"""The EgoSynth object catalogue: named kinds of distinct shape and colour, drawn with OpenCV.

Each kind is a list of drawing primitives in its own local frame (reference units, the object's
centre at the origin, y down). One drawing routine maps them through any similarity transform
(scale, rotation, translation), so the same object is drawn identically whether it rests in the
world layer, rides in a hand, or is seen through a rolled head camera. Primitives instead of
sprites: OpenCV's anti-aliased fill routines stay sharp at every scale and cost microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

RGB = tuple[int, int, int]
Point = tuple[float, float]

_SHIFT = 4  # OpenCV fixed-point bits: 1/16 px sub-pixel positions keep slow motion smooth
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Poly:
    colour: RGB
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Circle:
    colour: RGB
    centre: Point
    radius: float


@dataclass(frozen=True)
class Ellipse:
    colour: RGB
    centre: Point
    axes: Point
    angle: float = 0.0
    start: float = 0.0
    end: float = 360.0
    thickness: float = -1  # -1 fills; otherwise a stroke width in reference units


@dataclass(frozen=True)
class Line:
    colour: RGB
    p0: Point
    p1: Point
    thickness: float


Shape = Poly | Circle | Ellipse | Line


@dataclass(frozen=True)
class ObjectKind:
    """A kind of object: ``name`` is what captions and questions call it ("red cup")."""

    name: str
    colour_name: str
    size: tuple[float, float]  # bounding box (w, h) in reference units
    colour: RGB  # the dominant body colour (tests look for it in pixels)
    shapes: tuple[Shape, ...]

    @property
    def half_height(self) -> float:
        return self.size[1] / 2


def _fx(v: float) -> int:
    return round(v * _ONE)


def similarity(scale: float, angle_rad: float, tx: float, ty: float) -> np.ndarray:
    """2x3 matrix of a similarity transform: rotate by ``angle_rad``, scale, then translate."""
    c, s = math.cos(angle_rad) * scale, math.sin(angle_rad) * scale
    return np.array([[c, -s, tx], [s, c, ty]], dtype=np.float64)


def apply(m: np.ndarray, p: Point) -> Point:
    return (m[0, 0] * p[0] + m[0, 1] * p[1] + m[0, 2], m[1, 0] * p[0] + m[1, 1] * p[1] + m[1, 2])


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``a`` after ``b``."""
    a3 = np.vstack([a, [0.0, 0.0, 1.0]])
    b3 = np.vstack([b, [0.0, 0.0, 1.0]])
    out: np.ndarray = (a3 @ b3)[:2]
    return out


def draw_shapes(img: np.ndarray, shapes: tuple[Shape, ...] | list[Shape], m: np.ndarray) -> None:
    """Draw primitives onto ``img`` in place, mapped by the similarity ``m`` (local -> pixels)."""
    scale = math.hypot(m[0, 0], m[1, 0])
    rot = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    for sh in shapes:
        if isinstance(sh, Poly):
            pts = np.array([[_fx(c) for c in apply(m, p)] for p in sh.points], dtype=np.int32)
            cv2.fillPoly(img, [pts], sh.colour, cv2.LINE_AA, _SHIFT)
        elif isinstance(sh, Circle):
            c = apply(m, sh.centre)
            cv2.circle(
                img, (_fx(c[0]), _fx(c[1])), _fx(sh.radius * scale), sh.colour, -1, cv2.LINE_AA, _SHIFT
            )
        elif isinstance(sh, Ellipse):
            c = apply(m, sh.centre)
            axes = (_fx(sh.axes[0] * scale), _fx(sh.axes[1] * scale))
            thick = -1 if sh.thickness < 0 else max(1, round(sh.thickness * scale))
            cv2.ellipse(
                img,
                (_fx(c[0]), _fx(c[1])),
                axes,
                sh.angle + rot,
                sh.start,
                sh.end,
                sh.colour,
                thick,
                cv2.LINE_AA,
                _SHIFT,
            )
        else:
            p0, p1 = apply(m, sh.p0), apply(m, sh.p1)
            thick = max(1, round(sh.thickness * scale))
            cv2.line(
                img, (_fx(p0[0]), _fx(p0[1])), (_fx(p1[0]), _fx(p1[1])), sh.colour, thick, cv2.LINE_AA, _SHIFT
            )


def _shade(c: RGB, f: float) -> RGB:
    """Darker (f < 1) or lighter (f > 1, towards white) variant of a colour."""
    if f <= 1:
        return (int(c[0] * f), int(c[1] * f), int(c[2] * f))
    g = min(1.0, f - 1.0)
    return (int(c[0] + (255 - c[0]) * g), int(c[1] + (255 - c[1]) * g), int(c[2] + (255 - c[2]) * g))


def _arc(cx: float, cy: float, r: float, a0: float, a1: float, n: int = 10) -> list[Point]:
    return [
        (
            cx + r * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
            cy + r * math.sin(math.radians(a0 + (a1 - a0) * i / n)),
        )
        for i in range(n + 1)
    ]


def _cup(c: RGB, w: float = 40, h: float = 58, handle_left: bool = False) -> tuple[Shape, ...]:
    top, bot = -h / 2, h / 2
    hx = -w / 2 - 6 if handle_left else w / 2 + 6
    return (
        Ellipse(_shade(c, 0.55), (hx, 2), (11, 14), 0, 0, 360, 6),
        Poly(c, ((-w / 2, top), (w / 2, top), (w / 2 - 5, bot), (-w / 2 + 5, bot))),
        Ellipse(c, (0, bot), (w / 2 - 5, 5)),
        Poly(_shade(c, 0.78), ((w / 4, top), (w / 2, top), (w / 2 - 5, bot), (w / 4 - 2, bot))),
        Line(_shade(c, 1.45), (-w / 2 + 8, top + 8), (-w / 2 + 10, bot - 8), 4),
        Ellipse(_shade(c, 1.25), (0, top), (w / 2, 6)),
        Ellipse(_shade(c, 0.35), (0, top + 1), (w / 2 - 4, 4)),
    )


def _catalogue() -> tuple[ObjectKind, ...]:
    red, blue, green = (205, 32, 38), (38, 72, 196), (86, 172, 48)
    yellow, orange, purple = (238, 206, 48), (240, 122, 28), (128, 52, 168)
    white, black, pink = (236, 236, 230), (30, 30, 34), (242, 128, 172)
    brown, teal, silver = (150, 98, 52), (22, 150, 150), (188, 190, 200)
    kinds = [
        ObjectKind("red cup", "red", (56, 58), red, _cup(red)),
        ObjectKind(
            "blue book",
            "blue",
            (96, 66),
            blue,
            (
                Poly(_shade(blue, 0.6), ((-46, -30), (50, -33), (50, 35), (-46, 34))),
                Poly((232, 230, 214), ((38, -31), (48, -32), (48, 33), (38, 33))),
                Poly(blue, ((-48, -33), (40, -33), (40, 31), (-48, 31))),
                Poly(_shade(blue, 0.55), ((-48, -33), (-38, -33), (-38, 31), (-48, 31))),
                Poly(_shade(blue, 1.5), ((-20, -16), (24, -16), (24, -6), (-20, -6))),
            ),
        ),
        ObjectKind(
            "green apple",
            "green",
            (52, 60),
            green,
            (
                Circle(_shade(green, 0.7), (2, 4), 25),
                Circle(green, (0, 2), 24),
                Circle(_shade(green, 1.45), (-9, -6), 7),
                Line((92, 60, 30), (0, -20), (4, -32), 4),
                Ellipse((48, 120, 40), (12, -28), (9, 4), -25),
            ),
        ),
        ObjectKind(
            "yellow banana",
            "yellow",
            (96, 40),
            yellow,
            (
                Poly(yellow, tuple(_arc(0, -60, 72, 40, 140) + _arc(0, -60, 56, 140, 40))),
                Poly(_shade(yellow, 0.8), tuple(_arc(0, -60, 72, 60, 120) + _arc(0, -60, 66, 120, 60))),
                Circle((80, 60, 20), _arc(0, -60, 64, 40, 40, 1)[0], 5),
                Circle((80, 60, 20), _arc(0, -60, 64, 140, 140, 1)[0], 4),
            ),
        ),
        ObjectKind(
            "orange bowl",
            "orange",
            (92, 50),
            orange,
            (
                Ellipse(orange, (0, -8), (46, 30), 0, 0, 180),
                Ellipse(_shade(orange, 0.75), (12, -8), (30, 26), 0, 0, 90),
                Ellipse(_shade(orange, 1.3), (0, -8), (46, 12)),
                Ellipse(_shade(orange, 0.45), (0, -7), (40, 9)),
            ),
        ),
        ObjectKind(
            "purple bottle",
            "purple",
            (36, 108),
            purple,
            (
                Poly(purple, ((-17, -18), (17, -18), (17, 52), (-17, 52))),
                Ellipse(purple, (0, 52), (17, 4)),
                Poly(purple, ((-17, -18), (-7, -34), (7, -34), (17, -18))),
                Poly(_shade(purple, 0.7), ((-7, -46), (7, -46), (7, -32), (-7, -32))),
                Poly((40, 40, 44), ((-8, -54), (8, -54), (8, -45), (-8, -45))),
                Poly((226, 222, 210), ((-17, 4), (17, 4), (17, 28), (-17, 28))),
                Line(_shade(purple, 1.5), (-11, -14), (-11, 46), 3),
            ),
        ),
        ObjectKind(
            "white plate",
            "white",
            (106, 48),
            white,
            (
                Ellipse((150, 150, 146), (0, 3), (53, 23)),
                Ellipse(white, (0, 0), (52, 22)),
                Ellipse((212, 212, 206), (0, 1), (34, 13)),
                Ellipse((250, 250, 248), (-18, -10), (14, 3), -8),
            ),
        ),
        ObjectKind(
            "black phone",
            "black",
            (42, 78),
            black,
            (
                Poly(black, ((-21, -39), (21, -39), (21, 39), (-21, 39))),
                Poly((52, 72, 104), ((-17, -32), (17, -32), (17, 30), (-17, 30))),
                Poly((92, 118, 150), ((-17, -32), (3, -32), (-17, -8))),
                Circle((70, 70, 74), (0, 35), 2),
            ),
        ),
        ObjectKind(
            "pink sponge",
            "pink",
            (62, 40),
            pink,
            (
                Poly(_shade(pink, 0.7), ((-31, -10), (31, -10), (31, 20), (-31, 20))),
                Poly(pink, ((-31, -10), (31, -10), (31, 17), (-31, 17))),
                Poly((58, 142, 70), ((-31, -20), (31, -20), (31, -10), (-31, -10))),
                Circle(_shade(pink, 0.8), (-16, 2), 3),
                Circle(_shade(pink, 0.8), (6, 8), 3),
                Circle(_shade(pink, 0.8), (18, -2), 2),
            ),
        ),
        ObjectKind(
            "brown box",
            "brown",
            (72, 66),
            brown,
            (
                Poly(_shade(brown, 1.25), ((-32, -18), (-18, -32), (34, -32), (22, -18))),
                Poly(_shade(brown, 0.7), ((22, -18), (34, -32), (34, 20), (22, 33))),
                Poly(brown, ((-32, -18), (22, -18), (22, 33), (-32, 33))),
                Line((210, 190, 140), (-5, -18), (-5, 33), 6),
            ),
        ),
        ObjectKind("teal mug", "teal", (64, 52), teal, _cup(teal, w=48, h=46, handle_left=True)),
        ObjectKind(
            "silver spoon",
            "silver",
            (96, 24),
            silver,
            (
                Line(_shade(silver, 0.6), (-46, 6), (14, 0), 7),
                Line(silver, (-46, 5), (14, -1), 5),
                Ellipse(_shade(silver, 0.7), (31, -2), (16, 10), -4),
                Ellipse(silver, (30, -3), (14, 8), -4),
                Ellipse((242, 242, 246), (26, -5), (5, 3), -4),
            ),
        ),
        ObjectKind(
            "yellow lemon",
            "yellow",
            (58, 42),
            (246, 226, 62),
            (
                Ellipse((200, 180, 40), (1, 3), (27, 19)),
                Ellipse((246, 226, 62), (0, 1), (26, 18)),
                Circle((246, 226, 62), (-27, 1), 5),
                Circle((246, 226, 62), (27, 1), 5),
                Ellipse((252, 246, 170), (-8, -7), (8, 4), -10),
            ),
        ),
        ObjectKind(
            "orange carrot",
            "orange",
            (100, 30),
            (236, 112, 24),
            (
                Poly((236, 112, 24), ((-38, -11), (36, -3), (36, 3), (-38, 11))),
                Line((196, 90, 20), (-20, -4), (-8, -2), 2),
                Line((196, 90, 20), (4, 2), (16, 1), 2),
                Ellipse((236, 112, 24), (-38, 0), (6, 11)),
                Line((60, 150, 50), (-42, 0), (-54, -10), 4),
                Line((60, 150, 50), (-42, 0), (-56, 2), 4),
                Line((60, 150, 50), (-42, 0), (-52, 12), 4),
            ),
        ),
    ]
    return tuple(kinds)


CATALOGUE: tuple[ObjectKind, ...] = _catalogue()
KINDS: dict[str, ObjectKind] = {k.name: k for k in CATALOGUE}


def choose_kinds(rng: np.random.Generator, n: int) -> list[ObjectKind]:
    """``n`` kinds for one clip, no two sharing a colour word (so every name is unambiguous)."""
    order = rng.permutation(len(CATALOGUE))
    chosen: list[ObjectKind] = []
    colours: set[str] = set()
    for i in order:
        kind = CATALOGUE[int(i)]
        if kind.colour_name not in colours:
            chosen.append(kind)
            colours.add(kind.colour_name)
        if len(chosen) == n:
            break
    if len(chosen) < n:
        raise ValueError(f"the catalogue has only {len(chosen)} distinct colours, {n} objects requested")
    return chosen
