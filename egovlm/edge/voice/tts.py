"""Speaking the answer: text → speech (espeak-ng, or piper when installed) → an audio sink.

espeak-ng is the embedded default: a Debian package, no model files, ~20–50 ms for a short
sentence on a small CPU, intelligible if robotic. piper (neural, nicer) is used when its
binary and a voice model are given. Synthesis runs as a subprocess (both are command-line
programs with no maintained Python binding on Debian/PyPI for espeak-ng).

Playback goes through GStreamer (``appsrc ! audioconvert ! audioresample ! <sink>``). Sinks:

    auto            autoaudiosink (PulseAudio / ALSA, whatever the device has)
    null            fakesink synced to the clock: "plays" in real time, nobody hears it
    pulse | alsa[:hw:0,0]   a specific output
    dir:/abs/folder write each answer as a WAV file instead (headless devices, tests)

:class:`Speaker` speaks one answer at a time in the background and is interruptible: a new
question (speech starts, push-to-talk, a new upload) stops the current answer at once.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from egovlm.edge.voice.audio import read_wav, write_wav

log = logging.getLogger("egovlm.edge.voice")


class TtsError(RuntimeError):
    """Speech synthesis or playback cannot run; the message says what to install."""


class Tts(Protocol):
    name: str

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        """Mono float32 samples in [-1, 1] and their sample rate."""
        ...


class EspeakTts:
    """espeak-ng through a subprocess; the text goes in on stdin, so nothing in it is parsed as
    a command-line option."""

    name = "espeak-ng"

    def __init__(self, voice: str = "en-us", speed_wpm: int = 170, binary: str = "espeak-ng") -> None:
        path = shutil.which(binary)
        if path is None:
            raise TtsError(f"{binary} not found: apt-get install espeak-ng (scripts/system-deps.sh)")
        self.binary, self.voice, self.speed = path, voice, speed_wpm

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        cmd = [self.binary, "--stdout", "--stdin", "-v", self.voice, "-s", str(self.speed)]
        try:
            run = subprocess.run(cmd, input=text.encode(), capture_output=True, timeout=30, check=False)
        except subprocess.TimeoutExpired as e:
            raise TtsError(f"espeak-ng took longer than 30 s for {len(text)} characters") from e
        if run.returncode != 0 or len(run.stdout) <= 44:
            raise TtsError(
                f"espeak-ng failed ({run.returncode}): {run.stderr.decode(errors='replace')[:300]}"
            )
        return read_wav(run.stdout)


class PiperTts:
    """piper (https://github.com/rhasspy/piper) with a local ``.onnx`` voice; optional."""

    name = "piper"

    def __init__(self, model: Path, binary: str = "piper") -> None:
        path = shutil.which(binary)
        if path is None:
            raise TtsError(f"{binary} not found: install piper-tts, or use --tts espeak")
        if not model.is_file():
            raise TtsError(f"piper voice {model} not found (a local .onnx voice file with its .json)")
        self.binary, self.model = path, model

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory(prefix="egovlm-piper-") as tmp:
            out = Path(tmp) / "answer.wav"
            cmd = [self.binary, "--model", str(self.model), "--output_file", str(out)]
            run = subprocess.run(cmd, input=text.encode(), capture_output=True, timeout=60, check=False)
            if run.returncode != 0 or not out.is_file():
                raise TtsError(
                    f"piper failed ({run.returncode}): {run.stderr.decode(errors='replace')[:300]}"
                )
            return read_wav(out.read_bytes())


def make_tts(name: str, voice: str | None = None) -> Tts | None:
    """``espeak`` (default), ``piper`` (``voice`` = the .onnx path) or ``none``."""
    if name == "none":
        return None
    if name == "espeak":
        return EspeakTts(voice or "en-us")
    if name == "piper":
        if not voice:
            raise TtsError("--tts piper needs --tts-voice /path/to/voice.onnx")
        return PiperTts(Path(voice))
    raise TtsError(f"unknown TTS {name!r}: espeak, piper or none")


@dataclass
class PlayResult:
    started_wall: float | None = None  # time.monotonic() when the sink started playing
    finished_wall: float | None = None
    interrupted: bool = False
    path: Path | None = None  # dir: sinks
    error: str | None = None


class AudioOut:
    """Where speech goes. ``play`` blocks until the audio finished, failed, or ``cancel`` is set."""

    def __init__(self, sink: str = "auto") -> None:
        self.sink = sink
        self._dir: Path | None = None
        self._count = itertools.count(1)
        if sink.startswith("dir:"):
            self._dir = Path(sink[4:])
            if not self._dir.is_absolute():
                raise TtsError(f"audio out {sink!r}: dir: needs an absolute folder, e.g. dir:/tmp/answers")
            self._dir.mkdir(parents=True, exist_ok=True)
            self.element = ""
        else:
            self.element = self._element(sink)

    @staticmethod
    def _element(sink: str) -> str:
        kind, _, device = sink.partition(":")
        if kind == "auto":
            return "autoaudiosink"
        if kind == "null":
            return "fakesink sync=true"
        if kind in ("pulse", "alsa"):
            return f"{kind}sink" + (f' device="{device}"' if device else "")
        raise TtsError(f"audio out {sink!r}: expected auto, null, pulse[:dev], alsa[:dev] or dir:/abs/folder")

    def play(
        self,
        samples: np.ndarray,
        rate: int,
        cancel: threading.Event,
        on_start: Callable[[float], None] | None = None,
    ) -> PlayResult:
        """Play (or write) the samples; ``on_start(wall)`` fires when sound starts."""
        if self._dir is not None:
            path = write_wav(self._dir / f"answer-{next(self._count):04d}.wav", samples, rate)
            now = time.monotonic()
            if on_start is not None:
                on_start(now)
            return PlayResult(now, now, False, path)
        return self._play_gst(samples, rate, cancel, on_start)

    def _play_gst(
        self,
        samples: np.ndarray,
        rate: int,
        cancel: threading.Event,
        on_start: Callable[[float], None] | None,
    ) -> PlayResult:
        from egovlm.edge.gst import gst

        g = gst()
        caps = f"audio/x-raw,format=F32LE,rate={rate},channels=1,layout=interleaved"
        result = PlayResult()
        try:
            pipeline = g.parse_launch(
                f"appsrc name=src format=time caps={caps} ! audioconvert ! audioresample ! {self.element}"
            )
        except Exception as e:
            result.error = f"cannot build the playback pipeline ({self.element}): {e}"
            return result
        src, bus = pipeline.get_by_name("src"), pipeline.get_bus()
        try:
            buf = g.Buffer.new_wrapped(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
            buf.pts, buf.duration = 0, int(samples.size / rate * g.SECOND)
            src.emit("push-buffer", buf)
            src.emit("end-of-stream")
            if pipeline.set_state(g.State.PLAYING) == g.StateChangeReturn.FAILURE:
                result.error = f"{self.element}: no audio output (pass --audio-out null or dir:/folder)"
                return result
            pipeline.get_state(5 * g.SECOND)  # preroll done: sound starts now
            result.started_wall = time.monotonic()
            if on_start is not None:
                on_start(result.started_wall)
            self._wait(bus, cancel, result, samples.size / rate + 5.0)
        finally:
            pipeline.set_state(g.State.NULL)
        result.finished_wall = time.monotonic()
        return result

    @staticmethod
    def _wait(bus: Any, cancel: threading.Event, result: PlayResult, timeout_s: float) -> None:
        from egovlm.edge.gst import gst

        g = gst()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cancel.is_set():
                result.interrupted = True
                return
            msg = bus.timed_pop_filtered(20 * g.MSECOND, g.MessageType.ERROR | g.MessageType.EOS)
            if msg is None:
                continue
            if msg.type == g.MessageType.ERROR:
                err, _ = msg.parse_error()
                result.error = f"{msg.src.get_name()}: {err.message}"
            return


@dataclass
class Speech:
    """One spoken answer in progress. ``started`` is set when sound starts, or when synthesis or
    playback fails or is interrupted before that (then ``started_wall`` stays None)."""

    text: str
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    started_wall: float | None = None
    synth_ms: float = 0.0
    audio_s: float = 0.0
    result: PlayResult | None = None
    error: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.cancel.is_set()


class Speaker:
    """Speaks one text at a time in a background thread; :meth:`stop` interrupts it."""

    def __init__(self, tts: Tts, out: AudioOut) -> None:
        self.tts, self.out = tts, out
        self._lock = threading.Lock()
        self._current: Speech | None = None

    def describe(self) -> dict[str, str]:
        return {"tts": self.tts.name, "audio_out": self.out.sink}

    @property
    def speaking(self) -> bool:
        with self._lock:
            return self._current is not None and not self._current.done.is_set()

    def speak(self, text: str) -> Speech:
        """Start speaking ``text`` (stopping whatever was being said)."""
        speech = Speech(text)
        with self._lock:
            if self._current is not None:
                self._current.cancel.set()
            self._current = speech
        threading.Thread(target=self._run, args=(speech,), name="egovlm-tts", daemon=True).start()
        return speech

    def stop(self) -> bool:
        """Interrupt the current answer; True if one was playing or about to."""
        with self._lock:
            cur = self._current
        if cur is None or cur.done.is_set():
            return False
        cur.cancel.set()
        return True

    def _run(self, speech: Speech) -> None:
        def started(wall: float) -> None:
            speech.started_wall = wall
            speech.started.set()

        try:
            t0 = time.perf_counter()
            samples, rate = self.tts.synthesize(speech.text)
            speech.synth_ms = (time.perf_counter() - t0) * 1000
            speech.audio_s = samples.size / rate
            if speech.cancel.is_set():  # a new question arrived while synthesising
                return
            speech.result = self.out.play(samples, rate, speech.cancel, started)
            speech.error = speech.result.error
        except Exception as e:  # TtsError, or a broken sink: the answer is still on the page
            speech.error = str(e)
        finally:
            if speech.error:
                log.warning("could not speak the answer: %s", speech.error)
            speech.started.set()
            speech.done.set()


def spoken_clip(text: str, lead_s: float = 0.5, tail_s: float = 1.0, tts: Tts | None = None) -> np.ndarray:
    """``text`` synthesised (espeak-ng by default) with silence before and after, at 16 kHz:
    what a microphone hears when someone asks. The tests and the voice benchmark ask with it."""
    from egovlm.edge.voice.audio import SAMPLE_RATE, decode_audio, wav_bytes

    samples, rate = (tts or EspeakTts()).synthesize(text)
    samples = decode_audio(wav_bytes(samples, rate))  # GStreamer's audioresample, like a microphone
    lead, tail = np.zeros(round(lead_s * SAMPLE_RATE)), np.zeros(round(tail_s * SAMPLE_RATE))
    return np.concatenate([lead, samples, tail]).astype(np.float32)
