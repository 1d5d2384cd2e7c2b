"""Encode frames to H.264 MP4 with PyAV (libx264), written atomically.

One encoder thread and the ``ultrafast`` preset: generation must beat real time on one core and
the sensor noise makes every frame expensive for slower presets. ``yuv420p`` with a 2 s GOP keeps
the files decodable by PyAV, OpenCV and GStreamer (avdec_h264) and cheap to seek in.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from egovlm.atomic import atomic_path


def fps_fraction(fps: float) -> Fraction:
    """29.97 -> 30000/1001; integer rates stay exact."""
    return Fraction(fps).limit_denominator(1001)


class Mp4Writer:
    """``with Mp4Writer(path, (w, h), fps) as w: w.write(rgb)`` -- the file appears only on success."""

    def __init__(
        self, path: Path, size: tuple[int, int], fps: float, *, crf: int = 23, preset: str = "ultrafast"
    ) -> None:
        w, h = size
        if w % 2 or h % 2:
            raise ValueError(f"H.264 (yuv420p) needs an even frame size, got {w}x{h}")
        self.path = Path(path)
        self.size = size
        self.frames = 0
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._tmp = tmp
        self._container = av.open(str(tmp), "w", format="mp4")
        stream = self._container.add_stream("libx264", rate=fps_fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf), "threads": "1", "g": str(max(1, round(2 * fps)))}
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if (w, h) != self.size or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"{self.path.name}: frame {self.frames} must be {self.size[1]}x{self.size[0]}x3 uint8, "
                f"got {frame.shape} {frame.dtype}"
            )
        # OpenCV's SIMD RGB->I420 (BT.601, the same matrix swscale uses here: decoded colours are
        # identical) is ~2x cheaper than letting the encoder convert rgb24.
        vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        """Flush and publish the file (``ok``), or discard it."""
        try:
            if ok:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            if ok:
                os.chmod(self._tmp, 0o644)  # a video is for every reader (mkstemp makes it 0600)
                self._stack.close()
            else:
                self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(ok=et is None)
