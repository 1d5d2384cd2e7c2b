"""The voice assistant: an utterance in, a transcript, the same question path as text
(``runtime.ask``), and the answer spoken back, with the time of every step.

Two ways in:

* **live** (:meth:`VoiceAssistant.listen`): a microphone (or a file, for tests) through
  GStreamer → :class:`~egovlm.edge.voice.vad.Segmenter` (VAD, or push-to-talk) → a worker
  thread that answers utterances one at a time. With a wake phrase configured, VAD-detected
  speech must start with it; push-to-talk never needs it (pressing the key is the intent);
* **upload** (:meth:`VoiceAssistant.answer_upload`, ``POST /v1/ask/audio``): WAV/OGG bytes.

Latency breakdown of a spoken question, all from the *end of speech* (the last speech window
heard; for an upload, the moment the body was received; for push-to-talk, the key release)::

    endpoint_ms     waiting for silence to be sure the question is over (VAD only)
    transcript_ms   end of speech → transcript ready (endpoint + decode + ASR)
    first_token_ms  end of speech → first answer token (transcript_ms + the runtime's TTFT)
    answer_ms       end of speech → full answer (the spoken answer needs the <answer> tag,
                    which the contract puts last)
    spoken_ms       end of speech → the answer's sound starts (answer_ms + synthesis + sink)

A new question interrupts the answer being spoken: speech onset (VAD), a push-to-talk press
or a new upload stops the speaker first.

Privacy commands: an utterance that is exactly one of :data:`PRIVACY_COMMANDS` ("pause recording",
"resume recording", "forget that", ...) is not a question: it pauses or resumes capture, or
forgets everything seen (:meth:`egovlm.edge.runtime.EdgeRuntime.forget`), and the confirmation is
spoken. Transcripts are logged only when the runtime's ``log_transcripts`` is on (the profile's
``privacy.log_transcripts``, ``edge run --log-transcripts``), and the turn history is dropped by the
runtime's retention and by forget.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ConfigDict

from egovlm.edge.voice.asr import AsrOptions, Transcriber, Transcript
from egovlm.edge.voice.audio import SAMPLE_RATE, AudioError, AudioSource, AudioTooLongError, decode_audio
from egovlm.edge.voice.tts import Speaker, Speech
from egovlm.edge.voice.vad import Segmenter, Utterance, VadOptions, speech_seconds
from egovlm.edge.voice.wake import strip_wake_phrase

log = logging.getLogger("egovlm.edge.voice")

# Whole utterances (lower case, punctuation dropped) that control capture instead of asking. Only
# whole utterances: "did I forget that key?" is a question.
PRIVACY_COMMANDS = {
    "pause recording": "pause",
    "stop recording": "pause",
    "pause capture": "pause",
    "resume recording": "resume",
    "start recording": "resume",
    "resume capture": "resume",
    "forget that": "forget",
    "forget it": "forget",
    "forget everything": "forget",
}
COMMAND_REPLIES = {
    "pause": "Recording paused.",
    "resume": "Recording resumed.",
    "forget": "Forgotten: everything I saw is gone.",
}


def privacy_command(text: str) -> str | None:
    """``pause``, ``resume`` or ``forget`` when the utterance is one of :data:`PRIVACY_COMMANDS`."""
    words = " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
    return PRIVACY_COMMANDS.get(words)


TokenCallback = Callable[[str], None]


class NoQuestionError(AudioError):
    """The audio held no question (silence, no recognisable words, no wake phrase)."""


class VoiceError(RuntimeError):
    """A voice operation that this assistant is not set up for (e.g. push-to-talk without a mic)."""


@dataclass(frozen=True)
class VoiceOptions:
    vad: VadOptions = field(default_factory=VadOptions)
    listen: str = "vad"  # live mode: vad (always listening) | ptt (push-to-talk only)
    wake_phrase: str | None = None  # VAD utterances must start with it (push-to-talk: never)
    speak: bool = True  # speak answers (live; uploads ask with ?speak=1)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_duration_s: float = 30.0
    min_speech_s: float = 0.2  # less VAD speech than this in a clip: no question
    max_no_speech_prob: float = 0.6  # Whisper says "not speech" above this ...
    min_avg_logprob: float = -1.0  # ... and is unsure below this: treat as no words (hallucination)
    speak_start_timeout_s: float = 10.0
    history: int = 20  # recent turns kept for the web page
    queue_size: int = 4  # live utterances waiting for the model; older ones are dropped


@dataclass(frozen=True)
class VoiceLatency:
    """A spoken question's timeline in milliseconds, each from the end of speech (an upload:
    the request body received; push-to-talk: the key release)."""

    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)  # the docstrings below: the API schema

    audio_s: float
    decode_ms: float
    """container decode + resampling to 16 kHz (uploads)"""
    endpoint_ms: float
    """silence waited to close the utterance (live VAD)"""
    vad_ms: float
    """speech check on the whole clip (uploads, push-to-talk)"""
    asr_ms: float
    transcript_ms: float
    """end of speech → transcript"""
    ttft_ms: float
    """transcript → first answer token (the runtime's queue + prefill)"""
    first_token_ms: float
    """end of speech → first answer token"""
    answer_ms: float
    """end of speech → full answer"""
    tts_ms: float | None
    """full answer → spoken answer starts (synthesis + sink start; None: not spoken)"""
    spoken_ms: float | None
    """end of speech → spoken answer starts"""


@dataclass
class VoiceTurn:
    """One spoken question and what became of it."""

    id: str
    trigger: str  # upload | vad | vad-max | eos | ptt
    time: float  # time.time() when the speech ended
    transcript: Transcript | None = None
    question: str | None = None  # the transcript without the wake phrase
    answer: Any = None  # egovlm.edge.engine.Answer
    spoken_text: str | None = None
    speech: Speech | None = None
    latency: VoiceLatency | None = None
    ignored: str | None = None  # why this was not a question
    error: str | None = None
    command: str | None = None  # a privacy command carried out instead: pause | resume | forget
    mono: float = field(
        default_factory=lambda: time.monotonic()
    )  # lambda: `time` is a field here  # for the retention limit


def answer_to_speech(answer: Any, now_t: float | None = None) -> str:
    """What to say for an answer: the letter and its option (or the free-text answer), and how
    long ago the cited moment was. The ``<think>`` trace is for the screen, not the ear."""
    parsed = answer.parsed
    if not parsed.answer:
        return "Sorry, I could not work that out."
    options = answer.options or {}
    said = f"{parsed.answer}: {options[parsed.answer]}." if parsed.answer in options else f"{parsed.answer}."
    if answer.cited:
        t = max(c.t for c in answer.cited)
        if now_t is None or now_t < t:
            said += f" Seen at {_seconds(t)}."
        elif now_t - t < 1.0:
            said += " Seen just now."
        else:
            said += f" Seen {_seconds(now_t - t)} ago."
    return said


def _seconds(s: float) -> str:
    n = round(s)
    return "1 second" if n == 1 else f"{n} seconds"


class VoiceAssistant:
    """Spoken questions for an :class:`~egovlm.edge.runtime.EdgeRuntime`. See the module
    docstring. ``speaker`` None: answers are not spoken (text only)."""

    def __init__(
        self,
        runtime: Any,
        transcriber: Transcriber,
        speaker: Speaker | None = None,
        options: VoiceOptions | None = None,
    ) -> None:
        self.runtime = runtime
        self.transcriber = transcriber
        self.speaker = speaker
        self.options = options or VoiceOptions()
        self.history: collections.deque[VoiceTurn] = collections.deque(maxlen=self.options.history)
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._turns = 0
        self._source: AudioSource | None = None
        self._segmenter: Segmenter | None = None
        self._queue: queue.Queue[Utterance | None] = queue.Queue(self.options.queue_size)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.dropped = 0
        self.state = "idle"  # idle | listening | heard | thinking | speaking
        self.log_transcripts = bool(getattr(getattr(runtime, "options", None), "log_transcripts", False))
        if hasattr(runtime, "add_memory"):  # the runtime's retention and forget() reach the history
            runtime.add_memory(self.expire_history)

    def expire_history(self, max_age_s: float | None) -> None:
        """Drop turns older than ``max_age_s`` (wall clock), or all of them (None: forget)."""
        now = time.monotonic()
        with self._cond:
            kept = [t for t in self.history if max_age_s is not None and now - t.mono <= max_age_s]
            if len(kept) != len(self.history):
                self.history.clear()
                self.history.extend(kept)

    # -- one utterance -----------------------------------------------------------------------

    def interrupt(self, reason: str = "new question") -> bool:
        """Stop the answer being spoken (a new question started)."""
        stopped = self.speaker.stop() if self.speaker is not None else False
        if stopped:
            log.info("stopped speaking: %s", reason)
        return stopped

    def answer_upload(self, data: bytes, **kwargs: Any) -> VoiceTurn:
        """Decode WAV/OGG/FLAC/WebM bytes and answer them. Raises :class:`AudioError` subclasses
        for empty, undecodable or too long audio and :class:`NoQuestionError` for no question."""
        received = time.monotonic()
        self.interrupt("new upload")
        if len(data) > self.options.max_upload_bytes:
            raise AudioTooLongError(
                f"audio: {len(data)} bytes is over the {self.options.max_upload_bytes} limit"
            )
        t0 = time.perf_counter()
        audio = decode_audio(data, self.options.max_duration_s)
        decode_ms = (time.perf_counter() - t0) * 1000
        return self.answer(audio, speech_end_wall=received, trigger="upload", decode_ms=decode_ms, **kwargs)

    def answer(
        self,
        audio: np.ndarray,
        *,
        speech_end_wall: float,
        trigger: str,
        decode_ms: float = 0.0,
        endpoint_ms: float = 0.0,
        check_speech: bool = True,
        require_wake: bool = False,
        options: Mapping[str, str] | None = None,
        max_new_tokens: int | None = None,
        speak: bool | None = None,
        on_text: TokenCallback | None = None,
    ) -> VoiceTurn:
        """Transcribe, ask, speak. Returns the turn; raises :class:`NoQuestionError` (the turn
        is still recorded) when there is no question, and whatever ``runtime.ask`` raises."""
        turn = VoiceTurn(id=f"voice-{next(self._ids)}", trigger=trigger, time=time.time())
        try:
            self._answer(
                turn,
                audio,
                speech_end_wall,
                decode_ms,
                endpoint_ms,
                check_speech,
                require_wake,
                options,
                max_new_tokens,
                speak,
                on_text,
            )
        except NoQuestionError as e:
            turn.ignored = str(e)
            raise
        except Exception as e:
            turn.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            self._record(turn)
        return turn

    def _answer(
        self,
        turn: VoiceTurn,
        audio: np.ndarray,
        end: float,
        decode_ms: float,
        endpoint_ms: float,
        check_speech: bool,
        require_wake: bool,
        options: Mapping[str, str] | None,
        max_new_tokens: int | None,
        speak: bool | None,
        on_text: TokenCallback | None,
    ) -> None:
        o = self.options
        self.state = "heard"
        vad_ms = 0.0
        if check_speech:
            t0 = time.perf_counter()
            voiced = speech_seconds(audio, o.vad)
            vad_ms = (time.perf_counter() - t0) * 1000
            if voiced < o.min_speech_s:
                raise NoQuestionError(
                    f"no speech detected in {audio.size / SAMPLE_RATE:.1f} s of audio "
                    f"({voiced:.2f} s above the VAD threshold {o.vad.threshold})"
                )
        tr = turn.transcript = self.transcriber.transcribe(audio)
        t_transcript = time.monotonic()
        if self.log_transcripts:
            log.info("heard (%s, %.0f ms ASR): %r", turn.trigger, tr.asr_ms, tr.text)
        else:  # what was said stays out of the log unless the user opted in
            log.info("heard (%s, %.0f ms ASR): %d characters", turn.trigger, tr.asr_ms, len(tr.text))
        if not tr.text or (tr.no_speech_prob > o.max_no_speech_prob and tr.avg_logprob < o.min_avg_logprob):
            raise NoQuestionError(f"no words recognised in {tr.audio_s:.1f} s of audio")
        question = tr.text
        if require_wake and o.wake_phrase:
            rest = strip_wake_phrase(tr.text, o.wake_phrase)
            if rest is None:
                raise NoQuestionError(f"{tr.text!r} does not start with the wake phrase {o.wake_phrase!r}")
            if not rest:
                raise NoQuestionError(f"the wake phrase {o.wake_phrase!r} without a question")
            question = rest
        turn.question = question
        command = privacy_command(question)
        if command is not None:
            self._command(turn, command, speak)
            return
        first: list[float] = []

        def tokens(piece: str) -> None:
            if not first:
                first.append(time.monotonic())
            if on_text is not None:
                on_text(piece)

        self.state = "thinking"
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "on_text": tokens}
        answer = turn.answer = self.runtime.ask(question, options, **kwargs)
        t_answer = time.monotonic()
        t_first = first[0] if first else t_answer
        turn.spoken_text = answer_to_speech(answer, self._now_t())
        speak = o.speak if speak is None else speak
        t_spoken: float | None = None
        if speak and self.speaker is not None:
            self.state = "speaking"
            turn.speech = self.speaker.speak(turn.spoken_text)
            turn.speech.started.wait(o.speak_start_timeout_s)
            t_spoken = turn.speech.started_wall
        ms = 1000.0
        turn.latency = VoiceLatency(
            audio_s=audio.size / SAMPLE_RATE,
            decode_ms=decode_ms,
            endpoint_ms=endpoint_ms,
            vad_ms=vad_ms,
            asr_ms=tr.asr_ms,
            transcript_ms=(t_transcript - end) * ms,
            ttft_ms=(t_first - t_transcript) * ms,
            first_token_ms=(t_first - end) * ms,
            answer_ms=(t_answer - end) * ms,
            tts_ms=None if t_spoken is None else (t_spoken - t_answer) * ms,
            spoken_ms=None if t_spoken is None else (t_spoken - end) * ms,
        )

    def _command(self, turn: VoiceTurn, command: str, speak: bool | None) -> None:
        """Carry out a spoken privacy command and say so."""
        getattr(self.runtime, command)()
        turn.command = command
        turn.spoken_text = COMMAND_REPLIES[command]
        log.info("spoken command: %s", command)
        if (self.options.speak if speak is None else speak) and self.speaker is not None:
            self.state = "speaking"
            turn.speech = self.speaker.speak(turn.spoken_text)

    def _now_t(self) -> float | None:
        """The stream's current time (for "seen N seconds ago")."""
        st = self.runtime.ingest_stats() if hasattr(self.runtime, "ingest_stats") else None
        return st.last_timestamp_s if st is not None else None

    def _record(self, turn: VoiceTurn) -> None:
        with self._cond:
            self.history.append(turn)
            self._turns += 1
            self.state = "listening" if self._source is not None else "idle"
            self._cond.notify_all()

    def wait_for_turns(self, n: int, timeout: float) -> bool:
        """Block until ``n`` turns (questions, ignored utterances or errors) were recorded."""
        with self._cond:
            return self._cond.wait_for(lambda: self._turns >= n, timeout)

    @property
    def turns(self) -> int:
        with self._cond:
            return self._turns

    # -- live listening ----------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._source is not None

    def listen(self, source: str) -> VoiceAssistant:
        """Start hearing ``source`` (mic://, pulse://, alsa://, file://…) and answering."""
        if self._source is not None:
            raise VoiceError("already listening")
        o = self.options
        if o.listen not in ("vad", "ptt"):
            raise VoiceError(f"listen mode {o.listen!r} must be vad or ptt")
        self._segmenter = Segmenter(o.vad, on_speech_start=self._speech_started, use_vad=o.listen == "vad")
        self._source = AudioSource(source, self._on_audio)
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="egovlm-voice", daemon=True)
        self._worker.start()
        try:
            self._source.start()
        except Exception:
            self.stop()
            raise
        self.state = "listening"
        log.info(
            "listening on %s (%s%s)",
            source,
            o.listen,
            f", wake phrase {o.wake_phrase!r}" if o.wake_phrase else "",
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._source is not None:
            self._source.stop()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(10)
        self._source = self._worker = None
        self._segmenter = None
        self.interrupt("stopping")
        self.state = "idle"

    def push_to_talk(self, pressed: bool) -> bool:
        """Key down / key up. Returns whether an utterance was handed to the worker."""
        if self._segmenter is None:
            raise VoiceError("no microphone: push-to-talk needs `egovlm edge run --mic URI`")
        u = self._segmenter.push_to_talk(pressed, time.monotonic())
        if u is not None:
            self._enqueue(u)
        return u is not None

    @property
    def ptt_pressed(self) -> bool:
        return self._segmenter is not None and self._segmenter.ptt_active

    def source_stats(self) -> Any:
        return self._source.stats() if self._source is not None else None

    def _speech_started(self, trigger: str) -> None:
        self.interrupt(f"speech started ({trigger})")

    def _on_audio(self, block: np.ndarray, wall: float) -> None:
        assert self._segmenter is not None
        for u in self._segmenter.feed(block, wall):
            self._enqueue(u)

    def _enqueue(self, u: Utterance) -> None:
        try:
            self._queue.put_nowait(u)
        except queue.Full:  # the model is far behind: the oldest question is the least relevant
            try:
                self._queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            self._queue.put_nowait(u)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                u = self._queue.get(timeout=0.1)
            except queue.Empty:
                self._flush_if_ended()
                continue
            if u is None:
                return
            self._handle(u)

    def _flush_if_ended(self) -> None:
        """A file source ended: an utterance still open (no trailing silence) is complete."""
        src, seg = self._source, self._segmenter
        if src is not None and seg is not None and src.stats().state in ("ended", "failed"):
            u = seg.flush(time.monotonic())
            if u is not None:
                self._handle(u)

    def _handle(self, u: Utterance) -> None:
        ptt = u.trigger == "ptt"
        try:
            self.answer(
                u.audio,
                speech_end_wall=u.speech_end_wall,
                trigger=u.trigger,
                endpoint_ms=u.endpoint_ms,
                check_speech=ptt,
                require_wake=not ptt,
            )
        except NoQuestionError as e:  # the reason may quote the transcript
            log.info("not a question: %s", e if self.log_transcripts else type(e).__name__)
        except Exception as e:  # busy, no keyframes yet, ASR failure: log it, keep listening
            log.warning("spoken question failed: %s", e)


def build_voice(
    runtime: Any,
    *,
    asr: AsrOptions | None = None,
    tts: str = "espeak",
    tts_voice: str | None = None,
    audio_out: str = "auto",
    options: VoiceOptions | None = None,
) -> VoiceAssistant:
    """Load the speech model and the synthesiser for a runtime (``edge run --voice``)."""
    from egovlm.edge.voice.tts import AudioOut, make_tts

    synth = make_tts(tts, tts_voice)
    speaker = Speaker(synth, AudioOut(audio_out)) if synth is not None else None
    return VoiceAssistant(runtime, Transcriber(asr), speaker, options)
