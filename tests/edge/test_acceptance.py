"""``egovlm doctor --acceptance EXPORT_DIR`` run for real on CPU: a sharpened tiny model's ONNX export
served on ``synth://`` for a few seconds (questions over HTTP, answers checked against the contract),
the latency benchmark on it, and one report; a TensorRT-target export on a machine without TensorRT
records the engine build as failed with the fix, skips what needs the engines, still writes the report
and exits 1; a tampered export fails at the manifest, not with a crash."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.contract import parse_answer
from egovlm.edge.acceptance import (
    NO_CAMERA_FIX,
    AcceptanceOptions,
    StepFailedError,
    default_source,
    run_acceptance,
)
from egovlm.edge.doctor import Check
from egovlm.export.manifest import load_manifest

SOURCE = "synth://?fps=10&size=320x240&seed=0"


@pytest.fixture(scope="module")
def onnx_export(sharp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sharpened tiny model (its greedy answers vary token to token, so they are not empty)
    exported for the ``cpu`` target at fp32."""
    from tests.exports import quick_export

    return quick_export(sharp_model_dir, tmp_path_factory.mktemp("acceptance") / "fp32")


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def test_onnx_export_on_synth_measures_and_reports(onnx_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    options = AcceptanceOptions(
        onnx_export,
        out,
        source=SOURCE,
        seconds=4.0,
        profile="cpu",
        max_new_tokens=12,
        think_s=0.2,
        bench_repeats=2,
        bench_scratch_repeats=1,
        threads=1,
    )
    report = run_acceptance(options, echo=lambda _m: None)
    steps = {s.name: s for s in report.steps}
    assert [s.name for s in report.steps] == ["doctor", "manifest", "engines", "live", "bench"]
    for name in ("manifest", "engines", "live", "bench"):
        assert steps[name].status == "ok", (name, steps[name].error)
    assert report.passed == (steps["doctor"].status == "ok")

    data = json.loads((out / "acceptance.json").read_text())
    assert data["format"] == "egovlm-acceptance" and data["passed"] == report.passed
    # Stamped with this interpreter and the export's manifest (hashes as the manifest has them).
    assert data["stamp"]["python"]["version"] == platform.python_version()
    assert data["stamp"]["machine"]["arch"] == platform.machine()
    manifest = load_manifest(onnx_export, verify=False)
    stamped = data["steps"][1]["data"]
    assert (stamped["target"], stamped["runtime"], stamped["precision"]) == ("cpu", "onnxruntime", "fp32")
    assert stamped["files"] == manifest.data["files"] and len(stamped["manifest_sha256"]) == 64

    live = steps["live"].data
    assert live["source"] == SOURCE and live["backend"] == "onnx"
    assert live["summary"]["answers"] >= 2 and not live["errors"]
    for a in live["answers"]:
        assert a["text"].strip()
        letters = "".join(a["options"]) if a["options"] else None
        again = parse_answer(a["text"], letters)
        assert (a["format_ok"], a["problems"]) == (again.format_ok, again.problems)
        # the client's TTFT spans the HTTP request around the server's
        assert a["client_ttft_ms"] >= a["server_ttft_ms"] > 0
    assert {a["options"] is None for a in live["answers"]} == {True, False}  # open and multiple-choice
    assert live["summary"]["frames_received"] > 0 and live["ingest_fps_mean"] > 0
    assert live["summary"]["frames_dropped"] is not None
    assert live["resources"]["samples"] >= 2 and live["resources"]["rss_mb_max"] > 100
    assert live["resources"]["device_mem_used_mb_max"] is None  # no CUDA here: said, not invented

    bench = steps["bench"].data
    assert bench["ks"] == [1, 8]  # the cpu profile keeps 8 keyframes
    assert {(r["k"], r["mode"]) for r in bench["rows"]} == {
        (k, m) for k in (1, 8) for m in ("cached", "scratch")
    }
    assert all(r["greedy_tokens_identical"] for r in bench["rows"])
    assert (out / "bench" / "latency.json").is_file()

    md = (out / "acceptance.md").read_text()
    assert md.startswith(f"# egovlm acceptance: {'PASS' if report.passed else 'FAIL'}")
    assert "TTFT ms p50 / p95, client" in md and "cached TTFT" in md


def test_tensorrt_export_without_tensorrt_fails_at_engines_and_exits_1(
    nano_dir: Path, tmp_path: Path
) -> None:
    if _tensorrt_importable():
        pytest.skip("TensorRT is importable here")
    from egovlm.cli import app

    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["doctor", "--acceptance", str(nano_dir), "--seconds", "2", "--out", str(out)]
    )
    assert result.exit_code == 1, result.output
    data = json.loads((out / "acceptance.json").read_text())
    assert not data["passed"] and "engines" in data["failed_steps"]
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["manifest"]["status"] == "ok" and steps["manifest"]["data"]["runtime"] == "tensorrt"
    engines = steps["engines"]
    assert "tensorrt" in engines["error"].lower()
    assert f"egovlm export build-engines {nano_dir}" in engines["fix"]
    for name in ("live", "bench"):
        assert steps[name]["status"] == "skipped" and "engines" in steps[name]["error"]
    assert (out / "acceptance.md").read_text().startswith("# egovlm acceptance: FAIL")
    assert "FAIL" in result.output


def test_a_tampered_export_fails_at_the_manifest_and_still_reports(onnx_export: Path, tmp_path: Path) -> None:
    root = shutil.copytree(onnx_export, tmp_path / "export")
    graph = next(root.rglob("*.onnx"))
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    report = run_acceptance(AcceptanceOptions(root, tmp_path / "r", source=SOURCE), echo=lambda _m: None)
    steps = {s.name: s for s in report.steps}
    assert steps["manifest"].status == "failed" and graph.name in (steps["manifest"].error or "")
    assert all(steps[n].status == "skipped" for n in ("engines", "live", "bench"))
    assert not report.passed
    assert json.loads((tmp_path / "r" / "acceptance.json").read_text())["failed_steps"][-1] == "manifest"


def test_default_source_is_the_camera_the_doctor_found() -> None:
    checks = [
        Check("camera /dev/video0", "warn", "UVC: no read/write permission"),
        Check("camera /dev/video2", "ok", "UVC → --source v4l2:///dev/video2"),
    ]
    assert default_source(checks) == "v4l2:///dev/video2"
    with pytest.raises(StepFailedError) as info:
        default_source(checks[:1])
    assert info.value.fix == NO_CAMERA_FIX and "csi://0" in NO_CAMERA_FIX
