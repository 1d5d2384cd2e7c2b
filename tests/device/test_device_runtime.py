"""The device path on the device's Pythons: run by ``make test-device`` in venvs of CPython 3.10
(JetPack 6) and 3.12 (JetPack 7) that hold only the ``device`` extra, against exports the main venv
made (``tests/device/fixture.py``).

What a Jetson user relies on, checked where it runs: the install pulls neither torch nor
transformers; the ``onnx`` backend answers from the cached visual prefix exactly as from scratch and
exactly as the workstation's torch backend did on the same keyframes; and the real ``egovlm edge run``
process serves answers over HTTP from a live source and stops cleanly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.device.fixture import N_NEW, QUESTIONS, keyframe_images
from tests.live_server import LiveServer, edge_run

pytestmark = pytest.mark.device

FIXTURE = Path(os.environ.get("EGOVLM_DEVICE_FIXTURE", "build/device-fixture"))
WORKSTATION_ONLY = ("torch", "torchvision", "transformers")


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    if not (FIXTURE / "reference.json").is_file():
        pytest.fail(
            f"{FIXTURE}/reference.json is missing: the device fixture is made by the main venv "
            "(`make test-device` does it: .venv/bin/python -m tests.device.fixture build/device-fixture)"
        )
    return FIXTURE


def test_device_install_is_installed_without_torch_or_transformers() -> None:
    assert sys.version_info[:2] in {(3, 10), (3, 11), (3, 12)}
    present = [name for name in WORKSTATION_ONLY if importlib.util.find_spec(name) is not None]
    assert present == [], f"the device install pulled {present}"
    import egovlm.edge.backends.onnx_backend
    import egovlm.edge.server
    import egovlm.export.tensorrt_build  # noqa: F401

    loaded = [name for name in WORKSTATION_ONLY if name in sys.modules]
    assert loaded == []


def _engine(export: Path, capacity: int = 4) -> Any:
    from egovlm.edge.backends import GenerationParams, create_backend
    from egovlm.edge.buffer import KeyframeBuffer
    from egovlm.edge.engine import Engine, EngineParams

    backend = create_backend("onnx", export, threads=1)
    engine = Engine(
        backend, KeyframeBuffer(capacity=capacity), EngineParams(GenerationParams(max_new_tokens=N_NEW))
    )
    for i, img in enumerate(keyframe_images(capacity, seed=3)):
        engine.add_keyframe(2.0 * i, img)
    return engine


def test_cached_equals_scratch_and_the_workstation_token_for_token(fixture_dir: Path) -> None:
    reference = json.loads((fixture_dir / "reference.json").read_text())
    engine = _engine(fixture_dir / "fp32")
    for (question, options), expected in zip(QUESTIONS, reference, strict=True):
        assert expected["question"] == question
        cached = engine.ask(question, options)
        scratch = engine.ask(question, options, use_cache=False)
        assert cached.cached and not scratch.cached
        assert list(cached.token_ids) == list(scratch.token_ids) == expected["token_ids"]
        assert cached.latency.n_prefill_tokens < scratch.latency.n_prefill_tokens
    # The answers vary token to token (a random model that repeats one token would prove nothing).
    assert len(set(reference[0]["token_ids"])) > 3
    assert [name for name in WORKSTATION_ONLY if name in sys.modules] == []


def test_int8_export_answers(fixture_dir: Path) -> None:
    engine = _engine(fixture_dir / "int8", capacity=3)
    pieces: list[str] = []
    answer = engine.ask(*QUESTIONS[0], on_text=pieces.append)
    assert 1 <= len(answer.token_ids) <= N_NEW
    assert "".join(pieces) == answer.text


@pytest.fixture
def server(fixture_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """The real ``egovlm edge run`` process of this venv, on the synthetic live source."""
    args = ["--source", "synth://", "--backend", "onnx", "--model", str(fixture_dir / "fp32")]
    args += ["--capacity", "4", "--max-new-tokens", str(N_NEW), "--status-every", "0"]
    with edge_run(args, tmp_path / "edge-run.log") as live:
        yield live


def test_edge_run_answers_over_http(server: LiveServer) -> None:
    import httpx

    from egovlm.contract import parse_answer

    url = server.url
    health = server.wait_ready()
    assert health["model"]["backend"] == "onnx"
    question, options = QUESTIONS[0]
    assert options is not None
    for use_cache in (True, False):
        r = httpx.post(
            f"{url}/v1/ask",
            json={"question": question, "options": options, "use_cache": use_cache},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["cached"] is use_cache
        assert 1 <= body["latency"]["n_new_tokens"] <= N_NEW
        assert len(body["frames"]) >= 2
        assert body["format_ok"] == parse_answer(body["text"], "".join(options)).format_ok
    assert server.alive(), f"the server died answering:\n{server.tail()}"
    assert server.stop() == 0
    assert "Traceback" not in server.tail(10**6), server.tail()
