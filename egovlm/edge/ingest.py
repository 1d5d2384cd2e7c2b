"""Camera ingest over GStreamer: frames in, never blocked by inference (docs/architecture.md#threads).

One :class:`Ingest` runs one source (see :mod:`egovlm.edge.sources`) in a supervisor thread:

* the pipeline ends in ``appsink drop=true max-buffers=N``; its ``new-sample`` callback (in the
  streaming thread) only moves the sample into a small mailbox, newest wins. A consumer slower
  than the camera therefore loses the *oldest* frames, and every loss is counted
  (``frames_dropped``): ``frames_received == frames_delivered + frames_dropped + pending``;
* the supervisor thread converts the sample to an RGB numpy array (respecting GStreamer's row
  stride), timestamps it from the buffer PTS and calls ``on_frame(t, rgb)`` (the engine's cheap
  ``add_frame``); a truthy return value counts as a keyframe taken;
* a source that errors, stalls or ends is torn down and rebuilt with exponential backoff
  (:class:`egovlm.edge.supervisor.PipelineSupervisor`, shared with the microphone); files either
  loop (``?loop=1``) or stop. Timestamps stay monotonic across restarts: a new
  segment continues from the last timestamp plus the wall-clock outage;
* ``synth://`` sources are fed by a thread that pushes EgoSynth frames into ``appsrc`` with
  their own timestamps as PTS, so the synthetic stream goes through the same GStreamer path as
  a camera. A frame generator that raises is a source error like a camera's (reported at once,
  not after the stall timeout): the frames already pushed are delivered, then the source is
  rebuilt with backoff, continuing the same iterator, or calling the factory again when the
  iterator was a generator (a generator that raised is finished).
"""

from __future__ import annotations

import collections
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import ConfigDict

from egovlm.edge.gst import gst, gst_video
from egovlm.edge.sources import (
    OutputFormat,
    SourceError,
    SourceSpec,
    check_source,
    gst_element_exists,
    hardware_decoders,
    parse_source,
    pipeline_description,
)
from egovlm.edge.supervisor import Backoff, PipelineSupervisor

log = logging.getLogger("egovlm.edge.ingest")

FrameCallback = Callable[[float, np.ndarray], Any]
SynthFactory = Callable[[SourceSpec], Iterator[tuple[float, np.ndarray, Any]]]

# A failed synth feeder ends its stream with EOS so the frames it already pushed are delivered
# first; should that EOS not come through (a wedged pipeline), the failure is acted on anyway.
_FEEDER_EOS_GRACE_S = 2.0


@dataclass(frozen=True)
class IngestOptions:
    """Ingest behaviour. ``max_reconnects`` None retries forever (a camera that comes back)."""

    output: OutputFormat = field(default_factory=OutputFormat)
    mailbox: int = 2  # frames waiting for the consumer; older ones are dropped (and counted)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_reconnects: int | None = None
    stall_timeout_s: float = 10.0  # no frame for this long: treat the source as failed
    fps_window_s: float = 2.0


@dataclass(frozen=True)
class IngestStats:
    """A snapshot of the counters (all since :meth:`Ingest.start`)."""

    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)  # the API schema's descriptions

    source: str
    state: str  # starting | running | reconnecting | ended | failed | stopped
    frames_received: int
    frames_delivered: int
    frames_dropped: int
    keyframes_taken: int
    restarts: int
    errors: int
    last_error: str | None
    fps_in: float
    fps_out: float
    last_timestamp_s: float | None
    uptime_s: float
    last_frame_age_s: float | None = None
    """wall seconds since a frame last reached on_frame"""
    last_error_age_s: float | None = None
    """wall seconds since last_error happened"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Mailbox:
    """Hand-off between GStreamer's streaming thread and the consumer. Live sources: newest wins,
    the evicted frame is counted as dropped. Lossless (a file read faster than real time): ``put``
    waits for room instead, which back-pressures the decoder. Hand-written because queue.Queue
    cannot evict its oldest item atomically, and eviction must be counted."""

    def __init__(self, size: int, lossless: bool = False) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._size = max(1, size)
        self._lossless = lossless
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._cond:
            while self._lossless and len(self._items) >= self._size and not self._closed:
                self._cond.wait(0.1)
            if len(self._items) >= self._size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float) -> Any | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Release a waiting ``put`` (the pipeline is being torn down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reset(self) -> int:
        """Discard pending items (a torn-down pipeline; they count as dropped) and reopen."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self.dropped += n
            self._closed = False
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float) -> None:
        self._times: collections.deque[float] = collections.deque()
        self._window = window_s
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self, now: float) -> float:
        with self._lock:
            self._trim(now)
            return len(self._times) / self._window

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()


