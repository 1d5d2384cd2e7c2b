"""The EgoSynth room: a fixed layout of named places, its painted background, and object slots.

World coordinates are *reference units*: one unit is one pixel of a 640x480 frame at zoom 1,
y pointing down. The room is a wall (window, picture, shelf) above a wooden table (left, centre,
right) and, to the right, a counter with a sink and an open drawer; the wearer stands at the
table and walks to the counter. Larger outputs (1280x720) render the same world at a higher
pixel density, so geometry and ground truth do not depend on the resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from egovlm.synth.objects import ObjectKind, draw_shapes, similarity

WORLD_W, WORLD_H = 1900.0, 1200.0
REF_H = 480.0  # reference frame height: world units per output pixel = REF_H / height


@dataclass(frozen=True)
class Place:
    """A named region objects can end up in; ``station`` is where the wearer stands to reach it."""

    name: str
    label: str  # short, for captions: "table centre"
    at: str  # "on the centre of the table"
    from_: str  # "from the centre of the table"
    to: str  # "onto the centre of the table"
    station: str  # "table" or "counter"
    slots: tuple[tuple[float, float], ...]  # object centres (x, y); shelf y is the plank top
    resting_on_line: bool = False  # shelf: objects stand on the plank, centre = y - h/2


def _grid(x0: float, x1: float, y0: float, y1: float, nx: int, ny: int) -> tuple[tuple[float, float], ...]:
    xs = [x0 + (x1 - x0) * (i + 0.5) / nx for i in range(nx)]
    ys = [y0 + (y1 - y0) * (j + 0.5) / ny for j in range(ny)]
    return tuple((x + (18 if j % 2 else -18), y) for j, y in enumerate(ys) for x in xs)


PLACES: tuple[Place, ...] = (
    Place(
        "table_left",
        "table left",
        "on the left of the table",
        "from the left of the table",
        "onto the left of the table",
        "table",
        _grid(150, 470, 600, 930, 2, 3),
    ),
    Place(
        "table_centre",
        "table centre",
        "in the centre of the table",
        "from the centre of the table",
        "onto the centre of the table",
        "table",
        _grid(490, 820, 600, 930, 2, 3),
    ),
    Place(
        "table_right",
        "table right",
        "on the right of the table",
        "from the right of the table",
        "onto the right of the table",
        "table",
        _grid(840, 1150, 600, 930, 2, 3),
    ),
    Place(
        "shelf",
        "shelf",
        "on the shelf",
        "from the shelf",
        "onto the shelf",
        "table",
        tuple((x, 330.0) for x in (190.0, 290.0, 390.0, 490.0, 590.0, 680.0)),
        resting_on_line=True,
    ),
    Place(
        "sink",
        "sink",
        "in the sink",
        "from the sink",
        "into the sink",
        "counter",
        _grid(1330, 1630, 640, 840, 2, 2),
    ),
    Place(
        "drawer",
        "drawer",
        "in the drawer",
        "from the drawer",
        "into the drawer",
        "counter",
        tuple((x, 1010.0) for x in (1330.0, 1440.0, 1550.0, 1650.0)),
    ),
)
PLACE_BY_NAME: dict[str, Place] = {p.name: p for p in PLACES}
TABLE_PLACES = ("table_left", "table_centre", "table_right")

# Where the head points to look at each station, and how close the wearer stands (zoom).
STATION_VIEW: dict[str, tuple[float, float, float]] = {
    "table": (660.0, 720.0, 1.4),
    "counter": (1480.0, 840.0, 1.5),
}
WINDOW = (900.0, 60.0, 1250.0, 380.0)  # x0, y0, x1, y1: the bright region auto-exposure reacts to


def slot_centre(place: Place, slot: int, kind: ObjectKind) -> tuple[float, float]:
    x, y = place.slots[slot]
    return (x, y - kind.half_height) if place.resting_on_line else (x, y)


@dataclass
class Layout:
    """Which slot of which place each object occupies; the planner's and renderer's shared truth."""

    occupied: dict[tuple[str, int], int] = field(default_factory=dict)  # (place, slot) -> object id

    def free_slots(self, place: str) -> list[int]:
        n = len(PLACE_BY_NAME[place].slots)
        return [i for i in range(n) if (place, i) not in self.occupied]


def _noise_texture(rng: np.random.Generator, h: int, w: int, amp: float, blur: int) -> np.ndarray:
    n = rng.normal(0.0, 1.0, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
    n = cv2.resize(n, (w, h), interpolation=cv2.INTER_CUBIC)
    if blur > 1:
        n = cv2.GaussianBlur(n, (0, 0), blur)
    n = n / (float(np.abs(n).max()) + 1e-6)
    out: np.ndarray = n * amp
    return out


def _fill(
    img: np.ndarray, s: float, x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int]
) -> None:
    cv2.rectangle(
        img, (round(x0 * s), round(y0 * s)), (round(x1 * s), round(y1 * s)), colour, -1, cv2.LINE_AA
    )


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]))


def render_background(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Paint the empty room at ``scale`` pixels per world unit (RGB uint8).

    Drawn once per clip; palettes vary a little per seed so clips do not all look alike.
    """
    h, w = round(WORLD_H * scale), round(WORLD_W * scale)
    img = np.zeros((h, w, 3), np.uint8)

    def tint(c: tuple[int, int, int], spread: int) -> np.ndarray:
        level = rng.uniform(0.88, 1.1)
        return np.clip(np.array(c) * level + rng.integers(-spread, spread + 1, 3), 0, 255)

    wall = tint((214, 206, 188), 5)
    wood = tint((168, 118, 72), 6)
    stone = tint((150, 150, 146), 4)

    # wall: vertical gradient, lighter near the window
    grad = np.linspace(1.06, 0.9, h)[:, None, None]
    img[:] = np.clip(wall[None, None, :] * grad, 0, 255).astype(np.uint8)
    wx0, wy0, wx1, wy1 = WINDOW
    _fill(img, scale, wx0 - 14, wy0 - 14, wx1 + 14, wy1 + 14, (236, 236, 232))
    sky = np.linspace(0, 1, max(1, round((wy1 - wy0) * scale)))[:, None, None]
    y0i, y1i, x0i, x1i = round(wy0 * scale), round(wy1 * scale), round(wx0 * scale), round(wx1 * scale)
    sky_img = (np.array([150, 196, 244]) * (1 - sky) + np.array([236, 244, 252]) * sky).astype(np.uint8)
    img[y0i:y1i, x0i:x1i] = np.broadcast_to(sky_img[: y1i - y0i], (y1i - y0i, x1i - x0i, 3))
    for _ in range(4):  # tree crowns outside
        cx, cy = rng.uniform(wx0 + 20, wx1 - 20), rng.uniform(wy1 - 90, wy1 - 10)
        r = rng.uniform(30, 70)
        cv2.circle(
            img, (round(cx * scale), round(cy * scale)), round(r * scale), (70, 128, 64), -1, cv2.LINE_AA
        )
    _fill(img, scale, (wx0 + wx1) / 2 - 6, wy0, (wx0 + wx1) / 2 + 6, wy1, (236, 236, 232))
    _fill(img, scale, wx0, (wy0 + wy1) / 2 - 5, wx1, (wy0 + wy1) / 2 + 5, (236, 236, 232))
    # a picture on the wall and a socket, for texture the camera can lock onto
    _fill(img, scale, 1380, 110, 1620, 300, (90, 70, 50))
    _fill(img, scale, 1392, 122, 1608, 288, (200, 170, 120))
    cv2.circle(
        img, (round(1470 * scale), round(200 * scale)), round(50 * scale), (180, 70, 60), -1, cv2.LINE_AA
    )
    _fill(img, scale, 1520, 160, 1590, 270, (60, 100, 150))
    _fill(img, scale, 760, 410, 800, 450, (240, 240, 236))
    # shelf: plank, brackets, shadow
    _fill(img, scale, 130, 344, 740, 352, (150, 140, 124))
    _fill(img, scale, 120, 330, 750, 346, (120, 84, 50))
    for bx in (180.0, 690.0):
        pts = np.array(
            [[bx * scale, 346 * scale], [(bx + 12) * scale, 346 * scale], [bx * scale, 392 * scale]], np.int32
        )
        cv2.fillPoly(img, [pts], (80, 80, 84), cv2.LINE_AA)
    # table top with grain
    _fill(img, scale, 0, 480, 1180, WORLD_H, _rgb(wood))
    ty0 = round(480 * scale)
    # grain: noise stretched along the boards, bent sine stripes, and board seams
    th, tw = h - ty0, round(1180 * scale)
    streak = rng.normal(0.0, 1.0, (th // 2 + 1, tw // 60 + 2)).astype(np.float32)
    streak = cv2.resize(streak, (tw, th), interpolation=cv2.INTER_CUBIC) * 5.0
    ys = np.arange(th, dtype=np.float32)[:, None]
    grain = streak + 4.0 * np.sin(ys / (5.0 * scale) + streak * 0.8)
    for by in np.arange(130.0, WORLD_H - 480.0, 130.0):
        grain[round(by * scale) : round(by * scale) + max(1, round(2 * scale))] -= 28.0
    tab = img[ty0:, : round(1180 * scale)].astype(np.float32) + grain[:, :, None]
    img[ty0:, : round(1180 * scale)] = np.clip(tab, 0, 255).astype(np.uint8)
    _fill(img, scale, 0, 470, 1180, 490, _rgb(wood * 0.72))
    # counter: speckled stone, sink, tap, open drawer
    cx0 = round(1180 * scale)
    _fill(img, scale, 1180, 470, WORLD_W, WORLD_H, _rgb(stone))
    speck = _noise_texture(rng, h - round(470 * scale), w - cx0, 12.0, 0)
    cnt = img[round(470 * scale) :, cx0:].astype(np.float32) + speck[:, :, None]
    img[round(470 * scale) :, cx0:] = np.clip(cnt, 0, 255).astype(np.uint8)
    _fill(img, scale, 1180, 470, 1190, WORLD_H, (96, 96, 94))
    _fill(img, scale, 1290, 600, 1670, 880, (120, 124, 130))
    _fill(img, scale, 1300, 610, 1660, 870, (176, 182, 190))
    _fill(img, scale, 1312, 622, 1648, 858, (150, 156, 164))
    cv2.circle(
        img, (round(1480 * scale), round(740 * scale)), round(14 * scale), (60, 62, 66), -1, cv2.LINE_AA
    )
    _fill(img, scale, 1470, 500, 1490, 600, (190, 194, 200))
    _fill(img, scale, 1440, 500, 1520, 516, (200, 204, 210))
    _fill(img, scale, 1290, 930, 1700, 1110, (90, 62, 38))
    _fill(img, scale, 1300, 945, 1690, 1095, (128, 92, 60))
    _fill(img, scale, 1285, 1095, 1705, 1160, (176, 140, 100))
    _fill(img, scale, 1460, 1120, 1530, 1132, (70, 70, 72))
    return img


def draw_object_shadow(img: np.ndarray, scale: float, kind: ObjectKind, centre: tuple[float, float]) -> None:
    """A soft contact shadow under a resting object (blended on a small region only)."""
    w, h = kind.size
    cx, cy = centre[0] * scale, (centre[1] + h * 0.42) * scale
    ax, ay = w * 0.55 * scale, max(4.0, h * 0.14) * scale
    x0, x1 = max(0, int(cx - ax - 4)), min(img.shape[1], int(cx + ax + 5))
    y0, y1 = max(0, int(cy - ay - 4)), min(img.shape[0], int(cy + ay + 5))
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.ellipse(
        mask, (round(cx - x0), round(cy - y0)), (round(ax), round(ay)), 0, 0, 360, 1.0, -1, cv2.LINE_AA
    )
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 2.5 * scale))
    roi = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (roi * (1.0 - 0.38 * mask[:, :, None])).astype(np.uint8)


def draw_resting_object(img: np.ndarray, scale: float, kind: ObjectKind, centre: tuple[float, float]) -> None:
    draw_object_shadow(img, scale, kind, centre)
    draw_shapes(img, kind.shapes, similarity(scale, 0.0, centre[0] * scale, centre[1] * scale))
