"""The running edge assistant: camera ingest feeding the engine, questions, thumbnails, metrics.

:class:`EdgeRuntime` wires an :class:`egovlm.edge.ingest.Ingest` into an
:class:`egovlm.edge.engine.Engine` (``add_frame`` per frame) and is what the HTTP server, the
CLI and the demo talk to. The engine already serialises questions on the model; the runtime
adds admission control (at most ``max_pending`` questions waiting, then 429), keeps JPEG
thumbnails of keyframes (cited ones stay available after the buffer evicts them), and owns a
Prometheus registry (one per runtime, so tests can run several).

:meth:`EdgeRuntime.health` is what ``/healthz`` reports: one :class:`ComponentHealth` per part
(source, model, buffer, voice) with the age of the last frame and the last error, and an overall
status that is ``degraded`` as soon as any part is (a camera that delivered nothing for
``RuntimeOptions.source_stale_s``, whether it never delivered or was lost after running).

Privacy (README "Privacy"): :meth:`EdgeRuntime.pause` stops frames at the door (nothing reaches the
selector, the buffer or the model; the source stays open), :meth:`EdgeRuntime.forget` drops
everything seen (keyframes, thumbnails, vision features, prefix state, and whatever registered
with :meth:`EdgeRuntime.add_memory`, e.g. the voice history), and a housekeeping thread drops
every keyframe, thumbnail and registered item older than ``RuntimeOptions.retention_s`` by the
wall clock, whether or not the camera still delivers. :meth:`EdgeRuntime.capture_state` (on |
paused | off) is in ``/healthz`` and the status line, and ``RuntimeOptions.capture_hook`` (a
command, e.g. one that drives a recording LED) runs with the new state whenever it changes.
"""

from __future__ import annotations

import io
import logging
import shlex
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ConfigDict

from egovlm.contract import QuestionTooLongError
from egovlm.edge.buffer import BufferSnapshot, Keyframe
from egovlm.edge.engine import Answer, Engine, EngineError
from egovlm.edge.ingest import Ingest, IngestOptions, IngestStats, SynthFactory, default_synth_frames
from egovlm.edge.memory import limit_malloc_arenas
from egovlm.edge.sources import SourceSpec

log = logging.getLogger("egovlm.edge.runtime")

TokenCallback = Callable[[str], None]


class BusyError(RuntimeError):
    """Too many questions are already waiting for the model."""


class StoppingError(RuntimeError):
    """The runtime is stopping: the question was refused, or cancelled mid-answer."""


# How long stop() waits, in all, for the model's threads to leave it: the questions in flight
# (each cancelled at its next piece of text) and the engine's prefix worker (at its next keyframe
# or prefill chunk). Within uvicorn's graceful shutdown (serving.GRACEFUL_SHUTDOWN_S) plus this,
# ``egovlm edge run`` exits after SIGTERM; beyond it, it exits without waiting (serving.serve).
STOP_TIMEOUT_S = 8.0
# A camera that delivered no frame for this long reads "degraded" in /healthz (edge run
# --stale-after). Cameras deliver 10-60 frames a second and the synthetic source 10, so 10 s of
# silence is an outage, not jitter; an RTSP camera's first frame usually arrives within 2-5 s.
DEFAULT_SOURCE_STALE_S = 10.0
# How long keyframes, thumbnails and transcripts are kept at most (wall clock), unless the device
# profile says otherwise (privacy.retention_s): short, because the assistant answers about the last
# few minutes and a head-mounted camera films everyone the wearer meets.
DEFAULT_RETENTION_S = 600.0
# How long a capture hook (e.g. a recording-LED command) may run before it is killed.
CAPTURE_HOOK_TIMEOUT_S = 5.0
CaptureState = Literal["on", "paused", "off"]
CAPTURE_STATES: tuple[CaptureState, ...] = ("on", "paused", "off")
ComponentStatus = Literal["ok", "starting", "degraded", "off"]
HealthStatus = Literal["ok", "starting", "degraded"]
# A retention check every this often at most (and every tenth of the retention, if shorter).
_HOUSEKEEPING_S = 1.0
# Health levels, worst last: the overall status is the worst of the components'.
_SEVERITY = {"off": 0, "ok": 0, "starting": 1, "degraded": 2}


