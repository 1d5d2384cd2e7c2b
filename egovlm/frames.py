"""Frame sets: what every stage shows the model (docs/architecture.md#the-contract).

A frame set is an ordered list of keyframes, each an RGB image with its 1-based index in the
set and its timestamp in the source video. Train, eval and the edge buffer all build the
prompt from a frame set, so the model meets the same input everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Frame:
    """One keyframe: ``image`` is HxWx3 uint8 RGB, ``timestamp_s`` seconds from the source start."""

    index: int
    timestamp_s: float
    image: np.ndarray

    def __post_init__(self) -> None:
        img = self.image
        if not (
            isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        ):
            shape = getattr(img, "shape", None)
            raise ValueError(f"frame {self.index}: image must be HxWx3 uint8 RGB, got {shape}")
        if self.index < 1:
            raise ValueError(f"frame indices start at 1, got {self.index}")
        if self.timestamp_s < 0:
            raise ValueError(f"frame {self.index}: negative timestamp {self.timestamp_s}")

    def pil(self) -> Image.Image:
        return Image.fromarray(self.image)


def frame_set(images: list[np.ndarray], timestamps: list[float]) -> list[Frame]:
    """Number images 1..N in time order (the contract's indices are positions in the set)."""
    if len(images) != len(timestamps):
        raise ValueError(f"{len(images)} images but {len(timestamps)} timestamps")
    order = sorted(range(len(images)), key=lambda i: timestamps[i])
    return [
        Frame(index=k + 1, timestamp_s=float(timestamps[i]), image=images[i]) for k, i in enumerate(order)
    ]


def resize_for_model(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to the runtime's fixed keyframe size ``(width, height)``: every stage uses this."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
