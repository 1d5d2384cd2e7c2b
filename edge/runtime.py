"""The running edge assistant: camera ingest feeding the engine, questions, thumbnails, metrics.

:class:`EdgeRuntime` wires an :class:`egovlm.edge.ingest.Ingest` into an
:class:`egovlm.edge.engine.Engine` (``add_frame`` per frame) and is what the HTTP server, the
CLI and the demo talk to. The engine already serialises questions on the model; the runtime
adds admission control (at most ``max_pending`` questions waiting, then 429), keeps JPEG
thumbnails of keyframes (cited ones stay available after the buffer evicts them), and owns a
Prometheus registry (one per runtime, so tests can run several).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from egovlm.edge.ingest import Ingest, IngestOptions, IngestStats, SynthFactory, default_synth_frames
from egovlm.edge.memory import limit_malloc_arenas
from egovlm.edge.sources import SourceSpec

log = logging.getLogger("egovlm.edge.runtime")

TokenCallback = Callable[[str], None]


class BusyError(RuntimeError):
    """Too many questions are already waiting for the model."""


class StoppingError(RuntimeError):
    """The runtime is stopping: the question was refused, or cancelled mid-answer."""


# How long stop() waits for questions in flight to notice the cancellation (each stops at its
# next piece of text) before stopping the engine regardless.
_CANCEL_WAIT_S = 5.0


@dataclass(frozen=True)
class RuntimeOptions:
    ingest: IngestOptions = field(default_factory=IngestOptions)
    max_pending: int = 4  # questions waiting for the model before new ones get "busy"
    jpeg_quality: int = 85
    jpeg_cache: int = 512  # thumbnails kept (buffer + recently cited keyframes)
    status_log_s: float = 0.0  # >0: log a one-line status this often (``edge run``)
    malloc_arenas: int | None = 2  # glibc arena cap for a flat RSS over hours (egovlm.edge.memory)


class _JpegCache:
    """Keyframe id → JPEG bytes, least recently used out. Keyframe images are immutable, so an
    id's JPEG never changes."""

    def __init__(self, size: int, quality: int) -> None:
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._size = size
        self._quality = quality
        self._lock = threading.Lock()

    def get(self, kid: int) -> bytes | None:
        with self._lock:
            data = self._items.get(kid)
            if data is not None:
                self._items.move_to_end(kid)
            return data

    def put(self, kid: int, image: np.ndarray) -> bytes:
        data = self.get(kid)
        if data is not None:
            return data
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=self._quality)
        data = buf.getvalue()
        with self._lock:
            self._items[kid] = data
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return data


class _LiveCollector(Collector):
    """Reads the runtime's counters at scrape time (no bookkeeping on the frame path)."""

    def __init__(self, runtime: EdgeRuntime) -> None:
        self._rt = runtime

    def collect(self) -> Any:
        st = self._rt.ingest_stats()
        eng = self._rt.engine.status()
        yield GaugeMetricFamily(
            "egovlm_buffer_keyframes", "keyframes held in the buffer", value=eng.keyframes
        )
        yield GaugeMetricFamily(
            "egovlm_engine_ready", "1 when the cached state matches the buffer", value=eng.ready
        )
        yield CounterMetricFamily("egovlm_engine_rebuilds", "prefix state rebuilds", value=eng.rebuilds)
        yield CounterMetricFamily(
            "egovlm_vision_calls", "vision encoder runs (one per keyframe)", value=eng.vision_calls
        )
        yield GaugeMetricFamily(
            "egovlm_prefix_build_ms", "duration of the last prefix rebuild", value=eng.last_build_ms
        )
        yield CounterMetricFamily(
            "egovlm_engine_frames_seen", "frames offered to the selector", value=eng.frames_seen
        )
        yield GaugeMetricFamily(
            "egovlm_questions_pending", "questions waiting for the model", value=self._rt.pending
        )
        if st is None:
            return
        yield GaugeMetricFamily(
            "egovlm_ingest_fps", "frames per second arriving from the source", value=st.fps_in
        )
        yield GaugeMetricFamily(
            "egovlm_ingest_fps_delivered", "frames per second handed to the engine", value=st.fps_out
        )
        yield CounterMetricFamily(
            "egovlm_ingest_frames_received", "frames from the source", value=st.frames_received
        )
        yield CounterMetricFamily(
            "egovlm_ingest_frames_dropped", "frames dropped (consumer behind)", value=st.frames_dropped
        )
        yield CounterMetricFamily(
            "egovlm_ingest_keyframes", "frames the selector kept", value=st.keyframes_taken
        )
        yield CounterMetricFamily(
            "egovlm_ingest_restarts", "source reconnects / file loops", value=st.restarts
        )
        yield CounterMetricFamily("egovlm_ingest_errors", "source errors", value=st.errors)
        up = GaugeMetricFamily("egovlm_ingest_up", "1 when the source is delivering", labels=["state"])
        up.add_metric([st.state], 1.0 if st.state == "running" else 0.0)
        yield up


_MS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKS_BUCKETS = (1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000)


