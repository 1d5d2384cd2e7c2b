"""``egovlm model slice3b``: the real Qwen2.5-VL-3B-Instruct's widths with only a few layers.

The widths are checked against the published config.json (text hidden 2048, 16 heads, 2 KV heads, MLP
11008, 151,936 tied embedding rows; ViT 1280 wide, 16 heads, MLP 3420, patch 14, merge 2, window 112),
and the per-layer scaling against the published checkpoint's parameter count, 3,754,622,976 (Hugging
Face lists 3.75 B BF16 parameters for Qwen/Qwen2.5-VL-3B-Instruct): a slice measured in bytes and scaled
to 36 decoder layers and 32 ViT blocks must land exactly on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.models.presets import (
    SLICE_META,
    LayerCounts,
    checkpoint_weight_bytes,
    real_layer_counts,
    real_weight_bytes,
    scale_to_real,
    slice3b_preset,
)

QWEN25_VL_3B_PARAMETERS = 3_754_622_976  # the published checkpoint's safetensors, all BF16


@pytest.fixture(scope="module")
def slice1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer / 1-block slice: 0.9 GB of bf16 safetensors, about 20 s to build on 2 cores."""
    from egovlm.models.build import build_slice3b

    return build_slice3b(tmp_path_factory.mktemp("models") / "slice1", layers=1, seed=0)


def test_one_layer_slice_loads_in_plain_transformers_with_the_real_widths(slice1: Path) -> None:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, info = AutoModelForImageTextToText.from_pretrained(
        slice1, local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"]
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (2048, 16, 2)
    assert (text.intermediate_size, text.vocab_size, text.num_hidden_layers) == (11008, 151936, 1)
    assert text.max_position_embeddings == 128000
    assert text.rope_parameters["rope_theta"] == 1e6 and text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.hidden_size, vision.num_heads, vision.intermediate_size, vision.depth) == (
        1280,
        16,
        3420,
        1,
    )
    assert (vision.out_hidden_size, vision.patch_size, vision.spatial_merge_size) == (2048, 14, 2)
    assert (vision.temporal_patch_size, vision.window_size, vision.fullatt_block_indexes) == (2, 112, [0])
    embed = model.get_input_embeddings().weight
    assert tuple(embed.shape) == (151936, 2048)
    assert model.lm_head.weight.data_ptr() == embed.data_ptr()  # tied, as in the real checkpoint

    # 448x336 keyframes: 24x32 patches, merged 2x2 into 192 visual tokens, the real deployment size.
    processor = AutoProcessor.from_pretrained(slice1, local_files_only=True)
    out = processor.image_processor(images=[Image.new("RGB", (448, 336))], return_tensors="np")
    assert out["image_grid_thw"].tolist() == [[1, 24, 32]]
    assert json.loads((slice1 / "egovlm.json").read_text())["keyframe_size"] == [448, 336]


def test_per_layer_bytes_scale_to_the_published_3b(slice1: Path, tiny_model_dir: Path) -> None:
    assert real_layer_counts(slice1) == LayerCounts(text=36, vision=32)
    measured = checkpoint_weight_bytes(slice1)
    assert measured.counts == LayerCounts(text=1, vision=1)
    assert measured.total == sum(p.stat().st_size for p in slice1.glob("*.safetensors")) - _headers(slice1)
    # bf16 on disk, like the real checkpoint: 2 bytes per parameter.
    assert real_weight_bytes(slice1) == 2 * QWEN25_VL_3B_PARAMETERS
    assert scale_to_real(slice1, 10, 3, 2) == 10 + 3 * 36 + 2 * 32
    # A checkpoint that is not a slice stands for itself.
    assert real_layer_counts(tiny_model_dir) == LayerCounts(text=2, vision=2)
    assert real_weight_bytes(tiny_model_dir) == checkpoint_weight_bytes(tiny_model_dir).total


def _headers(model_dir: Path) -> int:
    """Bytes of the safetensors headers (8-byte length + JSON), which are not weights."""
    total = 0
    for path in model_dir.glob("*.safetensors"):
        with path.open("rb") as f:
            total += 8 + int.from_bytes(f.read(8), "little")
    return total


def test_slice_presets_keep_real_full_attention_blocks_inside_the_slice() -> None:
    assert slice3b_preset(36).fullatt_blocks == [7, 15, 23, 31]  # vision defaults to min(36, 32) = 32
    assert slice3b_preset(12, 16).fullatt_blocks == [7, 15]
    assert slice3b_preset(4).fullatt_blocks == [3]  # no real index inside: the last block
    assert slice3b_preset(4, 1).fullatt_blocks == [0]
    p = slice3b_preset(2)
    assert (p.num_layers, p.vision_depth, p.vocab_rows, p.keyframe_size) == (2, 2, 151936, (448, 336))
    assert p.mrope_section == [16, 24, 24]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--layers", "0"], "--layers must be 1..36"),
        (["--layers", "37"], "--layers must be 1..36"),
        (["--layers", "2", "--vision-layers", "33"], "--vision-layers must be 1..32"),
    ],
)
def test_cli_refuses_layer_counts_outside_the_real_model(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    from egovlm.models.cli import app

    result = CliRunner().invoke(app, ["slice3b", "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())  # rich wraps the message over lines
    assert not (tmp_path / "s").exists()


def test_corrupt_slice_json_is_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (tmp_path / SLICE_META).write_text('{"real_text_layers": 36}')
    with pytest.raises(ValueError, match=r"slice\.json: corrupt .*real_vision_layers"):
        real_layer_counts(tmp_path)
