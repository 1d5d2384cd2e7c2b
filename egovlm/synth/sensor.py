"""The camera sensor: auto-exposure swings, lens vignetting and per-frame noise.

Exposure is a closed-form function of time (gaze towards the bright window lowers the gain with a
lag, as auto-exposure does; random light changes jump and then adapt back), so frames can be
rendered in any order. Noise comes from a small bank of precomputed Gaussian fields applied with
OpenCV's saturating adds: drawing fresh 640x480x3 Gaussian noise per frame would cost more than
rendering the scene.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from egovlm.synth.scene import WINDOW
from egovlm.synth.seeds import child

_NOISE_BANK = 8
_BLOCK_S = 60.0  # light changes are drawn per minute from a key-derived stream: random access in time


class Sensor:
    """Applies exposure, vignette and noise in place to RGB uint8 frames of ``size`` (w, h)."""

    def __init__(
        self,
        size: tuple[int, int],
        seed_seq: np.random.SeedSequence,
        *,
        noise: bool = True,
        exposure: bool = True,
    ) -> None:
        w, h = size
        rng = np.random.default_rng(child(seed_seq, 0))
        self.noise = noise
        self.exposure = exposure
        self.base_gain = float(rng.uniform(0.97, 1.08))
        self._entropy = seed_seq.entropy
        self._key = (*seed_seq.spawn_key, 7)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        vig = 1.0 - 0.16 * r2 if exposure else np.ones_like(r2)
        self.vignette = np.repeat((np.clip(vig, 0, 1) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
        sigma = float(rng.uniform(2.5, 4.5))
        self._pos: list[np.ndarray] = []
        self._neg: list[np.ndarray] = []
        for _ in range(_NOISE_BANK if noise else 0):
            field = rng.normal(0.0, sigma, (h, w, 3)).astype(np.float32)
            self._pos.append(np.clip(field, 0, 255).astype(np.uint8))
            self._neg.append(np.clip(-field, 0, 255).astype(np.uint8))
        self._salt = int(rng.integers(0, 1 << 30))
        self._blocks: dict[int, np.ndarray] = {}

    def light_changes(self, block: int) -> np.ndarray:
        """Rows (time, factor) of sudden light changes in minute ``block``."""
        if block not in self._blocks:
            ss = np.random.SeedSequence(self._entropy, spawn_key=(*self._key, block))
            rng = np.random.default_rng(ss)
            n = int(rng.poisson(_BLOCK_S / 14.0))
            times = np.sort(rng.uniform(0, _BLOCK_S, n)) + block * _BLOCK_S
            darker = rng.random(n) < 0.5
            factors = np.where(darker, rng.uniform(0.68, 0.85, n), rng.uniform(1.18, 1.4, n))
            self._blocks[block] = np.stack([times, factors], axis=1)
            if len(self._blocks) > 4:
                del self._blocks[min(self._blocks)]
        return self._blocks[block]

    def gain(self, t: float, lagged_centre: tuple[float, float]) -> float:
        """Overall gain at ``t`` given where the head pointed ~0.35 s earlier."""
        if not self.exposure:
            return 1.0
        wx, wy = (WINDOW[0] + WINDOW[2]) / 2, (WINDOW[1] + WINDOW[3]) / 2
        d2 = (lagged_centre[0] - wx) ** 2 + (lagged_centre[1] - wy) ** 2
        ae = 1.0 - 0.24 * math.exp(-d2 / (2 * 260.0**2))
        drift = 1.0 + 0.04 * math.sin(0.21 * t + self._salt % 7)
        light = 1.0
        block = int(t // _BLOCK_S)
        for b in (block - 1, block):
            if b < 0:
                continue
            for te, f in self.light_changes(b):
                if te <= t:
                    light *= 1.0 + (f - 1.0) * math.exp(-(t - te) / 0.7)
        return self.base_gain * ae * drift * light

    def apply(self, frame: np.ndarray, gain: float, frame_index: int) -> np.ndarray:
        """Exposure x vignette, then noise; ``frame`` is modified in place and returned."""
        if self.exposure:
            cv2.multiply(frame, self.vignette, dst=frame, scale=gain / 255.0)
        if self.noise:
            k = (frame_index * 7919 + self._salt) % _NOISE_BANK
            cv2.add(frame, self._pos[k], dst=frame)
            cv2.subtract(frame, self._neg[(k + 3) % _NOISE_BANK], dst=frame)
        return frame
