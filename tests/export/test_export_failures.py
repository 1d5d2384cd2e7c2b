"""Clear errors and no half-published exports: bad model, target, precision or folder; parity below
threshold (report only, no manifest, no graphs); an interrupted export (nothing left behind)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.export import pipeline
from egovlm.export.cli import app


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_bad_inputs_exit_2_with_the_reason(tmp_path: Path, tiny_model_dir: Path) -> None:
    code, out = _run("--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert code == 2 and "model folder not found" in out
    code, out = _run("--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--target", "xavier")
    assert code == 2 and "unsupported target 'xavier'" in out
    code, out = _run(
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "o"),
        "--target",
        "agx-orin",
        "--precision",
        "fp8",
    )
    assert code == 2 and "'fp8' is not supported on agx-orin" in out
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    code, out = _run("--model", str(tiny_model_dir), "--out", str(busy))
    assert code == 2 and "not an empty folder" in out
    code, out = _run(
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "e"),
        "--target",
        "thor",
        "--backend",
        "edgellm",
        "--edgellm-bin",
        str(tmp_path),
    )
    assert code == 2 and "Edge-LLM tools not found" in out
    assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_parity_failure_publishes_only_the_report(tmp_path: Path, tiny_model_dir: Path) -> None:
    strict = tmp_path / "strict.yaml"
    strict.write_text("int8:\n  logits_max_abs: 1.0e-9\n  logits_cosine: 0.9\n")
    out = tmp_path / "o"
    code, text = _run(
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--precision",
        "int8",
        "--thresholds",
        str(strict),
        "--prompts",
        "1",
        "--max-new-tokens",
        "4",
    )
    assert code == 1 and "parity FAILED: logits_max_abs" in text
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert "FAILED: no manifest was written" in (out / "report.md").read_text()
    assert not list(tmp_path.glob(".o.staging-*"))


def test_interrupted_export_leaves_nothing(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "measure", interrupt)  # after the graphs are written to staging
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_export(pipeline.ExportOptions(model=str(tiny_model_dir), out=out, parity_prompts=1))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_model_too_big_for_the_device_fails_before_exporting(tmp_path: Path, tiny_model_dir: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "watch:\n  runtime: tensorrt\n  precisions: [int4]\n  default_precision: int4\n"
        "  memory_gb: 0.5\n  budget_fraction: 0.5\n"
    )
    out = tmp_path / "o"
    with pytest.raises(pipeline.ExportConfigError, match="watch: the model does not fit"):
        pipeline.run_export(
            pipeline.ExportOptions(model=str(tiny_model_dir), out=out, target="watch", targets=targets)
        )
    assert list(tmp_path.iterdir()) == [targets]
