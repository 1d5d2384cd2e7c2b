"""Build randomly initialised Qwen2.5-VL models offline, saved in Hugging Face format.

The result loads with plain transformers (``AutoModelForImageTextToText.from_pretrained(DIR,
local_files_only=True)`` and ``AutoProcessor.from_pretrained(DIR)``), no egovlm import needed.
egovlm adds one file, ``egovlm.json``, with the keyframe size the model was built for.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from egovlm.contract import CONTRACT_VERSION
from egovlm.models.presets import PRESETS, ModelPreset
from egovlm.models.tokenizer import CHAT_TEMPLATE, build_tokenizer

EGOVLM_META = "egovlm.json"
PATCH, MERGE, TEMPORAL = 14, 2, 2


def model_config(preset: ModelPreset, tokenizer_len: int, token_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    text = {
        "vocab_size": tokenizer_len,
        "hidden_size": preset.hidden_size,
        "intermediate_size": preset.intermediate_size,
        "num_hidden_layers": preset.num_layers,
        "num_attention_heads": preset.num_heads,
        "num_key_value_heads": preset.num_kv_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": preset.mrope_section,
        },
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        "tie_word_embeddings": True,
    }
    vision = {
        "depth": preset.vision_depth,
        "hidden_size": preset.vision_hidden,
        "intermediate_size": preset.vision_intermediate,
        "num_heads": preset.vision_heads,
        "out_hidden_size": preset.hidden_size,
        "patch_size": PATCH,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": TEMPORAL,
        "window_size": PATCH * MERGE * 2,  # 2x2 merged cells per window, like Qwen's 112 px at full size
        "fullatt_block_indexes": preset.fullatt_blocks,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_processor(preset: ModelPreset) -> Qwen2_5_VLProcessor:
    tokenizer = build_tokenizer(preset.vocab_size)
    w, h = preset.keyframe_size
    # min == max pixels pins every keyframe to the preset size (smart_resize keeps it exactly).
    pixels = {"min_pixels": w * h, "max_pixels": w * h}
    common = {"patch_size": PATCH, "merge_size": MERGE, "temporal_patch_size": TEMPORAL}
    image_processor = Qwen2VLImageProcessor(**pixels, **common)
    video_processor = Qwen2VLVideoProcessor(**pixels, **common)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(kind: str, out: Path | str, seed: int = 0) -> Path:
    """Build the ``kind`` preset (tiny, nano, small) with random weights into ``out``.

    Written to a temporary folder and renamed into place, so ``out`` is either complete or absent.
    """
    if kind not in PRESETS:
        raise ValueError(f"unknown model size {kind!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[kind]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    processor = build_processor(preset)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    config = model_config(preset, len(tok), ids)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        meta = {
            "preset": kind,
            "seed": seed,
            "keyframe_size": list(preset.keyframe_size),
            "contract_version": CONTRACT_VERSION,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trained": False,
        }
        (tmp / EGOVLM_META).write_text(json.dumps(meta, indent=2) + "\n")
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
