"""Build randomly initialised Qwen2.5-VL models offline, saved in Hugging Face format.

The result loads with plain transformers (``AutoModelForImageTextToText.from_pretrained(DIR,
local_files_only=True)`` and ``AutoProcessor.from_pretrained(DIR)``), no egovlm import needed.
egovlm adds one file, ``egovlm.json``, with the keyframe size the model was built for; a 3B slice
(:func:`build_slice3b`) adds ``slice.json`` with the real model's layer counts. A tokenizer trained
with an extra corpus (``extra_corpus``, e.g. EgoSynth's words) is recorded there as
``tokenizer_corpus``; a default build has no such field and the default tokenizer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from egovlm.contract import CONTRACT_VERSION
from egovlm.models.files import EGOVLM_META, TOKENIZER_CORPUS
from egovlm.models.presets import PRESETS, SHARPEN, SLICE_META, ModelPreset, slice3b_preset, slice_meta
from egovlm.models.tokenizer import CHAT_TEMPLATE, build_tokenizer

PATCH, MERGE, TEMPORAL = 14, 2, 2


def model_config(preset: ModelPreset, tokenizer_len: int, token_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    if preset.vocab_rows is not None and preset.vocab_rows < tokenizer_len:
        raise ValueError(
            f"vocab_rows {preset.vocab_rows} is smaller than the tokenizer ({tokenizer_len} tokens)"
        )
    text = {
        "vocab_size": preset.vocab_rows or tokenizer_len,
        "hidden_size": preset.hidden_size,
        "intermediate_size": preset.intermediate_size,
        "num_hidden_layers": preset.num_layers,
        "num_attention_heads": preset.num_heads,
        "num_key_value_heads": preset.num_kv_heads,
        "max_position_embeddings": preset.max_position_embeddings,
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
        "window_size": preset.window_size,
        "fullatt_block_indexes": preset.fullatt_blocks,
    }
    if preset.tokens_per_second is not None:
        vision["tokens_per_second"] = preset.tokens_per_second
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_processor(preset: ModelPreset, extra_corpus: Sequence[str] = ()) -> Qwen2_5_VLProcessor:
    tokenizer = build_tokenizer(preset.vocab_size, extra_corpus)
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


def build_model(
    kind: str,
    out: Path | str,
    seed: int = 0,
    extra_corpus: Sequence[str] = (),
    corpus_name: str = "custom",
) -> Path:
    """Build the ``kind`` preset (tiny, nano, small) with random weights into ``out``.

    ``extra_corpus`` adds sentences to the tokenizer's training corpus (see
    :func:`egovlm.models.tokenizer.build_tokenizer`); ``corpus_name`` is what egovlm.json records
    for it (e.g. ``egosynth`` for :func:`egovlm.synth.vocabulary.egosynth_vocabulary`).
    Written to a temporary folder and renamed into place, so ``out`` is either complete or absent.
    """
    if kind not in PRESETS:
        raise ValueError(f"unknown model size {kind!r}; choose one of {', '.join(PRESETS)}")
    return _build(PRESETS[kind], kind, Path(out), seed, torch.float32, {}, extra_corpus, corpus_name)


def sharpen_decoder(path: Path | str, factor: float = SHARPEN) -> Path:
    """Scale an offline model's decoder weight matrices by ``factor`` in place (safetensors).

    A random-init model with tied embeddings echoes the prompt's last token forever, which makes
    token-equality checks (cached vs scratch, runtime vs runtime) vacuous; sharpened, its greedy
    answers change token to token."""
    from egovlm.models import load_model

    loaded = load_model(path)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "language_model.layers" in name and param.ndim == 2:
                param.mul_(factor)
    loaded.model.save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_slice3b(out: Path | str, layers: int, vision_layers: int | None = None, seed: int = 0) -> Path:
    """Qwen2.5-VL-3B-Instruct's real widths with only ``layers`` decoder layers and ``vision_layers`` ViT
    blocks (see :func:`egovlm.models.presets.slice3b_preset`), random weights, into ``out``.

    Saved in bfloat16 like the real checkpoint, so safetensors bytes per layer are the real ones (and a
    1-layer slice is 0.9 GB on disk instead of 1.8 GB); loaders upcast as they wish (egovlm loads fp32).
    ``slice.json`` records the real layer counts for :func:`egovlm.models.presets.real_layer_counts`.
    """
    preset = slice3b_preset(layers, vision_layers)
    extra = {SLICE_META: slice_meta(preset.num_layers, preset.vision_depth)}
    return _build(preset, "slice3b", Path(out), seed, torch.bfloat16, extra)


def _build(
    preset: ModelPreset,
    kind: str,
    out: Path,
    seed: int,
    dtype: torch.dtype,
    extra_json: dict[str, Any],
    extra_corpus: Sequence[str] = (),
    corpus_name: str = "custom",
) -> Path:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    processor = build_processor(preset, extra_corpus)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    config = model_config(preset, len(tok), ids)
    torch.manual_seed(seed)
    # Initialised directly in ``dtype``: a 3B-wide slice is never materialised in fp32 here.
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
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
        if extra_corpus:
            meta[TOKENIZER_CORPUS] = corpus_name
        (tmp / EGOVLM_META).write_text(json.dumps(meta, indent=2) + "\n")
        for name, body in extra_json.items():
            (tmp / name).write_text(json.dumps(body, indent=2) + "\n")
        for path in tmp.iterdir():  # mkdtemp/safetensors create owner-only modes; models are shared
            path.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
