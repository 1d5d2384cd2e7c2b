"""Faults, each a test (the reliability issue): a source that raises, disappears or ends
mid-stream is reconnected with backoff while the keyframe buffer is kept and questions are
still answered from it; a backend exception fails that one request with a clear 5xx and the
runtime stays up; SIGTERM during an answer being streamed stops the process cleanly, in bounded
time.

The sources are real GStreamer pipelines (``synth://`` through appsrc, ``file://`` through
filesrc/decodebin); faults come from :class:`FlakyFrames` (a frame iterator that fails on cue)
or from the file being moved away. The model is the scripted backend inside the real Engine,
except in the SIGTERM test, which runs ``egovlm edge run`` with the tiny model."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from egovlm.edge.backends.base import PrefixState
from egovlm.edge.ingest import Ingest, IngestOptions, IngestStats
from egovlm.edge.runtime import EdgeRuntime, RuntimeOptions, StoppingError
from egovlm.edge.server import create_app
from egovlm.edge.sources import SourceSpec
from tests.edge.edge_fakes import (
    FailingBackend,
    FlakyFrames,
    ScriptedBackend,
    free_port,
    reaped,
    scripted_engine,
    sse_events,
    wait_healthy,
    wait_until,
)
from tests.edge.test_ingest import Collector

SYNTH = "synth://?fps=20&size=160x120&seed=2"
STALL_S = 10.0  # the default stall timeout: recovery must come from the fault path, well before it


def faulty_runtime(
    frames: FlakyFrames, backoff_initial_s: float, backoff_max_s: float = 10.0, backend: Any = None
) -> EdgeRuntime:
    ingest = IngestOptions(
        backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s, stall_timeout_s=STALL_S
    )
    # capacity 200: nothing is evicted during a test, so every keyframe taken must stay
    engine = scripted_engine(capacity=200, backend=backend)
    return EdgeRuntime(engine, SYNTH, RuntimeOptions(ingest=ingest), synth_frames=frames)


def ask_ok(client: TestClient, question: str = "What did I just pick up?") -> dict[str, Any]:
    r = client.post("/v1/ask", json={"question": question, "options": {"A": "a cup", "B": "a plate"}})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["answer"] == "B" and body["format_ok"] and body["frames"]
    assert body["answer_text"] == "B"  # the <answer> body as the model wrote it
    return body


def keyframe_ids(rt: EdgeRuntime) -> list[int]:
    return [k.id for k in rt.snapshot().keyframes]


def stats(rt: EdgeRuntime) -> IngestStats:
    st = rt.ingest_stats()
    assert st is not None
    return st


def state(rt: EdgeRuntime) -> str:
    return stats(rt).state


def outage(rt: EdgeRuntime, frames: FlakyFrames, client: TestClient) -> tuple[list[int], int]:
    """Make the source fail mid-stream; check a question is answered meanwhile from the buffer as
    it was. Returns the keyframe ids and frames delivered when the source went down."""
    assert rt.wait_for_keyframes(2, timeout=30), rt.status_line()
    frames.fail_now()
    assert wait_until(lambda: frames.failed >= 1 and state(rt) == "reconnecting", 30), rt.status_line()
    delivered = stats(rt).frames_delivered
    before = keyframe_ids(rt)
    assert len(before) >= 2
    body = ask_ok(client)  # asked while the source is down
    assert {f["id"] for f in body["frames"]} <= set(before)
    return before, delivered


def recovered(
    rt: EdgeRuntime, frames: FlakyFrames, delivered: int, before: list[int], client: TestClient
) -> None:
    """The source is back: new frames, state running, no keyframe lost, questions answered."""
    assert wait_until(
        lambda: state(rt) == "running" and stats(rt).frames_delivered > delivered + 5,
        timeout=STALL_S - 2,
    ), f"no recovery before the stall timeout: {rt.status_line()}"
    assert frames.factory_calls == 1  # the same stream continued: no new synthetic world
    after = keyframe_ids(rt)
    assert set(before) <= set(after), "keyframes taken before the outage were lost"
    ask_ok(client)


def outage_and_recovery(
    frames: FlakyFrames, backoff_initial_s: float
) -> tuple[EdgeRuntime, IngestStats | None]:
    """Run a runtime through one outage of ``frames`` and its recovery (:func:`outage`,
    :func:`recovered`); returns the stopped runtime and its ingest stats after recovery."""
    rt = faulty_runtime(frames, backoff_initial_s=backoff_initial_s)
    rt.start()
    try:
        with TestClient(create_app(rt, token=None, voice=None)) as client:
            before, delivered = outage(rt, frames, client)
            recovered(rt, frames, delivered, before, client)
            st = rt.ingest_stats()
    finally:
        rt.stop()
    return rt, st


def test_source_that_raises_mid_stream_reconnects_within_the_backoff() -> None:
    frames = FlakyFrames()  # one read raises, then it carries on
    rt, st = outage_and_recovery(frames, backoff_initial_s=1.0)
    assert st is not None
    assert st.errors == 1 and st.restarts == 1
    assert st.last_error is not None and "RuntimeError: camera glitch #1 after frame" in st.last_error
    assert rt.ingest is not None and rt.ingest.reconnect_waits() == [("error", 1.0)]
    # the feeder was back reading frames after the backoff, not after the stall timeout
    assert frames.first_frame_after is not None
    gap = frames.first_frame_after - frames.failure_times[0]
    assert 0.9 < gap < 4.0, gap


def test_source_that_disappears_is_retried_with_growing_backoff() -> None:
    frames = FlakyFrames(failures=None)  # every read fails until restore()
    rt = faulty_runtime(frames, backoff_initial_s=0.2, backoff_max_s=0.8)
    rt.start()
    try:
        with TestClient(create_app(rt, token=None, voice=None)) as client:
            before, delivered = outage(rt, frames, client)
            version = rt.snapshot().version
            assert rt.ingest is not None
            # down for a while: each reconnect fails at once, waiting longer each time (capped)
            deadline = time.monotonic() + STALL_S
            while len(rt.ingest.reconnect_waits()) < 5:
                assert time.monotonic() < deadline, rt.ingest.reconnect_waits()
                assert state(rt) == "reconnecting", rt.status_line()
                body = ask_ok(client)
                assert {f["id"] for f in body["frames"]} <= set(before)
                h = client.get("/healthz")
                assert h.status_code == 200 and h.json()["ingest_state"] == "reconnecting"
                time.sleep(0.1)
            waits = rt.ingest.reconnect_waits()
            assert [delay for _, delay in waits[:5]] == [0.2, 0.4, 0.8, 0.8, 0.8]
            assert {why for why, _ in waits} == {"error"}
            st = rt.ingest_stats()
            assert st is not None and st.errors >= 5 and st.restarts >= 4
            assert keyframe_ids(rt) == before and rt.snapshot().version == version  # buffer untouched
            frames.restore()
            t_restore = time.monotonic()
            recovered(rt, frames, delivered, before, client)
            assert frames.first_frame_after is not None
            assert frames.first_frame_after - t_restore < 0.8 + 3.0  # at most one capped backoff away
            waits_after = len(rt.ingest.reconnect_waits())
            time.sleep(0.5)
            assert len(rt.ingest.reconnect_waits()) == waits_after  # running: no more reconnects
            st = rt.ingest_stats()
    finally:
        rt.stop()
    assert st is not None and st.state == "running" and st.errors == frames.failed


def test_source_that_ends_mid_stream_keeps_answering_while_reconnecting() -> None:
    frames = FlakyFrames(end=True)  # the camera hangs up once (EOS), then is back
    rt, st = outage_and_recovery(frames, backoff_initial_s=1.0)
    assert st is not None and st.restarts == 1
    assert st.errors == 0 and st.last_error is None  # an end of stream is not an error
    assert rt.ingest is not None and rt.ingest.reconnect_waits() == [("eos", 1.0)]


def test_a_frame_generator_that_raises_is_replaced_and_pushed_frames_are_kept() -> None:
    """A generator that raised is finished: ingest reports the error at once, delivers the frames
    already pushed, then asks the factory for a new generator."""
    calls: list[float] = []

    def factory(spec: SourceSpec) -> Iterator[tuple[float, np.ndarray, Any]]:
        calls.append(time.monotonic())
        first = len(calls) == 1
        assert spec.fps is not None and spec.width is not None and spec.height is not None
        for k in itertools.count():
            if first and k == 10:
                raise RuntimeError("decoder crashed")
            yield k / spec.fps, np.full((spec.height, spec.width, 3), k + (0 if first else 100), np.uint8), ()

    got = Collector()
    opts = IngestOptions(backoff_initial_s=0.1, stall_timeout_s=STALL_S)
    ing = Ingest("synth://?fps=50&size=32x24", got, opts, synth_frames=factory)
    t0 = time.monotonic()
    with ing:
        assert ing.wait_for_frames(25, timeout=STALL_S - 2), ing.stats()
        stats = ing.stats()
    assert time.monotonic() - t0 < STALL_S - 2
    values = [v for _, _, v in got.frames]
    assert values[:10] == list(range(10))  # every frame pushed before the failure was delivered
    assert values[10:15] == list(range(100, 105))  # then the new generator, from its start
    assert all(b >= a for a, b in itertools.pairwise(got.times))  # time kept running forward
    assert len(calls) == 2 and stats.errors == 1 and stats.restarts == 1
    assert stats.last_error == "synth frames failed: RuntimeError: decoder crashed"


def test_file_that_disappears_mid_stream_is_retried_until_it_is_back(clip: Path) -> None:
    got = Collector()
    opts = IngestOptions(backoff_initial_s=0.2, backoff_max_s=0.8, stall_timeout_s=STALL_S)
    moved = clip.with_name("moved.mkv")
    ing = Ingest(f"file://{clip}?loop=1", got, opts)  # real time: one loop per second
    ing.start()
    try:
        assert ing.wait_for_frames(5, timeout=15)
        clip.rename(moved)  # gone mid-play: this pass may finish, the next one cannot open it
        assert wait_until(lambda: len(ing.reconnect_waits()) >= 4, timeout=15), ing.stats()
        down = ing.stats()
        assert down.state == "reconnecting" and down.errors >= 3
        assert down.last_error is not None and "not found" in down.last_error.lower(), down.last_error
        failed = [delay for why, delay in ing.reconnect_waits() if why != "eos"]
        assert failed[:3] == [0.2, 0.4, 0.8]  # backoff grew while the file was missing
        moved.rename(clip)
        n = ing.stats().frames_delivered
        assert wait_until(lambda: ing.stats().frames_delivered > n + 5, timeout=STALL_S - 2), ing.stats()
        up = ing.stats()
    finally:
        ing.stop()
        if moved.exists():
            moved.rename(clip)
    assert up.state == "running"
    assert all(b >= a for a, b in itertools.pairwise(got.times))


# --- a backend that fails -------------------------------------------------------------------------


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[-1])
    return 0.0


def test_backend_exception_fails_one_request_and_the_runtime_stays_up() -> None:
    backend = FailingBackend()
    rt = EdgeRuntime(scripted_engine(capacity=50, backend=backend), SYNTH)
    rt.start()
    errors = 'egovlm_questions_total{outcome="error"}'
    try:
        with TestClient(create_app(rt, token=None, voice=None)) as client:
            assert rt.wait_for_keyframes(2, timeout=30), rt.status_line()
            ask_ok(client)
            assert metric(client, errors) == 0

            backend.failures = 1
            r = client.post("/v1/ask", json={"question": "What is on the table?"})
            assert r.status_code == 500 and r.json() == {"detail": "RuntimeError: boom"}

            backend.failures = 1
            events = sse_events(client, {"question": "What is on the table?"})
            assert [k for k, _ in events] == ["token", "token", "error"]
            assert events[-1][1] == {"detail": "RuntimeError: boom"}

            backend.failures = 1
            r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 500 and r.json() == {"detail": "RuntimeError: boom"}

            assert backend.raised == 3 and rt.pending == 0  # no admission slot leaked
            received = stats(rt).frames_received
            body = ask_ok(client)  # healthy again: the next question is answered
            assert body["latency"]["n_new_tokens"] > 0
            h = client.get("/healthz")
            assert h.status_code == 200 and h.json()["status"] == "ok", h.text
            assert h.json()["ingest_state"] == "running"
            assert metric(client, errors) == 3
            assert metric(client, 'egovlm_questions_total{outcome="format_ok"}') == 2
            assert wait_until(lambda: stats(rt).frames_received > received, 10)  # ingest still running
    finally:
        rt.stop()


# --- shutdown during an answer --------------------------------------------------------------------


def test_stopping_the_runtime_cancels_the_answer_in_flight() -> None:
    """A stop must not wait for a long answer: the question in flight is cancelled at its next
    piece of text (whatever the caller: a streamed or a blocking request), new ones are refused."""
    rt = EdgeRuntime(scripted_engine(capacity=50, token_delay_s=0.5), SYNTH)  # ~25 pieces: 12 s
    rt.start()
    outcome: list[Exception | None] = []
    pieces: list[str] = []

    def ask() -> None:
        try:
            rt.ask("What is on the table?", on_text=pieces.append)
        except Exception as e:  # recorded for the assertion
            outcome.append(e)
        else:
            outcome.append(None)

    try:
        assert rt.wait_for_keyframes(2, timeout=30), rt.status_line()
        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        assert wait_until(lambda: len(pieces) >= 1, 10)
    finally:
        t0 = time.monotonic()
        rt.stop()
        stop_s = time.monotonic() - t0
    asker.join(5)
    # A hang guard: the cancellation itself is shown by the outcome, the pieces and the metric below.
    assert not asker.is_alive() and stop_s < 10.0, stop_s
    assert len(outcome) == 1 and isinstance(outcome[0], StoppingError), outcome
    assert 1 <= len(pieces) < 10 and rt.pending == 0
    with pytest.raises(StoppingError):
        rt.ask("anything else?")
    assert 'egovlm_questions_total{outcome="cancelled"} 1.0' in rt.metrics_text().decode()


class BlockingBuildBackend(ScriptedBackend):
    """The scripted backend whose prefix builds after the first ``free`` of them wait for
    :attr:`release`: a rebuild stuck inside the model, for as long as a test wants."""

    def __init__(self, free: int) -> None:
        super().__init__()
        self.free = free
        self.entered = threading.Event()
        self.release = threading.Event()

    def build_prefix(self, *args: Any, **kwargs: Any) -> PrefixState:
        if self.free > 0:
            self.free -= 1
        else:
            self.entered.set()
            self.release.wait(30)
        return super().build_prefix(*args, **kwargs)


def frame(k: int) -> np.ndarray:
    return np.full((84, 112, 3), k, np.uint8)


def test_engine_stop_says_whether_its_worker_left_the_model() -> None:
    backend = BlockingBuildBackend(free=1)
    engine = scripted_engine(backend=backend).start()
    try:
        engine.add_keyframe(0.0, frame(0))
        assert engine.wait_until_ready(10)
        engine.add_keyframe(1.0, frame(1))  # a rebuild, stuck inside the model
        assert backend.entered.wait(10)
        t0 = time.monotonic()
        assert engine.stop(timeout=0.3) is False  # bounded: it does not wait for the model
        assert 0.25 < time.monotonic() - t0 < 3
        assert engine.status().running
    finally:
        backend.release.set()
    assert engine.stop(timeout=10) is True  # the chunk done, the worker left at its next step
    assert not engine.status().running and engine.status().rebuilds == 2  # that build, no later one


def test_engine_stop_waits_for_the_question_inside_the_model_and_refuses_waiting_ones() -> None:
    """A question still answering keeps stop() from reporting the model free (its caller cancels
    it, the runtime does); one waiting for a first prefix state is refused, not left waiting."""
    engine = scripted_engine(backend=ScriptedBackend(token_delay_s=0.1)).start()  # ~2.5 s answer
    engine.add_keyframe(0.0, frame(0))
    assert engine.wait_until_ready(10)
    asker = threading.Thread(target=engine.ask, args=("What is on the table?",), daemon=True)
    asker.start()
    assert wait_until(lambda: engine.backend.generate_calls == 1, 10)
    assert engine.stop(timeout=0.3) is False
    assert engine.stop(timeout=10) is True and not asker.is_alive()

    backend = BlockingBuildBackend(free=0)  # the first prefix never gets built
    engine = scripted_engine(backend=backend).start()
    errors: list[Exception] = []

    def ask() -> None:
        try:
            engine.ask("anything?")
        except Exception as e:  # recorded for the assertion
            errors.append(e)

    try:
        engine.add_keyframe(0.0, frame(0))
        assert backend.entered.wait(10)
        waiting = threading.Thread(target=ask, daemon=True)
        waiting.start()
        time.sleep(0.2)
        assert engine.stop(timeout=0.5) is False  # the build is still stuck...
        waiting.join(5)  # ... but the question waiting for it was refused at once
        assert not waiting.is_alive()
        assert [str(e) for e in errors] == ["the engine is stopping"]
    finally:
        backend.release.set()
        assert engine.stop(timeout=10) is True


# The graceful-shutdown bound `egovlm edge run` should keep with an answer in flight.
SIGTERM_BOUND_S = 20.0

# `egovlm edge run` with a model still computing when the runtime's stop timeout ends (run with
# ``python -c``; argv[1] says where, argv[2] is a file made once it computes): "answer": after its
# first piece of text the answer writes no space or newline, so no piece comes to cancel it at, and
# each decoding step is slow; "rebuild": every prefix rebuild after the first takes a minute. The
# work is torch's, so the thread is inside C++ when the process exits, where the interpreter's
# shutdown would abort it (std::terminate).
SLOW_MODEL_RUN = """
import sys, time
import torch
from egovlm.cli import main
from egovlm.edge.backends import prompt, torch_backend

