"""The real ``egovlm edge run`` process under hostile requests: it never dies from a request.

One process (GStreamer ingest of the synthetic camera, the torch backend with the tiny model,
uvicorn, speech recognition for ``/v1/ask/audio``) is sent, one after another, the requests a
local attacker or a broken client sends: a from-scratch question (``use_cache: false``, which
aborted the process before the libgcc_s fix), oversized chat prompts, malformed and invalid-UTF-8
JSON, deeply nested JSON, a huge multipart upload, junk audio, path traversal at the thumbnail
and static routes, oversized headers and URLs, half-sent headers and stalled bodies held open,
clients that hang up mid-stream, a burst beyond the queue, a cross-site POST. After each the
process must be alive, ``/healthz`` must answer ``ok`` and a normal question must be answered.

Then the API is fuzzed from the process's own ``/openapi.json`` with schemathesis (the in-process
version is ``test_fuzz_api``): no 5xx, no hang, and the process still answering afterwards. A
few examples per operation run by default; ``-m slow`` runs ten times as many.

The specific limits (which status a too-long chat prompt gets, the header and body deadlines, the
cross-site refusals) are asserted where they are made (``test_fuzz_api``, ``test_access`` and the
deadline tests); this suite asserts the property they all serve: the server survives them all.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.live_server import LiveServer, edge_run

pytestmark = pytest.mark.timeout(600)

# The process's answer-length cap (--max-new-tokens): requests may ask for up to this many tokens
# (more gets 422); 64 leaves the streams that clients hang up on long enough to hang up mid-answer.
MAX_NEW_TOKENS = 64
REQUEST_TIMEOUT_S = 60.0  # per hostile request: a hang is a failure too
FUZZ_DEADLINE_S = 30.0  # per fuzzed request (the tiny model answers in well under a second)
FUZZ_EXAMPLES = 15  # per operation and generation mode (x10 under -m slow)
NORMAL = {"question": "What did I pick up?", "options": {"A": "a cup", "B": "the keys"}}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``egovlm edge run`` with voice (Whisper tiny.en; answers spoken to a null sink)."""
    args = ["--source", "synth://", "--model", str(tiny_model_dir), "--capacity", "3"]
    args += ["--max-new-tokens", str(MAX_NEW_TOKENS), "--status-every", "0"]
    args += ["--voice", "--audio-out", "null"]
    with edge_run(args, tmp_path_factory.mktemp("hostile") / "edge-run.log") as live:
        live.wait_ready(keyframes=2)
        yield live
        assert live.alive(), live.tail()
        assert live.stop() == 0, live.tail()


def still_answering(server: LiveServer, after: str) -> None:
    """The property every hostile request is followed by: alive, healthy, answering."""
    assert server.alive(), f"the process died after {after}:\n{server.tail()}"
    health = httpx.get(f"{server.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", f"after {after}: {health.text}"
    r = httpx.post(f"{server.url}/v1/ask", json=NORMAL, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code == 200, f"after {after}: {r.status_code} {r.text[:300]}"
    assert r.json()["latency"]["n_new_tokens"] > 0


def post_bytes(
    server: LiveServer, path: str, content: bytes, content_type: str, timeout: float = REQUEST_TIMEOUT_S
) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}", content=content, headers={"content-type": content_type}, timeout=timeout
    )


