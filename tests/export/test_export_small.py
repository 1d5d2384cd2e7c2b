"""The small model (31 M parameters, 224x168 keyframes, 48 visual tokens each) on ONNX Runtime CPU:
fp32, int8 and int4 pass parity and shrink. Slow: about 2 minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from egovlm.export.manifest import load_manifest
from egovlm.export.pipeline import ExportOptions, run_export


@pytest.mark.slow
def test_small_cpu_exports(small_model_dir: Path, tmp_path: Path) -> None:
    sizes = {}
    for precision in ("fp32", "int8", "int4"):
        result = run_export(
            ExportOptions(
                model=str(small_model_dir),
                out=tmp_path / precision,
                target="cpu",
                precision=precision,
                parity_prompts=2,
                threads=1,
            )
        )
        assert result.passed, result.report["parity"]["failures"]
        assert load_manifest(result.out).model["tokens_per_keyframe"] == 48
        sizes[precision] = result.report["sizes"]["decoder_bytes"]
        if precision == "fp32":
            assert result.report["parity"]["metrics"]["logits_max_abs"] < 1e-4
            assert result.report["parity"]["metrics"]["greedy_exact"] == 1.0
    assert sizes["int8"] < 0.3 * sizes["fp32"] and sizes["int4"] < 0.2 * sizes["fp32"]
