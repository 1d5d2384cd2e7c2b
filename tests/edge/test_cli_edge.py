"""``egovlm edge run|pipeline``: dry runs, refusals before start, and a real foreground run
(subprocess) answering ``egovlm edge ask``, then stopping cleanly on SIGTERM and on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from tests.edge.edge_fakes import free_port, reaped, wait_healthy

EGOVLM = [sys.executable, "-m", "egovlm.cli"]


def invoke(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def test_dry_run_prints_the_pipeline() -> None:
    code, out = invoke(
        "edge", "run", "--source", "test://?size=640x480&fps=15", "--size", "320x240", "--dry-run"
    )
    assert code == 0
    assert out.strip() == (
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=15/1 ! videoconvert ! "
        "videoscale ! video/x-raw,format=RGB,width=320,height=240 ! appsink name=sink drop=true max-buffers=2 "
        "sync=false emit-signals=true enable-last-sample=false"
    )
    # a camera that is not plugged in can still be dry-run (nothing is opened)
    code, out = invoke("edge", "run", "--source", "v4l2:///dev/video7?format=mjpeg", "--dry-run")
    assert code == 0 and out.startswith('v4l2src device="/dev/video7"') and "jpegdec" in out
    code, out = invoke("edge", "pipeline", "rtsp://cam.local/live", "--max-fps", "5")
    assert code == 0 and "rtspsrc location=" in out and "videorate drop-only=true max-rate=5" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "webcam0", "--dry-run"], "is not a URI"),
        (["--source", "test://?fps=fast", "--dry-run"], "fps='fast' is not a number"),
        (["--source", "test://", "--host", "0.0.0.0", "--model", "x"], "pass a bearer token"),
        (["--source", "test://"], "--model is required"),
        (["--source", "csi://0", "--model", "x"], "nvarguscamerasrc is not installed"),
        (["--source", "file:///no/such/clip.mp4", "--model", "x"], "file not found"),
        (["--source", "test://", "--model", "/no/such/model"], "model folder not found"),
        (["--source", "test://", "--model", "x", "--profile", "pdp11"], "no such profile"),
    ],
)
def test_refusals_before_start(args: list[str], message: str) -> None:
    code, out = invoke("edge", "run", *args)
    assert code == 2 and message in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_run_answers_edge_ask_and_stops_cleanly(tiny_model_dir: Path, sig: signal.Signals) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EGOVLM_TOKEN": "tok-4f9c2a7e1b8d", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*EGOVLM, "edge", "run", "--model", str(tiny_model_dir), "--source", "synth://?fps=15&size=320x240",
         "--port", str(port), "--max-new-tokens", "8", "--status-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    with reaped(proc):
        wait_healthy(url, proc)
        # `edge ask` in-process (the subprocess above is the real `edge run`)
        code, said = invoke(
            "edge",
            "ask",
            "What did I pick up?",
            "-o",
            "A=a cup",
            "-o",
            "B=a plate",
            "--url",
            url,
            "--token",
            "tok-4f9c2a7e1b8d",
        )
        assert code == 0, said
        assert "answer:" in said and "latency: TTFT" in said and "cached frames" in said
        denied = httpx.post(f"{url}/v1/ask", json={"question": "q"}, headers={"Authorization": "Bearer no"})
        assert denied.status_code == 401
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        stop_s = time.monotonic() - t0
    assert proc.returncode == 0, out
    assert stop_s < 15
    assert "bearer token required" in out and "web UI: http://127.0.0.1:" in out
    assert "tok-4f9c2a7e1b8d" not in out
    assert "source running" in out  # the periodic status line
    assert f"signal {int(sig)}: shutting down" in out and "stopping: source" in out


def test_demo_asks_questions_about_the_live_stream(tiny_model_dir: Path) -> None:
    from egovlm.edge.demo import run_demo

    lines: list[str] = []
    answers = run_demo(tiny_model_dir, min_keyframes=3, max_new_tokens=8, out=lines.append)
    text = "\n".join(lines)
    assert len(answers) == 2, text  # the synthetic wearer picked something up: a multiple-choice question
    mc = answers[0]
    assert mc["options"] and len(mc["options"]) == 5 and "ground truth:" in text
    for a in answers:
        assert a["latency"]["ttft_ms"] > 0 and a["latency"]["n_new_tokens"] >= 1 and a["frames"]
    assert "TTFT" in text and "tok/s" in text and "ingest:" in text


def test_demo_without_model_uses_the_published_model_else_the_tiny_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo`` runs ``egovlm demo`` with no ``--model``: it must pick models/egovlm-mini when
    that folder holds a model, and the random-init tiny model (named as noise) only when it does not."""
    import egovlm.edge.demo as demo_module
    from egovlm.edge import cli as edge_cli

    used: list[Path] = []
    monkeypatch.setattr(demo_module, "run_demo", lambda model, **kw: used.append(model))
    published = tmp_path / "models" / "egovlm-mini"
    published.mkdir(parents=True)
    monkeypatch.setattr(edge_cli, "DEMO_MODEL", published)
    monkeypatch.chdir(tmp_path)
    fallback = tmp_path / "runs" / "models" / "tiny"
    fallback.mkdir(parents=True)
    (fallback / "config.json").write_text("{}")  # already built: nothing is built here

    code, out = invoke("demo")
    assert code == 0, out
    assert used == [Path("runs/models/tiny")] and "random-init" in out

    (published / "config.json").write_text("{}")
    code, out = invoke("demo")
    assert code == 0, out
    assert used[-1] == published and "egovlm-mini, trained on EgoSynth only" in out
