"""The edge runtime's HTTP API (FastAPI) and web page.

Routes (with a bearer token, every route but :data:`PUBLIC_PATHS` needs it):

* ``POST /v1/ask``: an :class:`AskResponse` (letter/text, ``<think>`` trace, cited keyframes
  with timestamps and thumbnail URLs, latency breakdown); ``"stream": true`` sends
  Server-Sent Events: ``token`` events with text pieces, then one ``answer`` event (or ``error``);
* ``GET /v1/keyframes`` and ``GET /v1/keyframes/{id}.jpg``: the buffer and its thumbnails
  (``Cache-Control: no-store``: a browser keeps no camera frame); ``DELETE /v1/keyframes``
  forgets everything seen (:meth:`EdgeRuntime.forget`);
* ``POST /v1/capture/pause`` and ``POST /v1/capture/resume``: frames stop at the door, or flow
  again (``GET /v1/capture``: the state, also in ``/healthz``);
* ``POST /v1/chat/completions`` (+ ``GET /v1/models``): an OpenAI-compatible subset, streaming
  too, so the official ``openai`` client works unchanged; the full answer rides along in an
  extra ``egovlm`` field;
* ``GET /healthz`` (no token: liveness probes; names the model, never its path), ``GET /metrics``
  (Prometheus text format), ``GET /openapi.json`` (the schema; no Swagger UI: see below);
* ``POST /v1/ask/audio``, ``GET /v1/voice``, ``POST /v1/voice/ptt|stop``: spoken questions
  (:mod:`egovlm.edge.voice.routes`; answered 503 unless the app was given a voice assistant);
* ``GET /``: the web page (egovlm/edge/web/), a static HTML + JS file, no build step.

Bad input is refused early and by name: a JSON body over :data:`MAX_JSON_BODY_BYTES` gets 413
before the route reads it (by ``Content-Length``, or while a chunked body arrives; audio uploads
keep their own, larger limit), a body that stalls or outlasts its deadline 408
(:class:`egovlm.edge.http_guards.Deadlines`), fields over their bounds
(:mod:`egovlm.edge.api_models`) 422, and a question turn over ``MAX_QUESTION_TOKENS`` 422, counted
with the model's own tokenizer before the question queues for the model (chat messages are cut
at ``MAX_QUESTION_CHARS`` characters before any tokenising).

Access (:mod:`egovlm.edge.http_guards`, as middleware so a new route cannot miss it): no CORS
headers (a page on another origin cannot read the API); state-changing requests from other
origins refused (403); the bearer token on every route but :data:`PUBLIC_PATHS`, wrong tokens
slowed per client; an app made for a loopback bind answers only loopback ``Host`` names (DNS
rebinding). URLs in responses are relative (``/v1/keyframes/3.jpg``), never built from the
request's ``Host``. No Swagger UI at ``/docs``: FastAPI's loads its JavaScript from a CDN (an
offline device has none); vendoring it (or a package that ships it) would put a large third-party
script on the same origin as the page that keeps the token, a risk the device does not need.
``/openapi.json`` (behind the token) serves any OpenAPI viewer or client generator instead.

The model answers one question at a time (the engine's lock); answers run on worker threads so
the event loop, ingest and the keyframe strip stay live meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from egovlm.contract import MAX_QUESTION_TOKENS, QuestionTooLongError, check_question_tokens
from egovlm.edge.api_models import (
    MAX_QUESTION_CHARS,
    AskRequest,
    AskResponse,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    ChunkChoice,
    ChunkDelta,
    CitedKeyframe,
    HealthResponse,
    KeyframeInfo,
    KeyframesResponse,
    TokenEvent,
    Usage,
)
from egovlm.edge.backends.base import TokenCallback
from egovlm.edge.backends.prompt import render_prompt, text_ids
from egovlm.edge.buffer import BufferSnapshot, Keyframe
from egovlm.edge.engine import Answer, AnswerTooLongError, Engine
from egovlm.edge.http_guards import (
    BodyLimit,
    CrossSiteCheck,
    Deadlines,
    HostCheck,
    LoginBackoff,
    TokenCheck,
    invalid_request,
)
from egovlm.edge.ingest import IngestStats
from egovlm.edge.runtime import BusyError, CaptureState, Health, RuntimeOptions, StoppingError
from egovlm.frames import Frame

WEB_DIR = Path(__file__).parent / "web"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# Request bodies: a question with options or a chat history is a few KB; 1 MiB leaves room for a
# long conversation and refuses a runaway client before anything is parsed.
MAX_JSON_BODY_BYTES = 1 << 20
BODY_TIMEOUT_S = Deadlines.body_stall_s  # longest pause allowed between the chunks of a request body
BODY_DEADLINE_S = Deadlines.body_total_s  # the whole body, however it trickles in
# Routes with their own body limit, enforced while the body arrives (audio: voice.routes).
BODY_LIMIT_EXEMPT = frozenset({"/v1/ask/audio"})
# The Host names a loopback-bound server answers to (anything else: a DNS-rebinding page).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# What a server with a token serves without it: liveness probes and the web page itself (a browser
# cannot send a header when it opens a page; the page then sends the token on every API call).
# Nothing here may return data about the camera, the model's files or the answers.
PUBLIC_PATHS = frozenset({"/", "/healthz"})
PUBLIC_PREFIXES = ("/static/",)
# Camera content is never stored by a browser or a proxy (README "Privacy").
NO_STORE = {"Cache-Control": "no-store"}


class RuntimeApi(Protocol):
    """What the HTTP API needs from the runtime: :class:`egovlm.edge.runtime.EdgeRuntime`."""

    engine: Engine
    model_name: str
    options: RuntimeOptions

    @property
    def pending(self) -> int: ...

    def ask(
        self,
        question: str,
        options: Mapping[str, str] | None = None,
        *,
        max_new_tokens: int | None = None,
        on_text: TokenCallback | None = None,
        use_cache: bool = True,
    ) -> Answer: ...

    def health(self, voice: Any = None) -> Health: ...

    def ingest_stats(self) -> IngestStats | None: ...

    def snapshot(self) -> BufferSnapshot: ...

    def jpeg(self, keyframe_id: int) -> bytes | None: ...

    def forget(self) -> None: ...

    def capture_state(self) -> CaptureState: ...

    def pause(self) -> CaptureState: ...

    def resume(self) -> CaptureState: ...

    def metrics_text(self) -> bytes: ...


# --- conversions ------------------------------------------------------------------------------


def thumb_url(base: str, keyframe_id: int) -> str:
    """A keyframe's thumbnail URL. The server passes ``base=""``: a relative URL, because one built
    from the request's ``Host`` would echo whatever name a client (or a rebinding page) sent."""
    return f"{base}/v1/keyframes/{keyframe_id}.jpg"


