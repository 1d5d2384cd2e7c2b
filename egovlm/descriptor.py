"""Per-frame descriptor used by the keyframe selector on every camera frame.

A descriptor is two things:

* ``thumb`` — a ``gh x gw`` grid (default 24 x 32) of mean luma per cell, luma being the BT.601
  weights in 8-bit fixed point ``(77 R + 150 G + 29 B + 128) >> 8``. Cells partition the frame
  with integer boundaries ``floor(i * W / gw)``. Novelty between frames is the mean absolute
  difference (MAD) of thumbnails, in luma levels (0–255).
* ``sharpness`` — variance of the 4-neighbour Laplacian of the luma binned 2x2 (mean of each
  block), over interior pixels. Motion blur and defocus lower it; binning first keeps sensor
  noise from passing as detail.

The native kernel (``egovlm._native``, C++ via nanobind) and :func:`describe_reference` (numpy)
compute the same integers in the same order; they agree to float32 rounding on thumbnails
(< 1e-4 luma levels) and to 1e-9 relative on sharpness. The reference is the specification;
the native kernel is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

_native: ModuleType | None
try:
    import egovlm._native as _native
except ImportError:  # pragma: no cover - exercised only on a broken build
    _native = None

DEFAULT_GRID = (24, 32)


@dataclass(frozen=True)
class Descriptor:
    """What the keyframe selector keeps per frame: a luma thumbnail and a blur measure."""

    thumb: np.ndarray  # float32, (gh, gw), luma levels 0..255
    sharpness: float


def native_available() -> bool:
    return _native is not None


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be an HxWx3 uint8 RGB array, got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def describe(frame: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID) -> Descriptor:
    """Descriptor of one RGB frame with the native kernel (numpy fallback if it is not built)."""
    frame = _check_frame(frame)
    if _native is None:
        return describe_reference(frame, grid)
    thumb = np.empty(grid, dtype=np.float32)
    sharpness = _native.describe(frame, thumb)
    return Descriptor(thumb=thumb, sharpness=float(sharpness))


def describe_reference(frame: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID) -> Descriptor:
    """The numpy specification of :func:`describe`; slower, same numbers."""
    frame = _check_frame(frame)
    h, w, _ = frame.shape
    gh, gw = grid
    if not (0 < gh <= h and 0 < gw <= w):
        raise ValueError(f"thumbnail grid {grid} must be non-empty and no larger than the frame {h}x{w}")
    rgb = frame.astype(np.int32)
    y = (77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2] + 128) >> 8

    ys = (np.arange(gh + 1) * h) // gh
    xs = (np.arange(gw + 1) * w) // gw
    sums = np.add.reduceat(np.add.reduceat(y.astype(np.int64), ys[:-1], axis=0), xs[:-1], axis=1)
    counts = np.outer(np.diff(ys), np.diff(xs))
    thumb = (sums / counts).astype(np.float32)

    hh, hw = h // 2, w // 2
    if hh < 3 or hw < 3:
        return Descriptor(thumb=thumb, sharpness=0.0)
    b = y[: 2 * hh, : 2 * hw].reshape(hh, 2, hw, 2).sum(axis=(1, 3)).astype(np.int64)
    lap = b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1]
    n = lap.size
    mean = float(lap.sum()) / n
    var = (float((lap * lap).sum()) / n - mean * mean) / 16.0
    return Descriptor(thumb=thumb, sharpness=var)


def mean_abs_diff(thumb: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """MAD between one thumbnail and each of K thumbnails (``bank``: K x gh x gw), in luma levels."""
    thumb = np.ascontiguousarray(thumb, dtype=np.float32)
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    if bank.ndim == 2:
        bank = bank[None]
    if bank.shape[1:] != thumb.shape:
        raise ValueError(f"bank thumbnails {bank.shape[1:]} do not match thumb {thumb.shape}")
    if _native is None:
        dist: np.ndarray = np.abs(bank - thumb[None]).mean(axis=(1, 2)).astype(np.float32)
        return dist
    out = np.empty(bank.shape[0], dtype=np.float32)
    _native.mean_abs_diff_many(thumb, bank, out)
    return out
