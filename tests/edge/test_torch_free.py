"""The device paths import neither torch nor transformers (issue 19: ``pip install ".[device]"`` on a
Jetson has neither). Each path runs in a subprocess of this (main) venv, where both ARE installed,
with an import blocker (tests/edge/torch_free_probe.py) that makes them look absent and records
every attempt with its stack: the CLI's help for the device commands, ``egovlm doctor``,
``egovlm export build-engines`` and an ONNX export served by the runtime (``edge run --backend
onnx``) answering over HTTP with the cached prefix, and a spoken question (``--voice``)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROBE = Path(__file__).with_name("torch_free_probe.py")


@pytest.fixture(scope="module")
def cpu_export(tiny_fp32_export: Path) -> Path:
    return tiny_fp32_export


def _probe(scenario: str, export_dir: Path | None = None) -> dict[str, Any]:
    args = [sys.executable, str(PROBE), scenario, *([str(export_dir)] if export_dir else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{scenario}: exit {done.returncode}\n{done.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _explain(attempts: list[dict[str, Any]]) -> str:
    return "\n".join(f"import {a['module']} from:\n  " + "\n  ".join(a["stack"]) for a in attempts)


def test_the_blocker_catches_an_import() -> None:
    out = _probe("self-check")
    assert out["report"]["refused"] and "torch" in out["report"]["refused"]
    assert out["attempts"] and out["attempts"][0]["module"] == "torch"


def test_cli_help_of_the_device_commands() -> None:
    out = _probe("cli")
    assert not out["attempts"], _explain(out["attempts"])
    assert [r["exit_code"] for r in out["report"]["runs"]] == [0] * len(out["report"]["runs"])


def test_doctor_runs_without_torch() -> None:
    """doctor only *probes* for torch (the torch backend is optional on a device), in its CUDA
    check; nothing else may try, and the report is complete."""
    out = _probe("doctor")
    unexpected = [a for a in out["attempts"] if a["module"] != "torch" or "doctor.py" not in a["stack"][-1]]
    assert not unexpected, _explain(unexpected)
    assert out["loaded"] == []
    checks = out["report"]["checks"]
    assert checks["onnxruntime"] == "ok" and "torch" in checks and "tensorrt" in checks
    assert out["report"]["exit_code"] in (0, 1)  # 1: something is missing on this machine


def test_doctor_checks_a_model_and_a_torn_one_without_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``doctor --model`` reads the checkpoint's files and safetensors headers (egovlm.models.files),
    never the model: a complete checkpoint is ok, a truncated weight file is named."""
    out = _probe("doctor", tiny_model_dir)
    assert [a for a in out["attempts"] if "doctor.py" not in a["stack"][-1]] == [], _explain(out["attempts"])
    assert out["report"]["checks"]["model"] == "ok"
    torn = tmp_path / "torn"
    shutil.copytree(tiny_model_dir, torn)
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = _probe("doctor", torn)
    assert out["report"]["checks"]["model"] == "missing" and out["report"]["exit_code"] == 1


def test_build_engines_without_torch(cpu_export: Path) -> None:
    out = _probe("build-engines", cpu_export)
    assert not out["attempts"], _explain(out["attempts"])
    run = out["report"]["runs"][0]
    assert run["exit_code"] == 2 and "no engines to build" in run["output"]  # a CPU export: refused


def test_onnx_export_answers_without_torch(cpu_export: Path) -> None:
    out = _probe("onnx-answer", cpu_export)
    assert not out["attempts"], _explain(out["attempts"])
    assert out["loaded"] == []
    report = out["report"]
    assert report["backend"] == "onnx" and report["n_tokens"] > 0
    assert report["cached"] and not report["scratch_cached"] and report["tokens_equal"]
    assert report["streamed_equals_text"]
    assert report["http_status"] == 200 and report["http_cached"]
    if importlib.util.find_spec("faster_whisper") and shutil.which("espeak-ng"):  # voice: --voice's path
        assert report["voice"]["status"] == 200 and "keys" in report["voice"]["transcript"].lower()
