"""Voice activity detection: where the speech is, and where an utterance ends.

The model is Silero VAD v6, the ONNX file faster-whisper ships (``faster_whisper.vad``), run
with ONNX Runtime: no extra download. faster-whisper only applies it offline to a whole file
(``get_speech_timestamps``); a microphone needs a *streaming* decision, so :class:`Segmenter`
runs the same model one 32 ms window at a time, carrying its recurrent state, and applies the
same thresholds (speech above ``threshold``, silence below ``neg_threshold``, hysteresis in
between). Hand-written for that reason; its window-by-window probabilities equal the batch
call's (tested).

An utterance closes after ``min_silence_ms`` of silence (the *endpoint* delay every spoken
question pays), or when it reaches ``max_utterance_s``. Push-to-talk bypasses the VAD: what is
heard while the key is held is the utterance, and release is the end of speech.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from egovlm.edge.voice.audio import SAMPLE_RATE

WINDOW = 512  # samples per VAD decision at 16 kHz (32 ms): the model's fixed input size
CONTEXT = 64  # samples of the previous window the model sees with each window


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5  # probability above which a window is speech
    neg_threshold: float = 0.35  # below which it is silence (between: keep the current state)
    min_speech_ms: int = 250  # shorter bursts (a cough, a click) are not utterances
    min_silence_ms: int = 500  # silence that ends an utterance: the endpoint delay
    pad_ms: int = 200  # audio kept before the first and after the last speech window
    max_utterance_s: float = 15.0  # cut an utterance that never pauses


def _model() -> Any:
    from faster_whisper.vad import get_vad_model

    return get_vad_model()  # cached by faster-whisper: one ONNX session per process


class SileroVad:
    """Speech probability per 32 ms window, with the model's recurrent state carried across
    calls. One instance per stream (the state is per stream); the ONNX session is shared."""

    def __init__(self) -> None:
        self._session = _model().session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)

    def __call__(self, window: np.ndarray) -> float:
        if window.shape != (WINDOW,):
            raise ValueError(f"VAD windows are {WINDOW} samples at {SAMPLE_RATE} Hz, got {window.shape}")
        x = np.concatenate([self._context, window[None, :].astype(np.float32)], axis=1)
        prob, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = x[:, -CONTEXT:]
        return float(np.ravel(prob)[0])


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """One probability per 512-sample window of a whole clip (the batch call)."""
    padded = np.pad(audio.astype(np.float32), (0, (-audio.size) % WINDOW))
    if padded.size == 0:
        return np.zeros(0, np.float32)
    return np.asarray(_model()(padded), dtype=np.float32).ravel()


def speech_seconds(audio: np.ndarray, options: VadOptions | None = None) -> float:
    """Seconds of speech in a clip (windows above the threshold): 0 for silence or noise."""
    o = options or VadOptions()
    return float(np.sum(speech_probabilities(audio) >= o.threshold)) * WINDOW / SAMPLE_RATE


@dataclass(frozen=True)
class Utterance:
    """What the user said, with the times that the latency breakdown starts from."""

    audio: np.ndarray  # 16 kHz mono float32, padded by pad_ms around the speech
    start_s: float  # stream time (seconds of audio heard) of the first speech window
    end_s: float  # ... and of the end of the last speech window
    speech_end_wall: float  # time.monotonic() when the last speech window arrived
    closed_wall: float  # when the utterance was closed (endpoint decided / key released)
    trigger: str  # vad | ptt | vad-max (cut at max_utterance_s) | eos (stream ended mid-speech)

    @property
    def endpoint_ms(self) -> float:
        """Waiting for silence to be sure the question is over."""
        return max(0.0, (self.closed_wall - self.speech_end_wall) * 1000.0)


SpeechStart = Callable[[str], None]


class Segmenter:
    """Cuts a 16 kHz stream into utterances: :meth:`feed` blocks of any length, get finished
    utterances back. ``on_speech_start(trigger)`` fires when speech begins (the assistant stops
    talking then: a new question interrupts the answer). Thread-safe: the audio thread feeds,
    the HTTP / keyboard thread presses push-to-talk."""

    def __init__(
        self,
        options: VadOptions | None = None,
        vad: Callable[[np.ndarray], float] | None = None,
        on_speech_start: SpeechStart | None = None,
        use_vad: bool = True,
    ) -> None:
        self.options = options or VadOptions()
        self.vad = vad or SileroVad()
        self.on_speech_start = on_speech_start
        self.use_vad = use_vad  # False: push-to-talk only
        o = self.options
        self._pad = max(1, round(o.pad_ms * SAMPLE_RATE / 1000 / WINDOW))
        self._min_silence = max(1, round(o.min_silence_ms * SAMPLE_RATE / 1000 / WINDOW))
        self._min_speech = max(1, round(o.min_speech_ms * SAMPLE_RATE / 1000 / WINDOW))
        self._max_windows = max(self._min_speech + 1, int(o.max_utterance_s * SAMPLE_RATE / WINDOW))
        self._lock = threading.Lock()
        self._carry = np.zeros(0, np.float32)
        self._preroll: deque[np.ndarray] = deque(maxlen=self._pad)
        self._windows_seen = 0
        self._reset_utterance()
        self._ptt: list[np.ndarray] | None = None
        self._ptt_start_s = 0.0
        self.last_probability = 0.0

    def _reset_utterance(self) -> None:
        self._speech: list[np.ndarray] | None = None  # windows of the open utterance
        self._first = 0  # stream window index of the first speech window
        self._last = 0  # ... and of the last one
        self._last_speech = 0  # how many windows of _speech to keep (up to the last speech window)
        self._last_speech_wall = 0.0
        self._silence = 0
        self._voiced = 0

    @property
    def in_speech(self) -> bool:
        with self._lock:
            return self._speech is not None or self._ptt is not None

    @property
    def ptt_active(self) -> bool:
        with self._lock:
            return self._ptt is not None

    def feed(self, block: np.ndarray, wall: float) -> list[Utterance]:
        """Add audio that arrived at ``wall``; return the utterances it completed."""
        out: list[Utterance] = []
        with self._lock:
            data = np.concatenate([self._carry, block.astype(np.float32, copy=False)])
            n = data.size // WINDOW
            self._carry = data[n * WINDOW :]
            for i in range(n):
                window = data[i * WINDOW : (i + 1) * WINDOW]
                u = self._window(window, wall)
                if u is not None:
                    out.append(u)
        return out

    def _window(self, window: np.ndarray, wall: float) -> Utterance | None:
        self._windows_seen += 1
        if self._ptt is not None:
            self._ptt.append(window)
            return None
        if not self.use_vad:
            return None
        p = self.last_probability = self.vad(window)
        o = self.options
        if self._speech is None:
            if p >= o.threshold:
                self._speech = [*self._preroll, window]
                self._first = self._last = self._windows_seen - 1
                self._last_speech, self._last_speech_wall = len(self._speech), wall
                self._voiced, self._silence = 1, 0
                if self.on_speech_start is not None:
                    self.on_speech_start("vad")
            else:
                self._preroll.append(window)
            return None
        self._speech.append(window)
        if p >= o.threshold:
            self._last_speech, self._last_speech_wall = len(self._speech), wall
            self._last = self._windows_seen - 1
            self._voiced += 1
            self._silence = 0
        elif p < o.neg_threshold:
            self._silence += 1
        if self._silence >= self._min_silence:
            return self._close(wall, "vad")
        if len(self._speech) >= self._max_windows:
            return self._close(wall, "vad-max")
        return None

    def _close(self, wall: float, trigger: str) -> Utterance | None:
        assert self._speech is not None
        windows, voiced = self._speech, self._voiced
        keep = min(len(windows), self._last_speech + self._pad)
        audio = np.concatenate(windows[:keep])
        speech_end_wall = self._last_speech_wall if trigger != "vad-max" else wall
        first, last = self._first, self._last
        self._reset_utterance()
        self._preroll.clear()
        if voiced < self._min_speech:
            return None
        return Utterance(
            audio=audio,
            start_s=first * WINDOW / SAMPLE_RATE,
            end_s=(last + 1) * WINDOW / SAMPLE_RATE,
            speech_end_wall=speech_end_wall,
            closed_wall=wall,
            trigger=trigger,
        )

    def push_to_talk(self, pressed: bool, wall: float) -> Utterance | None:
        """Key down: start capturing everything (an open VAD utterance is dropped, the user is
        starting over). Key up: the captured audio is the utterance, ending now."""
        with self._lock:
            if pressed:
                if self._ptt is None:
                    self._ptt = []
                    self._ptt_start_s = self._windows_seen * WINDOW / SAMPLE_RATE
                    self._reset_utterance()
                    if self.on_speech_start is not None:
                        self.on_speech_start("ptt")
                return None
            if self._ptt is None:
                return None
            windows, self._ptt = self._ptt, None
            if self._carry.size:
                windows.append(self._carry)
                self._carry = np.zeros(0, np.float32)
            audio = np.concatenate(windows) if windows else np.zeros(0, np.float32)
            reset = getattr(self.vad, "reset", None)
            if reset is not None:  # the model skipped the held audio: its state is stale
                reset()
            return Utterance(
                audio=audio,
                start_s=self._ptt_start_s,
                end_s=self._ptt_start_s + audio.size / SAMPLE_RATE,
                speech_end_wall=wall,
                closed_wall=wall,
                trigger="ptt",
            )

    def flush(self, wall: float) -> Utterance | None:
        """The stream ended: close an open utterance (a file that ends mid-question)."""
        with self._lock:
            if self._ptt is not None or self._speech is None:
                return None
            u = self._close(wall, "eos")
            return (
                None if u is None else Utterance(u.audio, u.start_s, u.end_s, u.speech_end_wall, wall, "eos")
            )