def keyframe_info(kf: Keyframe, base: str, index: int | None = None) -> KeyframeInfo:
    h, w = kf.image.shape[:2]
    return KeyframeInfo(
        id=kf.id,
        t=kf.t,
        index=index,
        reason=kf.reason,
        sharpness=kf.sharpness,
        width=w,
        height=h,
        thumbnail_url=thumb_url(base, kf.id),
    )


def answer_response(answer: Answer, rid: str, base: str, max_new_tokens: int) -> AskResponse:
    """The API view of an engine Answer. Works whatever the model emitted: the parsed fields
    are best-effort and ``format_ok`` says whether the grammar held. ``base``: the prefix of
    thumbnail URLs (:func:`thumb_url`; "" for the relative URLs the server sends)."""
    lat = answer.latency
    return AskResponse(
        id=rid,
        question=answer.question,
        options=answer.options,
        text=answer.text,
        answer=answer.parsed.answer,
        answer_text=answer.parsed.answer_text,
        think=answer.parsed.think,
        format_ok=answer.parsed.format_ok,
        problems=list(answer.parsed.problems),
        cited=[
            CitedKeyframe(
                index=c.index, id=c.keyframe_id, t=c.t, thumbnail_url=thumb_url(base, c.keyframe_id)
            )
            for c in answer.cited
        ],
        invalid_citations=list(answer.invalid_citations),
        frames=[keyframe_info(k, base, i + 1) for i, k in enumerate(answer.keyframes)],
        cached=answer.cached,
        snapshot_version=answer.snapshot_version,
        latency=lat,
        finish_reason="length" if lat.n_new_tokens >= max_new_tokens else "stop",
    )


