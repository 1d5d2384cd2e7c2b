"""``POST /v1/ask/audio`` and the voice routes: an espeak-ng question uploaded as WAV/OGG (raw
body or multipart) is transcribed by the real Whisper tiny.en and answered through the same
question path as text. The answer's format comes from the scripted backend (a random-init
model emits noise); one test runs the real tiny Qwen2.5-VL and checks the structure only.

Bad audio (empty, not audio, too large, too long, silence) gets a clear 4xx and the runtime
keeps answering."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from egovlm.cli import app as root_app
from egovlm.contract import parse_answer
from egovlm.edge.api_models import AudioAskResponse, VoiceStatusResponse
from egovlm.edge.runtime import EdgeRuntime, build_runtime
from egovlm.edge.server import create_app
from egovlm.edge.voice.asr import AsrOptions, Transcriber
from egovlm.edge.voice.audio import SAMPLE_RATE, wav_bytes
from egovlm.edge.voice.pipeline import VoiceAssistant, VoiceOptions
from egovlm.edge.voice.tts import AudioOut, EspeakTts, Speaker, spoken_clip
from egovlm.edge.voice.wake import words
from tests.edge.edge_fakes import ServerThread, asgi_post_scope, running, scripted_engine

pytest.importorskip("faster_whisper")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

OPTIONS = {"A": "a yellow banana", "B": "a red cup", "C": "a blue book"}
MAX_BYTES = 2 * 1024 * 1024
MAX_SECONDS = 8.0


@pytest.fixture(scope="module")
def asr() -> Transcriber:
    return Transcriber(AsrOptions(threads=2))


@pytest.fixture(scope="module")
def question_wav() -> bytes:
    return wav_bytes(spoken_clip("What did I pick up last?"))


@pytest.fixture(scope="module")
def runtime() -> Iterator[EdgeRuntime]:
    rt = EdgeRuntime(scripted_engine(capacity=6), "synth://?fps=15&size=320x240&seed=2")
    with running(rt, 3, timeout=30):
        yield rt


@pytest.fixture(scope="module")
def voice(runtime: EdgeRuntime, asr: Transcriber, tmp_path_factory: pytest.TempPathFactory) -> VoiceAssistant:
    out = tmp_path_factory.mktemp("spoken")
    opts = VoiceOptions(max_upload_bytes=MAX_BYTES, max_duration_s=MAX_SECONDS)
    return VoiceAssistant(runtime, asr, Speaker(EspeakTts(), AudioOut(f"dir:{out}")), opts)


@pytest.fixture(scope="module")
def client(runtime: EdgeRuntime, voice: VoiceAssistant) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, voice=voice)) as c:
        yield c


def check_spoken_answer(body: dict[str, Any], letter: str = "B") -> AudioAskResponse:
    a = AudioAskResponse.model_validate(body)
    assert {"what", "pick", "up", "last"} <= set(words(a.transcript.text)), a.transcript.text
    assert a.question == a.transcript.question == a.transcript.text  # the transcript is the question
    parsed = parse_answer(a.text, "".join(a.options) if a.options else None)
    assert a.format_ok and parsed.format_ok and a.answer == parsed.answer == letter
    frames = {f.id: f for f in a.frames}
    assert a.cited and all(c.id in frames and frames[c.id].index == c.index for c in a.cited)
    v = a.voice_latency
    assert v.asr_ms > 0 and abs(v.audio_s - a.transcript.audio_s) < 1e-6
    assert v.decode_ms > 0 and v.vad_ms > 0 and v.endpoint_ms == 0  # an upload: decoded, checked
    assert v.transcript_ms >= v.asr_ms + v.decode_ms
    assert v.first_token_ms >= v.transcript_ms and v.answer_ms >= v.first_token_ms
    assert abs(v.first_token_ms - (v.transcript_ms + v.ttft_ms)) < 1.0
    return a


def test_raw_wav_body(client: TestClient, question_wav: bytes) -> None:
    r = client.post("/v1/ask/audio", content=question_wav, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    a = check_spoken_answer(r.json())
    assert a.options is None and a.spoken_text and a.spoken_text.startswith("B.")
    assert a.voice_latency.spoken_ms is None and a.voice_latency.tts_ms is None  # speak=false


def test_multipart_ogg_with_options_spoken_on_the_device(
    client: TestClient, question_wav: bytes, tmp_path: Path, asr: Transcriber
) -> None:
    src = tmp_path / "q.wav"
    src.write_bytes(question_wav)
    ogg = tmp_path / "q.ogg"
    cmd = f"gst-launch-1.0 -q filesrc location={src} ! wavparse ! audioconvert ! vorbisenc ! oggmux ! filesink location={ogg}"
    subprocess.run(cmd.split(), check=True, timeout=60)
    r = client.post(
        "/v1/ask/audio",
        files={"audio": ("q.ogg", ogg.read_bytes(), "audio/ogg")},
        data={"options": json.dumps(OPTIONS), "max_new_tokens": "200"},
        params={"speak": "true"},
    )
    assert r.status_code == 200, r.text
    a = check_spoken_answer(r.json())
    assert a.options == OPTIONS and a.spoken_text and a.spoken_text.startswith("B: a red cup.")
    v = a.voice_latency
    assert v.tts_ms is not None and v.spoken_ms is not None and v.spoken_ms >= v.answer_ms


def test_bad_audio_gets_clear_4xx_and_the_runtime_keeps_answering(
    client: TestClient, question_wav: bytes, runtime: EdgeRuntime
) -> None:
    post = client.post
    r = post("/v1/ask/audio", content=b"", headers={"Content-Type": "audio/wav"})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = post("/v1/ask/audio", content=b"\x89PNG\r\n\x1a\n" + bytes(64), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 415 and "not WAV, OGG" in r.json()["detail"]
    r = post("/v1/ask/audio", json={"question": "what?"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = post("/v1/ask/audio", content=bytes(MAX_BYTES + 1), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    ten_seconds = wav_bytes(np.tile(spoken_clip("What did I pick up last?"), 4)[: int(10 * SAMPLE_RATE)])
    assert len(ten_seconds) < MAX_BYTES
    r = post("/v1/ask/audio", content=ten_seconds, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 413 and "8 s limit" in r.json()["detail"]
    r = post("/v1/ask/audio", content=wav_bytes(np.zeros(3 * SAMPLE_RATE, np.float32)))
    assert r.status_code == 422 and "no speech detected" in r.json()["detail"]
    noise = np.random.default_rng(0).normal(0, 0.05, 2 * SAMPLE_RATE).astype(np.float32)
    r = post("/v1/ask/audio", content=wav_bytes(noise))
    assert r.status_code == 422 and "no speech" in r.json()["detail"]
    r = post("/v1/ask/audio", files={"file": ("q.wav", question_wav)})
    assert r.status_code == 400 and "no file field 'audio'" in r.json()["detail"]
    r = post("/v1/ask/audio", content=question_wav, params={"options": "{A: cup"})
    assert r.status_code == 422 and "options" in r.json()["detail"]
    r = post("/v1/ask/audio", content=question_wav, params={"options": '{"a": "lower"}'})
    assert r.status_code == 422 and "single capital letters" in r.json()["detail"]
    # still up, nothing stuck in the queue, and a good question is answered
    assert client.get("/healthz").json()["status"] == "ok" and runtime.pending == 0
    r = post("/v1/ask/audio", content=question_wav)
    assert r.status_code == 200, r.text
    check_spoken_answer(r.json())


def test_voice_status_lists_recent_turns(client: TestClient, question_wav: bytes) -> None:
    client.post("/v1/ask/audio", content=wav_bytes(np.zeros(SAMPLE_RATE, np.float32)))
    r = client.post("/v1/ask/audio", content=question_wav, params={"options": json.dumps(OPTIONS)})
    assert r.status_code == 200
    status = VoiceStatusResponse.model_validate(client.get("/v1/voice").json())
    assert status.enabled and status.source is None and status.listen_mode is None
    assert (
        status.asr
        and status.asr["compute_type"] == "int8"
        and status.tts
        == {
            "tts": "espeak-ng",
            "audio_out": status.tts["audio_out"],
        }
    )
    latest, before = status.turns[0], status.turns[1]
    assert latest.trigger == "upload" and latest.answer is not None and latest.answer.answer == "B"
    assert latest.transcript and "pick" in latest.transcript.text.lower() and latest.voice_latency
    assert before.ignored and "no speech" in before.ignored and before.answer is None
    r = client.post("/v1/voice/ptt", json={"pressed": True})
    assert r.status_code == 409 and "--mic" in r.json()["detail"]
    assert client.post("/v1/voice/stop").json() == {"stopped": False}


def test_without_voice_the_routes_say_how_to_enable_it(runtime: EdgeRuntime, question_wav: bytes) -> None:
    with TestClient(create_app(runtime)) as c:
        r = c.post("/v1/ask/audio", content=question_wav)
        assert r.status_code == 503 and "--voice" in r.json()["detail"]
        assert c.get("/v1/voice").json()["enabled"] is False


def test_token_guards_the_voice_routes(
    runtime: EdgeRuntime, voice: VoiceAssistant, question_wav: bytes
) -> None:
    with TestClient(create_app(runtime, token="s3cret", voice=voice)) as c:
        assert c.post("/v1/ask/audio", content=question_wav).status_code == 401
        assert c.get("/v1/voice").status_code == 401
        ok = c.get("/v1/voice", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["enabled"] is True


def test_busy_runtime_refuses_before_transcribing(question_wav: bytes, asr: Transcriber) -> None:
    from egovlm.edge.runtime import RuntimeOptions

    rt = EdgeRuntime(scripted_engine(), None, RuntimeOptions(max_pending=0))
    va = VoiceAssistant(rt, asr)
    with TestClient(create_app(rt, voice=va)) as c:
        r = c.post("/v1/ask/audio", content=question_wav)
        assert r.status_code == 429 and va.turns == 0  # nothing was transcribed


def _asgi_upload(app: Any, chunks: Iterator[bytes], headers: dict[str, str]) -> tuple[int, int]:
    """Drive the ASGI app directly with a streamed body; return (status, chunks it pulled)."""
    pulled = 0
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = asgi_post_scope("/v1/ask/audio", headers)
    asyncio.run(app(scope, receive, send))
    return status[0], pulled


def test_a_huge_body_is_cut_off_while_it_arrives(runtime: EdgeRuntime, voice: VoiceAssistant) -> None:
    app = create_app(runtime, voice=voice)
    chunk = bytes(64 * 1024)
    endless = (chunk for _ in range(10_000))  # 640 MB if read to the end
    status, pulled = _asgi_upload(app, endless, {"content-type": "audio/wav"})
    assert status == 413 and pulled == MAX_BYTES // len(chunk) + 1
    endless = (chunk for _ in range(10_000))
    form = {"content-type": "multipart/form-data; boundary=xyz"}
    status, pulled = _asgi_upload(app, endless, form)
    assert status in (400, 413) and pulled <= (MAX_BYTES + 64 * 1024) // len(chunk) + 1
    big = {"content-type": "audio/wav", "content-length": str(100 * MAX_BYTES)}
    status, pulled = _asgi_upload(app, iter([chunk]), big)
    assert status == 413 and pulled == 0  # refused from the header alone


def test_edge_ask_audio_cli(
    runtime: EdgeRuntime, voice: VoiceAssistant, question_wav: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "question.wav"
    path.write_bytes(question_wav)
    with ServerThread(create_app(runtime, voice=voice)) as server:
        args = ["edge", "ask-audio", str(path), "--url", server.url, "-o", "A=a banana", "-o", "B=a red cup"]
        res = CliRunner().invoke(root_app, args)
        assert res.exit_code == 0, res.output
        assert "heard:   'What did I pick up last?'" in res.output and "answer:  B. a red cup" in res.output
        assert "first token" in res.output and "after the end of speech" in res.output
        silent = tmp_path / "silence.wav"
        silent.write_bytes(wav_bytes(np.zeros(SAMPLE_RATE, np.float32)))
        res = CliRunner().invoke(root_app, ["edge", "ask-audio", str(silent), "--url", server.url])
        assert res.exit_code == 1 and "422" in res.output and "no speech" in res.output


def test_real_tiny_model_answers_a_spoken_question(
    tiny_model_dir: Path, asr: Transcriber, question_wav: bytes
) -> None:
    """The random-init tiny Qwen2.5-VL: structure only (its text is noise)."""
    rt = build_runtime(tiny_model_dir, "synth://?fps=15&size=320x240&seed=3", capacity=4, max_new_tokens=12)
    rt.start()
    try:
        assert rt.wait_for_keyframes(2, timeout=60), rt.status_line()
        with TestClient(create_app(rt, voice=VoiceAssistant(rt, asr))) as c:
            r = c.post("/v1/ask/audio", files={"audio": ("q.wav", io.BytesIO(question_wav), "audio/wav")})
        assert r.status_code == 200, r.text
        a = AudioAskResponse.model_validate(r.json())
        assert "pick" in words(a.transcript.text) and a.question == a.transcript.text
        parsed = parse_answer(a.text)
        assert a.format_ok == parsed.format_ok and (a.format_ok or a.problems)
        assert 1 <= a.latency.n_new_tokens <= 12 and a.frames and a.cached
        v = a.voice_latency
        assert v.first_token_ms >= v.transcript_ms > 0 and v.ttft_ms > 0 and v.spoken_ms is None
    finally:
        rt.stop()