def sample_to_rgb(sample: Any) -> tuple[np.ndarray, int | None]:
    """Copy an RGB ``Gst.Sample`` into an HxWx3 uint8 array; return it with the buffer PTS (ns).
    Rows are padded to 4 bytes in GStreamer's RGB layout, so the stride comes from the caps."""
    g, gv = gst(), gst_video()
    info = gv.VideoInfo.new_from_caps(sample.get_caps())
    buf = sample.get_buffer()
    ok, mapinfo = buf.map(g.MapFlags.READ)
    if not ok:
        raise RuntimeError("could not map a GStreamer buffer")
    try:
        w, h, stride = info.width, info.height, info.stride[0]
        flat = np.frombuffer(mapinfo.data, dtype=np.uint8, count=stride * h)
        rgb = flat.reshape(h, stride)[:, : w * 3].reshape(h, w, 3).copy()
    finally:
        buf.unmap(mapinfo)
    pts = buf.pts if buf.pts != g.CLOCK_TIME_NONE else None
    return rgb, pts


def default_synth_frames(spec: SourceSpec) -> Iterator[tuple[float, np.ndarray, Any]]:
    """EgoSynth's live generator for ``synth://`` sources: (timestamp_s, RGB frame, events)."""
    from egovlm.synth.live import LiveSynth

    assert spec.size is not None and spec.fps is not None
    # Unpaced: the appsrc feeder paces to the wall clock itself (for any generator).
    return iter(LiveSynth(size=spec.size, fps=spec.fps, seed=spec.seed, realtime=False))


class _SynthFeeder:
    """Pushes generator frames into ``appsrc`` with PTS = the frame's own timestamp, paced to
    real time when the source asks for it. Runs for one pipeline instance; the generator
    outlives restarts so the synthetic world continues rather than starting over.

    An exception from the generator (or a frame it cannot push) ends this instance's stream:
    ``error`` names it and ``failed_at`` says when, then ``end-of-stream`` flushes the frames
    already pushed; the supervisor reports the EOS as a source error."""

    def __init__(
        self, appsrc: Any, frames: Iterator[tuple[float, np.ndarray, Any]], spec: SourceSpec
    ) -> None:
        self._src = appsrc
        self._frames = frames
        self._spec = spec
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="egovlm-synth-feeder", daemon=True)
        self.events: collections.deque[tuple[float, Any]] = collections.deque(maxlen=256)
        self.error: str | None = None
        self.failed_at: float | None = None  # time.monotonic() of the failure

    @property
    def frames(self) -> Iterator[tuple[float, np.ndarray, Any]]:
        return self._frames

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # never started when the pipeline refused to play
            self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._feed()
        except Exception as e:  # the generator (or a malformed frame) failed: a source error
            if self._stop.is_set():
                return  # torn down meanwhile: nothing to report
            log.debug("synth frames failed", exc_info=True)
            self.failed_at = time.monotonic()  # before error: the supervisor reads error first
            self.error = f"synth frames failed: {type(e).__name__}: {e}"
            self._src.emit("end-of-stream")

    def _feed(self) -> None:
        g = gst()
        assert self._spec.fps is not None and self._spec.width is not None
        duration = int(1e9 / self._spec.fps)
        wall0: float | None = None
        t0 = 0.0
        row = self._spec.width * 3
        stride = (row + 3) // 4 * 4  # GStreamer's default RGB stride (rows padded to 4 bytes)
        for t, frame, events in self._frames:
            if self._stop.is_set():
                return
            if wall0 is None:
                wall0, t0 = time.monotonic(), t
            if self._spec.realtime:
                delay = wall0 + (t - t0) - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            elif self._src.get_current_level_bytes() > 4 * stride * frame.shape[0]:
                # Not paced: keep appsrc's own queue short instead of growing it without bound.
                time.sleep(0.001)
            if events:
                self.events.append((t, events))
            data = (
                frame
                if stride == row
                else np.pad(frame.reshape(frame.shape[0], row), ((0, 0), (0, stride - row)))
            )
            buf = g.Buffer.new_wrapped(np.ascontiguousarray(data).tobytes())
            buf.pts = int(t * 1e9)
            buf.duration = duration
            if self._src.emit("push-buffer", buf) != g.FlowReturn.OK:
                return  # pipeline shutting down
        self._src.emit("end-of-stream")