_OPTION_LINE = re.compile(r"^\s*\(?([A-E])[.):]\s+(.+?)\s*$")


def question_from_chat(req: ChatCompletionRequest) -> tuple[str, dict[str, str] | None]:
    """The last user message is the question. Lines like ``A. a red cup`` (two or more) become
    lettered options, so a multiple-choice question typed into any chat client works.

    The message is the question turn, so it gets /v1/ask's bound: over ``MAX_QUESTION_CHARS``
    characters is refused (422) before anything joins or tokenises it (64 parts of 16,000
    characters would otherwise make a million-token prompt); the token bound follows
    (:func:`check_question_budget`)."""
    users = [m for m in req.messages if m.role == "user"]
    if not users:
        raise HTTPException(400, "messages: no user message to answer")
    content = users[-1].content
    if isinstance(content, list):
        kinds = {p.type for p in content} - {"text"}
        if kinds:
            raise HTTPException(
                400,
                f"messages: content parts {sorted(kinds)} are not accepted: this runtime answers about "
                "its own camera's keyframes; send text only",
            )
    size = sum(len(p.text or "") for p in content) if isinstance(content, list) else len(content or "")
    if size > MAX_QUESTION_CHARS:
        raise HTTPException(
            422,
            f"messages: the last user message (the question) is {size} characters; the limit is "
            f"{MAX_QUESTION_CHARS} characters, and {MAX_QUESTION_TOKENS} tokens for the question with its "
            "options (egovlm.contract.MAX_QUESTION_TOKENS): shorten it",
        )
    if isinstance(content, list):
        content = "\n".join(p.text or "" for p in content)
    text = (content or "").strip()
    if not text:
        raise HTTPException(400, "messages: the last user message is empty")
    options: dict[str, str] = {}
    rest: list[str] = []
    for line in text.splitlines():
        m = _OPTION_LINE.match(line)
        if m and m.group(1) not in options:
            options[m.group(1)] = m.group(2)
        elif line.strip().lower().rstrip(":") != "options":
            rest.append(line)
    if len(options) >= 2 and "\n".join(rest).strip():
        return "\n".join(rest).strip(), options
    return text, None


def sse(data: BaseModel | str, event: str | None = None) -> str:
    """One Server-Sent Event. Hand-formatted because one route answers both JSON and SSE, and the
    OpenAI stream needs the exact ``data: {...}`` / ``data: [DONE]`` framing."""
    payload = data if isinstance(data, str) else data.model_dump_json()
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in payload.split("\n")) + "\n"


# --- the app ------------------------------------------------------------------------------------


