"""Every request to the real ``egovlm edge run`` is bounded before it costs the server anything
open-ended: raw sockets against the real process (uvicorn, GStreamer ingest, the tiny model,
Whisper for the audio route), with short deadlines so the suite stays fast.

* the request head: a client that sends half its headers, drips them a byte at a time, or sends
  nothing, is disconnected at ``--header-timeout`` (uvicorn has no such setting: the protocol
  class in :mod:`egovlm.edge.http_guards` adds it), with a 408 when part of a head had arrived;
* the body: a stalled JSON body, raw audio upload and multipart audio upload get 408 at
  ``--body-timeout``; a body that drips one byte a second never stalls but is cut at
  ``--body-deadline``;
* the prompt: ``/v1/chat/completions`` and ``/v1/ask`` refuse a question turn over
  ``MAX_QUESTION_TOKENS`` (422 saying the limit), counted with the model's tokenizer, and a chat
  message over ``MAX_QUESTION_CHARS`` before any tokenising; neither reaches the model (one
  in-process test counts the tokenizer's and the model's calls to show it).

After each, the server is alive and answers; the last test asks it a real question.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from egovlm.contract import MAX_QUESTION_TOKENS
from egovlm.edge.api_models import MAX_QUESTION_CHARS
from egovlm.edge.runtime import EdgeRuntime
from egovlm.edge.server import create_app
from egovlm.processing import Processor, Tokenizer
from tests.edge.edge_fakes import ScriptedBackend, scripted_engine
from tests.live_server import LiveServer, edge_run

pytest.importorskip("faster_whisper")
pytestmark = pytest.mark.timeout(240)

HEAD_S, STALL_S, TOTAL_S = 2.0, 2.0, 4.0
SLACK_S = 3.0  # scheduling on a loaded 2-core machine; the deadlines themselves are exact


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    args = ["--source", "synth://", "--model", str(tiny_model_dir), "--capacity", "3"]
    args += [
        "--max-new-tokens",
        "4",
        "--status-every",
        "0",
        "--voice",
        "--tts",
        "none",
        "--audio-out",
        "null",
    ]
    args += ["--header-timeout", str(HEAD_S), "--body-timeout", str(STALL_S), "--body-deadline", str(TOTAL_S)]
    with edge_run(args, tmp_path_factory.mktemp("deadlines") / "edge-run.log") as live:
        live.wait_ready(keyframes=2)
        yield live
        assert live.stop() == 0, live.tail()


def connect(server: LiveServer) -> socket.socket:
    u = urlsplit(server.url)
    assert u.port is not None
    return socket.create_connection((u.hostname, u.port), timeout=10)


def until_closed(
    sock: socket.socket, limit_s: float, drip: bytes = b"", every_s: float = 1.0
) -> tuple[bytes, float]:
    """What the server sent before closing the connection, and when it closed (seconds from the
    call); ``drip``: bytes to keep sending, one every ``every_s``, meanwhile. Fails if the
    connection is still open after ``limit_s``."""
    t0, data, sent = time.monotonic(), b"", 0
    next_drip = t0 + every_s
    while time.monotonic() - t0 < limit_s:
        if drip and sent < len(drip) and time.monotonic() >= next_drip:
            with contextlib.suppress(OSError):  # closed under us: the read below sees it
                sock.sendall(drip[sent : sent + 1])
            sent, next_drip = sent + 1, next_drip + every_s
        sock.settimeout(max(0.01, min(next_drip - time.monotonic(), 0.2)) if drip else 0.2)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - t0
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk
    pytest.fail(f"connection still open after {limit_s} s (received {data[:200]!r})")


def still_answers(server: LiveServer) -> None:
    assert server.alive(), server.tail()
    r = httpx.get(f"{server.url}/healthz", timeout=10)
    assert r.status_code == 200 and r.json()["keyframes"] >= 1, r.text


def status_and_detail(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["detail"]


# --- the request head ------------------------------------------------------------------------------


def test_half_sent_headers_are_cut_off_at_the_head_deadline(server: LiveServer) -> None:
    with connect(server) as s:
        s.sendall(b"GET /v1/keyframes HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow")
        response, closed_s = until_closed(s, HEAD_S + SLACK_S)
    assert closed_s >= HEAD_S - 0.3, closed_s  # the deadline closed it, not something else
    status, detail = status_and_detail(response)
    assert status == 408 and detail == f"request head not complete within {HEAD_S:g} s"
    still_answers(server)


def test_headers_dripped_a_byte_at_a_time_are_cut_off_at_the_head_deadline(server: LiveServer) -> None:
    """Each byte arriving would reset uvicorn's keep-alive timer; the head deadline is absolute."""
    with connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        response, closed_s = until_closed(s, HEAD_S + SLACK_S, drip=b"X-Drip: " + b"a" * 100, every_s=0.25)
    assert HEAD_S - 0.3 <= closed_s <= HEAD_S + SLACK_S
    assert status_and_detail(response)[0] == 408
    still_answers(server)


