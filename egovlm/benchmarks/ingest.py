"""Per-frame ingest cost: decode, descriptor and keyframe selection, at three resolutions.

Compares, in one run on the same frames, the native descriptor kernel, its numpy reference and
the equivalent OpenCV calls (cvtColor, resize INTER_AREA, 2x2 area binning, Laplacian,
meanStdDev), and reports ratios. Targets (issue 8): descriptor + selection ≤ 1 ms per 1280x720
frame on one core; native ≥ 3x faster than numpy.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.benchmarks.report import Report, percentiles, time_calls
from egovlm.descriptor import DEFAULT_GRID, describe, describe_reference
from egovlm.keyframes import KeyframeSelector

RESOLUTIONS = [(640, 480), (1280, 720), (1920, 1080)]


def opencv_descriptor(frame: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID) -> tuple[np.ndarray, float]:
    """The same quantities with stock OpenCV calls (what one would write without our kernel)."""
    import cv2

    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(gray, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    half = cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(half, cv2.CV_32F)
    _, std = cv2.meanStdDev(lap)
    return thumb, float(std[0, 0] ** 2)


def synthetic_frames(width: int, height: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """Textured frames with moving shapes and sensor noise (compressible like real footage)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    frames = []
    for i in range(n):
        img = base.astype(np.uint8).copy()
        cx = int((0.2 + 0.6 * i / max(n - 1, 1)) * width)
        cv2.circle(img, (cx, height // 2), height // 6, (220, 40, 40), -1)
        cv2.rectangle(img, (width // 8, height // 8), (width // 4, height // 3), (30, 200, 60), -1)
        noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
        frames.append(np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames


def _decode_us(frames: list[np.ndarray], fps: int = 30) -> list[float]:
    """Encode the frames to H.264 once, then time PyAV decode + RGB conversion per frame."""
    import av

    h, w, _ = frames[0].shape
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for img in frames:
                for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        out: list[float] = []
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_count = 1
            t0 = time.perf_counter()
            for frame in c.decode(stream):
                frame.to_ndarray(format="rgb24")
                t1 = time.perf_counter()
                out.append((t1 - t0) * 1e6)
                t0 = t1
    return out


def _row(res: tuple[int, int], impl: str, seconds: list[float], scale: float = 1e6) -> dict[str, Any]:
    p50, p95 = percentiles([s * scale for s in seconds])
    return {
        "resolution": f"{res[0]}x{res[1]}",
        "impl": impl,
        "us_per_frame_p50": p50,
        "us_per_frame_p95": p95,
    }


def run(out: Path, quick: bool = False) -> Report:
    repeats = 30 if quick else 200
    report = Report("ingest", params={"repeats": repeats, "grid": list(DEFAULT_GRID), "threads": 1})
    for res in RESOLUTIONS:
        frames = synthetic_frames(*res, n=30 if quick else 90)
        f = frames[len(frames) // 2]
        native = time_calls(functools.partial(describe, f), repeats)
        ref = time_calls(functools.partial(describe_reference, f), max(5, repeats // 10))
        ocv = time_calls(functools.partial(opencv_descriptor, f), repeats)
        report.rows += [_row(res, "native", native), _row(res, "numpy", ref), _row(res, "opencv", ocv)]

        selector, descs = KeyframeSelector(), [describe(x) for x in frames]
        times: list[float] = []
        for i, d in enumerate(descs):  # selection alone, with the descriptor given (as the runtime does)
            t0 = time.perf_counter()
            selector.offer(i / 30.0, descriptor=d)
            times.append(time.perf_counter() - t0)
        report.rows.append(_row(res, "selection", times))
        report.rows.append(_row(res, "decode_pyav", [u / 1e6 for u in _decode_us(frames)]))

        n50 = percentiles(native)[0]
        report.summary.append(
            {
                "resolution": f"{res[0]}x{res[1]}",
                "numpy_over_native": percentiles(ref)[0] / n50,
                "opencv_over_native": percentiles(ocv)[0] / n50,
                "descriptor_plus_selection_us": (n50 + percentiles(times)[0]) * 1e6,
            }
        )
    report.write(out)
    from egovlm.benchmarks.plots import write_plots

    write_plots(report, out)
    return report