def create_app(
    runtime: RuntimeApi,
    token: str | None = None,
    voice: Any = None,
    allowed_hosts: frozenset[str] | None = None,
    max_body_bytes: int = MAX_JSON_BODY_BYTES,
    body_timeout_s: float = BODY_TIMEOUT_S,
    body_deadline_s: float = BODY_DEADLINE_S,
    login_backoff: LoginBackoff | None = None,
) -> FastAPI:
    """The FastAPI app for a (started) runtime. ``token``: require ``Authorization: Bearer`` on
    every route but :data:`PUBLIC_PATHS` (:class:`~egovlm.edge.http_guards.TokenCheck`; wrong
    tokens are slowed by ``login_backoff``, default :class:`~egovlm.edge.http_guards.LoginBackoff`).
    ``voice``: an :class:`egovlm.edge.voice.pipeline.VoiceAssistant` for spoken questions.
    ``allowed_hosts``: the ``Host`` names to answer (``serve`` passes :data:`LOOPBACK_HOSTS` for
    a loopback bind); None: any. ``max_body_bytes``: the request body limit of every route but the
    audio upload; ``body_timeout_s``/``body_deadline_s``: how long a body may stall, and take in
    all (every route). No CORS middleware: cross-origin pages get no ``Access-Control-Allow-*``
    headers and preflight requests are refused; cross-site state-changing requests get 403."""
    if token is not None and not token.strip():
        raise ValueError("the bearer token is blank: pass a real token, or None for no token")
    app = FastAPI(title="egovlm edge", version="1", docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.add_exception_handler(RequestValidationError, invalid_request)
    # Middleware added later runs earlier: Host, then cross-site, then token, then body.
    app.add_middleware(
        BodyLimit,
        max_bytes=max_body_bytes,
        exempt=BODY_LIMIT_EXEMPT,
        timeout_s=body_timeout_s,
        deadline_s=body_deadline_s,
    )
    if token is not None:
        app.add_middleware(
            TokenCheck,
            token=token,
            public_paths=PUBLIC_PATHS,
            public_prefixes=PUBLIC_PREFIXES,
            backoff=login_backoff,
        )
    app.add_middleware(CrossSiteCheck)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)

    def limit(max_new_tokens: int | None) -> int:
        """The answer length of a request: its own, at most the engine's (422 above it, before any
        model work or streaming; the engine refuses the same for in-process callers)."""
        cap = runtime.engine.params.generation.max_new_tokens
        if max_new_tokens is not None and max_new_tokens > cap:
            raise HTTPException(422, str(AnswerTooLongError.for_limit(max_new_tokens, cap)))
        return max_new_tokens or cap

    @app.get("/healthz", response_model=HealthResponse)
    def healthz() -> HealthResponse:
        st, eng = runtime.ingest_stats(), runtime.engine.status()
        health = runtime.health(voice)  # per component; "ok" also while a rebuild is in progress
        return HealthResponse(
            status=health.status,
            components=health.components,
            ready=eng.ready,
            capture=health.capture,
            keyframes=eng.keyframes,
            ingest_state=st.state if st else None,
            frames_received=st.frames_received if st else 0,
            model=model_summary(runtime),
        )

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(runtime.metrics_text(), media_type=PROMETHEUS_TEXT)

    @app.get("/v1/keyframes", response_model=KeyframesResponse)
    def keyframes() -> KeyframesResponse:
        snap = runtime.snapshot()
        st = runtime.ingest_stats()
        b = ""  # relative URLs (thumb_url)
        return KeyframesResponse(
            version=snap.version,
            keyframes=[keyframe_info(k, b, i + 1) for i, k in enumerate(snap.keyframes)],
            ingest=st,
        )

    @app.get("/v1/keyframes/{keyframe_id}.jpg")
    def keyframe_jpeg(keyframe_id: int) -> Response:
        data = runtime.jpeg(keyframe_id)
        if data is None:
            raise HTTPException(
                404, f"keyframe {keyframe_id} is not in the buffer (evicted or never existed)"
            )
        return Response(data, media_type="image/jpeg", headers=NO_STORE)

    @app.delete("/v1/keyframes")
    def forget() -> dict[str, Any]:
        """Forget everything seen (keyframes, thumbnails, vision features, model state, voice
        history); capture carries on as it was (pause first to stop it too)."""
        runtime.forget()
        return {"forgotten": True, "capture": runtime.capture_state()}

    @app.get("/v1/capture")
    def capture() -> dict[str, str]:
        return {"capture": runtime.capture_state()}

    @app.post("/v1/capture/pause")
    def pause() -> dict[str, str]:
        return {"capture": runtime.pause()}

    @app.post("/v1/capture/resume")
    def resume() -> dict[str, str]:
        return {"capture": runtime.resume()}

    @app.post("/v1/ask", response_model=AskResponse)
    async def ask(req: AskRequest) -> Any:
        rid = f"ask-{uuid.uuid4().hex[:12]}"
        b, n = "", limit(req.max_new_tokens)
        kwargs = {"max_new_tokens": req.max_new_tokens, "use_cache": req.use_cache}
        await _check_budget(runtime, req.question, req.options)
        if not req.stream:
            answer = await _ask_blocking(runtime, req.question, req.options, kwargs)
            return answer_response(answer, rid, b, n)
        _admit(runtime)

        async def events() -> AsyncIterator[str]:
            async for kind, value in _ask_streaming(runtime, req.question, req.options, kwargs):
                if kind == "token":
                    yield sse(TokenEvent(text=value), "token")
                elif kind == "answer":
                    yield sse(answer_response(value, rid, b, n), "answer")
                else:
                    yield sse(json.dumps({"detail": _error_detail(value)[1]}), "error")

        return EventSourceResponse(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        model = {"id": runtime.model_name, "object": "model", "created": 0, "owned_by": "egovlm"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat(req: ChatCompletionRequest) -> Any:
        question, options = question_from_chat(req)
        await _check_budget(runtime, question, options)
        max_new = req.max_completion_tokens or req.max_tokens
        b, n = "", limit(max_new)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        kwargs = {"max_new_tokens": max_new, "use_cache": True}
        if not req.stream:
            answer = await _ask_blocking(runtime, question, options, kwargs)
            full = answer_response(answer, cid, b, n)
            return ChatCompletionResponse(
                id=cid,
                created=created,
                model=runtime.model_name,
                choices=[
                    ChatChoice(
                        message=ChatResponseMessage(content=full.text), finish_reason=full.finish_reason
                    )
                ],
                usage=_usage(full),
                egovlm=full,
            )
        _admit(runtime)

        def chunk(delta: ChunkDelta, finish: Any = None, **extra: Any) -> str:
            choice = ChunkChoice(delta=delta, finish_reason=finish)
            body = ChatCompletionChunk(
                id=cid, created=created, model=runtime.model_name, choices=[choice], **extra
            )
            return sse(body)

        async def events() -> AsyncIterator[str]:
            yield chunk(ChunkDelta(role="assistant", content=""))
            async for kind, value in _ask_streaming(runtime, question, options, kwargs):
                if kind == "token":
                    yield chunk(ChunkDelta(content=value))
                elif kind == "answer":
                    full = answer_response(value, cid, b, n)
                    yield chunk(ChunkDelta(), full.finish_reason, usage=_usage(full), egovlm=full)
                else:
                    yield sse(
                        json.dumps({"error": {"message": _error_detail(value)[1], "type": "server_error"}})
                    )
            yield sse("[DONE]")

        return EventSourceResponse(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    from egovlm.edge.voice.routes import add_voice_routes

    add_voice_routes(app, runtime, voice, [])  # the token: TokenCheck, for every route

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def model_summary(runtime: RuntimeApi) -> dict[str, Any]:
    """The model as /healthz shows it without a token: its name and the backend's description,
    minus anything that looks like a file path (where the model lives on the device is not
    for anonymous callers)."""
    info = {
        k: v for k, v in runtime.engine.backend.describe().items() if k != "model" and not _looks_like_path(v)
    }
    return {"name": runtime.model_name, **info}


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value or value.startswith("~"))


# One 1x1 frame: the question turn's tokens do not depend on the frames before it.
_PLACEHOLDER_FRAME = Frame(1, 0.0, np.zeros((1, 1, 3), np.uint8))


def question_turn_tokens(runtime: RuntimeApi, question: str, options: Mapping[str, str] | None) -> int | None:
    """The tokens a question adds after the cached [system + frames] prefix (question, options,
    end of turn, assistant header), rendered with the backend's own chat template and counted with
    its own tokenizer, as the backend will (``egovlm.edge.backends.prompt.split_ids``). None
    when the backend has no tokenizer to count with (test doubles)."""
    backend = runtime.engine.backend
    processor, tokenizer = getattr(backend, "processor", None), getattr(backend, "tokenizer", None)
    if processor is None or tokenizer is None:
        return None
    system_prompt = runtime.engine.params.system_prompt
    prompt = render_prompt(
        processor.apply_chat_template, [_PLACEHOLDER_FRAME], question, options, system_prompt
    )
    return len(text_ids(tokenizer, prompt.suffix))


def check_question_budget(runtime: RuntimeApi, question: str, options: Mapping[str, str] | None) -> None:
    """Raise :class:`QuestionTooLongError` (422 naming the limit) for a question turn over
    ``egovlm.contract.MAX_QUESTION_TOKENS``, before the question queues for the model or touches
    it. That limit is the question's share of the model's context in the device profile's memory
    plan (``egovlm.edge.profile.profile_workload``, ``egovlm.export.fit``), so a question within
    it fits the budget the profile was admitted with. The backend checks again at prefill
    (``split_ids``); this check makes an over-long question cost milliseconds, not a model call."""
    n = question_turn_tokens(runtime, question, options)
    if n is not None:
        check_question_tokens(n)


async def _check_budget(runtime: RuntimeApi, question: str, options: Mapping[str, str] | None) -> None:
    try:
        await run_in_threadpool(check_question_budget, runtime, question, options)
    except QuestionTooLongError as e:
        raise HTTPException(422, str(e)) from e


def _usage(full: AskResponse) -> Usage:
    lat = full.latency
    return Usage(
        prompt_tokens=lat.n_prompt_tokens,
        completion_tokens=lat.n_new_tokens,
        total_tokens=lat.n_prompt_tokens + lat.n_new_tokens,
    )


def _error_detail(exc: BaseException) -> tuple[int, str]:
    """HTTP status and message for a failed question."""
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, BusyError):
        return 429, str(exc)
    if isinstance(exc, StoppingError):
        return 503, str(exc)
    if type(exc).__name__ == "EngineError":  # no keyframes yet, no model state: try again later
        return 503, str(exc)
    if isinstance(exc, (QuestionTooLongError, AnswerTooLongError)):  # each names its limit
        return 422, str(exc)
    return 500, f"{type(exc).__name__}: {exc}"


def _admit(runtime: RuntimeApi) -> None:
    """Refuse a streamed question up front when the queue is full (a status code, not an event)."""
    if runtime.pending >= runtime.options.max_pending:
        raise HTTPException(429, f"{runtime.pending} questions already waiting for the model; retry shortly")


async def _ask_blocking(
    runtime: RuntimeApi, question: str, options: Mapping[str, str] | None, kwargs: dict[str, Any]
) -> Any:
    try:
        return await run_in_threadpool(lambda: runtime.ask(question, options, **kwargs))
    except Exception as e:
        status, detail = _error_detail(e)
        raise HTTPException(status, detail) from e


async def _ask_streaming(
    runtime: RuntimeApi, question: str, options: Mapping[str, str] | None, kwargs: dict[str, Any]
) -> AsyncIterator[tuple[str, Any]]:
    """Run a question on its own thread; yield ("token", text)... then ("answer", Answer) or
    ("error", exc). A dedicated thread, not the shared pool, because a question may wait
    seconds for the model and must not starve the routes that keep the UI live."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(kind: str) -> Callable[[Any], None]:
        def send(value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the server's loop closed (shutdown): nobody is listening
                if kind == "token":
                    raise StoppingError("the server stopped: answer cancelled") from None

        return send

    def work() -> None:
        try:
            answer = runtime.ask(question, options, on_text=put("token"), **kwargs)
        except Exception as e:
            put("error")(e)
        else:
            put("answer")(answer)

    threading.Thread(target=work, name="egovlm-ask", daemon=True).start()
    while True:
        kind, value = await queue.get()
        yield kind, value
        if kind != "token":
            return
