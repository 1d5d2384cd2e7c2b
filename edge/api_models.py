"""Typed request and response bodies of the edge HTTP API (:mod:`egovlm.edge.server`).

Two families: the runtime's own API (``/v1/ask``, ``/v1/keyframes``, ``/healthz``), which
exposes everything an answer rests on (the ``<think>`` trace, cited keyframes with timestamps
and thumbnails, the latency breakdown), and an OpenAI-compatible subset of
``/v1/chat/completions`` so existing clients (the official ``openai`` package) work unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_LETTER = re.compile(r"^[A-Z]$")


class AskRequest(BaseModel):
    """A question about what the camera saw. With ``options`` (letters → text) the model answers
    with a letter; without, in free text."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    options: dict[str, str] | None = None
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


class LatencyInfo(BaseModel):
    """Where the time went, in milliseconds (tokens per second for decode)."""

    queue_ms: float
    prepare_ms: float
    prefill_ms: float
    ttft_ms: float
    decode_ms: float
    decode_tok_s: float
    total_ms: float
    n_prompt_tokens: int
    n_prefill_tokens: int
    n_new_tokens: int


class AskResponse(BaseModel):
    """A full answer. ``format_ok`` says whether the text followed the answer grammar; the
    parsed fields are filled best-effort either way (a random-init model emits noise)."""

    id: str
    question: str
    options: dict[str, str] | None
    text: str
    answer: str | None
    think: str | None
    format_ok: bool
    problems: list[str]
    cited: list[CitedKeyframe]
    invalid_citations: list[int]
    frames: list[KeyframeInfo] = Field(description="the keyframes the prompt showed, in order")
    cached: bool
    snapshot_version: int
    latency: LatencyInfo
    finish_reason: Literal["stop", "length"]


class TokenEvent(BaseModel):
    text: str


class ErrorBody(BaseModel):
    detail: str


class IngestInfo(BaseModel):
    source: str
    state: str
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


class KeyframesResponse(BaseModel):
    version: int
    keyframes: list[KeyframeInfo]
    ingest: IngestInfo | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "starting", "degraded"]
    ready: bool = Field(description="the model state matches the buffer")
    keyframes: int
    ingest_state: str | None
    frames_received: int
    model: dict[str, Any]


# --- OpenAI-compatible chat completions (the subset a chat client uses) ---------------------------


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ChatContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """The fields this runtime honours; others (``temperature``, ``top_p``, ``user``...) are
    accepted and ignored, because decoding is greedy so answers are reproducible."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
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
