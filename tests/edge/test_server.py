"""The HTTP API end to end: synth:// → GStreamer ingest → keyframe buffer → tiny Qwen2.5-VL, asked
over HTTP (JSON and SSE), through the official ``openai`` client and through ``egovlm edge ask``.

The tiny model is random-init, so its text is noise: these tests assert the response structure,
that latencies are measured, that cited keyframes are frames of the prompt, and that the parsed
structure is built (``format_ok`` false, with the problems) when the grammar is not followed.
Behaviour a random model cannot show (valid citations, a slow question) uses the scripted
backend in edge_fakes.py inside the real Engine."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from egovlm.contract import parse_answer
from egovlm.edge.api_models import (
    AskResponse,
    ChatCompletionRequest,
    ChatMessage,
    TranscriptInfo,
    VoiceStatusResponse,
)
from egovlm.edge.engine import AnswerTooLongError
from egovlm.edge.ingest import IngestStats
from egovlm.edge.runtime import ComponentHealth, EdgeRuntime, RuntimeOptions, build_runtime
from egovlm.edge.server import create_app, question_from_chat
from egovlm.edge.voice.asr import Transcript
from egovlm.edge.voice.audio import AudioSourceStats
from egovlm.edge.voice.pipeline import VoiceLatency
from tests.edge.edge_fakes import ServerThread, running, scripted_engine, sse_events

OPTIONS = {"A": "a yellow banana", "B": "a red cup", "C": "a blue book"}


@pytest.fixture(scope="module")
def tiny_runtime(tiny_model_dir: Path) -> Iterator[EdgeRuntime]:
    rt = build_runtime(
        tiny_model_dir,
        "synth://?fps=15&size=320x240&seed=1",
        capacity=6,
        max_new_tokens=16,
        options=RuntimeOptions(),
    )
    with running(rt, 3, timeout=60):
        yield rt


@pytest.fixture(scope="module")
def client(tiny_runtime: EdgeRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_runtime)) as c:
        yield c


@pytest.fixture(scope="module")
def live_url(tiny_runtime: EdgeRuntime) -> Iterator[str]:
    with ServerThread(create_app(tiny_runtime)) as server:
        yield server.url


def check_answer(
    body: dict[str, Any], runtime: EdgeRuntime, options: dict[str, str] | None = None
) -> AskResponse:
    """What every answer must satisfy, whatever the model wrote."""
    a = AskResponse.model_validate(body)
    parsed = parse_answer(a.text, "".join(options) if options else None)
    assert a.format_ok == parsed.format_ok and a.answer == parsed.answer and a.think == parsed.think
    if not a.format_ok:
        assert a.problems, "a malformed answer must say what is wrong"
    assert a.frames and [f.index for f in a.frames] == list(range(1, len(a.frames) + 1))
    assert [f.t for f in a.frames] == sorted(f.t for f in a.frames)
    frame_ids = {f.id: f for f in a.frames}
    for c in a.cited:  # citations point at frames of the prompt, with their timestamps
        assert c.id in frame_ids and frame_ids[c.id].index == c.index and frame_ids[c.id].t == c.t
        assert c.thumbnail_url.endswith(f"/v1/keyframes/{c.id}.jpg")
    lat = a.latency
    assert lat.n_new_tokens >= 1 and lat.ttft_ms > 0 and lat.total_ms >= lat.ttft_ms > lat.queue_ms >= 0
    assert lat.prefill_ms > 0 and lat.decode_ms >= 0 and lat.n_prompt_tokens > lat.n_prefill_tokens > 0
    assert a.cached
    assert a.finish_reason == ("length" if lat.n_new_tokens >= 16 else "stop")
    # the frames shown were real buffer keyframes (ids the buffer handed out so far)
    assert max(frame_ids) <= runtime.engine.status().keyframes_selected
    return a


# --- the tiny model, end to end -------------------------------------------------------------------


def test_ask_over_http(client: TestClient, tiny_runtime: EdgeRuntime) -> None:
    r = client.post("/v1/ask", json={"question": "What did I pick up?", "options": OPTIONS})
    assert r.status_code == 200, r.text
    a = check_answer(r.json(), tiny_runtime, OPTIONS)
    assert a.options == OPTIONS and a.question == "What did I pick up?"


def test_ask_streams_tokens_then_the_answer(client: TestClient, tiny_runtime: EdgeRuntime) -> None:
    events = sse_events(client, {"question": "Where am I?"})
    kinds = [k for k, _ in events]
    assert kinds[-1] == "answer" and set(kinds[:-1]) <= {"token"} and len(kinds) >= 2
    a = check_answer(events[-1][1], tiny_runtime)
    assert "".join(d["text"] for k, d in events if k == "token") == a.text


def test_keyframes_and_thumbnails(client: TestClient) -> None:
    body = client.get("/v1/keyframes").json()
    assert body["keyframes"] and body["ingest"]["state"] == "running"
    assert body["ingest"]["frames_received"] >= body["ingest"]["frames_delivered"] > 0
    kf = body["keyframes"][0]
    r = client.get(f"/v1/keyframes/{kf['id']}.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (kf["width"], kf["height"])
    missing = client.get("/v1/keyframes/99999999.jpg")
    assert missing.status_code == 404 and "not in the buffer" in missing.json()["detail"]


def test_health_and_metrics(client: TestClient) -> None:
    client.post("/v1/ask", json={"question": "anything?"})
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["keyframes"] >= 3 and h["model"]["backend"] == "torch"
    text = client.get("/metrics").text
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[-1]) for line in text.splitlines() if line[:1] != "#"
    }
    assert metrics["egovlm_ingest_frames_received_total"] > 0
    assert metrics["egovlm_ingest_fps"] > 0
    assert "egovlm_ingest_frames_dropped_total" in metrics
    assert metrics["egovlm_buffer_keyframes"] >= 3
    assert metrics["egovlm_ask_seconds_count"] >= 1 and metrics["egovlm_ttft_seconds_count"] >= 1
    assert 'egovlm_ask_seconds_bucket{le="+Inf"}' in metrics


def test_bad_requests_are_rejected_with_reasons(client: TestClient) -> None:
    assert client.post("/v1/ask", json={"question": "  "}).status_code == 422
    r = client.post("/v1/ask", json={"question": "q", "options": {"AB": "x"}})
    assert r.status_code == 422 and "single capital letters" in r.text
    assert client.post("/v1/ask", json={"question": "q", "temperature": 2}).status_code == 422
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}
    r = client.post("/v1/chat/completions", json={"messages": [image]})
    assert r.status_code == 400 and "image_url" in r.json()["detail"]


def test_answers_longer_than_the_device_plan_are_refused_up_front(
    client: TestClient, tiny_runtime: EdgeRuntime
) -> None:
    """The profile's max_new_tokens (16 here) is what the device's memory plan reserves: a request may
    ask for fewer, never more; refused with the limit before the model or a stream starts."""
    for stream in (False, True):
        r = client.post("/v1/ask", json={"question": "q", "max_new_tokens": 17, "stream": stream})
        assert r.status_code == 422 and "limit of 16" in r.json()["detail"], r.text
    chat = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 100}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 422 and "limit of 16" in r.json()["detail"]
    ok = client.post("/v1/ask", json={"question": "q", "max_new_tokens": 16})
    assert ok.status_code == 200 and ok.json()["latency"]["n_new_tokens"] <= 16
    with pytest.raises(AnswerTooLongError, match="limit of 16"):
        tiny_runtime.engine.ask("q", max_new_tokens=17)


def test_openai_client_unchanged(live_url: str, tiny_runtime: EdgeRuntime) -> None:
    from openai import OpenAI

    oa = OpenAI(base_url=f"{live_url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in oa.models.list()] == [tiny_runtime.model_name]
    q = "What did I pick up?\nA. a yellow banana\nB. a red cup\nC. a blue book"
    resp = oa.chat.completions.create(
        model=tiny_runtime.model_name, messages=[{"role": "user", "content": q}]
    )
    content = resp.choices[0].message.content
    assert isinstance(content, str) and resp.choices[0].finish_reason in ("stop", "length")
    extra = check_answer(resp.model_extra["egovlm"], tiny_runtime, OPTIONS)  # type: ignore[index]
    assert extra.text == content and extra.options == OPTIONS and extra.question == "What did I pick up?"
    assert resp.usage is not None and resp.usage.completion_tokens == extra.latency.n_new_tokens

    stream = oa.chat.completions.create(
        model=tiny_runtime.model_name, messages=[{"role": "user", "content": "Where am I?"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    assert final.choices[0].finish_reason in ("stop", "length")
    assert check_answer(final.model_extra["egovlm"], tiny_runtime).text == text  # type: ignore[index]


def test_edge_ask_cli(live_url: str, tiny_runtime: EdgeRuntime) -> None:
    from egovlm.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["edge", "ask", "What did I pick up?", "-o", "A=a banana", "-o", "B=a cup",
                            "--url", live_url, "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    a = check_answer(json.loads(r.output), tiny_runtime, {"A": "a banana", "B": "a cup"})
    assert a.options == {"A": "a banana", "B": "a cup"}
    r = runner.invoke(app, ["edge", "ask", "Where am I?", "--url", live_url])
    assert r.exit_code == 0, r.output
    assert "answer:" in r.output and "latency: TTFT" in r.output and "tok/s" in r.output
    r = runner.invoke(app, ["edge", "ask", "q", "-o", "banana", "--url", live_url])
    assert r.exit_code != 0 and "LETTER=text" in r.output


def test_edge_ask_without_a_server_says_how_to_start_one() -> None:
    from egovlm.cli import app
    from tests.edge.edge_fakes import free_port

    r = CliRunner().invoke(app, ["edge", "ask", "q", "--url", f"http://127.0.0.1:{free_port()}"])
    assert r.exit_code == 1 and "egovlm edge run" in r.output


# --- scripted backend: citations, auth, admission, a slow question ---------------------------------


@pytest.fixture
def scripted() -> Iterator[EdgeRuntime]:
    rt = EdgeRuntime(scripted_engine(capacity=50), "synth://?fps=20&size=160x120&seed=2")
    with running(rt, 2, timeout=30):
        yield rt


def test_cited_keyframes_and_their_thumbnails_survive_eviction(scripted: EdgeRuntime) -> None:
    with TestClient(create_app(scripted)) as c:
        body = c.post("/v1/ask", json={"question": "q", "options": OPTIONS}).json()
        a = AskResponse.model_validate(body)
        assert a.format_ok and a.answer == "B" and a.problems == []
        n = len(a.frames)
        assert [x.index for x in a.cited] == [n - 1, n] and [x.id for x in a.cited] == [
            f.id for f in a.frames[-2:]
        ]
        scripted.engine.buffer.clear()  # the cited frames leave the buffer...
        for cited in a.cited:  # ...their thumbnails stay available for the answer that cited them
            assert c.get(f"/v1/keyframes/{cited.id}.jpg").status_code == 200


def test_token_is_required_everywhere_but_health(scripted: EdgeRuntime) -> None:
    with TestClient(create_app(scripted, token="s3cret")) as c:
        for method, path, body in [
            ("GET", "/v1/keyframes", None),
            ("POST", "/v1/ask", {"question": "q"}),
            ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}]}),
            ("GET", "/metrics", None),
        ]:
            assert c.request(method, path, json=body).status_code == 401
            wrong = c.request(method, path, json=body, headers={"Authorization": "Bearer s3cre"})
            assert wrong.status_code == 401
            ok = c.request(method, path, json=body, headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200, (path, ok.text)
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


def test_chat_messages_become_question_and_options() -> None:
    def ask(text: str) -> tuple[str, dict[str, str] | None]:
        return question_from_chat(ChatCompletionRequest(messages=[ChatMessage(role="user", content=text)]))

    assert ask("What did I pick up?\nOptions:\nA. a cup\nB) a plate\n(C) a book") == (
        "What did I pick up?",
        {"A": "a cup", "B": "a plate", "C": "a book"},
    )
    assert ask("A. only one option") == ("A. only one option", None)
    assert ask("Where am I?") == ("Where am I?", None)


def test_questions_beyond_the_queue_get_429(tmp_path: Path) -> None:
    rt = EdgeRuntime(
        scripted_engine(token_delay_s=0.05), "synth://?fps=20&size=160x120", RuntimeOptions(max_pending=1)
    )
    rt.start()
    try:
        assert rt.wait_for_keyframes(2, timeout=30)
        with TestClient(create_app(rt)) as c:
            first = threading.Thread(target=lambda: c.post("/v1/ask", json={"question": "slow"}))
            first.start()
            time.sleep(0.3)
            r = c.post("/v1/ask", json={"question": "second"})
            assert r.status_code == 429 and "waiting" in r.json()["detail"]
            first.join()
            assert c.post("/v1/ask", json={"question": "third"}).status_code == 200
    finally:
        rt.stop()


def test_ingest_keeps_running_and_counts_drops_during_a_slow_question() -> None:
    engine = scripted_engine(token_delay_s=0.1)  # ~25 pieces: a 2.5 s answer, holding the model
    add_frame = engine.add_frame

    def slow_add_frame(t: float, rgb: Any) -> Any:  # a consumer slower than the camera: 20 vs 30 fps
        time.sleep(0.05)
        return add_frame(t, rgb)

    engine.add_frame = slow_add_frame
    rt = EdgeRuntime(engine, "synth://?fps=30&size=160x120&seed=3")
    rt.start()
    try:
        assert rt.wait_for_keyframes(2, timeout=30)
        with ServerThread(create_app(rt)) as server:
            before = rt.ingest_stats()
            result: dict[str, Any] = {}
            t0 = time.monotonic()
            asker = threading.Thread(
                target=lambda: result.update(
                    r=httpx.post(f"{server.url}/v1/ask", json={"question": "q"}, timeout=30)
                )
            )
            asker.start()
            time.sleep(0.5)
            # the API stays responsive while the model is busy
            t1 = time.monotonic()
            assert httpx.get(f"{server.url}/v1/keyframes", timeout=5).status_code == 200
            assert time.monotonic() - t1 < 1.0
            asker.join(30)
            elapsed = time.monotonic() - t0
            after = rt.ingest_stats()
    finally:
        rt.stop()
    assert before is not None and after is not None
    assert result["r"].status_code == 200 and AskResponse.model_validate(result["r"].json()).format_ok
    assert elapsed > 2.0, "the question was not slow"
    received = after.frames_received - before.frames_received
    delivered = after.frames_delivered - before.frames_delivered
    dropped = after.frames_dropped - before.frames_dropped
    print(
        f"during a {elapsed:.1f} s question: {received} frames received, {delivered} delivered, {dropped} dropped"
    )
    assert received >= 0.7 * 30 * elapsed, f"the camera stalled: {received} frames in {elapsed:.1f} s"
    assert delivered >= 0.5 * 20 * elapsed, f"the consumer stalled: {delivered} frames in {elapsed:.1f} s"
    assert dropped > 0 and received - delivered - dropped <= 2


def test_question_before_any_keyframe_is_503() -> None:
    rt = EdgeRuntime(scripted_engine(), None)  # no source: the buffer stays empty
    rt.start()
    try:
        with TestClient(create_app(rt)) as c:
            r = c.post("/v1/ask", json={"question": "anything yet?"})
            assert r.status_code == 503 and "no keyframes" in r.json()["detail"]
            assert c.get("/healthz").json()["status"] == "starting"
            assert c.get("/v1/keyframes").json() == {"version": 0, "keyframes": [], "ingest": None}
    finally:
        rt.stop()


def test_the_transcript_response_is_the_transcript_plus_the_question_asked() -> None:
    """TranscriptInfo adds one field to the speech model's Transcript (the question without a
    wake phrase, from the voice turn); every other field is the Transcript's."""
    assert [n for n in TranscriptInfo.model_fields if n != "question"] == [f.name for f in fields(Transcript)]


def test_runtime_dataclasses_are_the_response_schemas_with_their_descriptions() -> None:
    """``/healthz`` and ``/v1/keyframes`` show the runtime's dataclasses as they are: the OpenAPI
    schema is built from them (every field, the attribute docstrings as descriptions)."""
    rt = EdgeRuntime(scripted_engine(), None)
    schemas = create_app(rt).openapi()["components"]["schemas"]
    for source in (ComponentHealth, IngestStats):
        assert list(schemas[source.__name__]["properties"]) == [f.name for f in fields(source)]
    health = schemas["ComponentHealth"]["properties"]
    assert health["last_error_age_s"]["description"] == "wall seconds since last_error"
    assert schemas["HealthResponse"]["properties"]["components"]["additionalProperties"] == {
        "$ref": "#/components/schemas/ComponentHealth"
    }
    voice = VoiceStatusResponse.model_json_schema()["$defs"]  # the voice routes' (mounted with --voice)
    for voice_type in (VoiceLatency, AudioSourceStats):
        assert list(voice[voice_type.__name__]["properties"]) == [f.name for f in fields(voice_type)]
    assert voice["VoiceLatency"]["properties"]["transcript_ms"]["description"] == "end of speech → transcript"