class Ingest:
    """Runs a source and calls ``on_frame(t, rgb)`` for each frame that the consumer keeps up with.

    ``start()`` raises :class:`SourceError` for a bad URI, missing element/device/file or a
    pipeline GStreamer cannot build, before any thread starts."""

    def __init__(
        self,
        source: str | SourceSpec,
        on_frame: FrameCallback,
        options: IngestOptions | None = None,
        synth_frames: SynthFactory = default_synth_frames,
    ) -> None:
        self.spec = parse_source(source) if isinstance(source, str) else source
        self.options = options or IngestOptions()
        self.on_frame = on_frame
        self.description = pipeline_description(self.spec, self.options.output)  # credentials masked
        self._synth_factory = synth_frames
        self._synth_iter: Iterator[tuple[float, np.ndarray, Any]] | None = None
        self._feeder: _SynthFeeder | None = None
        lossless = self.spec.kind == "file" and not self.spec.realtime
        self._mailbox = _Mailbox(self.options.mailbox, lossless)
        self._lock = threading.Lock()
        self._received = 0
        self._delivered = 0
        self._keyframes = 0
        self._last_t: float | None = None
        self._last_wall: float | None = None
        self._offset: float | None = None
        self._rate_in = _Rate(self.options.fps_window_s)
        self._rate_out = _Rate(self.options.fps_window_s)
        self._started = time.monotonic()
        self._frame_event = threading.Condition()
        self._supervisor: PipelineSupervisor[Any] = PipelineSupervisor(
            uri=self.spec.uri,
            what="ingest",
            thread_name="egovlm-ingest",
            build=self._build,
            play=self._run_once,
            teardown=self._teardown,
            build_error=SourceError,
            backoff=Backoff(
                self.options.backoff_initial_s, self.options.backoff_max_s, self.options.max_reconnects
            ),
            live=self.spec.live,
            loop=self.spec.loop,
            progress=lambda: self._delivered,
            redact=self.spec.redact,
            log=log,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Validate, build the first pipeline, start the supervisor. Errors surface here."""
        check_source(self.spec, synth_module=self._synth_factory is default_synth_frames)
        self._promote_hardware_decoders()
        pipeline = self._build()  # fails early on a description GStreamer cannot parse
        self._started = time.monotonic()
        self._supervisor.start(pipeline)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the source and wait for its threads; True when none is left running (False: one
        is still inside GStreamer, the frame consumer or the synthetic world after ``timeout``
        seconds for the supervisor and its own for the feeder)."""
        ended = self._supervisor.stop(timeout)
        feeder = self._feeder
        return ended and (feeder is None or not feeder.alive)

    def __enter__(self) -> Ingest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._supervisor.running

    def stats(self) -> IngestStats:
        now = time.monotonic()
        sup = self._supervisor.counters()
        with self._lock:
            return IngestStats(
                source=self.spec.uri,
                state=sup.state,
                frames_received=self._received,
                frames_delivered=self._delivered,
                frames_dropped=self._mailbox.dropped,
                keyframes_taken=self._keyframes,
                restarts=sup.restarts,
                errors=sup.errors,
                last_error=sup.last_error,
                fps_in=self._rate_in.rate(now),
                fps_out=self._rate_out.rate(now),
                last_timestamp_s=self._last_t,
                uptime_s=now - self._started,
                last_frame_age_s=None if self._last_wall is None else now - self._last_wall,
                last_error_age_s=sup.last_error_age_s,
            )

    def wait_for_frames(self, n: int, timeout: float) -> bool:
        """Block until ``n`` frames were delivered in total (tests and the demo use this)."""
        with self._frame_event:
            return self._frame_event.wait_for(lambda: self._delivered >= n or not self.running, timeout) and (
                self._delivered >= n
            )

    def reconnect_waits(self) -> list[tuple[str, float]]:
        """The most recent restarts (up to 64), oldest first: why the source went down
        (``error``, ``eos``, ``stall``, ``start failure``, ``no pipeline``) and the backoff
        waited before rebuilding it, in seconds."""
        return self._supervisor.waits()

    def synth_events(self) -> list[tuple[float, Any]]:
        """Ground-truth events the synthetic source emitted so far (empty for real sources)."""
        return list(self._feeder.events) if self._feeder is not None else []

    # -- pipeline ----------------------------------------------------------------------------

    def _promote_hardware_decoders(self) -> None:
        """Make decodebin pick Jetson's hardware decoders over software ones."""
        g = gst()
        for name in hardware_decoders(gst_element_exists):
            factory = g.ElementFactory.find(name)
            if factory is not None:
                factory.set_rank(g.Rank.PRIMARY + 100)

    def _build(self) -> Any:
        g = gst()
        try:  # the one place the credentials of the source URI are used
            pipeline = g.parse_launch(pipeline_description(self.spec, self.options.output, reveal=True))
        except Exception as e:  # GLib.Error: names the element or property GStreamer rejected
            reason = self.spec.redact(str(e))
            raise SourceError(f"{self.spec.uri}: GStreamer cannot build the pipeline: {reason}") from None
        sink = pipeline.get_by_name("sink")
        sink.connect("new-sample", self._on_sample)
        if self.spec.kind == "synth":
            if self._synth_iter is None:
                try:
                    self._synth_iter = iter(self._synth_factory(self.spec))
                except Exception as e:
                    pipeline.set_state(g.State.NULL)
                    raise SourceError(f"{self.spec.uri}: synth frames could not start: {e!r}") from e
            self._feeder = _SynthFeeder(pipeline.get_by_name("src"), self._synth_iter, self.spec)
        return pipeline

    def _on_sample(self, sink: Any) -> Any:
        """GStreamer streaming thread: take the sample and return at once."""
        sample = sink.emit("pull-sample")
        if sample is not None:
            with self._lock:
                self._received += 1
            self._rate_in.tick(time.monotonic())
            self._mailbox.put(sample)
        return gst().FlowReturn.OK

    def _run_once(self, pipeline: Any) -> str:
        """Play one pipeline instance until stop, error, EOS or stall; return which (the
        supervisor tears it down)."""
        g = gst()
        bus = pipeline.get_bus()
        self._offset = None
        if pipeline.set_state(g.State.PLAYING) == g.StateChangeReturn.FAILURE:
            # The element that refused posted why (a file gone, a device busy): report that.
            msg = bus.pop_filtered(g.MessageType.ERROR)
            reason = "device busy or unreachable?"
            if msg is not None:
                err, debug = msg.parse_error()
                reason = f"{msg.src.get_name()}: {err.message}"
                log.debug("%s", self.spec.redact(debug or ""))
            self._note_error(f"pipeline refused to start ({reason})")
            return "start failure"
        if self._feeder is not None:
            self._feeder.start()
        last_frame = time.monotonic()
        outcome = "stopped"
        feeder = self._feeder
        while not self._supervisor.stop_requested:
            sample = self._mailbox.get(timeout=0.05)
            if sample is not None:
                last_frame = time.monotonic()
                self._deliver(sample)
            if feeder is not None and feeder.error is not None:
                failed_at = feeder.failed_at or 0.0
                if time.monotonic() - failed_at > _FEEDER_EOS_GRACE_S:
                    self._note_error(feeder.error)
                    outcome = "error"
                    break
            msg = bus.pop_filtered(g.MessageType.ERROR | g.MessageType.EOS)
            if msg is not None and msg.type == g.MessageType.ERROR:
                err, debug = msg.parse_error()
                self._note_error(f"{msg.src.get_name()}: {err.message}")
                log.debug("%s", self.spec.redact(debug or ""))
                outcome = "error"
                break
            if msg is not None and msg.type == g.MessageType.EOS:
                while (sample := self._mailbox.get(timeout=0)) is not None:
                    self._deliver(sample)
                if feeder is not None and feeder.error is not None:
                    self._note_error(feeder.error)  # the generator raised: not a clean end
                    outcome = "error"
                else:
                    outcome = "eos"
                break
            if time.monotonic() - last_frame > self.options.stall_timeout_s:
                self._note_error(f"no frame for {self.options.stall_timeout_s:.0f} s")
                outcome = "stall"
                break
        return outcome

    def _teardown(self, pipeline: Any) -> None:
        feeder = self._feeder
        if feeder is not None:
            feeder.stop()
        self._mailbox.close()
        pipeline.set_state(gst().State.NULL)
        self._mailbox.reset()
        if feeder is not None and feeder.error is not None and _finished(feeder.frames):
            # A generator that raised cannot continue: the next pipeline starts a new one.
            log.info("%s: the frame generator cannot resume; starting a new one", self.spec.uri)
            self._synth_iter = None

    def _deliver(self, sample: Any) -> None:
        rgb, pts = sample_to_rgb(sample)
        now = time.monotonic()
        t = self._timestamp(pts, now)
        self._supervisor.mark_running()
        try:
            kept = self.on_frame(t, rgb)
        except Exception as e:  # a consumer bug must not kill the camera thread
            self._note_error(f"on_frame failed at t={t:.2f}s: {e!r}")
            log.exception("on_frame failed")
            kept = False
        with self._lock:
            self._delivered += 1
            self._keyframes += 1 if kept else 0
            self._last_t, self._last_wall = t, now
        self._rate_out.tick(now)
        with self._frame_event:
            self._frame_event.notify_all()

    def _timestamp(self, pts_ns: int | None, now: float) -> float:
        """Stream time in seconds: PTS within a segment; across restarts, continue from the last
        timestamp plus the wall-clock gap so time never runs backwards."""
        pts = pts_ns / 1e9 if pts_ns is not None else now - self._started
        if self._offset is None:
            if self._last_t is None or self._last_wall is None:
                self._offset = 0.0
            else:
                self._offset = self._last_t + max(now - self._last_wall, 1e-3) - pts
        t = max(0.0, self._offset + pts)
        if self._last_t is not None and t < self._last_t:
            t = self._last_t  # a source with non-monotonic PTS (B-frames mis-tagged, clock jump)
        return t

    def _note_error(self, message: str) -> None:
        """Count and log a source error, its credentials masked (see the supervisor)."""
        self._supervisor.note_error(message)


def _finished(frames: Iterator[Any]) -> bool:
    """A generator that raised is closed for good; other iterators may carry on."""
    return inspect.isgenerator(frames) and inspect.getgeneratorstate(frames) == inspect.GEN_CLOSED
