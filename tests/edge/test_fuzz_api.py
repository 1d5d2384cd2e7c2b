"""Bad input over HTTP: the API fuzzed from its own OpenAPI schema, and bodies too big to read.

* schemathesis generates requests from the app's /openapi.json for every operation: schema-valid
  ones (positive) and schema-violating ones (negative: wrong types, missing fields, out-of-range
  values, junk bodies), sent in-process over ASGI (no network). Every answer must be a non-5xx
  status within a per-request deadline (no hang), except the documented 503 of the voice routes
  (the app has no voice assistant here: "voice is off"); the runtime is warm, so the question
  routes' other 503 (no keyframes yet) is not allowed either. Afterwards the runtime is still
  healthy and answers a normal question. Hypothesis runs derandomized with no example database,
  so CI sees the same cases every run; ``-m slow`` runs ten times as many.
* raw junk (any bytes, any JSON, any content type and Authorization header) at the JSON routes;
* JSON the default 422 handler could not echo back (NaN, Infinity, unpaired surrogates, deep
  nesting) gets a 4xx, not a 500;
* bodies over the limit get 413 naming the limit: by Content-Length before a byte is read, and a
  chunked body is cut off at the limit while it arrives; a body that stalls gets 408; the audio
  upload keeps its own limit;
* fields over their bounds (question, options, messages, content) get 422 naming the field.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from starlette.types import Message

from egovlm.edge import api_models as am
from egovlm.edge.runtime import EdgeRuntime
from egovlm.edge.server import MAX_JSON_BODY_BYTES, create_app
from tests.edge.edge_fakes import asgi_post_scope, scripted_engine

# A backstop for requests sent with TestClient, which has no per-request timeout (the fuzzed ones
# have REQUEST_DEADLINE_S each).
pytestmark = pytest.mark.timeout(170)

REQUEST_DEADLINE_S = 10.0  # per request; the scripted model answers in milliseconds
EXAMPLES = 40  # per operation and mode (x10 under -m slow)

# Every operation in the schema; a new route must be added here (and so gets fuzzed).
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/keyframes"),
    ("GET", "/v1/keyframes/{keyframe_id}.jpg"),
    ("POST", "/v1/ask"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/ask/audio"),
    ("GET", "/v1/voice"),
    ("POST", "/v1/voice/ptt"),
    ("POST", "/v1/voice/stop"),
    ("DELETE", "/v1/keyframes"),
    ("GET", "/v1/capture"),
    ("POST", "/v1/capture/pause"),
    ("POST", "/v1/capture/resume"),
]
# Operations with inputs to get wrong (negative generation of the others is unsatisfiable).
WITH_INPUTS = {
    ("GET", "/v1/keyframes/{keyframe_id}.jpg"),
    ("POST", "/v1/ask"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/ask/audio"),
    ("POST", "/v1/voice/ptt"),
}
# 503 by design: the app was made without a voice assistant ("voice is off: start with --voice").
VOICE_OFF = {("POST", "/v1/ask/audio"), ("POST", "/v1/voice/ptt"), ("POST", "/v1/voice/stop")}
JSON_POSTS = ["/v1/ask", "/v1/chat/completions", "/v1/voice/ptt"]


@pytest.fixture(scope="module")
def runtime() -> Iterator[EdgeRuntime]:
    """The real runtime and engine around the scripted model, fed frames directly (no camera)."""
    # The engine's answer budget at the schema's maximum, so every max_new_tokens the schema allows
    # reaches the model (test_server.py tests the engine's own limit).
    rt = EdgeRuntime(scripted_engine(capacity=8, max_new_tokens=4096), None)
    rt.start()
    try:
        yield refill(rt)
    finally:
        rt.stop()


def refill(rt: EdgeRuntime) -> EdgeRuntime:
    """Four keyframes in: at the start, and again after ``DELETE /v1/keyframes`` forgot them."""
    rng = np.random.default_rng(0)
    for i in range(4):
        rt.engine.add_keyframe(1.0 + i, rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    assert rt.wait_for_keyframes(4, timeout=30), rt.status_line()
    return rt


@pytest.fixture(scope="module")
def app(runtime: EdgeRuntime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def allowed(method: str, path: str, status: int) -> bool:
    return status < 500 or (status == 503 and (method, path) in VOICE_OFF)


def assert_healthy(client: TestClient, runtime: EdgeRuntime) -> None:
    """The runtime survived: healthy, nothing stuck in the queue, a normal question answered."""
    health = client.get("/healthz").json()
    assert health["status"] == "ok", health
    assert runtime.pending == 0
    r = client.post("/v1/ask", json={"question": "What did I pick up?", "options": {"A": "a", "B": "b"}})
    assert r.status_code == 200 and r.json()["answer"] == "B", r.text


def fuzz(schema: Any, method: str, path: str, mode: GenerationMode, examples: int) -> Counter[int]:
    operation = schema[path][method]
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,  # time is bounded per request instead (a loaded CI machine is slow)
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        try:
            response = case.call(timeout=REQUEST_DEADLINE_S)
        except requests.exceptions.Timeout:
            pytest.fail(f"no answer within {REQUEST_DEADLINE_S} s: {case.as_curl_command()}")
        status = response.status_code
        assert allowed(method, path, status), f"{status} for {case.as_curl_command()}\n{response.text[:800]}"
        statuses[status] += 1

    one()
    return statuses


def _fuzz_params(slow: bool = False) -> list[Any]:
    marks = [pytest.mark.slow] if slow else []
    return [
        pytest.param(method, path, mode, id=f"{mode.value}-{method} {path}", marks=marks)
        for method, path in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or (method, path) in WITH_INPUTS
    ]


def test_the_schema_has_exactly_the_fuzzed_operations(schema: Any) -> None:
    found = sorted((op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations())
    assert found == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), _fuzz_params())
def test_fuzzed_requests_get_no_server_error(
    schema: Any, client: TestClient, runtime: EdgeRuntime, method: str, path: str, mode: GenerationMode
) -> None:
    statuses = fuzz(schema, method, path, mode, EXAMPLES)
    assert sum(statuses.values()) > 0
    if (method, path, mode) == ("POST", "/v1/ask", GenerationMode.POSITIVE):
        assert statuses[200] > EXAMPLES // 2, statuses  # the fuzz reaches the model, not just validation
    if mode is GenerationMode.NEGATIVE and (method, path) not in VOICE_OFF:
        assert set(statuses) - {400, 404, 405, 413, 415, 422} == set(), statuses  # refused, not run
    if (method, path) == ("DELETE", "/v1/keyframes"):  # forget: nothing left to answer from
        assert len(runtime.engine.buffer) == 0
        refill(runtime)
    assert_healthy(client, runtime)


@pytest.mark.parametrize(("method", "path", "mode"), _fuzz_params(slow=True))
def test_fuzzed_requests_get_no_server_error_long(
    schema: Any, client: TestClient, runtime: EdgeRuntime, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(schema, method, path, mode, EXAMPLES * 10)
    if (method, path) == ("DELETE", "/v1/keyframes"):
        refill(runtime)
    assert_healthy(client, runtime)


# --- raw junk ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
# Known field names with junk values: reaches the validators, not just the JSON parser.
near_misses = st.fixed_dictionaries(
    {},
    optional={
        "question": json_values,
        "options": json_values,
        "stream": json_values,
        "max_new_tokens": json_values,
        "messages": st.lists(
            st.fixed_dictionaries({"role": json_values, "content": json_values}), max_size=3
        ),
        "pressed": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity included, as Python writes them
    near_misses.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
content_types = st.sampled_from(
    [None, "application/json", "application/json; charset=latin-1", "text/plain", "multipart/form-data",
     "application/x-www-form-urlencoded", "application/merge-patch+json", "\x00"]
)  # fmt: skip
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(
    path=st.sampled_from(JSON_POSTS),
    body=bodies,
    content_type=content_types,
    authorization=st.none() | header_text | header_text.map(lambda t: "Bearer " + t),
)
def test_junk_bodies_get_a_client_error(
    client: TestClient, path: str, body: bytes, content_type: str | None, authorization: str | None
) -> None:
    pairs = [("content-type", content_type), ("authorization", authorization)]
    headers = [(k.encode(), v.encode("latin-1")) for k, v in pairs if v]  # as sent on the wire
    r = client.post(path, content=body, headers=headers)
    assert allowed("POST", path, r.status_code), (r.status_code, body[:200], headers, r.text[:500])


@pytest.mark.parametrize(
    "body",
    [
        b'{"question": NaN}',
        b'{"question": "q", "max_new_tokens": Infinity}',
        b'{"question": "q", "options": {"A": -Infinity}}',
        b'{"question": "\\ud800"}',  # an unpaired surrogate: not encodable as UTF-8
        b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
        b"[" * 100_000,  # deeper than the JSON parser recurses
        b'{"question": "q", "x": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"question": "q", "max_new_tokens": ' + b"9" * 5000 + b"}",  # past Python's int-parsing limit
    ],
)
@pytest.mark.parametrize("path", JSON_POSTS)
def test_json_the_default_handler_cannot_echo_gets_4xx(client: TestClient, path: str, body: bytes) -> None:
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and r.status_code != 404, (r.status_code, r.text[:300])
    json.loads(r.text)  # strict JSON (no NaN), whatever was sent


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(
    history=st.lists(st.sampled_from(["system", "assistant", "user", "tool"]), max_size=4),
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
    | st.lists(st.text(max_size=40).map(lambda t: f"B. {t}"), max_size=6).map("\n".join),
)
def test_any_user_text_in_a_chat_is_answered_or_refused_by_name(
    client: TestClient, history: list[str], text: str
) -> None:
    """The chat route's own parsing (last user message, lettered option lines) never fails:
    an answer, or 400 saying the message is empty."""
    messages = [{"role": role, "content": f"earlier {role} turn"} for role in history]
    r = client.post("/v1/chat/completions", json={"messages": [*messages, {"role": "user", "content": text}]})
    if text.strip():
        assert r.status_code == 200, (text, r.text[:300])
    else:
        assert r.status_code == 400 and "empty" in r.json()["detail"], r.text[:300]


# --- body size ------------------------------------------------------------------------------------


def asgi_post(
    app: FastAPI, path: str, chunks: list[bytes], headers: dict[str, str], stall: bool = False
) -> tuple[int, dict[str, Any], int]:
    """POST straight through ASGI: (status, JSON body, request chunks the app pulled). ``stall``:
    the client announces more body after the last chunk and then sends nothing."""
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            more = stall or pulled < len(chunks)
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": more}
        await asyncio.sleep(3600)  # a client that sends nothing more
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = asgi_post_scope(path, headers)
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=REQUEST_DEADLINE_S))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), json.loads(body), pulled


@pytest.mark.parametrize("path", JSON_POSTS)
def test_an_oversized_content_length_is_refused_before_reading(app: FastAPI, path: str) -> None:
    size = MAX_JSON_BODY_BYTES + 1
    status, body, pulled = asgi_post(app, path, [b" " * size], {"content-length": str(size)})
    assert status == 413 and pulled == 0
    assert body["detail"] == (
        f"request body of {size} bytes is over the {MAX_JSON_BODY_BYTES}-byte limit of POST {path}"
    )


@pytest.mark.parametrize("path", JSON_POSTS)
def test_a_chunked_oversized_body_is_cut_off_at_the_limit(app: FastAPI, path: str) -> None:
    chunk = b" " * 65536
    chunks = [b'{"question": "' + chunk] + [chunk] * 63  # 4 MiB, no Content-Length
    status, body, pulled = asgi_post(app, path, chunks, {"content-type": "application/json"})
    assert (
        status == 413
        and body["detail"] == f"request body over the {MAX_JSON_BODY_BYTES}-byte limit of POST {path}"
    )
    sizes = np.cumsum([len(c) for c in chunks])
    assert pulled == int(np.argmax(sizes > MAX_JSON_BODY_BYTES)) + 1  # stopped right past the limit


def test_a_stalled_body_gets_408(runtime: EdgeRuntime) -> None:
    app = create_app(runtime, body_timeout_s=0.3)
    status, body, pulled = asgi_post(app, "/v1/ask", [b'{"question": "wh'], {}, stall=True)
    assert status == 408 and body["detail"] == "request body stalled for 0.3 s after 16 bytes"
    assert pulled == 1


def test_oversized_bodies_over_http(client: TestClient) -> None:
    big = {"question": "q", "options": {"A": "x" * MAX_JSON_BODY_BYTES}}
    r = client.post("/v1/ask", json=big)
    assert r.status_code == 413 and f"{MAX_JSON_BODY_BYTES}-byte limit" in r.json()["detail"]

    def stream() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"question": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    r = client.post("/v1/ask", content=stream(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"{MAX_JSON_BODY_BYTES}-byte limit" in r.json()["detail"]
    r = client.post("/v1/ask", content=b"{}", headers={"content-length": "two"})
    assert r.status_code == 400 and "is not a byte count" in r.json()["detail"]
    # A body just under the limit is read and validated as usual.
    r = client.post("/v1/ask", json={"question": "q", "padding": "x" * (MAX_JSON_BODY_BYTES - 100)})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "extra_forbidden"


def test_the_audio_upload_keeps_its_own_larger_limit(client: TestClient) -> None:
    """2 MiB is over the JSON routes' limit but within the audio upload's (10 MiB): the upload
    route is reached (503 here only because this app has no voice assistant)."""
    r = client.post(
        "/v1/ask/audio", content=b"\0" * (2 * MAX_JSON_BODY_BYTES), headers={"content-type": "audio/wav"}
    )
    assert r.status_code == 503 and "voice is off" in r.json()["detail"]


OVERSIZED_FIELDS = [
    ("/v1/ask", {"question": "q" * (am.MAX_QUESTION_CHARS + 1)}, ["body", "question"]),
    ("/v1/ask", {"question": "q", "options": {"A": "o" * (am.MAX_OPTION_CHARS + 1)}}, ["body", "options", "A"]),
    ("/v1/ask", {"question": "q", "options": {f"K{i}": "o" for i in range(am.MAX_OPTIONS + 1)}}, ["body", "options"]),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "c" * (am.MAX_MESSAGE_CHARS + 1)}]},
     ["body", "messages", 0, "content"]),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "c"}] * (am.MAX_MESSAGES + 1)}, ["body", "messages"]),
    ("/v1/chat/completions",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "t"}] * (am.MAX_CONTENT_PARTS + 1)}]},
     ["body", "messages", 0, "content"]),
    ("/v1/chat/completions",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "t" * (am.MAX_MESSAGE_CHARS + 1)}]}]},
     ["body", "messages", 0, "content"]),
    ("/v1/chat/completions", {"model": "m" * (am.MAX_NAME_CHARS + 1), "messages": [{"role": "user", "content": "q"}]},
     ["body", "model"]),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "loc"), OVERSIZED_FIELDS)
def test_oversized_fields_get_422_naming_the_field(
    client: TestClient, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text[:300]
    errors = r.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc and "at most" in e["msg"] for e in errors), errors
    assert len(r.content) < 20_000  # the 422 echoes a cut-short copy of the input, not all of it


def test_fields_at_their_bounds_are_accepted(client: TestClient) -> None:
    options = {chr(ord("A") + i): "o" * am.MAX_OPTION_CHARS for i in range(am.MAX_OPTIONS)}
    r = client.post("/v1/ask", json={"question": "q" * am.MAX_QUESTION_CHARS, "options": options})
    assert r.status_code == 200, r.text[:300]
    history = [{"role": "user", "content": "c" * 100}] * (am.MAX_MESSAGES - 1)
    r = client.post(
        "/v1/chat/completions", json={"messages": [*history, {"role": "user", "content": "Where?"}]}
    )
    assert r.status_code == 200, r.text[:300]
