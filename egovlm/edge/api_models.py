"""Typed request and response bodies of the edge HTTP API (:mod:`egovlm.edge.server`).

Two families: the runtime's own API (``/v1/ask``, ``/v1/keyframes``, ``/healthz``), which
exposes everything an answer rests on (the ``<think>`` trace, cited keyframes with timestamps
and thumbnails, the latency breakdown), and an OpenAI-compatible subset of
``/v1/chat/completions`` so existing clients (the official ``openai`` package) work unchanged.

Where a response shows an engine or runtime dataclass as it is, it uses that type and pydantic
builds its schema (``AskResponse.latency`` is :class:`egovlm.edge.engine.Latency`,
``KeyframesResponse.ingest`` :class:`egovlm.edge.ingest.IngestStats`, ``HealthResponse.components``
:class:`egovlm.edge.runtime.ComponentHealth`; field descriptions come from the dataclass's
attribute docstrings). A model here restates a dataclass only where the API adds fields or
descriptions to it; it is filled with ``model_validate(obj, from_attributes=True)``, and
tests/edge/test_server.py checks the two keep the same fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from egovlm.edge.engine import Latency
from egovlm.edge.ingest import IngestStats
from egovlm.edge.runtime import CaptureState, ComponentHealth, HealthStatus
from egovlm.edge.voice.audio import AudioSourceStats
from egovlm.edge.voice.pipeline import VoiceLatency

_LETTER = re.compile(r"^[A-Z]$")

# Field bounds (422 beyond them; the whole body is capped too: egovlm.edge.server.MAX_JSON_BODY_BYTES).
# Characters bound the body; the model's limit is in tokens: a question turn (question + options +
# scaffolding) over egovlm.contract.MAX_QUESTION_TOKENS is refused with 422 before the model runs.
MAX_QUESTION_CHARS = 4000
MAX_OPTIONS = 26  # one per capital letter
MAX_OPTION_CHARS = 1000
MAX_MESSAGES = 128
MAX_MESSAGE_CHARS = 16_000
MAX_CONTENT_PARTS = 64
MAX_NAME_CHARS = 256

OptionText = Annotated[str, Field(max_length=MAX_OPTION_CHARS)]


class AskRequest(BaseModel):
    """A question about what the camera saw. With ``options`` (letters → text) the model answers
    with a letter; without, in free text."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    options: dict[str, OptionText] | None = Field(
        default=None, max_length=MAX_OPTIONS, description='letters → text, e.g. {"A": "a red cup"}'
    )
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)
    stream: bool = False
    use_cache: bool = True

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is blank")
        return v

    @field_validator("options")
    @classmethod
    def _letters(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return None
        if not v:
            return None
        bad = [k for k in v if not _LETTER.match(k)]
        if bad:
            raise ValueError(f"option keys must be single capital letters, got {bad}")
        return v


class KeyframeInfo(BaseModel):
    """A keyframe the runtime holds (or held, when cited by an answer)."""

    id: int
    t: float = Field(description="seconds since the stream started")
    index: int | None = Field(default=None, description="1-based position in the prompt, when in one")
    reason: str = ""
    sharpness: float | None = None
    width: int | None = None
    height: int | None = None
    thumbnail_url: str


class CitedKeyframe(BaseModel):
    index: int = Field(description="the frame number the model cited (the prompt's 1..N)")
    id: int
    t: float
    thumbnail_url: str


class AskResponse(BaseModel):
    """A full answer. ``format_ok`` says whether the text followed the answer grammar; the
    parsed fields are filled best-effort either way (a random-init model emits noise)."""

    id: str
    question: str
    options: dict[str, str] | None
    text: str
    answer: str | None
    answer_text: str | None = Field(
        default=None,
        description="the <answer> body as written: an open answer's words; for multiple choice the letter or "
        "option text the model wrote (`answer` is then its letter)",
    )
    think: str | None
    format_ok: bool
    problems: list[str]
    cited: list[CitedKeyframe]
    invalid_citations: list[int]
    frames: list[KeyframeInfo] = Field(description="the keyframes the prompt showed, in order")
    cached: bool
    snapshot_version: int
    latency: Latency
    finish_reason: Literal["stop", "length"]


class TokenEvent(BaseModel):
    text: str


class KeyframesResponse(BaseModel):
    version: int
    keyframes: list[KeyframeInfo]
    ingest: IngestStats | None = Field(
        default=None, description="the camera ingest: counters since it started, ages in wall seconds"
    )


class HealthResponse(BaseModel):
    status: HealthStatus = Field(
        description="the worst component's: degraded when the camera delivered nothing for the stale time"
    )
    components: dict[str, ComponentHealth] = Field(
        default_factory=dict, description="source, model, buffer, voice"
    )
    ready: bool = Field(description="the model state matches the buffer")
    capture: CaptureState = Field(
        default="off", description="on: frames reach the model; paused: dropped on arrival; off: no camera"
    )
    keyframes: int
    ingest_state: str | None
    frames_received: int
    model: dict[str, Any]


# --- OpenAI-compatible chat completions (the subset a chat client uses) ---------------------------


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=MAX_NAME_CHARS)
    text: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
        | Annotated[list[ChatContentPart], Field(max_length=MAX_CONTENT_PARTS)]
        | None
    ) = None


class ChatCompletionRequest(BaseModel):
    """The fields this runtime honours; others (``temperature``, ``top_p``, ``user``...) are
    accepted and ignored, because decoding is greedy so answers are reproducible."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    n: int = Field(default=1, ge=1, le=1)


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    egovlm: AskResponse = Field(description="the runtime's full answer (cited keyframes, latency)")


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    egovlm: AskResponse | None = None


# --- voice (``POST /v1/ask/audio``, ``/v1/voice``: egovlm.edge.voice) ----------------------------


class TranscriptInfo(BaseModel):
    """What the speech model heard."""

    text: str
    question: str | None = Field(description="the question asked (the transcript without a wake phrase)")
    language: str
    audio_s: float = Field(description="seconds of audio transcribed")
    asr_ms: float
    no_speech_prob: float
    avg_logprob: float


class AudioAskResponse(AskResponse):
    """The /v1/ask answer to a spoken question, plus the transcript and the voice timeline."""

    transcript: TranscriptInfo
    spoken_text: str | None = Field(description="what was (or would be) said aloud")
    voice_latency: VoiceLatency


class VoiceTurnInfo(BaseModel):
    """A recent spoken question (live microphone or upload) and what became of it."""

    id: str
    trigger: str = Field(description="upload | vad | vad-max | eos | ptt")
    time: float = Field(description="Unix time the speech ended")
    transcript: TranscriptInfo | None
    ignored: str | None = Field(description="why this was not a question (silence, no wake phrase...)")
    error: str | None
    spoken_text: str | None
    answer: AskResponse | None
    voice_latency: VoiceLatency | None


class VoiceStatusResponse(BaseModel):
    enabled: bool = Field(description="speech recognition is loaded (edge run --voice / --mic)")
    state: str = Field(description="idle | listening | heard | thinking | speaking")
    listen_mode: str | None = None
    source: AudioSourceStats | None = None
    ptt_pressed: bool = False
    speaking: bool = False
    wake_phrase: str | None = None
    asr: dict[str, Any] | None = None
    tts: dict[str, Any] | None = None
    dropped: int = 0
    turns: list[VoiceTurnInfo] = Field(default_factory=list, description="most recent first")


class PushToTalkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pressed: bool = Field(description="true: start capturing the microphone; false: stop and ask")


class PushToTalkResponse(BaseModel):
    pressed: bool
    queued: bool = Field(description="an utterance was handed to the assistant (on release)")
