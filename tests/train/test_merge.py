"""``egovlm train merge``: LoRA folded into 16-bit weights, processor carried along, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from egovlm.train.merge import MergeError, merge


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny model with non-zero B (a fresh adapter would merge to a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir))
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    model = get_peft_model(base, cfg)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(str(tiny_model_dir)).save_pretrained(out)
    return out


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merge_matches_the_adapter_and_loads_as_a_plain_checkpoint(
    adapter_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from egovlm.models.loading import load_model

    out = merge(adapter_dir, tmp_path / "merged", dtype="bfloat16")
    assert not (out / "adapter_config.json").exists()
    meta = json.loads((out / "egovlm.json").read_text())
    assert meta["trained"] and meta["dtype"] == "bfloat16" and meta["keyframe_size"] == [112, 84]
    # the loader egovlm.export and egovlm.edge use: needs config, processor, safetensors
    loaded = load_model(out)
    assert loaded.keyframe_size == (112, 84)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"

    ids = torch.tensor([[5, 17, 300, 42, 9, 100]])
    base = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16)
    with_adapter = PeftModel.from_pretrained(base, str(adapter_dir))
    merged = AutoModelForImageTextToText.from_pretrained(str(out), dtype=torch.bfloat16)
    plain = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16)
    expected, got = logits(with_adapter, ids), logits(merged, ids)
    assert torch.allclose(got, expected, atol=0.1), (got - expected).abs().max()
    assert (logits(plain, ids) - got).abs().max() > 0.1  # the merge changed the weights


def test_merge_refuses_to_clobber_and_is_atomic(adapter_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MergeError, match="not empty"):
        merge(adapter_dir, out)
    assert (out / "keep.txt").read_text() == "mine"
    merge(adapter_dir, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary folders left


def test_merge_errors(tmp_path: Path, adapter_dir: Path) -> None:
    with pytest.raises(MergeError, match="not a LoRA adapter"):
        merge(tmp_path, tmp_path / "o")
    with pytest.raises(MergeError, match="16-bit"):
        merge(adapter_dir, tmp_path / "o", dtype="float32")
    with pytest.raises(MergeError, match="does not exist"):
        merge(adapter_dir, tmp_path / "o", base="/no/such/base")