@dataclass(frozen=True)
class ComponentHealth:
    """One part of the runtime as ``/healthz`` shows it. ``status``: ok | starting | degraded |
    off (not configured); ``detail``: one readable line; ages in wall-clock seconds."""

    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)  # the docstrings below: /healthz's schema

    status: ComponentStatus
    detail: str
    last_error: str | None = None
    last_error_age_s: float | None = None
    """wall seconds since last_error"""
    last_frame_age_s: float | None = None
    """source: seconds since the last frame reached the engine"""


@dataclass(frozen=True)
class Health:
    """The runtime's health: the worst component decides ``status`` (ok | starting | degraded)."""

    status: HealthStatus
    components: dict[str, ComponentHealth]
    capture: CaptureState = "off"  # EdgeRuntime.capture_state

    @property
    def problems(self) -> list[str]:
        """``"source: no frame for 12 s …"`` for each component that is not ok (or off)."""
        return [
            f"{name}: {c.detail}" + (f" (last error: {c.last_error})" if c.last_error else "")
            for name, c in self.components.items()
            if c.status not in ("ok", "off")
        ]


@dataclass(frozen=True)
class RuntimeOptions:
    ingest: IngestOptions = field(default_factory=IngestOptions)
    max_pending: int = 4  # questions waiting for the model before new ones get "busy"
    jpeg_quality: int = 85
    jpeg_cache: int = 512  # thumbnails kept (buffer + recently cited keyframes)
    blur_faces: bool = True  # pixelate faces in every thumbnail served (profile: faces.blur_served)
    status_log_s: float = 0.0  # >0: log a one-line status this often (``edge run``)
    source_stale_s: float = DEFAULT_SOURCE_STALE_S  # no frame for this long: health "degraded"
    malloc_arenas: int | None = 2  # glibc arena cap for a flat RSS over hours (egovlm.edge.memory)
    retention_s: float | None = DEFAULT_RETENTION_S  # wall-clock age limit of everything seen (None: none)
    capture_hook: str | None = None  # command run with on|paused|off when capture changes (an LED)
    log_transcripts: bool = False  # the voice assistant logs what it heard at INFO (opt-in)

    def __post_init__(self) -> None:
        if self.retention_s is not None and self.retention_s <= 0:
            raise ValueError(
                f"RuntimeOptions.retention_s must be > 0 seconds (or None), got {self.retention_s}"
            )


