"""Audio in through GStreamer: microphones, files and uploaded bytes → 16 kHz mono float32.

Everything the voice path hears goes through one GStreamer tail::

    … ! audioconvert ! audioresample ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink

so Whisper and the VAD always get the rate they were trained at, whatever the microphone or
the uploaded file uses. Sources are URIs, like the video sources in :mod:`egovlm.edge.sources`::

    mic://                      the default microphone (autoaudiosrc)
    pulse://[DEVICE]            PulseAudio / PipeWire source (pulsesrc)
    alsa://hw:1,0               an ALSA device (alsasrc)
    file:///abs/q.wav?realtime=1  a recording (WAV, OGG, FLAC, WebM), paced like a microphone
                                unless realtime=0 (tests, benchmarks)

Uploaded bytes (``POST /v1/ask/audio``) are sniffed for a container we accept before
GStreamer sees them, and decoding stops as soon as the duration limit is passed.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from egovlm.atomic import atomic_write_bytes
from egovlm.edge.gst import gst
from egovlm.edge.sources import UriSpec, quote, split_uri
from egovlm.edge.supervisor import Backoff, PipelineSupervisor

log = logging.getLogger("egovlm.edge.voice")

SAMPLE_RATE = 16000
PCM_CAPS = f"audio/x-raw,format=F32LE,rate={SAMPLE_RATE},channels=1,layout=interleaved"
FORMATS = ("wav", "ogg", "flac", "webm")
AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".opus", ".flac", ".webm")
# Allowed query parameters per scheme.
_PARAMS: dict[str, tuple[str, ...]] = {"mic": (), "pulse": (), "alsa": (), "file": ("realtime",)}

AudioCallback = Callable[[np.ndarray, float], None]


class AudioError(ValueError):
    """Audio that cannot become a question; the message says what is wrong with it."""


class EmptyAudioError(AudioError):
    """No bytes, or a container with no samples in it."""


class AudioFormatError(AudioError):
    """Not a container we accept, or GStreamer cannot decode it."""


class AudioTooLongError(AudioError):
    """Longer than the configured limit (bytes or seconds)."""


class AudioSourceError(ValueError):
    """An audio source URI that is malformed or cannot run here."""


# --- bytes -------------------------------------------------------------------------------------


def sniff_format(data: bytes, what: str = "audio") -> str:
    """The container of ``data`` from its magic bytes: wav, ogg, flac or webm. Anything else is
    refused here, with a readable reason, before a decoder is built for it."""
    if not data:
        raise EmptyAudioError(f"{what}: empty (0 bytes)")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return _refuse(data, what)


def _refuse(data: bytes, what: str) -> str:
    head = data[:12]
    text = head.decode("ascii", "replace") if all(32 <= b < 127 for b in head) else head.hex(" ")
    raise AudioFormatError(
        f"{what}: not WAV, OGG (Vorbis/Opus), FLAC or WebM audio (starts with {text!r}, {len(data)} bytes)"
    )


def decode_audio(data: bytes, max_duration_s: float | None = None, what: str = "audio") -> np.ndarray:
    """Decode a WAV/OGG/FLAC/WebM file held in memory to 16 kHz mono float32 through GStreamer.
    Raises :class:`EmptyAudioError`, :class:`AudioFormatError` or :class:`AudioTooLongError`
    (decoding stops at the limit instead of decoding a long file first)."""
    fmt = sniff_format(data, what)
    g = gst()
    pipeline = g.parse_launch(
        "appsrc name=src format=bytes ! decodebin ! audioconvert ! audioresample ! "
        f"{PCM_CAPS} ! appsink name=sink sync=false"
    )
    src, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    limit = None if max_duration_s is None else int(max_duration_s * SAMPLE_RATE)
    try:
        pipeline.set_state(g.State.PLAYING)
        src.emit("push-buffer", g.Buffer.new_wrapped(data))
        src.emit("end-of-stream")
        blocks = _pull_all(pipeline, sink, limit, f"{what} ({fmt})")
    finally:
        pipeline.set_state(g.State.NULL)
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise EmptyAudioError(f"{what}: the {fmt} file holds no audio samples")
    return samples


def _pull_all(
    pipeline: Any, sink: Any, limit: int | None, what: str, timeout_s: float = 60.0
) -> list[np.ndarray]:
    """Samples from an appsink until EOS; a bus error or the sample limit ends it early."""
    g = gst()
    bus = pipeline.get_bus()
    blocks: list[np.ndarray] = []
    total = 0
    deadline = time.monotonic() + timeout_s
    while True:
        msg = bus.pop_filtered(g.MessageType.ERROR)
        if msg is not None:
            err, _ = msg.parse_error()
            raise AudioFormatError(f"{what}: cannot decode: {err.message}")
        sample = sink.emit("try-pull-sample", 50 * g.MSECOND)
        if sample is None:
            if sink.is_eos():
                return blocks
            if time.monotonic() > deadline:
                raise AudioFormatError(f"{what}: decoding did not finish in {timeout_s:.0f} s")
            continue
        block = sample_to_pcm(sample)
        blocks.append(block)
        total += block.size
        if limit is not None and total > limit:
            raise AudioTooLongError(
                f"{what}: longer than the {limit / SAMPLE_RATE:.0f} s limit for a spoken question"
            )


def sample_to_pcm(sample: Any) -> np.ndarray:
    """Copy an F32LE mono ``Gst.Sample`` into a float32 array."""
    g = gst()
    buf = sample.get_buffer()
    ok, info = buf.map(g.MapFlags.READ)
    if not ok:
        raise RuntimeError("could not map a GStreamer audio buffer")
    try:
        return np.frombuffer(info.data, dtype=np.float32).copy()
    finally:
        buf.unmap(info)


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV of mono float samples in [-1, 1] (what espeak-ng and browsers produce)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write a mono WAV atomically."""
    atomic_write_bytes(path, wav_bytes(samples, rate))
    return path


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float samples and rate of a 16-bit PCM WAV (espeak-ng's output). Tolerates the
    placeholder lengths espeak-ng writes when streaming to stdout."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise AudioFormatError(f"expected 16-bit PCM WAV, got {8 * w.getsampwidth()}-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        frames = w.readframes(w.getnframes())
    pcm = np.frombuffer(frames[: len(frames) // (2 * channels) * 2 * channels], dtype="<i2")
    mono = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm
    return (mono / 32768.0).astype(np.float32), rate


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-120 for digital silence)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(-120.0, 20.0 * float(np.log10(max(rms, 1e-6))))


# --- sources -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioSourceSpec(UriSpec):
    """A parsed audio source URI. ``uri`` as shown (credentials masked, like the camera's:
    :func:`egovlm.edge.sources.redact_uri`); ``location``: the device name or file path."""

    kind: str
    uri: str
    location: str = field(default="", repr=False)
    realtime: bool = True
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)


def parse_audio_source(uri: str) -> AudioSourceSpec:
    """Parse and syntax-check an audio source URI (no device or file access). Credentials in it
    stay in ``location``/``secrets``; ``uri`` and every message show them masked."""
    parts = split_uri(
        uri,
        _PARAMS,
        AudioSourceError,
        what="audio source",
        examples="mic://, pulse://[device], alsa://hw:1,0 or file:///abs/question.wav",
    )
    kind, uri, secrets = parts.scheme, parts.shown, parts.secrets
    location = unquote(parts.netloc + parts.path)
    if kind == "mic":
        return AudioSourceSpec("mic", uri, secrets=secrets)
    if kind in ("pulse", "alsa"):
        return AudioSourceSpec(kind, uri, location.strip("/"), secrets=secrets)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise AudioSourceError(f"{uri}: file URIs need an absolute path: file:///abs/question.wav")
    if Path(path).suffix.lower() not in AUDIO_SUFFIXES:
        raise AudioSourceError(
            f"{uri}: {Path(path).suffix or 'no suffix'} is not an audio file {AUDIO_SUFFIXES}"
        )
    realtime = parts.params.get("realtime", "1").strip().lower()
    if realtime not in ("0", "1", "true", "false"):
        raise AudioSourceError(f"{uri}: realtime={realtime!r} must be 1/0/true/false")
    return AudioSourceSpec("file", uri, path, realtime in ("1", "true"), secrets=secrets)


def audio_pipeline_description(spec: AudioSourceSpec, max_buffers: int = 200, *, reveal: bool = False) -> str:
    """The gst-launch description of a source (paste into gst-launch-1.0 to debug a microphone).
    Live sources drop the oldest buffers if the consumer stalls (counted); a file read faster
    than real time back-pressures instead, so every sample arrives. Credentials are masked
    unless ``reveal`` (only :class:`AudioSource` reveals them, to build the pipeline)."""
    head = {
        "mic": "autoaudiosrc",
        "pulse": "pulsesrc" + (f" device={quote(spec.location)}" if spec.location else ""),
        "alsa": "alsasrc" + (f" device={quote(spec.location)}" if spec.location else ""),
        "file": f"filesrc location={quote(spec.location)} ! decodebin",
    }[spec.kind]
    paced = spec.kind == "file" and spec.realtime
    drop = "true" if spec.live else "false"
    description = (
        f"{head} ! audioconvert ! audioresample ! {PCM_CAPS} ! appsink name=sink "
        f"sync={'true' if paced else 'false'} drop={drop} max-buffers={max_buffers}"
    )
    return description if reveal else spec.redact(description)


def required_audio_elements(spec: AudioSourceSpec) -> list[str]:
    head = {
        "mic": ["autoaudiosrc"],
        "pulse": ["pulsesrc"],
        "alsa": ["alsasrc"],
        "file": ["filesrc", "decodebin"],
    }
    return [*head[spec.kind], "audioconvert", "audioresample", "appsink"]


def check_audio_source(spec: AudioSourceSpec) -> None:
    """Fail before start, with the fix, when a source cannot run here."""
    from egovlm.edge.sources import gst_element_exists

    missing = [e for e in required_audio_elements(spec) if not gst_element_exists(e)]
    if missing:
        raise AudioSourceError(
            f"{spec.uri}: GStreamer element(s) {missing} not found; run scripts/system-deps.sh "
            "(gstreamer1.0-plugins-base/-good, gstreamer1.0-alsa or gstreamer1.0-pulseaudio)"
        )
    if spec.kind == "file" and not Path(spec.location).is_file():
        raise AudioSourceError(f"{spec.uri}: file not found: {spec.location}")


@dataclass(frozen=True)
class AudioSourceStats:
    source: str
    state: str  # created | starting | running | reconnecting | ended | failed | stopped
    seconds: float  # audio delivered
    restarts: int
    errors: int
    last_error: str | None
    level_dbfs: float  # of the latest block


class AudioSource:
    """Runs one audio source in a thread and calls ``on_audio(samples, wall)`` for each block
    (float32, 16 kHz mono; ``wall`` = ``time.monotonic()`` when it arrived). A microphone that
    errors is rebuilt with exponential backoff
    (:class:`egovlm.edge.supervisor.PipelineSupervisor`, shared with the camera); a file ends at
    EOS."""

    def __init__(
        self,
        source: str | AudioSourceSpec,
        on_audio: AudioCallback,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        max_restarts: int | None = None,
    ) -> None:
        self.spec = parse_audio_source(source) if isinstance(source, str) else source
        self.description = audio_pipeline_description(self.spec)
        self.on_audio = on_audio
        self._lock = threading.Lock()
        self._samples = 0
        self._level = -120.0
        self._supervisor: PipelineSupervisor[Any] = PipelineSupervisor(
            uri=self.spec.uri,
            what="audio",
            thread_name="egovlm-audio",
            build=self._parse,
            play=self._run_once,
            teardown=_teardown,
            build_error=AudioSourceError,
            backoff=Backoff(backoff_initial_s, backoff_max_s, max_restarts),
            live=self.spec.live,
            progress=lambda: self._samples,
            redact=self.spec.redact,
            log=log,
        )

    def start(self) -> AudioSource:
        """Check and parse the pipeline (errors surface here), then run it in a thread."""
        check_audio_source(self.spec)
        self._supervisor.start(self._parse())
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._supervisor.stop(timeout)

    def wait_ended(self, timeout: float) -> bool:
        """Block until a file source reached its end (or the source gave up)."""
        return self._supervisor.wait_done(timeout)

    def stats(self) -> AudioSourceStats:
        sup = self._supervisor.counters()
        with self._lock:
            return AudioSourceStats(
                self.spec.uri,
                sup.state,
                self._samples / SAMPLE_RATE,
                sup.restarts,
                sup.errors,
                sup.last_error,
                self._level,
            )

    def _parse(self) -> Any:
        try:
            return gst().parse_launch(audio_pipeline_description(self.spec, reveal=True))
        except Exception as e:  # GLib.Error names the element GStreamer rejected
            reason = self.spec.redact(str(e))
            raise AudioSourceError(
                f"{self.spec.uri}: GStreamer cannot build the pipeline: {reason}"
            ) from None

    def _run_once(self, pipeline: Any) -> str:
        """Play one pipeline instance until stop, error or EOS; return which (the supervisor
        tears it down)."""
        g = gst()
        sink, bus = pipeline.get_by_name("sink"), pipeline.get_bus()
        if pipeline.set_state(g.State.PLAYING) == g.StateChangeReturn.FAILURE:
            self._supervisor.note_error("pipeline refused to start (no microphone, or the device is busy?)")
            return "error"
        while not self._supervisor.stop_requested:
            msg = bus.pop_filtered(g.MessageType.ERROR)
            if msg is not None:
                err, _ = msg.parse_error()
                self._supervisor.note_error(f"{msg.src.get_name()}: {err.message}")
                return "error"
            sample = sink.emit("try-pull-sample", 50 * g.MSECOND)
            if sample is None:
                if sink.is_eos():
                    return "eos"
                continue
            self._deliver(sample_to_pcm(sample))
        return "stopped"

    def _deliver(self, block: np.ndarray) -> None:
        self._supervisor.mark_running()
        with self._lock:
            self._samples += block.size
            self._level = level_dbfs(block)
        try:
            self.on_audio(block, time.monotonic())
        except Exception as e:  # a consumer bug must not kill the microphone thread
            self._supervisor.note_error(f"on_audio failed: {e!r}")
            log.exception("on_audio failed")


def _teardown(pipeline: Any) -> None:
    pipeline.set_state(gst().State.NULL)
