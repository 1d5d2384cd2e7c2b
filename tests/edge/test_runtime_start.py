"""Starting a running runtime is harmless, stopping it reports a source thread that will not end, and
the CLI does not pay for the HTTP client at start-up."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from egovlm.edge.runtime import EdgeRuntime
from tests.edge.edge_fakes import FlakyFrames, scripted_engine, wait_until
from tests.edge.test_faults import SYNTH


def _threads(name: str) -> int:
    return sum(t.name == name for t in threading.enumerate())


def test_a_second_start_keeps_one_source_and_one_set_of_threads() -> None:
    """The interactive demo starts the runtime and then ``serve`` starts it again: one camera
    pipeline, one supervisor, one privacy thread, the same ingest object."""
    rt = EdgeRuntime(scripted_engine(capacity=20), SYNTH, synth_frames=FlakyFrames(failures=None))
    rt.start()
    try:
        assert rt.wait_for_keyframes(1, timeout=30), rt.status_line()
        ingest = rt.ingest
        assert rt.start() is rt
        assert rt.ingest is ingest
        assert _threads("egovlm-privacy") == 1 and _threads("egovlm-ingest") == 1
        assert ingest is not None and ingest.stats().restarts == 0
    finally:
        rt.stop()
    assert wait_until(lambda: _threads("egovlm-privacy") == 0, 10)


def test_the_cli_does_not_import_the_http_client_at_start_up() -> None:
    code = "import sys, egovlm.cli; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


class FrozenFrames:
    """A ``synth_frames`` factory whose generator hands out ``frames`` frames and then hangs in
    its next read until :attr:`release` is set (a camera driver stuck in a call)."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.hanging = threading.Event()
        self.release = threading.Event()

    def __call__(self, spec: object) -> Iterator[tuple[float, np.ndarray, object]]:
        from egovlm.edge.ingest import default_synth_frames

        for i, item in enumerate(default_synth_frames(spec)):  # type: ignore[arg-type]
            if i == self.frames:
                self.hanging.set()
                self.release.wait(60)
                return
            yield item


def test_stop_reports_a_source_thread_still_running(caplog: pytest.LogCaptureFixture) -> None:
    """A source thread that outlives its stop timeout makes ``stop`` return False (so ``serve``
    exits without interpreter shutdown) and is named in the log; nothing waits forever."""
    frozen = FrozenFrames(frames=5)
    rt = EdgeRuntime(scripted_engine(capacity=20), SYNTH, synth_frames=frozen)
    rt.start()
    try:
        assert rt.wait_for_keyframes(1, timeout=30), rt.status_line()
        assert frozen.hanging.wait(30)
        ingest = rt.ingest
        assert ingest is not None
        t0 = time.monotonic()
        # the supervisor gives up waiting for the feeder (5 s) and ends; the feeder hangs on
        assert ingest.stop(timeout=15) is False and not ingest.running
        assert _threads("egovlm-synth-feeder") == 1
        with caplog.at_level(logging.WARNING, logger="egovlm.edge"):
            assert rt.stop() is False
        assert time.monotonic() - t0 < 15
        assert "the camera's threads are still running after their stop timeout" in caplog.text
    finally:
        frozen.release.set()
    assert wait_until(lambda: _threads("egovlm-synth-feeder") == 0 and _threads("egovlm-ingest") == 0, 15)
    assert rt.stop() is True  # once they have ended
