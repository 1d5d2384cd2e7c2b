"""``egovlm edge run --mic``: a real foreground run (subprocess, tiny model, synthetic camera)
hears an espeak-ng question from a file "microphone", answers it, writes the spoken answer,
answers ``egovlm edge ask-audio`` too, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from egovlm.edge.voice.audio import write_wav
from egovlm.edge.voice.tts import spoken_clip
from tests.edge.edge_fakes import free_port, reaped

pytest.importorskip("faster_whisper")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

EGOVLM = [sys.executable, "-m", "egovlm.cli"]


def wait_for(url: str, proc: subprocess.Popen[str], ready: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            body = httpx.get(url, timeout=2).json()
            if ready(body):
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url}: condition not met in {timeout} s")


def test_edge_run_with_a_microphone_answers_spoken_questions(tiny_model_dir: Path, tmp_path: Path) -> None:
    # 4 s of silence first: the camera's first keyframes and the model state are ready by then
    mic = write_wav(tmp_path / "mic.wav", spoken_clip("What did I pick up last?", lead_s=4.0, tail_s=1.5))
    answers = tmp_path / "spoken"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*EGOVLM, "edge", "run", "--model", str(tiny_model_dir), "--source", "synth://?fps=15&size=320x240",
         "--port", str(port), "--max-new-tokens", "8", "--mic", f"file://{mic}",
         "--audio-out", f"dir:{answers}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    with reaped(proc):
        status = wait_for(f"{url}/v1/voice", proc, lambda b: b["turns"])
        turn = status["turns"][0]
        assert status["enabled"] and status["listen_mode"] == "vad", status
        assert turn["trigger"] == "vad" and turn["error"] is None and turn["ignored"] is None, turn
        assert "pick" in turn["transcript"]["text"].lower() and turn["answer"]["frames"]
        assert turn["voice_latency"]["endpoint_ms"] > 400 and turn["voice_latency"]["spoken_ms"] is not None
        assert list(answers.glob("answer-*.wav"))
        res = CliRunner().invoke(app, ["edge", "ask-audio", str(mic), "--url", url])
        assert res.exit_code == 0, res.output
        assert "heard:   'What did I pick up last?'" in res.output and "first token" in res.output
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "speech model" in out and f"listening on file://{mic}" in out and "heard (vad" in out


def test_edge_run_refuses_a_bad_microphone_before_loading_the_model() -> None:
    res = CliRunner().invoke(app, ["edge", "run", "--source", "test://", "--model", "x", "--mic", "usb0"])
    assert res.exit_code == 2 and "not a URI" in res.output
