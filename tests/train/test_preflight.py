"""GPU recipes on this CPU-only machine fail fast, with every missing piece named and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from egovlm.train import preflight
from egovlm.train.config import load_config
from egovlm.train.preflight import PreflightError

REPO = Path(__file__).resolve().parents[2]


def problems_of(recipe: str, *overrides: str) -> list[str]:
    return preflight.problems(load_config(REPO / "configs" / recipe, list(overrides)))


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no GPU; pin it so the tests mean the same on a GPU host."""
    monkeypatch.setattr(preflight, "cuda_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_full_recipe_needs_cuda_and_its_data() -> None:
    found = problems_of("egovlm_3b.yaml")
    assert any("no CUDA GPU is visible" in p for p in found)
    assert any("data.train data/egoqa_train/qa.jsonl does not exist" in p for p in found)


def test_qlora_recipe_names_bitsandbytes_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    real = preflight.has_module
    monkeypatch.setattr(preflight, "has_module", lambda name: name != "bitsandbytes" and real(name))
    found = problems_of("egovlm_3b_qlora.yaml")
    assert any("needs bitsandbytes" in p for p in found)
    assert any("load_in_4bit (QLoRA NF4) needs a CUDA GPU" in p for p in found)


def test_vllm_deepspeed_and_flash_attention_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    found = problems_of(
        "egovlm_3b.yaml",
        "grpo.use_vllm=true",
        "grpo.vllm_mode=colocate",
        "rollouts.answers=free",  # the answer rule runs in transformers' generate only
        "model.attn_implementation=flash_attention_2",
    )
    text = "\n".join(found)
    if not preflight.has_module("vllm"):
        assert "grpo.use_vllm needs vLLM" in text
    if not preflight.has_module("deepspeed"):
        assert "uses DeepSpeed but it is not installed" in text
    if not preflight.has_module("flash_attn"):
        assert "needs the flash-attn package" in text


def test_world_size_that_breaks_the_generation_batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    found = problems_of("tiny_cpu.yaml", "grpo.generation_batch_size=16")  # fine on 1 or 2 processes
    assert any("generation_batch_size (16)" in p and "3 process(es) = 24" in p for p in found)


def test_tiny_recipe_is_clean() -> None:
    assert problems_of("tiny_cpu.yaml") == []


def test_check_raises_with_all_problems(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "egovlm_3b_qlora.yaml", [f"run.output_dir={tmp_path}"])
    with pytest.raises(PreflightError) as err:
        preflight.check(cfg)
    assert len(err.value.problems) >= 2
    assert "egovlm_3b_qlora.yaml cannot run on this machine" in str(err.value)


def test_missing_local_model_without_build() -> None:
    found = problems_of("tiny_cpu.yaml", "model.path=/no/such/model", "model.build_if_missing=null")
    assert any("model.path /no/such/model does not exist" in p for p in found)


def test_cli_prints_a_message_not_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from egovlm.cli import app

    recipe = str(REPO / "configs" / "egovlm_3b.yaml")
    result = CliRunner().invoke(app, ["train", "--config", recipe, f"run.output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2
    assert "cannot run on this machine" in result.output and "no CUDA GPU is visible" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # nothing was built or written
