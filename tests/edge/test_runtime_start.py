"""Starting a running runtime is harmless, and the CLI does not pay for the HTTP client at start-up."""

from __future__ import annotations

import subprocess
import sys
import threading

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
