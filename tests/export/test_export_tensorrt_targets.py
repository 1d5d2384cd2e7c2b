"""TensorRT targets on a machine without TensorRT: FP16 vision/embed, ModelOpt-quantised decoder,
parity measured (ORT where it can run the graph, else the exported fake-quant module), the profile
plan and the on-device build step in manifest and report, and no engine claimed."""

from __future__ import annotations

from pathlib import Path

import pytest

from egovlm.export.manifest import load_manifest
from egovlm.export.pipeline import ExportOptions, ExportResult, run_export


def _export(model_dir: Path, out: Path, target: str, precision: str) -> ExportResult:
    opts = ExportOptions(
        model=str(model_dir),
        out=out,
        target=target,
        precision=precision,
        parity_prompts=1,
        max_new_tokens=8,
        calib_prompts=2,
        threads=1,
    )
    return run_export(opts)


def _check_pending_device(result: ExportResult, precision: str, decoder_method: str) -> None:
    assert result.passed, result.report["parity"]["failures"]
    m = load_manifest(result.out)
    assert m.runtime == "tensorrt" and m.precision == precision
    assert m.graph("vision")["precision"] == "fp16" and m.graph("vision")["inputs"][0]["dtype"] == "float16"
    trt = m.data["tensorrt"]
    assert trt["status"] == "pending-device" and trt["engines"] == {} and trt["strongly_typed"]
    assert trt["build_command"] == f"egovlm export build-engines {result.out}"
    assert list(trt["profiles"]["decoder"]) == ["prefill", "decode"]
    assert trt["plan"]["max_chunk"] == 256  # the runtime prefills in chunks of this (egovlm.export.fit)
    assert trt["plan"]["memory"]["total_bytes"] <= trt["plan"]["budget_bytes"]  # the final fit check
    assert not (result.out / "engines").exists()
    report = (result.out / "report.md").read_text()
    assert "Engines were NOT built or verified here" in report and trt["build_command"] in report
    assert decoder_method in result.report["parity"]["methods"]["decoder"]
    assert any("NOT built" in n for n in result.notes)


def test_agx_orin_int8_smoothquant(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = _export(tiny_model_dir, tmp_path / "o", "agx-orin", "int8")
    _check_pending_device(result, "int8", "onnxruntime CPU")
    quant = result.report["quantization"]
    assert quant["recipe"] == "INT8_SMOOTHQUANT_CFG" and quant["ops"]["QuantizeLinear"] > 0
    assert quant["calibration"]["decoder_calls"] == 2 * 3  # 2 prompts x (prefill + 2 decode steps)
    # The fp32 size the report compares with is counted from the parameters, not traced: the weights
    # of what an fp32 export of the same model writes (its graph adds ~100 KB of structure: 5% at
    # this 2 MB decoder, nothing at 3B).
    fp32 = _export(tiny_model_dir, tmp_path / "cpu", "cpu", "fp32").report["sizes"]["decoder_bytes"]
    counted = result.report["sizes"]["decoder_fp32_bytes"]
    assert counted <= fp32 < counted * 1.06, (counted, fp32)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "precision", "method"),
    [
        ("orin-nano", "fp16", "onnxruntime CPU"),
        ("orin-nano", "int4", "fake-quant module"),
        ("thor", "fp8", "fake-quant module"),
    ],
)
def test_other_tensorrt_precisions(
    tiny_model_dir: Path, tmp_path: Path, target: str, precision: str, method: str
) -> None:
    result = _export(tiny_model_dir, tmp_path / "o", target, precision)
    _check_pending_device(result, precision, method)
