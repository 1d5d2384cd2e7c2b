"""Contact sheets: a grid of thumbnails of one clip with its event frames marked, for a person.

Event frames get a coloured border (green: pick-up, orange: put-down) and a label with the time,
action and object; the other tiles are evenly spaced frames labelled with their time, so a
reviewer can check at a glance that what the ground truth says is what the pixels show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from egovlm.atomic import atomic_write_bytes
from egovlm.synth.script import Event

PICK_COLOUR = (40, 200, 70)
PUT_COLOUR = (245, 150, 30)


@dataclass(frozen=True)
class Tile:
    frame: int
    label: str
    colour: tuple[int, int, int] | None


def plan_tiles(events: list[Event], n_frames: int, fps: float, total: int = 16) -> list[Tile]:
    """Event moments first (up to ``total``), then evenly spaced fillers, in time order."""
    tiles: dict[int, Tile] = {}
    for e in events[:total]:
        colour = PICK_COLOUR if e.action == "pick_up" else PUT_COLOUR
        verb = "pick" if e.action == "pick_up" else "put"
        tiles[e.frame] = Tile(e.frame, f"{e.t:.1f}s {verb} {e.object}", colour)
    n_fill = max(0, total - len(tiles))
    for k in range(n_fill):
        f = min(n_frames - 1, round((k + 0.5) * n_frames / n_fill))
        if f not in tiles:
            tiles[f] = Tile(f, f"{f / fps:.1f}s", None)
    return sorted(tiles.values(), key=lambda t: t.frame)


def contact_sheet(
    frames: dict[int, np.ndarray], tiles: list[Tile], title: str, cols: int = 4, width: int = 240
) -> np.ndarray:
    """Compose an RGB contact sheet from rendered frames (keyed by frame index)."""
    first = next(iter(frames.values()))
    th = round(width * first.shape[0] / first.shape[1])
    rows = (len(tiles) + cols - 1) // cols
    pad, head = 4, 26
    sheet = np.full((head + rows * (th + pad) + pad, cols * (width + pad) + pad, 3), 28, np.uint8)
    cv2.putText(sheet, title, (pad + 2, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    for i, tile in enumerate(tiles):
        y, x = head + (i // cols) * (th + pad), pad + (i % cols) * (width + pad)
        thumb = cv2.resize(frames[tile.frame], (width, th), interpolation=cv2.INTER_AREA)
        if tile.colour is not None:
            cv2.rectangle(thumb, (0, 0), (width - 1, th - 1), tile.colour, 4)
        cv2.rectangle(thumb, (0, th - 18), (width, th), (0, 0, 0), -1)
        cv2.putText(
            thumb,
            tile.label,
            (4, th - 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            tile.colour or (230, 230, 230),
            1,
            cv2.LINE_AA,
        )
        sheet[y : y + th, x : x + width] = thumb
    return sheet


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())