def test_a_connection_that_never_sends_a_byte_is_closed(server: LiveServer) -> None:
    with connect(server) as s:
        response, closed_s = until_closed(s, HEAD_S + SLACK_S)
    assert response == b"" and closed_s >= HEAD_S - 0.3  # nothing asked, nothing answered
    still_answers(server)


# --- the body ------------------------------------------------------------------------------------

BOUNDARY = "deadline-test-boundary"
STALLED = {
    "json": ("/v1/ask", "application/json", b'{"question": "what did I pi'),
    "audio": ("/v1/ask/audio", "audio/wav", b"RIFF" + b"\0" * 1000),
    "multipart": (
        "/v1/ask/audio",
        f"multipart/form-data; boundary={BOUNDARY}",
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"; filename="q.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
        + b"RIFF"
        + b"\0" * 1000,
    ),
}


def request_head(path: str, content_type: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("kind", list(STALLED))
def test_a_stalled_body_gets_408(server: LiveServer, kind: str) -> None:
    path, content_type, part = STALLED[kind]
    with connect(server) as s:
        s.sendall(request_head(path, content_type, len(part) + 50_000) + part)
        response, closed_s = until_closed(s, STALL_S + SLACK_S)
    status, detail = status_and_detail(response)
    assert status == 408, response[:300]
    assert detail == f"request body stalled for {STALL_S:g} s after {len(part)} bytes", detail
    assert closed_s >= STALL_S - 0.3
    still_answers(server)


@pytest.mark.parametrize("kind", ["json", "audio"])
def test_a_body_dripped_a_byte_a_second_is_cut_at_the_overall_deadline(server: LiveServer, kind: str) -> None:
    """One byte a second never stalls for STALL_S, yet the whole body must arrive within TOTAL_S."""
    path, content_type, part = STALLED[kind]
    with connect(server) as s:
        s.sendall(request_head(path, content_type, len(part) + 1000) + part)
        response, closed_s = until_closed(s, TOTAL_S + SLACK_S, drip=b"x" * 1000, every_s=1.0)
    status, detail = status_and_detail(response)
    assert status == 408, response[:300]
    assert detail.startswith(f"request body not complete within the {TOTAL_S:g} s deadline ("), detail
    assert TOTAL_S - 0.3 <= closed_s <= TOTAL_S + SLACK_S
    still_answers(server)


# --- the prompt ----------------------------------------------------------------------------------


def questions_run(server: LiveServer) -> float:
    """``egovlm_questions_total`` over all outcomes (answered, error, ...) from /metrics: the
    questions that reached the runtime and its model."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("egovlm_questions_total{")
    )


def chat(server: LiveServer, content: object) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": content}], "max_tokens": 2},
        timeout=60,
    )
    return r, time.monotonic() - t0


# Two prompts that would cost unbounded tokenising time and memory: a million-token prompt (64
# parts of 16,000 characters) and one 16,000-character message.
HUGE_CHAT_CONTENTS: tuple[object, ...] = ([{"type": "text", "text": "x" * 16_000}] * 64, "y" * 16_000)


def test_huge_chat_prompts_are_refused_by_size_before_tokenising(server: LiveServer) -> None:
    """Two prompts that would cost unbounded tokenising time and memory (a million-token prompt;
    one 16,000-character message) are refused by size first."""
    before = questions_run(server)
    for content in HUGE_CHAT_CONTENTS:
        r, took_s = chat(server, content)
        assert r.status_code == 422, r.text[:300]
        detail = r.json()["detail"]
        assert f"the limit is {MAX_QUESTION_CHARS} characters, and {MAX_QUESTION_TOKENS} tokens" in detail
        assert took_s < 10.0, took_s  # a hang guard; that nothing was tokenised is checked below
        still_answers(server)
    assert questions_run(server) == before  # refused before the runtime saw them


class CountingTokenizer:
    """The model's tokenizer, counting the texts it is asked to tokenise."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, text: str, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(text, **kwargs)


def test_oversized_questions_never_reach_the_tokenizer_or_the_model(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, the tiny model's own processor and tokenizer behind a counting wrapper: the
    size refusals above (the chat route, and /v1/ask's field bound) tokenise nothing and call no
    model; a question within the character bound but over the token bound is tokenised (so the
    counter does see the route's token check) and still calls no model."""
    processor = Processor.from_dir(tiny_model_dir)
    tokenizer = CountingTokenizer(processor.tokenizer)
    backend = ScriptedBackend()
    monkeypatch.setattr(backend, "processor", processor, raising=False)
    monkeypatch.setattr(backend, "tokenizer", tokenizer, raising=False)
    rt = EdgeRuntime(scripted_engine(backend=backend), "synth://?fps=20&size=160x120&seed=2")
    with TestClient(create_app(rt)) as client:
        for content in HUGE_CHAT_CONTENTS:
            body = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 422, r.text[:300]
            assert f"the limit is {MAX_QUESTION_CHARS} characters" in r.json()["detail"]
        r = client.post("/v1/ask", json={"question": "y" * 16_000, "use_cache": False})
        assert r.status_code == 422, r.text[:300]
        assert tokenizer.calls == 0 and backend.generate_calls == 0
        long_text = "where is my red cup? " * 180  # within MAX_QUESTION_CHARS, over MAX_QUESTION_TOKENS
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": long_text}]})
        assert r.status_code == 422 and f"the limit is {MAX_QUESTION_TOKENS} tokens" in r.json()["detail"]
        assert tokenizer.calls >= 1 and backend.generate_calls == 0


def test_question_turns_over_the_token_limit_are_refused_before_the_model(server: LiveServer) -> None:
    """Within the character bound but over MAX_QUESTION_TOKENS (the model's own tokenizer counts):
    the chat route and /v1/ask refuse alike; the model never ran."""
    long_text = "where is my red cup? " * 180  # 3,780 characters, ~1,000 tokens
    assert len(long_text) <= MAX_QUESTION_CHARS
    before = questions_run(server)
    r, took_s = chat(server, long_text)
    t0 = time.monotonic()
    r2 = httpx.post(f"{server.url}/v1/ask", json={"question": long_text, "use_cache": False}, timeout=60)
    for resp, took in ((r, took_s), (r2, time.monotonic() - t0)):
        assert resp.status_code == 422, resp.text[:300]
        detail = resp.json()["detail"]
        assert detail.startswith("the question (with its options and the chat scaffolding) is ")
        assert f"the limit is {MAX_QUESTION_TOKENS} tokens" in detail
        assert took < 10.0, took  # a hang guard; the model never ran is the check below
    assert questions_run(server) == before  # refused before the runtime saw them
    still_answers(server)


def test_the_server_still_answers_questions_after_all_of_the_above(server: LiveServer) -> None:
    before = questions_run(server)
    r, _ = chat(server, "What did I pick up?\nA. a cup\nB. a plate")
    assert r.status_code == 200, r.text[:300]
    assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert r.json()["egovlm"]["options"] == {"A": "a cup", "B": "a plate"}
    r = httpx.post(f"{server.url}/v1/ask", json={"question": "hi", "use_cache": False}, timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert questions_run(server) == before + 2  # the metric the refusals above are checked with counts
    still_answers(server)
