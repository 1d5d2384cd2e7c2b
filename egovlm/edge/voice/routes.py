"""The voice routes of the edge HTTP API (mounted by :func:`egovlm.edge.server.create_app`).

* ``POST /v1/ask/audio``: a spoken question (or a privacy command, "pause recording", "forget
  that": then ``{"command", "spoken_text", "capture"}``) as WAV/OGG/FLAC/WebM, either the raw request body
  (``Content-Type: audio/wav`` …) or the ``audio`` field of a multipart form. Query (or form)
  fields: ``options`` (a JSON object, letters → text), ``max_new_tokens``, ``speak`` (also say
  the answer on the device). The answer is the ``/v1/ask`` response plus ``transcript``,
  ``spoken_text`` and ``voice_latency``. Limits are enforced while the body arrives: a
  ``Content-Length`` over the limit is refused before reading, a body without one is cut off
  at the limit. Errors: 400 empty, 413 too large / too long, 415 not audio we decode,
  422 no question in it (silence, no words), 429 busy, 503 voice off or no keyframes yet;
* ``GET /v1/voice``: the assistant's state and recent spoken turns (the web page shows them);
* ``POST /v1/voice/ptt`` ``{"pressed": true|false}``: push-to-talk on the device microphone;
* ``POST /v1/voice/stop``: stop speaking.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Message

from egovlm.edge.api_models import (
    AskRequest,
    AudioAskResponse,
    PushToTalkRequest,
    PushToTalkResponse,
    TranscriptInfo,
    VoiceStatusResponse,
    VoiceTurnInfo,
)
from egovlm.edge.voice.audio import AudioError, AudioFormatError, AudioTooLongError, EmptyAudioError

if TYPE_CHECKING:
    from egovlm.edge.server import RuntimeApi

AUDIO_FIELD = "audio"
RAW_TYPES = ("audio/", "application/octet-stream", "video/webm", "application/ogg")


def add_voice_routes(app: FastAPI, runtime: RuntimeApi, voice: Any, guarded: list[Any]) -> None:
    """Mount the voice routes. ``voice`` None: they exist but answer 503 with how to enable."""

    def need_voice() -> Any:
        if voice is None:
            raise HTTPException(
                503, "voice is off: start the runtime with `egovlm edge run --voice` (or --mic URI)"
            )
        return voice

    def limit(max_new_tokens: int | None) -> int:
        return max_new_tokens or runtime.engine.params.generation.max_new_tokens

    @app.post(
        "/v1/ask/audio",
        response_model=AudioAskResponse,
        dependencies=guarded,
        openapi_extra={
            "requestBody": {"content": {"audio/wav": {}, "audio/ogg": {}, "multipart/form-data": {}}}
        },
    )
    async def ask_audio(
        request: Request,
        options: str | None = Query(None, description='JSON object of choices, e.g. {"A": "a cup"}'),
        max_new_tokens: int | None = Query(None, ge=1, le=4096),
        speak: bool = Query(False, description="also speak the answer on the device"),
    ) -> Any:
        va = need_voice()
        if runtime.pending >= runtime.options.max_pending:  # before paying for decoding and ASR
            raise HTTPException(
                429, f"{runtime.pending} questions already waiting for the model; retry shortly"
            )
        data, fields = await read_audio(request, va.options.max_upload_bytes)
        opts = parse_choices(fields.get("options", options))
        n_max = _int_field(fields.get("max_new_tokens"), max_new_tokens)
        rid = f"ask-{uuid.uuid4().hex[:12]}"
        try:
            turn = await run_in_threadpool(
                lambda: va.answer_upload(data, options=opts, max_new_tokens=n_max, speak=speak)
            )
        except Exception as e:
            status, detail = voice_error(e)
            raise HTTPException(status, detail) from e
        if turn.command is not None:  # "pause recording", "forget that": done, nothing to answer
            return JSONResponse(
                {"command": turn.command, "spoken_text": turn.spoken_text, "capture": runtime.capture_state()}
            )
        return audio_response(turn, rid, "", limit(n_max))  # relative thumbnail URLs

    @app.get("/v1/voice", response_model=VoiceStatusResponse, dependencies=guarded)
    def voice_status(request: Request) -> VoiceStatusResponse:
        if voice is None:
            return VoiceStatusResponse(enabled=False, state="off")
        return status_response(voice, "", limit)  # relative thumbnail URLs, not the request's Host

    @app.post("/v1/voice/ptt", response_model=PushToTalkResponse, dependencies=guarded)
    def push_to_talk(req: PushToTalkRequest) -> PushToTalkResponse:
        va = need_voice()
        if not va.listening:
            raise HTTPException(409, "no microphone: push-to-talk needs `egovlm edge run --mic URI`")
        return PushToTalkResponse(pressed=req.pressed, queued=va.push_to_talk(req.pressed))

    @app.post("/v1/voice/stop", dependencies=guarded)
    def stop_speaking() -> dict[str, bool]:
        return {"stopped": need_voice().interrupt("stop requested over HTTP")}


# --- request body -------------------------------------------------------------------------------


def _capped(request: Request, max_bytes: int) -> Request:
    """The same request, with a receive channel that refuses the body once it passes
    ``max_bytes`` (413), so a huge upload is cut off while it arrives, not after."""
    seen = 0
    receive = request.receive

    async def capped_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise HTTPException(413, f"audio: request body over the {max_bytes}-byte limit")
        return message

    return Request(request.scope, receive=capped_receive)


async def read_audio(request: Request, max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """The audio bytes and any text form fields (multipart) of a request."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise HTTPException(413, f"audio: {length} bytes is over the {max_bytes}-byte limit")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    capped = _capped(request, max_bytes + 64 * 1024 if ctype == "multipart/form-data" else max_bytes)
    if ctype == "multipart/form-data":
        return await _read_form(capped, max_bytes)
    if ctype and not ctype.startswith(RAW_TYPES):
        raise HTTPException(
            415,
            f"Content-Type {ctype!r}: send the audio as the body (audio/wav, audio/ogg, audio/webm, "
            f"application/octet-stream) or as the {AUDIO_FIELD!r} field of multipart/form-data",
        )
    return await capped.body(), {}