def refused(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"


def address(server: LiveServer) -> tuple[str, int]:
    u = urlsplit(server.url)
    assert u.hostname is not None and u.port is not None, server.url
    return u.hostname, u.port


def raw_http(server: LiveServer, data: bytes, read: bool = True, timeout: float = 30.0) -> bytes:
    """Send bytes on a fresh connection (requests httpx will not make); the response head."""
    with socket.create_connection(address(server), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        chunks = []  # until the server closes (the requests say Connection: close, or are refused)
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


# --- the hostile requests, one at a time -----------------------------------------------------------


def from_scratch_question(server: LiveServer) -> None:
    r = httpx.post(f"{server.url}/v1/ask", json={"question": "hi", "use_cache": False}, timeout=120)
    assert r.status_code == 200, r.text
    assert not r.json()["cached"]


def oversized_chat_prompts(server: LiveServer) -> None:
    # 64 parts of 16,000 characters: ~1M characters within the 1 MiB body limit (it killed the process)
    parts = [{"type": "text", "text": "x" * 16_000} for _ in range(64)]
    body = {"messages": [{"role": "user", "content": parts}]}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S)
    refused(r, "a ~1M-character chat prompt")
    # many messages of the longest allowed text: refused or answered, never a crash
    many = {"messages": [{"role": "user", "content": "what " * 3_200} for _ in range(20)]}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=many, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code < 500, r.text[:300]


def malformed_json(server: LiveServer) -> None:
    bad = [
        b'{"question": ',  # truncated
        b'{"question": "\xff\xfe\xfa"}',  # invalid UTF-8
        b'{"question": "\\ud800"}',  # an unpaired surrogate
        b'{"question": NaN}',
        b"[" * 50_000 + b"]" * 50_000,  # deep nesting
        b"\x00" * 1000,
    ]
    for path in ("/v1/ask", "/v1/chat/completions", "/v1/voice/ptt"):
        for body in bad:
            r = post_bytes(server, path, body, "application/json")
            refused(r, f"{path} with {body[:30]!r}")


def huge_multipart_upload(server: LiveServer) -> None:
    big = b"RIFF" + b"\x00" * (24 << 20)  # 24 MiB: over the 10 MiB audio limit
    r = httpx.post(
        f"{server.url}/v1/ask/audio",
        files={"audio": ("q.wav", big, "audio/wav")},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert r.status_code == 413, r.text[:300]
    # a multipart body with thousands of fields and a junk boundary
    fields = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(5000)
    )
    r = post_bytes(server, "/v1/ask/audio", fields + b"--b--\r\n", "multipart/form-data; boundary=b")
    refused(r, "5000 multipart fields")
    r = post_bytes(server, "/v1/ask/audio", b"--nope\r\n\r\n", "multipart/form-data; boundary=" + "z" * 5000)
    refused(r, "a broken multipart body")


def junk_and_spoken_audio(server: LiveServer) -> None:
    from egovlm.edge.voice.audio import wav_bytes
    from egovlm.edge.voice.tts import spoken_clip

    for data in (b"OggS" + b"\x00" * 4000, b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\xff" * 200, b"fLaC"):
        r = post_bytes(server, "/v1/ask/audio", data, "audio/wav")
        refused(r, f"junk audio {data[:12]!r}")
    speech = wav_bytes(spoken_clip("What did I pick up last?"))
    r = post_bytes(server, "/v1/ask/audio?speak=true", speech, "audio/wav", timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert "pick" in r.json()["transcript"]["text"].lower()


def path_traversal(server: LiveServer) -> None:
    paths = [
        "/v1/keyframes/../../../../etc/passwd.jpg",
        "/v1/keyframes/..%2f..%2f..%2f..%2fetc%2fpasswd.jpg",
        "/v1/keyframes/%2e%2e/%2e%2e/etc/passwd",
        "/v1/keyframes/-1.jpg",
        "/v1/keyframes/99999999999999999999999999999.jpg",
        "/v1/keyframes/1e3.jpg",
        "/v1/keyframes/%00.jpg",
        "/static/../../../../etc/passwd",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static//etc/passwd",
        "/static/" + "a/" * 2000,
    ]
    for path in paths:
        head = raw_http(
            server, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        status = int(head.split(b" ", 2)[1])
        assert 400 <= status < 500, f"{path}: {head[:200]!r}"
        assert b"root:" not in head, f"{path} served a system file"


def oversized_headers_and_urls(server: LiveServer) -> None:
    for request in (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: "
        + b"a" * 200_000
        + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + b"X-H: v\r\n" * 20_000
        + b"\r\n",
        b"GET /v1/keyframes?"
        + b"q=1&" * 50_000
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500,  # a TLS hello on plain HTTP
        b"GARBAGE\r\n\r\n",
    ):
        try:
            head = raw_http(server, request, timeout=REQUEST_TIMEOUT_S)
        except (ConnectionResetError, BrokenPipeError):
            continue  # refused by closing the connection: fine
        assert not head or not head.startswith(b"HTTP/1.1 5"), head[:200]


def held_connections(server: LiveServer) -> None:
    """Half-sent headers and stalled bodies, many at once, held open while others are served."""
    held: list[socket.socket] = []
    try:
        for i in range(30):
            s = socket.create_connection(address(server), timeout=10)
            if i % 3 == 0:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # headers never end
            elif i % 3 == 1:
                s.sendall(
                    b"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 100000\r\n\r\n{"question": "'
                )  # a body that stalls
            else:
                s.sendall(
                    b"POST /v1/ask/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                    b"Content-Length: 1000000\r\n\r\nRIFF"
                )
            held.append(s)
        still_answering(server, "30 held connections (while they are open)")
    finally:
        for s in held:
            s.close()


def hang_ups_mid_stream(server: LiveServer) -> None:
    for path, body in (
        ("/v1/ask", {"question": "Describe everything.", "stream": True, "max_new_tokens": 64}),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "Describe everything."}],
                "stream": True,
                "max_tokens": 64,
            },
        ),
    ):
        for _ in range(3):
            with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=REQUEST_TIMEOUT_S) as r:
                assert r.status_code == 200
                next(r.iter_raw())  # the first event, then hang up
    time.sleep(1.0)  # the abandoned answers finish or are cancelled


