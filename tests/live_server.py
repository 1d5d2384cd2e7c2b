"""The real ``egovlm edge run`` process for tests: started from the running venv's own script, on a
free loopback port, with its output in a log the failure messages quote. In-process tests miss what
only the real process shows (GStreamer loaded first, uvicorn's own loop, signals)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, keyframes: int = 2, timeout: float = 120.0) -> dict[str, Any]:
        """/healthz once the buffer holds ``keyframes`` and the model state covers them (``ready``: a
        question then sees them, not an older state still being rebuilt); fails with the log if the
        process exits."""
        import httpx

        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"egovlm edge run exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                last = httpx.get(f"{self.url}/healthz", timeout=5).json()
                if last.get("keyframes", 0) >= keyframes and last.get("ready"):
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"no {keyframes} keyframes within {timeout} s (last /healthz: {last}):\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as systemd or Ctrl-C would; the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def edge_run(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Iterator[LiveServer]:
    """``egovlm edge run ARGS --port P`` of this venv; killed if a test leaves it running. ``env``:
    variables added to this process's environment (e.g. the token as EGOVLM_TOKEN)."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("egovlm")), "edge", "run", *args, "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        server = LiveServer(f"http://127.0.0.1:{port}", proc, log)
        try:
            yield server
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