class EdgeRuntime:
    """Ingest + engine + question admission + thumbnails + metrics.

    ``engine`` is an :class:`egovlm.edge.engine.Engine` (anything with its ``add_frame``, ``ask``,
    ``status``, ``start``/``stop`` and ``buffer``); ``source`` may be None to drive the engine
    yourself (tests push frames directly)."""

    def __init__(
        self,
        engine: Any,
        source: str | SourceSpec | None,
        options: RuntimeOptions | None = None,
        model_name: str = "egovlm",
        synth_frames: SynthFactory = default_synth_frames,
    ) -> None:
        self.engine = engine
        self.options = options or RuntimeOptions()
        self.model_name = model_name
        self.ingest = Ingest(source, self._on_frame, self.options.ingest, synth_frames) if source else None
        self._jpegs = _JpegCache(self.options.jpeg_cache, self.options.jpeg_quality)
        self._pending = 0
        self._pending_lock = threading.Condition()  # guards _pending; notified when it drops
        self._stop = threading.Event()
        self._status_thread: threading.Thread | None = None
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
        """Start the engine's worker, then the source (which raises SourceError when it cannot run)."""
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
        return self

    def stop(self) -> None:
        """Stop the source, cancel the questions in flight (an answer stops at its next piece of
        text, so a long answer cannot hold up a shutdown), then stop the engine."""
        self._stop.set()
        if self.ingest is not None:
            self.ingest.stop()
        with self._pending_lock:
            if not self._pending_lock.wait_for(lambda: self._pending == 0, _CANCEL_WAIT_S):
                log.warning("stopping with %d question(s) still running", self._pending)
        self.engine.stop()

    def __enter__(self) -> EdgeRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_frame(self, t: float, rgb: np.ndarray) -> bool:
        decision = self.engine.add_frame(t, rgb)
        return bool(getattr(decision, "keyframe", decision))

    def _log_status(self) -> None:
        while not self._stop.wait(self.options.status_log_s):
            log.info("%s", self.status_line())

    def status_line(self) -> str:
        st, eng = self.ingest_stats(), self.engine.status()
        src = (
            f"{st.state} {st.fps_in:.1f} fps in, {st.frames_received} frames, {st.frames_dropped} dropped, "
            f"{st.keyframes_taken} keyframes taken"
            if st
            else "no source"
        )
        return (
            f"source {src} | buffer {eng.keyframes} keyframes (v{eng.buffer_version}, "
            f"{'ready' if eng.ready else 'rebuilding'}, last build {eng.last_build_ms:.0f} ms)"
        )

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
    ) -> Any:
        """Answer a question (blocking; the server calls it from a worker thread). Raises
        :class:`BusyError` when ``max_pending`` questions are already waiting, and
        :class:`StoppingError` when the runtime is stopping (before or during the answer)."""
        with self._pending_lock:
            if self._stop.is_set():
                raise StoppingError("the runtime is stopping")
            if self._pending >= self.options.max_pending:
                raise BusyError(f"{self._pending} questions already waiting for the model; retry shortly")
            self._pending += 1

        def text(piece: str) -> None:  # the model's only callback: where a stop can interrupt it
            if self._stop.is_set():
                raise StoppingError("the runtime is stopping: answer cancelled")
            if on_text is not None:
                on_text(piece)

        try:
            answer = self.engine.ask(
                question, options, max_new_tokens=max_new_tokens, on_text=text, use_cache=use_cache
            )
        except StoppingError:
            self._m_questions.labels("cancelled").inc()
            raise
        except Exception:
            self._m_questions.labels("error").inc()
            raise
        finally:
            with self._pending_lock:
                self._pending -= 1
                self._pending_lock.notify_all()
        self._record(answer)
        for cited in answer.cited:  # keep cited thumbnails servable after eviction
            self._jpegs.put(cited.keyframe_id, answer.keyframes[cited.index - 1].image)
        return answer

    def _record(self, answer: Any) -> None:
        lat = answer.latency
        self._m_questions.labels("format_ok" if answer.parsed.format_ok else "format_bad").inc()
        self._m_total.observe(lat.total_ms / 1000)
        self._m_ttft.observe(lat.ttft_ms / 1000)
        self._m_queue.observe(lat.queue_ms / 1000)
        if lat.decode_tok_s > 0:
            self._m_tok_s.observe(lat.decode_tok_s)

    # -- views ---------------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return self.engine.buffer.snapshot()

    def jpeg(self, keyframe_id: int) -> bytes | None:
        """JPEG of a keyframe in the buffer or recently cited; None when unknown."""
        data = self._jpegs.get(keyframe_id)
        if data is not None:
            return data
        for kf in self.snapshot().keyframes:
            if kf.id == keyframe_id:
                return self._jpegs.put(kf.id, kf.image)
        return None

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
) -> EdgeRuntime:
    """Load a model and assemble a runtime (not started) from a device profile
    (configs/edge/<profile>.yaml); the keyword arguments override the profile's fields.
    Heavy imports happen here."""
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
        updates["generation"] = prof.generation.model_copy(update={"max_new_tokens": max_new_tokens})
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
    log.info("profile %s: %s, K=%d, %s", prof.device, prof.backend, prof.keyframes.capacity, prof.precision)
    return EdgeRuntime(engine, source, options, model_name=name)