async def _read_form(request: Request, max_bytes: int) -> tuple[bytes, dict[str, str]]:
    form = await request.form(max_files=1, max_fields=8)
    try:
        part = form.get(AUDIO_FIELD)
        if not isinstance(part, UploadFile):
            raise HTTPException(
                400, f"multipart form: no file field {AUDIO_FIELD!r} (fields: {sorted(form.keys())})"
            )
        data = await part.read()
        if len(data) > max_bytes:
            raise HTTPException(413, f"audio: {len(data)} bytes is over the {max_bytes}-byte limit")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return data, fields
    finally:
        await form.close()


def parse_choices(text: str | None) -> dict[str, str] | None:
    """``options`` given as JSON text (query or form field), validated like /v1/ask's."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
        return AskRequest(question="?", options=value).options
    except (ValueError, ValidationError) as e:
        msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise HTTPException(422, f'options: expected a JSON object like {{"A": "a red cup"}}: {msg}') from e


def _int_field(form_value: str | None, query_value: int | None) -> int | None:
    if form_value is None:
        return query_value
    if not form_value.strip().isdigit() or not 1 <= int(form_value) <= 4096:
        raise HTTPException(422, f"max_new_tokens: {form_value!r} must be an integer in 1..4096")
    return int(form_value)


def voice_error(exc: BaseException) -> tuple[int, str]:
    """HTTP status and message for a failed spoken question."""
    from egovlm.edge.server import _error_detail

    if isinstance(exc, EmptyAudioError):
        return 400, str(exc)
    if isinstance(exc, AudioTooLongError):
        return 413, str(exc)
    if isinstance(exc, AudioFormatError):
        return 415, str(exc)
    if isinstance(exc, AudioError):  # NoQuestionError: silence, no words, no wake phrase
        return 422, str(exc)
    return _error_detail(exc)


# --- responses ----------------------------------------------------------------------------------


def transcript_info(turn: Any) -> TranscriptInfo | None:
    tr = turn.transcript
    if tr is None:
        return None
    return TranscriptInfo(
        text=tr.text,
        question=turn.question,
        language=tr.language,
        audio_s=tr.audio_s,
        asr_ms=tr.asr_ms,
        no_speech_prob=tr.no_speech_prob,
        avg_logprob=tr.avg_logprob,
    )


def audio_response(turn: Any, rid: str, base: str, max_new_tokens: int) -> AudioAskResponse:
    from egovlm.edge.server import answer_response

    ask = answer_response(turn.answer, rid, base, max_new_tokens)
    transcript, latency = transcript_info(turn), turn.latency
    assert transcript is not None and latency is not None  # an answered turn has both
    return AudioAskResponse(
        **ask.model_dump(), transcript=transcript, spoken_text=turn.spoken_text, voice_latency=latency
    )


def turn_info(turn: Any, base: str, limit: Callable[[int | None], int]) -> VoiceTurnInfo:
    from egovlm.edge.server import answer_response

    answer = None if turn.answer is None else answer_response(turn.answer, turn.id, base, limit(None))
    return VoiceTurnInfo(
        id=turn.id,
        trigger=turn.trigger,
        time=turn.time,
        transcript=transcript_info(turn),
        ignored=turn.ignored,
        error=turn.error,
        spoken_text=turn.spoken_text,
        answer=answer,
        voice_latency=turn.latency,
    )


def status_response(voice: Any, base: str, limit: Callable[[int | None], int]) -> VoiceStatusResponse:
    speaker = voice.speaker
    return VoiceStatusResponse(
        enabled=True,
        state=voice.state,
        listen_mode=voice.options.listen if voice.listening else None,
        source=voice.source_stats(),
        ptt_pressed=voice.ptt_pressed,
        speaking=bool(speaker is not None and speaker.speaking),
        wake_phrase=voice.options.wake_phrase,
        asr=voice.transcriber.describe(),
        tts=speaker.describe() if speaker is not None else None,
        dropped=voice.dropped,
        turns=[turn_info(t, base, limit) for t in reversed(list(voice.history))],
    )