def busy(seconds):
    x, t0 = torch.randn(256, 256), time.monotonic()
    while time.monotonic() - t0 < seconds:
        x = torch.tanh(x @ x)

where, flag = sys.argv.pop(1), sys.argv.pop(1)
if where == "answer":
    put = prompt.TokenStream.put
    def slow_put(self, value):
        text = self.text
        if text is not None and not hasattr(text, "first_only"):
            text.first_only = text.on_text
            def first_piece(piece):
                text.on_text = lambda later: None
                text.first_only(piece)
            text.on_text = first_piece
        busy(0.05)
        put(self, value)
    prompt.TokenStream.put = slow_put
else:
    build = torch_backend.TorchBackend.build_prefix
    def slow_build(self, *args, **kwargs):
        if getattr(self, "built_once", False):
            open(flag, "w").close()
            busy(60)
        self.built_once = True
        return build(self, *args, **kwargs)
    torch_backend.TorchBackend.build_prefix = slow_build
sys.argv[0] = "egovlm"
main()
"""


def sigterm_during_a_streamed_answer(
    model_dir: Path, launcher: list[str], ask_after: Path | None = None
) -> tuple[subprocess.Popen[str], str, float]:
    """Run ``launcher + ["edge", "run", ...]`` (the tiny model, a live synthetic camera), stream
    a long answer (once the file ``ask_after`` exists, if given), SIGTERM the process half a second
    after the first token; the process (ended), its output and how long it took to stop. Fails if
    it ran past :data:`SIGTERM_BOUND_S` or left the client hanging."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*launcher, "edge", "run", "--model", str(model_dir),
         "--source", "synth://?fps=10&size=160x120", "--port", str(port), "--status-every", "0",
         "--max-new-tokens", "4096"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    streamed: list[str] = []
    first_token = threading.Event()
    done = threading.Event()

    def ask() -> None:  # an answer far longer than the bound: the process must not wait for it
        body = {"question": "Describe everything you saw.", "stream": True, "max_new_tokens": 4096}
        try:
            with httpx.stream("POST", f"{url}/v1/ask", json=body, timeout=120) as r:
                for line in r.iter_lines():
                    streamed.append(line)
                    if line.startswith("event: token"):
                        first_token.set()
        except httpx.HTTPError as e:
            streamed.append(f"client: {e!r}")
        finally:
            done.set()

    out = ""
    with reaped(proc):
        wait_healthy(url, proc)
        if ask_after is not None:
            assert wait_until(ask_after.exists, 60, 0.1), "the slow model never started computing"
        threading.Thread(target=ask, daemon=True).start()
        assert wait_until(lambda: first_token.is_set() or done.is_set(), 60, 0.1), streamed
        assert first_token.is_set(), streamed
        time.sleep(0.5)
        assert not done.is_set(), "the answer ended before SIGTERM: make it longer"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=SIGTERM_BOUND_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(
                f"SIGTERM with an answer in flight: still running after {SIGTERM_BOUND_S:.0f} s\n{out}"
            )
        stop_s = time.monotonic() - t0
    assert done.wait(5), "the client was left hanging"
    return proc, out, stop_s


