"""End to end on the tiny model, ONNX Runtime CPU: fp32, int8 and int4 exports pass their parity
thresholds, shrink as expected, publish a verifiable manifest, and the ORT runner's greedy tokens equal
model.generate's (fp32), also when the prompt is prefilled in two chunks (the edge runtime's cached
prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.export.pipeline import ExportOptions, ExportResult, run_export


@pytest.fixture(scope="module")
def exports(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportResult]:
    root = tmp_path_factory.mktemp("exports")
    return {
        p: run_export(
            ExportOptions(
                model=str(tiny_model_dir),
                out=root / p,
                target="cpu",
                precision=p,
                parity_prompts=1,
                frames_per_prompt=3,
                max_new_tokens=10,
                threads=1,
            )
        )
        for p in ("fp32", "int8", "int4")
    }


def test_all_precisions_pass_and_publish(exports: dict[str, ExportResult]) -> None:
    from egovlm.contract import CONTRACT_VERSION
    from egovlm.export.manifest import load_manifest

    for precision, result in exports.items():
        assert result.passed, result.report["parity"]["failures"]
        m = load_manifest(result.out, verify=True, contract_version=CONTRACT_VERSION)
        assert m.precision == precision and m.runtime == "onnxruntime"
        assert m.graph("decoder")["precision"] == precision
        assert (m.processor_dir / "tokenizer.json").is_file()
        assert m.keyframe_size == (112, 84) and m.model["tokens_per_keyframe"] == 12
        assert (result.out / "report.md").read_text().count("PASSED") == 1
        assert not list(result.out.parent.glob(f".{result.out.name}.staging-*"))


def test_fp32_is_numerically_the_pytorch_model(exports: dict[str, ExportResult]) -> None:
    metrics = exports["fp32"].report["parity"]["metrics"]
    assert metrics["logits_max_abs"] < 1e-4 and metrics["vision_max_abs"] < 1e-4
    assert metrics["greedy_exact"] == 1.0 and metrics["top1_agreement"] == 1.0


def test_quantised_decoders_shrink_and_carry_their_ops(exports: dict[str, ExportResult]) -> None:
    fp32 = exports["fp32"].report["sizes"]["decoder_bytes"]
    int8, int4 = (exports[p].report for p in ("int8", "int4"))
    assert int8["sizes"]["decoder_fp32_bytes"] == fp32
    assert int8["sizes"]["decoder_bytes"] < 0.45 * fp32
    assert int4["sizes"]["decoder_bytes"] < 0.30 * fp32
    assert int8["quantization"]["ops"].get("DynamicQuantizeLinear", 0) > 0
    assert int4["quantization"]["ops"]["com.microsoft::MatMulNBits"] == 2 * 7 + 1  # 7 per layer + lm_head
    for report in (int8, int4):  # quantisation is felt, but bounded
        m = report["parity"]["metrics"]
        assert m["logits_max_abs"] > 1e-4 and m["logits_cosine"] > 0.95


def _reference_tokens(model_dir: Path, prompt: Any, n: int) -> list[int]:
    from egovlm.export.parity import reference_generate
    from egovlm.models import load_model

    loaded = load_model(model_dir)
    return reference_generate(loaded.model, loaded.processor, prompt, n)


def test_ort_runner_greedy_equals_generate(exports: dict[str, ExportResult], tiny_model_dir: Path) -> None:
    from egovlm.contract import build_messages
    from egovlm.export.ort_runner import VLMRunner
    from egovlm.export.prompts import generated_prompts

    runner = VLMRunner.from_export(exports["fp32"].out)
    prompt = generated_prompts(1, runner.dims.keyframe_size, frames_per_prompt=3, seed=42)[0]
    reference = _reference_tokens(tiny_model_dir, prompt, 20)
    result = runner.generate(prompt.frames, prompt.question, prompt.options, max_new_tokens=20)
    assert result.tokens == reference and len(reference) > 1
    # Cached prefix: [system + frames] first, the question later, same tokens.
    ids = runner.prompt_ids(build_messages(prompt.frames, prompt.question, prompt.options))
    visual = [runner.encode_keyframe(f.image) for f in prompt.frames]
    last_image = int(np.flatnonzero(ids == runner.dims.image_token_id)[-1]) + 1
    state = runner.extend(runner.empty_state(), ids[:last_image], visual)
    state = runner.extend(state, ids[last_image:])
    tokens, _, _ = runner.greedy(state, 20)
    assert tokens == reference
