"""Tiny videos for dataset tests: frame ``i`` is a flat grey of level ``LEVEL * i``, so a decoded
frame tells which source frame it is (H.264 keeps a flat grey within a few levels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LEVEL = 6  # grey step per frame: up to 42 frames fit in 0..255


def write_counter_video(path: Path, frames: int = 40, fps: int = 10) -> Path:
    import av

    assert frames * LEVEL <= 255, "too many frames to tell apart by grey level"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), LEVEL * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_index(img: np.ndarray) -> int:
    """Which source frame a decoded image is."""
    return round(float(img.mean()) / LEVEL)
