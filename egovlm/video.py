"""Video files → frames with timestamps, for datasets (training, eval, importers).

Decoder: PyAV (FFmpeg). Why not the edge runtime's GStreamer stack: dataset decoding runs on
training workstations and CI, where PyAV installs from PyPI with its own FFmpeg (no system
packages), gives every frame's exact presentation timestamp, and seeks by time. The edge
runtime decodes *live* sources with GStreamer, where hardware decoders and drop-not-block
matter; both produce the same RGB uint8 frames.

Sampling picks, for each requested time, the last frame whose timestamp is at or before it
(the frame a viewer would see at that moment).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.frames import Frame

SEEK_GAP_S = 4.0  # decode through gaps up to this long (a few GOPs); seek past longer ones


class VideoError(RuntimeError):
    """A missing, unreadable or corrupt video; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float


def uniform_times(duration_s: float, n: int) -> list[float]:
    """Centres of ``n`` equal segments of the clip: never the black first frame, never past the end."""
    if n < 1:
        raise ValueError(f"need at least one frame, got n={n}")
    return [duration_s * (i + 0.5) / n for i in range(n)]


class VideoReader:
    """Decode one video file with PyAV."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"video not found: {self.path}")
        self._info: VideoInfo | None = None

    def _open(self) -> Any:
        import av

        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"cannot open video {self.path}: {e}") from e
        if not container.streams.video:
            container.close()
            raise VideoError(f"no video stream in {self.path}")
        container.streams.video[0].thread_type = "AUTO"  # before the codec opens (PyAV refuses after)
        return container

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            self._info = self._probe()
        return self._info

    def _probe(self) -> VideoInfo:
        with self._open() as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            frames = int(stream.frames or 0)
            duration = 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            if frames == 0 or duration <= 0:  # containers without an index: count by decoding
                times = [t for t, _ in self._decode(container)]
                frames = len(times)
                duration = (times[-1] + 1.0 / fps) if times and fps else (times[-1] if times else 0.0)
            if frames == 0:
                raise VideoError(f"video {self.path} has no decodable frames")
            return VideoInfo(
                self.path, stream.codec_context.width, stream.codec_context.height, fps, frames, duration
            )

    def _decode(self, container: Any) -> Iterator[tuple[float, np.ndarray]]:
        import av

        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time or 0.0)
                yield t, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise VideoError(f"corrupt video {self.path}: {e}") from e

    def iter_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Every frame in order as (timestamp_s, RGB uint8)."""
        with self._open() as container:
            yield from self._decode(container)

    def frames_at(
        self, timestamps: Sequence[float], seek_gap_s: float = SEEK_GAP_S
    ) -> list[tuple[float, np.ndarray]]:
        """For each requested time (any order), the frame shown at that time.

        Times are visited in order in one container. Decoding jumps (a backward seek to the key
        frame at or before the time) whenever the next time lies more than ``seek_gap_s`` past the
        last decoded frame, so a clip window late in an hour-long Ego4D video costs a few GOPs,
        not a decode from the start. Times before the first frame get the first frame.
        """
        if not timestamps:
            return []
        order = sorted(range(len(timestamps)), key=lambda i: timestamps[i])
        result: list[tuple[float, np.ndarray] | None] = [None] * len(timestamps)
        with self._open() as container:
            stream = container.streams.video[0]
            frames: Iterator[tuple[float, np.ndarray]] | None = None
            shown: tuple[float, np.ndarray] | None = None  # last decoded frame at or before the time
            ahead: tuple[float, np.ndarray] | None = None  # decoded, but after the time
            for i in order:
                target = float(timestamps[i])
                last = shown or ahead
                if frames is None or (last is not None and target - last[0] > seek_gap_s):
                    frames, shown, ahead = self._seek(container, stream, target), None, None
                while True:
                    frame = ahead if ahead is not None else next(frames, None)
                    ahead = None
                    if frame is None:
                        break
                    if frame[0] > target + 1e-6:
                        ahead = frame
                        break
                    shown = frame
                result[i] = shown if shown is not None else ahead
        if any(r is None for r in result):
            raise VideoError(f"video {self.path} has no decodable frames")
        return [r for r in result if r is not None]

    def _seek(self, container: Any, stream: Any, t: float) -> Iterator[tuple[float, np.ndarray]]:
        """Decoded frames from the key frame at or before ``t``; from the start when the container
        cannot seek or lands after ``t`` (a missing or wrong index)."""
        import av

        if t > 0 and stream.time_base is not None:
            try:
                container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
                frames = self._decode(container)
                first = next(frames, None)
                if first is not None and first[0] <= t + 1e-6:
                    return itertools.chain([first], frames)
            except av.error.FFmpegError:
                pass
        container.seek(0, stream=stream, backward=True, any_frame=False)
        return self._decode(container)

    def uniform(self, n: int) -> list[Frame]:
        """``n`` frames at the centres of equal segments, as a contract frame set (indices 1..n)."""
        picked = self.frames_at(uniform_times(self.info.duration_s, n))
        return [Frame(index=i + 1, timestamp_s=t, image=img) for i, (t, img) in enumerate(picked)]


def read_frame_dir(folder: Path | str) -> list[tuple[float, np.ndarray]]:
    """Frames stored as images: ``frames.json`` lists ``[{"file": "000.jpg", "t": 0.0}, …]``."""
    from PIL import Image

    folder = Path(folder)
    index = folder / "frames.json"
    if not index.is_file():
        raise VideoError(f"frame folder {folder} has no frames.json index")
    entries = json.loads(index.read_text())
    out = []
    for i, entry in enumerate(entries):
        path = folder / entry["file"]
        if not path.is_file():
            raise VideoError(f"{index}: entry {i} names missing file {path}")
        out.append((float(entry["t"]), np.asarray(Image.open(path).convert("RGB"))))
    return sorted(out, key=lambda x: x[0])