class _JpegCache:
    """Keyframe id → JPEG bytes, least recently used out. Keyframe images are immutable, so an
    id's JPEG never changes. Each entry keeps its keyframe's capture time (``Keyframe.wall``) for
    the retention limit (:meth:`expire`), and :meth:`clear` empties it (forget)."""

    def __init__(self, size: int, quality: int, blur_faces: bool = True) -> None:
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._blur_faces = blur_faces
        if blur_faces:  # a missing detector fails at start-up, naming its package, not on a thumbnail
            from egovlm.edge.faces import default_blurrer

            default_blurrer().load()
        self._walls: dict[int, float] = {}
        self._size = size
        self._quality = quality
        self._lock = threading.Lock()

    def get(self, kid: int) -> bytes | None:
        with self._lock:
            data = self._items.get(kid)
            if data is not None:
                self._items.move_to_end(kid)
            return data

    def encode(self, image: np.ndarray) -> bytes:
        """A keyframe's JPEG, faces blurred first: the slow part (tens of ms), taken under no lock so
        that pause, forget and retention never wait for it."""
        if self._blur_faces:  # bystanders: no face leaves the device unblurred (egovlm.edge.faces)
            from egovlm.edge.faces import blur_faces

            image = blur_faces(image)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=self._quality)
        return buf.getvalue()

    def store(self, kid: int, data: bytes, wall: float) -> None:
        with self._lock:
            self._items[kid] = data
            self._walls[kid] = wall
            while len(self._items) > self._size:
                old, _ = self._items.popitem(last=False)
                self._walls.pop(old, None)

    def expire(self, max_age_s: float, now: float) -> int:
        """Drop thumbnails of keyframes taken more than ``max_age_s`` before ``now``."""
        with self._lock:
            old = [k for k, wall in self._walls.items() if now - wall > max_age_s]
            for k in old:
                self._items.pop(k, None)
                del self._walls[k]
            return len(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._walls.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# What /metrics reads at scrape time: (metric name, help, family, attribute of the status object).
_Family = type[GaugeMetricFamily] | type[CounterMetricFamily]
_ENGINE_METRICS: tuple[tuple[str, str, _Family, str], ...] = (
    ("egovlm_buffer_keyframes", "keyframes held in the buffer", GaugeMetricFamily, "keyframes"),
    ("egovlm_engine_ready", "1 when the cached state matches the buffer", GaugeMetricFamily, "ready"),
    ("egovlm_engine_rebuilds", "prefix state rebuilds", CounterMetricFamily, "rebuilds"),
    ("egovlm_vision_calls", "vision encoder runs (one per keyframe)", CounterMetricFamily, "vision_calls"),
    ("egovlm_prefix_build_ms", "duration of the last prefix rebuild", GaugeMetricFamily, "last_build_ms"),
    ("egovlm_engine_frames_seen", "frames offered to the selector", CounterMetricFamily, "frames_seen"),
)
_INGEST_METRICS: tuple[tuple[str, str, _Family, str], ...] = (
    ("egovlm_ingest_fps", "frames per second arriving from the source", GaugeMetricFamily, "fps_in"),
    ("egovlm_ingest_fps_delivered", "frames per second handed to the engine", GaugeMetricFamily, "fps_out"),
    ("egovlm_ingest_frames_received", "frames from the source", CounterMetricFamily, "frames_received"),
    (
        "egovlm_ingest_frames_dropped",
        "frames dropped (consumer behind)",
        CounterMetricFamily,
        "frames_dropped",
    ),
    ("egovlm_ingest_keyframes", "frames the selector kept", CounterMetricFamily, "keyframes_taken"),
    ("egovlm_ingest_restarts", "source reconnects / file loops", CounterMetricFamily, "restarts"),
    ("egovlm_ingest_errors", "source errors", CounterMetricFamily, "errors"),
)


class _LiveCollector(Collector):
    """Reads the runtime's counters at scrape time (no bookkeeping on the frame path)."""

    def __init__(self, runtime: EdgeRuntime) -> None:
        self._rt = runtime

    def collect(self) -> Any:
        st = self._rt.ingest_stats()
        eng = self._rt.engine.status()
        for name, doc, family, attr in _ENGINE_METRICS:
            yield family(name, doc, value=getattr(eng, attr))
        yield GaugeMetricFamily(
            "egovlm_questions_pending", "questions waiting for the model", value=self._rt.pending
        )
        if st is None:
            return
        for name, doc, family, attr in _INGEST_METRICS:
            yield family(name, doc, value=getattr(st, attr))
        up = GaugeMetricFamily("egovlm_ingest_up", "1 when the source is delivering", labels=["state"])
        up.add_metric([st.state], 1.0 if st.state == "running" else 0.0)
        yield up
        if st.last_frame_age_s is not None:
            yield GaugeMetricFamily(
                "egovlm_ingest_last_frame_age_seconds",
                "wall seconds since the source last delivered a frame",
                value=st.last_frame_age_s,
            )
        stale = GaugeMetricFamily(
            "egovlm_source_degraded", "1 when /healthz reads the source as degraded (no frame, failed)"
        )
        stale.add_metric([], 1.0 if self._rt.source_health().status == "degraded" else 0.0)
        yield stale


_MS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKS_BUCKETS = (1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000)


class EdgeRuntime:
    """Ingest + engine + question admission + thumbnails + metrics.

    ``source`` may be None to drive the engine yourself (tests push frames directly)."""

    def __init__(
        self,
        engine: Engine,
        source: str | SourceSpec | None,
        options: RuntimeOptions | None = None,
        model_name: str = "egovlm",
        synth_frames: SynthFactory = default_synth_frames,
    ) -> None:
        self.engine = engine
        self.options = options or RuntimeOptions()
        self.model_name = model_name
        self.ingest = Ingest(source, self._on_frame, self.options.ingest, synth_frames) if source else None
        # Thumbnails are made from the buffer's images; when the engine already blurs faces as a keyframe
        # enters the buffer (faces.blur_model_input), detecting again per thumbnail would be wasted work.
        blur_thumbnails = self.options.blur_faces and not engine.params.blur_faces
        self._jpegs = _JpegCache(self.options.jpeg_cache, self.options.jpeg_quality, blur_thumbnails)
        self._pending = 0
        self._pending_lock = threading.Condition()  # guards _pending; notified when it drops
        self._question_error: tuple[str, float] | None = None  # the last failed question, when
        self._stop = threading.Event()
        self._status_thread: threading.Thread | None = None
        self._paused = False
        self._epoch = 0  # bumped by forget(): an answer from before it caches no thumbnails
        self._memory_lock = threading.Lock()  # pause/resume/forget/retention, one at a time
        self._memories: list[Callable[[float | None], None]] = []  # add_memory
        self._wake = threading.Event()  # housekeeping: check now (capture changed)
        self._housekeeper: threading.Thread | None = None
        self._hook_state: str | None = None  # the capture state the hook was last run with
        self.registry = CollectorRegistry()
        self._m_questions = Counter(
            "egovlm_questions", "questions answered, by outcome", ["outcome"], registry=self.registry
        )
        self._m_total = Histogram(
            "egovlm_ask_seconds", "question latency end to end", buckets=_MS_BUCKETS, registry=self.registry
        )
        self._m_ttft = Histogram(
            "egovlm_ttft_seconds", "question to first token", buckets=_MS_BUCKETS, registry=self.registry
        )
        self._m_queue = Histogram(
            "egovlm_queue_seconds", "waiting for the model", buckets=_MS_BUCKETS, registry=self.registry
        )
        self._m_tok_s = Histogram(
            "egovlm_decode_tokens_per_second", "decode speed", buckets=_TOKS_BUCKETS, registry=self.registry
        )
        self.registry.register(_LiveCollector(self))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> EdgeRuntime:
        """Start the engine's worker, then the source (which raises SourceError when it cannot run).
        Starting a running runtime does nothing (the interactive demo starts it, then ``serve`` does):
        a second start would open the camera twice and run every thread twice."""
        if self._housekeeper is not None:
            return self
        self._stop.clear()
        if self.options.malloc_arenas:
            limit_malloc_arenas(self.options.malloc_arenas)  # before the worker threads allocate
        self.engine.start()
        if self.ingest is not None:
            try:
                self.ingest.start()
            except Exception:
                self.engine.stop()
                raise
        if self.options.status_log_s > 0:
            self._status_thread = threading.Thread(target=self._log_status, name="egovlm-status", daemon=True)
            self._status_thread.start()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="egovlm-privacy", daemon=True)
        self._housekeeper.start()
        return self

    def stop(self) -> bool:
        """Cancel the questions in flight (an answer stops at its next piece of text, so a long
        answer cannot hold up a shutdown; new ones are refused), stop the source, then the engine
        (its prefix worker) and wait for the questions to finish, :data:`STOP_TIMEOUT_S` in all
        for the model's threads. Returns True when no thread is left inside the model, the
        runtime's question path or the source; False when one still is after that time, in which
        case the process must not run interpreter shutdown (see :func:`egovlm.edge.serving.serve`)."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        self._stop.set()
        stopped = True
        if self.ingest is not None and self.ingest.stop() is False:
            log.warning("the camera's threads are still running after their stop timeout")
            stopped = False  # one may be inside OpenCV or the engine's keyframe selection
        self._wake.set()
        if self._housekeeper is not None:
            self._housekeeper.join(CAPTURE_HOOK_TIMEOUT_S + 1)
            self._housekeeper = None
        self._run_capture_hook()  # "off"
        stopped = self.engine.stop(max(0.0, deadline - time.monotonic())) and stopped
        with self._pending_lock:  # then the rest of each question's path (its thumbnails)
            if not self._pending_lock.wait_for(
                lambda: self._pending == 0, max(0.0, deadline - time.monotonic())
            ):
                log.warning("stopping with %d question(s) still running", self._pending)
                stopped = False
        return stopped

    def __enter__(self) -> EdgeRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_frame(self, t: float, rgb: np.ndarray) -> bool:
        if self._paused:  # paused: the frame goes no further than this
            return False
        decision = self.engine.add_frame(t, rgb)
        return bool(getattr(decision, "keyframe", decision))

    # -- privacy -------------------------------------------------------------------------------

    def capture_state(self) -> CaptureState:
        """``paused`` (by :meth:`pause`), ``on`` (a source is open or opening and frames reach the
        model), or ``off`` (no source, or it ended, failed or was stopped)."""
        if self._paused:
            return "paused"
        st = self.ingest_stats()
        if st is None or self._stop.is_set() or st.state in ("ended", "failed", "stopped"):
            return "off"
        return "on"

    def pause(self) -> CaptureState:
        """Stop frames before the selector, the buffer and the model (the source stays open, so
        :meth:`resume` is instant). What was seen before stays until :meth:`forget` or retention."""
        return self._set_paused(True, "capture paused: camera frames are dropped on arrival")

    def resume(self) -> CaptureState:
        return self._set_paused(False, "capture resumed")

    def _set_paused(self, paused: bool, message: str) -> CaptureState:
        with self._memory_lock:
            self._paused = paused
        log.info(message)
        self._wake.set()
        return self.capture_state()

    def forget(self) -> None:
        """Forget everything seen: the buffer, every thumbnail (cited ones too), the engine's
        vision features and prefix state (:meth:`egovlm.edge.engine.Engine.forget`) and every
        :meth:`add_memory` (the voice history). Answers already sent are the client's."""
        with self._memory_lock:
            self._epoch += 1
            forget = getattr(self.engine, "forget", None)
            if forget is not None:
                forget()
            else:  # an engine without features or state (test doubles)
                self.engine.buffer.clear()
            self._jpegs.clear()
            for memory in list(self._memories):
                memory(None)
        log.info("forgot everything seen: keyframes, thumbnails, features, model state, transcripts")

    def add_memory(self, expire: Callable[[float | None], None]) -> None:
        """Register something else that holds what the camera or microphone caught (the voice
        history): ``expire(max_age_s)`` drops its items older than that (wall clock), and
        ``expire(None)`` drops them all (forget)."""
        with self._memory_lock:
            self._memories.append(expire)

    def enforce_retention(self, now: float | None = None) -> int:
        """Drop keyframes, thumbnails and registered items older than ``retention_s`` (wall
        clock, ``time.monotonic()``); the housekeeping thread calls this every second or so.
        Returns how many keyframes and thumbnails went."""
        max_age = self.options.retention_s
        if max_age is None:
            return 0
        now = time.monotonic() if now is None else now
        with self._memory_lock:
            n = self.engine.buffer.expire_older_than(max_age, now) + self._jpegs.expire(max_age, now)
            for memory in list(self._memories):
                memory(max_age)
        return n

    def _housekeeping(self) -> None:
        """Retention and the capture hook, on their own thread: both must work when no frame
        arrives (a camera that stopped is exactly when old keyframes would otherwise stay)."""
        period = _HOUSEKEEPING_S
        if self.options.retention_s is not None:
            period = min(period, self.options.retention_s / 10)
        while not self._stop.is_set():
            self._wake.wait(period)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.enforce_retention()
                self._run_capture_hook()
            except Exception:  # keep enforcing: one failure must not end retention
                log.exception("privacy housekeeping failed")

    def _run_capture_hook(self) -> None:
        """Run ``capture_hook STATE`` when the capture state changed since the last run."""
        state = self.capture_state()
        if state == self._hook_state:
            return
        self._hook_state = state
        hook = self.options.capture_hook
        if not hook:
            return
        cmd = [*shlex.split(hook), state]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=CAPTURE_HOOK_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("capture hook %r failed: %s", hook, e)
            return
        if done.returncode != 0:
            log.warning("capture hook %r exited %d: %s", hook, done.returncode, done.stderr.strip()[-300:])

    def _log_status(self) -> None:
        """The periodic status line; a change of health is logged as a warning with its reasons."""
        previous = "ok"
        while not self._stop.wait(self.options.status_log_s):
            log.info("%s", self.status_line())
            health = self.health()
            if health.status != previous and health.status != "starting":
                report = "; ".join(health.problems) or "all components ok"
                (log.warning if health.status == "degraded" else log.info)(
                    "health %s: %s", health.status, report
                )
                previous = health.status

    def status_line(self) -> str:
        st, eng = self.ingest_stats(), self.engine.status()
        age = (
            ""
            if st is None or st.last_frame_age_s is None
            else f", last frame {st.last_frame_age_s:.1f} s ago"
        )
        src = (
            f"{st.state} {st.fps_in:.1f} fps in, {st.frames_received} frames, {st.frames_dropped} dropped, "
            f"{st.keyframes_taken} keyframes taken{age}"
            if st
            else "no source"
        )
        return (
            f"source {src} | buffer {eng.keyframes} keyframes (v{eng.buffer_version}, "
            f"{'ready' if eng.ready else 'rebuilding'}, last build {eng.last_build_ms:.0f} ms) | "
            f"capture {self.capture_state()}"
        )

    # -- health --------------------------------------------------------------------------------

    def health(self, voice: Any = None) -> Health:
        """Per component (source, model, buffer, voice) and overall; ``voice``: the app's
        :class:`egovlm.edge.voice.pipeline.VoiceAssistant`, None when voice is off."""
        components = {
            "source": self.source_health(),
            "model": self._model_health(),
            "buffer": self._buffer_health(),
            "voice": _voice_health(voice),
        }
        worst = max(components.values(), key=lambda c: _SEVERITY[c.status]).status
        return Health("ok" if worst == "off" else worst, components, self.capture_state())

    def source_health(self) -> ComponentHealth:
        """The camera: ``degraded`` when it delivered no frame for ``source_stale_s`` (never, or
        not since it was lost) or ended/failed for good; ``starting`` while the first frame is
        awaited."""
        st = self.ingest_stats()
        if st is None:
            return ComponentHealth("off", "no source: frames are pushed by the caller")
        stale = self.options.source_stale_s
        age = st.last_frame_age_s
        status: ComponentStatus
        if st.state in ("ended", "failed", "stopped"):
            status, detail = "degraded", f"{st.state}: the source delivers no more frames"
        elif age is None and st.uptime_s > stale:
            status, detail = (
                "degraded",
                f"no frame since the source started {st.uptime_s:.0f} s ago ({st.state})",
            )
        elif age is None:
            status, detail = "starting", f"waiting for the first frame ({st.state}, {st.uptime_s:.0f} s)"
        elif age > stale:
            status, detail = "degraded", f"no frame for {age:.0f} s ({st.state}; degraded after {stale:g} s)"
        else:
            status, detail = "ok", f"{st.state}, {st.fps_in:.1f} fps, last frame {age:.1f} s ago"
        return ComponentHealth(status, detail, st.last_error, st.last_error_age_s, age)

    def _model_health(self) -> ComponentHealth:
        eng = self.engine.status()
        failed = self._question_error
        errors: dict[str, Any] = {}
        if failed is not None:  # a failed question is reported, but fails only that request
            errors = {"last_error": failed[0], "last_error_age_s": time.monotonic() - failed[1]}
        if eng.last_error is not None:
            return ComponentHealth("degraded", "the last model state rebuild failed", eng.last_error, None)
        if not eng.running:
            return ComponentHealth("degraded", "the engine's worker is not running", **errors)
        if eng.state_version is None:
            return ComponentHealth("starting", "no model state yet (waiting for keyframes)", **errors)
        detail = (
            f"{'ready' if eng.ready else 'rebuilding'}, state v{eng.state_version}, "
            f"last build {eng.last_build_ms:.0f} ms"
        )
        return ComponentHealth("ok", detail, **errors)

    def _buffer_health(self) -> ComponentHealth:
        snap = self.snapshot()
        capacity = getattr(self.engine.buffer, "capacity", None)
        if not snap.keyframes:
            return ComponentHealth("starting", "empty: no keyframe taken yet")
        held = f"{len(snap.keyframes)}/{capacity}" if capacity else f"{len(snap.keyframes)}"
        return ComponentHealth("ok", f"{held} keyframes, newest at t={snap.keyframes[-1].t:.1f} s")

    # -- questions -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._pending_lock:
            return self._pending

    def ask(
        self,
        question: str,
        options: Mapping[str, str] | None = None,
        *,
        max_new_tokens: int | None = None,
        on_text: TokenCallback | None = None,
        use_cache: bool = True,
    ) -> Answer:
        """Answer a question (blocking; the server calls it from a worker thread). Raises
        :class:`BusyError` when ``max_pending`` questions are already waiting, and
        :class:`StoppingError` when the runtime is stopping (before or during the answer)."""
        with self._pending_lock:
            if self._stop.is_set():
                raise StoppingError("the runtime is stopping")
            if self._pending >= self.options.max_pending:
                raise BusyError(f"{self._pending} questions already waiting for the model; retry shortly")
            self._pending += 1
        epoch = self._epoch

        def text(piece: str) -> None:  # the model's only callback: where a stop can interrupt it
            if self._stop.is_set():
                raise StoppingError("the runtime is stopping: answer cancelled")
            if on_text is not None:
                on_text(piece)

        try:
            try:
                answer = self.engine.ask(
                    question, options, max_new_tokens=max_new_tokens, on_text=text, use_cache=use_cache
                )
            except StoppingError:
                self._m_questions.labels("cancelled").inc()
                raise
            except Exception as e:
                self._m_questions.labels("error").inc()
                if not isinstance(e, (QuestionTooLongError, EngineError)):  # the asker's, or too early
                    self._question_error = (f"a question failed: {type(e).__name__}: {e}", time.monotonic())
                raise
            self._record(answer)
            # Still pending while the cited thumbnails are encoded: face detection runs OpenCV's C++,
            # which stop() must see finished too.
            cited = [answer.keyframes[c.index - 1] for c in answer.cited]
            encoded = [(kf, self._jpegs.encode(kf.image)) for kf in cited if self._jpegs.get(kf.id) is None]
        finally:
            with self._pending_lock:
                self._pending -= 1
                self._pending_lock.notify_all()
        with self._memory_lock:
            if self._epoch == epoch:  # not forgotten meanwhile: keep cited thumbnails after eviction
                for kf, data in encoded:
                    self._jpegs.store(kf.id, data, kf.wall)
        return answer

    def _record(self, answer: Answer) -> None:
        lat = answer.latency
        self._m_questions.labels("format_ok" if answer.parsed.format_ok else "format_bad").inc()
        self._m_total.observe(lat.total_ms / 1000)
        self._m_ttft.observe(lat.ttft_ms / 1000)
        self._m_queue.observe(lat.queue_ms / 1000)
        if lat.decode_tok_s > 0:
            self._m_tok_s.observe(lat.decode_tok_s)

    # -- views ---------------------------------------------------------------------------------

    def snapshot(self) -> BufferSnapshot:
        return self.engine.buffer.snapshot()

    def jpeg(self, keyframe_id: int) -> bytes | None:
        """JPEG of a keyframe in the buffer or recently cited; None when unknown."""
        data = self._jpegs.get(keyframe_id)
        if data is not None:
            return data
        kf = self._buffered(keyframe_id)
        if kf is None:
            return None
        data = self._jpegs.encode(kf.image)
        with self._memory_lock:  # served and kept only if forget() or retention has not dropped it meanwhile
            if self._buffered(keyframe_id) is None:
                return None
            self._jpegs.store(kf.id, data, kf.wall)
        return data

    def _buffered(self, keyframe_id: int) -> Keyframe | None:
        return next((kf for kf in self.snapshot().keyframes if kf.id == keyframe_id), None)

    def ingest_stats(self) -> IngestStats | None:
        return self.ingest.stats() if self.ingest is not None else None

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def wait_for_keyframes(self, n: int, timeout: float) -> bool:
        """Block until the buffer holds ``n`` keyframes and the model state is warm for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.engine.buffer) >= n and self.engine.wait_until_ready(timeout=0.2):
                return True
            time.sleep(0.05)
        return False


def _voice_health(voice: Any) -> ComponentHealth:
    """Spoken questions: off without a voice assistant; degraded when its microphone failed or is
    reconnecting after errors; the last error of the microphone or of a spoken turn."""
    if voice is None:
        return ComponentHealth("off", "voice is off (edge run --voice / --mic)")
    src = voice.source_stats()
    turn_errors = [t.error for t in list(voice.history) if t.error]
    last_error = (src.last_error if src is not None else None) or (turn_errors[-1] if turn_errors else None)
    if src is None:
        return ComponentHealth("ok", f"{voice.state}, uploads only (no microphone)", last_error)
    if src.state == "failed" or (src.state == "reconnecting" and src.errors):
        return ComponentHealth("degraded", f"microphone {src.state}", last_error)
    return ComponentHealth("ok", f"{voice.state}, microphone {src.state}", last_error)


TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def build_runtime(
    model: str | Path,
    source: str | None,
    *,
    profile: str | Path = "cpu",
    backend: str | None = None,
    device: str | None = None,
    capacity: int | None = None,
    horizon_s: float | None = None,
    max_new_tokens: int | None = None,
    options: RuntimeOptions | None = None,
    retention_s: float | None = None,
    capture_hook: str | None = None,
    log_transcripts: bool | None = None,
) -> EdgeRuntime:
    """Load a model and assemble a runtime (not started) from a device profile
    (configs/edge/<profile>.yaml); the keyword arguments override the profile's fields. The
    profile's ``privacy`` section (or these overrides) replaces ``options``' retention, capture
    hook and transcript logging. Heavy imports happen here."""
    from egovlm.edge.backends import create_backend
    from egovlm.edge.engine import Engine
    from egovlm.edge.profile import ProfileError, load_profile

    prof = load_profile(profile)
    updates: dict[str, Any] = {}
    if backend is not None:
        updates["backend"] = backend
    if device is not None:
        updates["device_map"] = device
    kf: dict[str, Any] = {}
    if capacity is not None:
        kf["capacity"] = capacity
    if horizon_s is not None:
        kf["horizon_s"] = horizon_s
    if kf:
        updates["keyframes"] = prof.keyframes.model_copy(update=kf)
    if max_new_tokens is not None:
        updates["generation"] = replace(prof.generation, max_new_tokens=max_new_tokens)
    prof = prof.model_copy(update=updates)
    if prof.backend == "torch" and prof.precision not in TORCH_DTYPES:
        raise ProfileError(
            f"{prof.source}: precision {prof.precision} needs an exported model (--backend onnx/tensorrt); "
            f"the torch backend runs {', '.join(TORCH_DTYPES)}"
        )
    be = create_backend(
        prof.backend,
        model,
        device=prof.device_map,
        dtype=TORCH_DTYPES.get(prof.precision, "float16"),
        threads=prof.threads,
    )
    engine = Engine.from_profile(be, prof)
    name = Path(str(model)).name or str(model)
    privacy = prof.privacy
    options = replace(
        options or RuntimeOptions(),
        retention_s=retention_s or privacy.retention_s,
        capture_hook=capture_hook if capture_hook is not None else privacy.capture_hook,
        log_transcripts=privacy.log_transcripts if log_transcripts is None else log_transcripts,
    )
    log.info("privacy: keyframes, thumbnails and transcripts kept at most %.0f s", options.retention_s)
    log.info("profile %s: %s, K=%d, %s", prof.device, prof.backend, prof.keyframes.capacity, prof.precision)
    options = replace(options, blur_faces=prof.faces.blur_served)  # bystanders (egovlm.edge.faces)
    return EdgeRuntime(engine, source, options, model_name=name)