def test_sigterm_during_a_streamed_answer_stops_within_a_bound(tiny_model_dir: Path) -> None:
    proc, out, stop_s = sigterm_during_a_streamed_answer(tiny_model_dir, [sys.executable, "-m", "egovlm.cli"])
    assert proc.returncode == 0, out
    assert stop_s < SIGTERM_BOUND_S
    assert f"signal {int(signal.SIGTERM)}: shutting down" in out and "stopping: source" in out


@pytest.mark.parametrize(
    ("where", "still_inside"),
    [
        ("answer", "1 question(s) still inside the model after"),
        ("rebuild", "the prefix worker is still inside the model after"),
    ],
)
def test_sigterm_exits_0_while_the_model_is_still_computing(
    tiny_model_dir: Path, tmp_path: Path, where: str, still_inside: str
) -> None:
    """A thread that cannot be stopped within the runtime's stop timeout (an answer with nothing
    to cancel it at, a long prefix chunk) must not turn the shutdown into SIGABRT: the interpreter
    ends such daemon threads by unwinding them, and inside torch's C++ that calls std::terminate.
    The process exits 0 at once instead, its logs flushed."""
    flag = tmp_path / "computing"
    launcher = [sys.executable, "-c", SLOW_MODEL_RUN, where, str(flag)]
    # the rebuild is under way before the question comes (a worker waiting for it would be stopped)
    ask_after = flag if where == "rebuild" else None
    proc, out, stop_s = sigterm_during_a_streamed_answer(tiny_model_dir, launcher, ask_after)
    assert proc.returncode == 0, out
    assert "terminate called" not in out, out
    assert f"signal {int(signal.SIGTERM)}: shutting down" in out and "stopping: source" in out
    assert still_inside in out and "exiting without interpreter shutdown" in out, out
    assert stop_s < SIGTERM_BOUND_S


