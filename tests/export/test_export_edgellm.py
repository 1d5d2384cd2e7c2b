"""--backend edgellm: command construction, the missing-tool message, and running the steps (against
stand-in scripts; the real tools live in Edge-LLM's own environment)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from egovlm.export import edgellm


def test_int4_flow_quantizes_then_exports_llm_and_visual(tmp_path: Path) -> None:
    steps = edgellm.host_steps(Path("/m/qwen"), tmp_path / "out", "int4", device="cpu")
    assert [s.name for s in steps] == ["quantize", "export-llm", "export-visual"]
    assert steps[0].argv == [
        edgellm.QUANTIZE,
        "--model_dir",
        "/m/qwen",
        "--output_dir",
        str(tmp_path / "out" / "quantized"),
        "--quantization",
        "int4_awq",
    ]
    assert steps[1].argv[:3] == [edgellm.EXPORT_LLM, "--model_dir", str(tmp_path / "out" / "quantized")]
    assert steps[1].argv[-2:] == ["--device", "cpu"]
    assert steps[2].argv[:3] == [
        edgellm.EXPORT_VISUAL,
        "--model_dir",
        "/m/qwen",
    ]  # visual from the fp16 model


def test_fp16_skips_quantize_and_int8_is_refused() -> None:
    steps = edgellm.host_steps(Path("/m"), Path("/o"), "fp16")
    assert [s.name for s in steps] == ["export-llm", "export-visual"]
    assert steps[0].argv[2] == "/m"
    with pytest.raises(edgellm.EdgeLLMUnavailableError, match="'int8' is not one of"):
        edgellm.host_steps(Path("/m"), Path("/o"), "int8")


def test_device_steps_use_the_profile_plan() -> None:
    llm, visual = edgellm.device_steps(Path("/o"), max_input_len=1664, max_kv_cache=8192, image_tokens=192)
    assert (
        "--vlm" in llm.argv and "--maxInputLen=1664" in llm.argv and "--maxKVCacheCapacity=8192" in llm.argv
    )
    assert llm.argv[llm.argv.index("--maxImageTokens") + 1] == "192"
    assert visual.argv[0].endswith("multimodal/visual_build")


def test_missing_tools_message_names_them_and_prints_the_commands(tmp_path: Path) -> None:
    steps = edgellm.host_steps(Path("/m"), Path("/o"), "int4", bin_dir=tmp_path)
    with pytest.raises(edgellm.EdgeLLMUnavailableError) as info:
        edgellm.check_tools(steps, tmp_path)
    text = str(info.value)
    assert f"not found in {tmp_path}" in text and edgellm.QUANTIZE in text and "pip install" in text
    assert steps[0].shell() in text


def _stub(bin_dir: Path, name: str, code: int = 0) -> None:
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "$0 $@"\nexit {code}\n')
    script.chmod(0o755)


def test_steps_run_with_logs_and_stop_at_a_failure(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in edgellm.TOOLS:
        _stub(bin_dir, tool)
    steps = edgellm.host_steps(Path("/m"), tmp_path / "o", "fp8", bin_dir=bin_dir)
    edgellm.check_tools(steps, bin_dir)
    edgellm.run_steps(steps, tmp_path / "logs")
    assert "--quantization fp8" in (tmp_path / "logs" / "quantize.log").read_text()
    _stub(bin_dir, edgellm.EXPORT_LLM, code=3)
    with pytest.raises(RuntimeError, match="'export-llm' exited 3"):
        edgellm.run_steps(steps, tmp_path / "logs2")
    assert not (tmp_path / "logs2" / "export-visual.log").exists()
    assert os.access(bin_dir / edgellm.QUANTIZE, os.X_OK)
