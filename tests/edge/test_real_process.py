"""The real ``egovlm edge run`` process (GStreamer ingest, the torch backend, uvicorn), not the app
in-process: a C++ exception inside torch must fail at most its request, never the server.

Before the fix in ``egovlm.edge.gst._pin_gcc_unwinder`` every ``use_cache: false`` question killed the
process (exit 139): libgstreamer links libunwind, whose ``_Unwind_*`` symbols then served torch's C++
exceptions. In-process tests that never load GStreamer first could not see it.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.live_server import edge_run


def test_a_from_scratch_question_leaves_the_server_alive(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ["--source", "synth://", "--model", str(tiny_model_dir), "--capacity", "3"]
    args += ["--max-new-tokens", "4", "--status-every", "0"]
    with edge_run(args, tmp_path / "edge-run.log") as server:
        server.wait_ready(keyframes=2)
        for body in ({"question": "hi", "use_cache": False}, {"question": "hi again"}):
            r = httpx.post(f"{server.url}/v1/ask", json=body, timeout=120)
            assert r.status_code == 200, r.text
            assert server.alive(), server.tail()
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert server.stop() == 0, server.tail()