# `egovlm edge run` with a thread of someone else's (a library's worker) computing in torch for
# ever: nobody joins it, so it is inside torch's C++ whenever the process ends.
STRAY_THREAD_RUN = """
import sys, threading
import torch
from egovlm.cli import main

def compute():
    x = torch.randn(512, 512)
    while True:
        x = torch.tanh(x @ x)

threading.Thread(target=compute, name="stray-library-thread", daemon=True).start()
sys.argv[0] = "egovlm"
main()
"""


def test_sigterm_exits_0_with_a_library_thread_inside_torch(tiny_model_dir: Path) -> None:
    """After an orderly stop, a daemon thread nobody stops (a library's, inside torch's C++) must
    not turn the exit into SIGABRT: interpreter shutdown on CPython < 3.14 unwinds it from inside
    pybind11's GIL guard, which calls std::terminate ("terminate called without an active
    exception", the failure CI saw once with the runtime's own threads all stopped)."""
    launcher = [sys.executable, "-c", STRAY_THREAD_RUN]
    proc, out, stop_s = sigterm_during_a_streamed_answer(tiny_model_dir, launcher)
    assert proc.returncode == 0, out
    assert "terminate called" not in out, out
    assert f"signal {int(signal.SIGTERM)}: shutting down" in out and "stopping: source" in out
    assert "still inside the model" not in out, out  # the runtime's own threads all stopped
    assert stop_s < SIGTERM_BOUND_S


def test_the_interactive_demo_exits_0_on_sigterm_with_a_library_thread_inside_torch(
    tiny_model_dir: Path,
) -> None:
    """``egovlm edge demo --interactive`` serves the web page after its questions until stopped,
    and ends like ``edge run``: exit 0, not SIGABRT, with a stray thread inside torch."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", STRAY_THREAD_RUN, "edge", "demo", "--interactive",
         "--model", str(tiny_model_dir), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    with reaped(proc):
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=SIGTERM_BOUND_S)
    assert proc.returncode == 0, out
    assert "terminate called" not in out and "web UI: http://127.0.0.1" in out, out