def burst_beyond_the_queue(server: LiveServer) -> None:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def ask() -> None:
        try:
            r = httpx.post(
                f"{server.url}/v1/ask",
                json={"question": "hi", "max_new_tokens": 16, "use_cache": False},
                timeout=REQUEST_TIMEOUT_S,
            )
            code = r.status_code
        except httpx.HTTPError:
            code = 0
        with lock:
            statuses[code] += 1

    threads = [threading.Thread(target=ask) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S + 10)
    assert set(statuses) <= {200, 429} and statuses[200] >= 1, statuses  # busy is said, not crashed


def cross_site_post(server: LiveServer) -> None:
    headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    for path, body in (("/v1/ask", NORMAL), ("/v1/voice/stop", None)):
        r = httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        assert r.status_code < 500, r.text[:300]
        assert "access-control-allow-origin" not in r.headers
    r = httpx.post(
        f"{server.url}/v1/ask/audio?speak=true",
        content=b"RIFF",
        headers={**headers, "content-type": "audio/wav"},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert r.status_code < 500, r.text[:300]


HOSTILE: list[Callable[[LiveServer], None]] = [
    from_scratch_question,
    oversized_chat_prompts,
    malformed_json,
    huge_multipart_upload,
    junk_and_spoken_audio,
    path_traversal,
    oversized_headers_and_urls,
    held_connections,
    hang_ups_mid_stream,
    burst_beyond_the_queue,
    cross_site_post,
]


@pytest.mark.parametrize("attack", HOSTILE, ids=[f.__name__ for f in HOSTILE])
def test_the_process_survives(server: LiveServer, attack: Callable[[LiveServer], None]) -> None:
    attack(server)
    still_answering(server, attack.__name__)


# --- fuzzing from the process's own schema ----------------------------------------------------------

# Answer lengths are capped in generated requests (a schema-valid max_new_tokens of 4096 is minutes
# of CPU decoding, not a defect); every other field is as schemathesis generates it.
LENGTH_FIELDS = ("max_new_tokens", "max_tokens", "max_completion_tokens")
MODES = tuple(GenerationMode)  # positive (schema-valid) and negative (schema-violating)


def bounded(case: Any) -> Any:
    for container in (case.body, case.query):
        if isinstance(container, dict):
            for key in LENGTH_FIELDS:
                if isinstance(container.get(key), int) and container[key] > 8:
                    container[key] = 8
    return case


def operations(schema: Any) -> list[tuple[str, str]]:
    return sorted((op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations())


def fuzz_operation(
    server: LiveServer, schema: Any, method: str, path: str, mode: GenerationMode, examples: int
) -> Counter[int]:
    """``examples`` generated requests for one operation; each must get a non-5xx in time."""
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,  # time is bounded per request instead
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema[path][method].as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            bounded(case)
        try:
            response = case.call(timeout=FUZZ_DEADLINE_S)
        except requests.exceptions.Timeout:
            pytest.fail(f"no answer within {FUZZ_DEADLINE_S} s: {case.as_curl_command()}")
        except requests.exceptions.ConnectionError as e:
            pytest.fail(f"{e} for {case.as_curl_command()}\n{server.tail()}")
        assert response.status_code < 500, (
            f"{response.status_code} for {case.as_curl_command()}\n{response.text[:800]}"
        )
        statuses[response.status_code] += 1

    try:
        one()
    except Unsatisfiable:  # an operation without inputs has no schema-violating request
        assert mode is GenerationMode.NEGATIVE
    assert server.alive(), f"the process died fuzzing {method} {path}:\n{server.tail()}"
    return statuses


def fuzz_process(server: LiveServer, examples: int) -> dict[tuple[str, str, str], Counter[int]]:
    """Every operation of the process's /openapi.json, schema-valid and schema-violating."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    ops = operations(schema)
    assert ("POST", "/v1/ask") in ops and ("POST", "/v1/ask/audio") in ops, ops
    return {
        (method, path, mode.value): fuzz_operation(server, schema, method, path, mode, examples)
        for method, path in ops
        for mode in MODES
    }


def test_fuzzed_from_its_own_schema_no_5xx_and_still_answering(server: LiveServer) -> None:
    seen = fuzz_process(server, FUZZ_EXAMPLES)
    assert seen[("POST", "/v1/ask", "positive")][200] > 0, seen  # the fuzz reaches the model
    still_answering(server, "the schema fuzz")


@pytest.mark.slow
def test_fuzzed_from_its_own_schema_long(server: LiveServer) -> None:
    fuzz_process(server, FUZZ_EXAMPLES * 10)
    still_answering(server, "the long schema fuzz")
