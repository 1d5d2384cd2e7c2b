"""One reconnect supervisor for GStreamer sources: the camera (:mod:`egovlm.edge.ingest`) and the
microphone (:mod:`egovlm.edge.voice.audio`).

A :class:`PipelineSupervisor` runs, in one named thread: build the pipeline → play it until it
ends (EOS, a bus error, a stall, a stop) → tear it down → wait (capped exponential backoff) →
rebuild. A finite source (a file that does not loop) ends at its EOS; ``max_restarts`` bounds the
retries (None: forever, a camera that comes back). The owner supplies what is specific to its
media (``build``, ``play``, ``teardown``); the supervisor keeps the state, the restart and error
counters, and logs every error with the source URI, its credentials masked (the owner's
``redact``, :func:`egovlm.edge.sources.redact_text`).

``play`` returns why the pipeline ended: ``eos``, ``error``, ``stall``, ``start failure`` or
``stopped``; a build that fails is ``no pipeline``. Each restart is recorded with that reason and
the backoff waited (:meth:`PipelineSupervisor.waits`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(frozen=True)
class Backoff:
    """How long to wait before rebuilding: ``initial_s``, doubled after each failed attempt up to
    ``max_s``; back to ``initial_s`` once the source delivered again."""

    initial_s: float = 0.5
    max_s: float = 10.0
    max_restarts: int | None = None  # None: retry forever

    def next(self, wait_s: float) -> float:
        return min(max(wait_s * 2, self.initial_s), self.max_s)


@dataclass(frozen=True)
class SupervisorCounters:
    """A snapshot of what the supervisor counts (since it was created)."""

    state: str  # created | starting | running | reconnecting | ended | failed | stopped
    restarts: int
    errors: int
    last_error: str | None
    last_error_age_s: float | None  # wall seconds since last_error happened


class PipelineSupervisor(Generic[P]):
    """Keeps one source's pipeline running in a thread named ``thread_name``.

    ``build()`` makes a pipeline (raising ``build_error`` when it cannot); ``play(pipeline)``
    runs it until it ends and returns why; ``teardown(pipeline)`` always follows. ``progress()``
    counts what the source delivered (frames, samples): an attempt that delivered resets the
    backoff. ``live`` sources restart after an EOS; a non-live one ends there unless ``loop``
    (then it restarts at once). ``what`` names the media in logs (``ingest``, ``audio``)."""

    def __init__(
        self,
        *,
        uri: str,
        what: str,
        thread_name: str,
        build: Callable[[], P],
        play: Callable[[P], str],
        teardown: Callable[[P], None],
        build_error: type[Exception],
        backoff: Backoff,
        live: bool,
        loop: bool = False,
        progress: Callable[[], int] = lambda: 0,
        redact: Callable[[str], str] = lambda text: text,
        log: logging.Logger | None = None,
    ) -> None:
        self.uri = uri  # as shown: credentials already masked
        self.what = what
        self.thread_name = thread_name
        self.backoff = backoff
        self.live = live
        self.loop = loop
        self._build = build
        self._play = play
        self._teardown = teardown
        self._build_error = build_error
        self._progress = progress
        self._redact = redact
        self._log = log or logging.getLogger("egovlm.edge")
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = "created"
        self._restarts = 0
        self._errors = 0
        self._last_error: str | None = None
        self._last_error_wall: float | None = None
        self._waits: collections.deque[tuple[str, float]] = collections.deque(maxlen=64)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, first: P | None = None) -> None:
        """Run the supervisor thread; ``first``: a pipeline already built (its errors surfaced
        in the caller), else the thread builds one."""
        self._state = "starting"
        self._thread = threading.Thread(target=self._run, args=(first,), name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop (``play`` sees :attr:`stop_requested`) and wait for it, at most
        ``timeout`` seconds; True when it has ended (or never started)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._state not in ("ended", "failed"):
            self._state = "stopped"
        return not self.running

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_done(self, timeout: float) -> bool:
        """Block until the thread has finished (the source ended, gave up or was stopped)."""
        return self._done.wait(timeout)

    # -- what the owner reports ----------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    def mark_running(self) -> None:
        """The source delivered: a starting or reconnecting source is running."""
        if self._state in ("starting", "reconnecting"):
            self._state = "running"

    def note_error(self, message: str) -> None:
        """Count and log a source error. GStreamer's messages may echo the URI, so the source's
        credentials are masked here, before the text reaches a log, /healthz or the API."""
        message = self._redact(message)
        self._log.warning("%s: %s", self.uri, message)
        with self._lock:
            self._errors += 1
            self._last_error = message
            self._last_error_wall = time.monotonic()

    def counters(self) -> SupervisorCounters:
        now = time.monotonic()
        with self._lock:
            return SupervisorCounters(
                state=self._state,
                restarts=self._restarts,
                errors=self._errors,
                last_error=self._last_error,
                last_error_age_s=None if self._last_error_wall is None else now - self._last_error_wall,
            )

    def waits(self) -> list[tuple[str, float]]:
        """The most recent restarts (up to 64), oldest first: why the source went down and the
        backoff waited before rebuilding it, in seconds."""
        with self._lock:
            return list(self._waits)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self, pipeline: P | None) -> None:
        wait_s = self.backoff.initial_s
        try:
            while not self._stop.is_set():
                delivered_before = self._progress()
                outcome = self._attempt(pipeline)
                pipeline = None  # torn down: the next attempt builds a new one
                if self._stop.is_set():
                    break
                if outcome == "eos" and not self.live and not self.loop:
                    self._log.info("%s: end of file", self.uri)
                    self._state = "ended"
                    return
                if self._progress() > delivered_before:
                    wait_s = self.backoff.initial_s  # the source worked: retry soon
                if outcome == "eos" and not self.live:
                    wait_s = 0.0  # a looping file restarts at once
                limit = self.backoff.max_restarts
                if limit is not None and self._restarts >= limit:
                    self._log.error(
                        "%s: giving up after %d restarts (%s)", self.uri, self._restarts, self._last_error
                    )
                    self._state = "failed"
                    return
                self._state = "reconnecting"
                self._log.warning("%s: %s; restarting in %.1f s", self.uri, outcome, wait_s)
                with self._lock:
                    self._waits.append((outcome, wait_s))
                if self._stop.wait(wait_s):
                    break
                wait_s = self.backoff.next(wait_s)
                with self._lock:
                    self._restarts += 1
            self._state = "stopped"
        finally:
            self._done.set()

    def _attempt(self, pipeline: P | None) -> str:
        """Build (unless given), play and tear down one pipeline instance; why it ended."""
        if pipeline is None:
            try:
                pipeline = self._build()
            except self._build_error as e:
                self.note_error(str(e))
                return "no pipeline"
        try:
            try:
                return self._play(pipeline)
            finally:
                self._teardown(pipeline)
        except Exception as e:  # a bug on the media path must not end the source for good
            self._log.exception("%s: %s failed", self.uri, self.what)
            self.note_error(f"{self.what} failed: {type(e).__name__}: {e}")
            return "error"
