"""Test doubles for the edge I/O tests: a backend whose "model" writes a scripted answer.

It implements the real :class:`Backend` interface, so the real Engine, selector, buffer, ingest
and server run around it; only the arithmetic is replaced. It lets tests assert what a random
tiny model cannot give: a well-formed answer that cites frames (the web page highlights them),
and a question that takes a known, long time (ingest must keep running meanwhile).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np

from egovlm.contract import SYSTEM_PROMPT, format_answer
from egovlm.edge.backends.base import (
    Backend,
    Generation,
    GenerationParams,
    PrefixState,
    TokenCallback,
    VisionFeatures,
)
from egovlm.edge.serving import LoopbackServer
from tests.live_server import free_port as free_port  # re-exported: the one free-port helper

# Questions the real-model backend tests ask (one multiple-choice, one free-text).
OPTIONS = {"A": "a red cup", "B": "a blue book", "C": "the phone"}
QUESTIONS: list[tuple[str, Mapping[str, str] | None]] = [
    ("What did I pick up first?", OPTIONS),
    ("Where did I leave my keys?", None),
]


class AnsweringBackend(Backend):
    """A stand-in model whose answer depends only on how many frames the prompt shows: both
    ``generate`` (cached prefix) and ``generate_from_scratch`` hand that count to :meth:`_answer`."""

    @abstractmethod
    def _answer(self, n_frames: int, params: GenerationParams, on_text: TokenCallback | None) -> Generation:
        """The answer to a question over ``n_frames`` keyframes, streamed through ``on_text``."""

    def generate(
        self,
        prefix: PrefixState,
        question: str,
        options: Mapping[str, str] | None,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        return self._answer(len(prefix.keyframe_ids), params, on_text)

    def generate_from_scratch(
        self,
        keyframes: Sequence[Any],
        question: str,
        options: Mapping[str, str] | None,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> Generation:
        return self._answer(len(keyframes), params, on_text)


class ScriptedBackend(AnsweringBackend):
    """Answers "<think>…</think><keyframes>N-1, N</keyframes><answer>A</answer>" (the last two
    frames of the prompt), one character-group per ``token_delay_s``."""

    name = "scripted"

    def __init__(
        self, size: tuple[int, int] = (112, 84), token_delay_s: float = 0.0, letter: str = "B"
    ) -> None:
        self._size = size
        self.token_delay_s = token_delay_s
        self.letter = letter
        self.generate_calls = 0

    @property
    def keyframe_size(self) -> tuple[int, int]:
        return self._size

    def encode_keyframe(self, keyframe_id: int, image: Any) -> VisionFeatures:
        return VisionFeatures(keyframe_id, 1, (1, 1, 1), float(np.mean(image)), 0.0)

    def build_prefix(
        self,
        version: int,
        keyframes: Sequence[Any],
        features: Sequence[VisionFeatures],
        system_prompt: str = SYSTEM_PROMPT,
        previous: PrefixState | None = None,
    ) -> PrefixState:
        return PrefixState(
            version, tuple(k.id for k in keyframes), system_prompt, len(keyframes) * 10, 0.0, len(keyframes)
        )

    def _answer(self, n_frames: int, params: GenerationParams, on_text: TokenCallback | None) -> Generation:
        self.generate_calls += 1
        cited = [i for i in (n_frames - 1, n_frames) if i >= 1]
        text = format_answer("the object is in the last frames", cited, self.letter)
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)][: params.max_new_tokens]
        t0 = time.perf_counter()
        first = None
        for piece in pieces:
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            first = first or time.perf_counter()
            if on_text is not None:
                on_text(piece)
        end = time.perf_counter()
        return Generation(
            text="".join(pieces),
            token_ids=list(range(len(pieces))),
            n_prompt_tokens=n_frames * 10 + 20,
            n_prefill_tokens=20,
            prefill_ms=((first or end) - t0) * 1000,
            decode_ms=(end - (first or end)) * 1000,
            prepare_ms=0.1,
        )


class FailingBackend(ScriptedBackend):
    """The scripted backend, except that while ``failures`` > 0 a question fails mid-answer: a
    couple of text pieces stream out, then ``generate`` raises ``RuntimeError(message)`` (an
    out-of-memory, a driver fault). Each failure uses one up; then it answers normally again."""

    name = "failing"

    def __init__(self, failures: int = 0, message: str = "boom", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.message = message
        self.raised = 0

    def _answer(self, n_frames: int, params: GenerationParams, on_text: TokenCallback | None) -> Generation:
        if self.failures <= 0:
            return super()._answer(n_frames, params, on_text)
        self.failures -= 1
        self.raised += 1
        for piece in ("<thi", "nk>"):
            if on_text is not None:
                on_text(piece)
        raise RuntimeError(self.message)


def blocky_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` 180x240 RGB frames, blocky but varied: each a random 12x16 image (the same base,
    perturbed per frame) scaled up 15x, so a real model sees distinct but similar scenes."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    out = []
    for _ in range(n):
        small = np.clip(base.astype(int) + rng.integers(-90, 90, base.shape), 0, 255).astype(np.uint8)
        out.append(np.kron(small, np.ones((15, 15, 1), dtype=np.uint8)))
    return out


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def scripted_engine(
    capacity: int = 6, token_delay_s: float = 0.0, max_new_tokens: int = 256, backend: Backend | None = None
) -> Any:
    """A real Engine (selector, buffer, worker) around the scripted backend (or ``backend``)."""
    from egovlm.edge.buffer import KeyframeBuffer
    from egovlm.edge.engine import Engine, EngineParams

    return Engine(
        backend or ScriptedBackend(token_delay_s=token_delay_s),
        KeyframeBuffer(capacity, None),
        EngineParams(GenerationParams(max_new_tokens=max_new_tokens), debounce_s=0.01),
    )


class FlakyFrames:
    """A ``synth_frames`` factory (and the iterator it returns) for a camera that glitches and
    then carries on: frames come from ``inner`` (default: EgoSynth's live generator) until
    ``fail_at`` frames went out (None: until :meth:`fail_now`); then the next ``failures`` reads
    fail (None: every read fails until :meth:`restore`), after which frames continue where they
    stopped. A failing read
    raises ``RuntimeError`` or, with ``end=True``, ends the stream (the camera hangs up).

    It is one object rather than a generator because a generator that raised is finished;
    ``factory_calls`` shows whether ingest kept the iterator across restarts."""

    def __init__(
        self,
        fail_at: int | None = None,
        failures: int | None = 1,
        end: bool = False,
        inner: Any = None,
    ) -> None:
        self.fail_at = fail_at
        self.end = end
        self._left = failures
        self._inner_factory = inner
        self._inner: Iterator[tuple[float, np.ndarray, Any]] | None = None
        self._restored = threading.Event()
        self._lock = threading.Lock()
        self.frames = 0  # frames handed out
        self.factory_calls = 0
        self.failure_times: list[float] = []  # time.monotonic() of each failed read
        self.first_frame_after: float | None = None  # time.monotonic() of the first frame after them

    def __call__(self, spec: Any) -> FlakyFrames:
        from egovlm.edge.ingest import default_synth_frames

        with self._lock:
            self.factory_calls += 1
            if self._inner is None:
                self._inner = iter((self._inner_factory or default_synth_frames)(spec))
        return self

    def fail_now(self) -> None:
        """Fail from the next read on."""
        with self._lock:
            self.fail_at = self.frames

    def restore(self) -> None:
        """The camera is back (for ``failures=None``)."""
        self._restored.set()

    @property
    def failed(self) -> int:
        with self._lock:
            return len(self.failure_times)

    def __iter__(self) -> FlakyFrames:
        return self

    def __next__(self) -> tuple[float, np.ndarray, Any]:
        with self._lock:
            if self.fail_at is not None and self.frames >= self.fail_at and self._failing():
                self.failure_times.append(time.monotonic())
                n = len(self.failure_times)
                if self.end:
                    raise StopIteration
                raise RuntimeError(f"camera glitch #{n} after frame {self.frames}")
            assert self._inner is not None, "call the factory first"
            item = next(self._inner)
            self.frames += 1
            if self.failure_times and self.first_frame_after is None:
                self.first_frame_after = time.monotonic()
            return item

    def _failing(self) -> bool:
        if self._left is None:
            return not self._restored.is_set()
        if self._left > 0:
            self._left -= 1
            return True
        return False


@contextmanager
def running(rt: Any, keyframes: int, timeout: float = 30) -> Iterator[Any]:
    """``rt`` (an EdgeRuntime) started, with ``keyframes`` in its buffer and the model state warm;
    stopped afterwards."""
    rt.start()
    try:
        assert rt.wait_for_keyframes(keyframes, timeout=timeout), rt.status_line()
        yield rt
    finally:
        rt.stop()


class ServerThread(LoopbackServer):
    """A real uvicorn server on 127.0.0.1 in a background thread (for clients that need a socket:
    the openai package, Chromium, the CLI); the benchmarks' own, on a socket bound before it starts."""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """``proc`` killed and waited for on the way out if it is still running (a failed assertion
    must not leave an ``egovlm edge run`` holding a port and two cores)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def asgi_post_scope(path: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The ASGI scope of ``POST path`` from a local client, for driving an app by hand (a body
    sent in chunks, a client that stalls) where a test client would buffer the whole body."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1", **headers}.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 90) -> dict[str, object]:
    """Poll ``/healthz`` of a server started as a subprocess until it is ok (its body), failing
    with the process output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            body = httpx.get(f"{url}/healthz", timeout=2).json()
            if body["status"] == "ok":
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not become healthy")


def sse_events(client: Any, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """POST a streamed question; the (event, data) pairs of its server-sent events."""
    events: list[tuple[str, Any]] = []
    with client.stream("POST", "/v1/ask", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:])))
    return events


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@contextmanager
def headless_chromium(*flags: str) -> Iterator[Any]:
    """A selenium driver of Debian's chromium (no browser download), headless, with a throwaway
    profile; ``flags`` add to the common ones (window size, autoplay...)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="egovlm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *flags,
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
