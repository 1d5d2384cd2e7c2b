"""Targets config: resolution, clear errors for unknown targets, unsupported precisions, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from egovlm.export.targets import ExportConfigError, load_targets, resolve


def test_shipped_targets_resolve_with_defaults() -> None:
    targets = load_targets()
    assert set(targets) == {"cpu", "orin-nano", "orin-nx", "agx-orin", "thor"}
    assert resolve("cpu")[1] == "fp32"
    nano, precision = resolve("orin-nano")
    assert nano.uses_tensorrt and precision == "int4" and nano.tensorrt_major == 10
    assert resolve("thor", "fp8")[1] == "fp8"
    assert nano.budget_bytes == int(nano.memory_gb * nano.budget_fraction * 1024**3) < 8 * 1024**3


def test_unknown_target_and_unsupported_precision_are_clear() -> None:
    with pytest.raises(ExportConfigError, match="unsupported target 'xavier'.*orin-nano"):
        resolve("xavier")
    with pytest.raises(ExportConfigError, match="precision 'fp8' is not supported on orin-nano.*Thor"):
        resolve("orin-nano", "fp8")
    with pytest.raises(ExportConfigError, match="precision 'fp16' is not supported on cpu"):
        resolve("cpu", "fp16")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("dev:\n  runtime: tensorrt\n", "missing field 'precisions'"),
        (
            "dev:\n  runtime: tpu\n  precisions: [fp32]\n  default_precision: fp32\n  memory_gb: 1\n  budget_fraction: 0.5\n",
            "runtime must be one of",
        ),
        (
            "dev:\n  runtime: onnxruntime\n  precisions: [fp64]\n  default_precision: fp64\n  memory_gb: 1\n  budget_fraction: 0.5\n",
            "unknown precisions",
        ),
        (
            "dev:\n  runtime: onnxruntime\n  precisions: [fp32]\n  default_precision: fp32\n  memory_gb: 1\n  budget_fraction: 2\n",
            "budget_fraction",
        ),
    ],
)
def test_bad_targets_file_names_the_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(body)
    with pytest.raises(ExportConfigError, match=message) as info:
        load_targets(path)
    assert str(path) in str(info.value) and "'dev'" in str(info.value)
