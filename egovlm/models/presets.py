"""Sizes of offline-built models of the real Qwen2.5-VL architecture.

``tiny`` (about 1 M parameters) is for unit tests; ``small`` (about 35 M) for benchmarks where
Python overhead must not dominate; ``nano`` sits between them for the CPU GRPO experiment.
Each keeps Qwen2.5-VL's structure (windowed ViT with full-attention blocks, 2x2 patch merger,
GQA decoder with M-RoPE); only widths and depths shrink.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPreset:
    vocab_size: int  # BPE merges target; special and tag tokens come on top
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    keyframe_size: tuple[int, int]  # (width, height): multiples of patch 14 x merge 2 = 28

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mrope_section(self) -> list[int]:
        """Split of head_dim/2 rotary frequencies over (time, height, width), Qwen's 1:1.5:1.5."""
        half = self.head_dim // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]

    @property
    def fullatt_blocks(self) -> list[int]:
        """Qwen2.5-VL uses full attention in every 8th ViT block (7, 15, 23, 31); we keep the last."""
        return [self.vision_depth - 1]


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        vocab_size=1024,
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=384,
        vision_hidden=64,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=192,
        keyframe_size=(112, 84),
    ),
    "nano": ModelPreset(
        vocab_size=2048,
        hidden_size=192,
        num_layers=4,
        num_heads=6,
        num_kv_heads=2,
        intermediate_size=512,
        vision_hidden=96,
        vision_depth=4,
        vision_heads=4,
        vision_intermediate=256,
        keyframe_size=(112, 84),
    ),
    "small": ModelPreset(
        vocab_size=4096,
        hidden_size=512,
        num_layers=8,
        num_heads=8,
        num_kv_heads=4,
        intermediate_size=1408,
        vision_hidden=256,
        vision_depth=6,
        vision_heads=4,
        vision_intermediate=704,
        keyframe_size=(224, 168),
    ),
}

# Keyframe size for real checkpoints (no egovlm.json): 448x336 gives 16x12 merged tokens = 192
# visual tokens per keyframe, a fair trade between detail and a K=16 prefix on an Orin.
DEFAULT_KEYFRAME_SIZE = (448, 336)
