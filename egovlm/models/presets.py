"""Sizes of offline-built models of the real Qwen2.5-VL architecture.

``tiny`` (about 1 M parameters) is for unit tests; ``small`` (about 35 M) for benchmarks where
Python overhead must not dominate; ``nano`` sits between them for the CPU GRPO experiment.
Each keeps Qwen2.5-VL's structure (windowed ViT with full-attention blocks, 2x2 patch merger,
GQA decoder with M-RoPE); only widths and depths shrink.

``slice3b`` keeps the real Qwen2.5-VL-3B-Instruct's widths (:data:`QWEN25_VL_3B`) and only a few of
its layers: graph sizes, protobuf limits, quantiser memory and fit checks behave as at full size.
Its ``slice.json`` records the full model's layer counts; :func:`real_weight_bytes` and
:func:`scale_to_real` turn per-layer bytes measured on a slice into the full model's bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

SHARPEN = 6.0  # egovlm.models.build.sharpen_decoder's default: what tests and the peers benchmark use


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
    # Embedding rows when larger than the tokenizer (real checkpoints pad the vocabulary); None: the
    # tokenizer's length.
    vocab_rows: int | None = None
    full_attention_blocks: tuple[int, ...] | None = None  # None: the last block (see fullatt_blocks)
    window_size: int = 56  # pixels: 2x2 merged cells (Qwen's 112 px is 4x4)
    max_position_embeddings: int = 32768
    tokens_per_second: int | None = None  # video positions; None: transformers' default

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
        """Qwen2.5-VL uses full attention in every 8th ViT block (7, 15, 23, 31); the small presets
        keep the last block, the 3B widths keep the real indexes."""
        if self.full_attention_blocks is not None:
            return list(self.full_attention_blocks)
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


# Qwen/Qwen2.5-VL-3B-Instruct's config.json (text: hidden 2048, 16 heads, 2 KV heads, MLP 11008, 36
# layers, 151,936 embedding rows tied to the LM head, rope_theta 1e6, mrope_section [16, 24, 24], 128,000
# positions; vision: 32 blocks of width 1280, 16 heads, MLP 3420, full attention in 7/15/23/31, window
# 112 px, patch 14, merge 2, temporal patch 2, out_hidden_size 2048, 2 tokens per second). The
# checkpoint's config omits most vision fields: they are transformers' Qwen2_5_VLVisionConfig defaults.
QWEN25_VL_3B_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
QWEN25_VL_3B = ModelPreset(
    vocab_size=4096,  # the offline BPE's target; the embedding keeps the real 151,936 rows below
    hidden_size=2048,
    num_layers=36,
    num_heads=16,
    num_kv_heads=2,
    intermediate_size=11008,
    vision_hidden=1280,
    vision_depth=32,
    vision_heads=16,
    vision_intermediate=3420,
    keyframe_size=DEFAULT_KEYFRAME_SIZE,
    vocab_rows=151936,
    full_attention_blocks=(7, 15, 23, 31),
    window_size=112,
    max_position_embeddings=128000,
    tokens_per_second=2,
)
SLICE_META = "slice.json"  # written by `egovlm model slice3b` beside config.json


def slice3b_preset(layers: int, vision_layers: int | None = None) -> ModelPreset:
    """The 3B's widths with ``layers`` decoder layers and ``vision_layers`` ViT blocks (default: as many
    as decoder layers, at most the real 32). Full-attention blocks: the real indexes that fall inside
    the slice, else the last block, so every slice has one full-attention block and (from two blocks
    on) windowed ones, like the real tower."""
    real = QWEN25_VL_3B
    vision = min(layers, real.vision_depth) if vision_layers is None else vision_layers
    if not 1 <= layers <= real.num_layers:
        raise ValueError(
            f"--layers must be 1..{real.num_layers} (the real 3B has {real.num_layers}), got {layers}"
        )
    if not 1 <= vision <= real.vision_depth:
        raise ValueError(
            f"--vision-layers must be 1..{real.vision_depth} "
            f"(the real 3B has {real.vision_depth}), got {vision}"
        )
    full = tuple(i for i in real.fullatt_blocks if i < vision) or (vision - 1,)
    return replace(real, num_layers=layers, vision_depth=vision, full_attention_blocks=full)


@dataclass(frozen=True)
class LayerCounts:
    text: int  # decoder layers
    vision: int  # ViT blocks


def slice_meta(text_layers: int, vision_layers: int) -> dict[str, object]:
    """The content of ``slice.json`` for a slice of the 3B (what :func:`real_layer_counts` reads)."""
    return {
        "model": QWEN25_VL_3B_ID,
        "text_layers": text_layers,
        "vision_layers": vision_layers,
        "real_text_layers": QWEN25_VL_3B.num_layers,
        "real_vision_layers": QWEN25_VL_3B.vision_depth,
    }


def layer_counts(model_dir: Path | str) -> LayerCounts:
    """The layer counts in ``model_dir``'s own ``config.json``."""
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text())
        text = cfg.get("text_config", cfg)
        return LayerCounts(int(text["num_hidden_layers"]), int(cfg["vision_config"]["depth"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: cannot read the layer counts ({type(e).__name__}: {e}); expected a Qwen2.5-VL "
            "config.json with text_config.num_hidden_layers and vision_config.depth"
        ) from None


def real_layer_counts(model_dir: Path | str) -> LayerCounts:
    """Layer counts of the full model ``model_dir`` stands for: a slice's ``slice.json`` names the real
    model's; any other checkpoint stands for itself (its ``config.json``), so callers need no branch."""
    meta = Path(model_dir) / SLICE_META
    if not meta.is_file():
        return layer_counts(model_dir)
    try:
        raw = json.loads(meta.read_text())
        return LayerCounts(int(raw["real_text_layers"]), int(raw["real_vision_layers"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{meta}: corrupt ({type(e).__name__}: {e}); expected real_text_layers and real_vision_layers "
            "(rebuild the slice with `egovlm model slice3b`)"
        ) from None


def scale_to_real(
    model_dir: Path | str, fixed_bytes: int, per_text_layer_bytes: int, per_vision_layer_bytes: int = 0
) -> int:
    """Bytes of the full model from bytes measured on a slice: the parts every model has once
    (``fixed_bytes``: embeddings, LM head, patch embedding, merger, final norm) plus per-layer bytes times
    the REAL layer counts (:func:`real_layer_counts`). For a checkpoint that is not a slice this is the
    same sum over its own layers."""
    real = real_layer_counts(model_dir)
    return fixed_bytes + per_text_layer_bytes * real.text + per_vision_layer_bytes * real.vision


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of a checkpoint's weights as stored (safetensors dtypes), split as :func:`scale_to_real`
    needs them. ``per_*_layer`` is the mean over the checkpoint's layers (all layers have one shape)."""

    fixed: int
    per_text_layer: int
    per_vision_layer: int
    counts: LayerCounts

    @property
    def total(self) -> int:
        """Bytes of this checkpoint itself (its own layer counts)."""
        return (
            self.fixed + self.per_text_layer * self.counts.text + self.per_vision_layer * self.counts.vision
        )


# transformers 5 saves model.language_model.layers.N.*; Qwen's published checkpoint has model.layers.N.*
_TEXT_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_VISION_LAYER = re.compile(r"(?:^|\.)visual\.blocks\.(\d+)\.")


def checkpoint_weight_bytes(model_dir: Path | str) -> WeightBytes:
    """Read every safetensors header in ``model_dir`` (no tensor data) and split the bytes into
    fixed parts, decoder layers and ViT blocks. Tied weights are stored once, as in the checkpoint."""
    from egovlm.models.files import read_safetensors_headers

    fixed, text, vision = 0, 0, 0
    text_ids: set[int] = set()
    vision_ids: set[int] = set()
    for tensor in read_safetensors_headers(model_dir):
        size = tensor.nbytes
        if m := _TEXT_LAYER.search(tensor.name):
            text += size
            text_ids.add(int(m.group(1)))
        elif m := _VISION_LAYER.search(tensor.name):
            vision += size
            vision_ids.add(int(m.group(1)))
        else:
            fixed += size
    counts = layer_counts(model_dir)
    if len(text_ids) != counts.text or len(vision_ids) != counts.vision:
        raise ValueError(
            f"{model_dir}: the weights hold {len(text_ids)} decoder layers and {len(vision_ids)} ViT blocks "
            f"but config.json says {counts.text} and {counts.vision}; the checkpoint is incomplete"
        )
    return WeightBytes(fixed, text // counts.text, vision // counts.vision, counts)


def real_weight_bytes(model_dir: Path | str) -> int:
    """The full model's weight bytes (as stored) estimated from ``model_dir``: per-layer bytes measured
    on the checkpoint times the real layer counts. For a 3B slice saved in bf16 this is the real
    Qwen2.5-VL-3B-Instruct's 2 x 3,754,622,976 bytes."""
    w = checkpoint_weight_bytes(model_dir)
    return scale_to_real(model_dir, w.fixed, w.per_text_layer, w.per_vision_layer)
