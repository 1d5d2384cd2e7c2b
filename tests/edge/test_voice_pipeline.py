"""Live listening: an espeak-ng question played from a file through GStreamer (as a microphone
would deliver it) → VAD → Whisper tiny.en → the runtime (scripted backend inside the real
Engine) → a spoken answer. Also the wake phrase, push-to-talk (HTTP and keyboard), a new
question interrupting the spoken answer, a failing microphone, and ``edge run --mic``."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from egovlm.cli import app as root_app
from egovlm.edge.runtime import EdgeRuntime
from egovlm.edge.server import create_app
from egovlm.edge.voice.asr import AsrOptions, Transcriber
from egovlm.edge.voice.audio import SAMPLE_RATE, write_wav
from egovlm.edge.voice.keyboard import start_keyboard_ptt
from egovlm.edge.voice.pipeline import VoiceAssistant, VoiceOptions, VoiceTurn, answer_to_speech
from egovlm.edge.voice.tts import AudioOut, EspeakTts, Speaker, spoken_clip
from egovlm.edge.voice.vad import VadOptions
from egovlm.edge.voice.wake import words
from tests.edge.edge_fakes import running, scripted_engine

pytest.importorskip("faster_whisper")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

QUESTION = "What did I pick up last?"


@pytest.fixture(scope="module")
def asr() -> Transcriber:
    return Transcriber(AsrOptions(threads=2))


@pytest.fixture(scope="module")
def runtime() -> Iterator[EdgeRuntime]:
    rt = EdgeRuntime(scripted_engine(capacity=6), "synth://?fps=15&size=320x240&seed=5")
    with running(rt, 3, timeout=30):
        yield rt


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    q = spoken_clip(QUESTION, lead_s=0.5, tail_s=1.0)
    woken = spoken_clip("Hey Ego, " + QUESTION, lead_s=0.3, tail_s=1.0)
    paths = {
        "question": write_wav(d / "question.wav", q),
        "two": write_wav(d / "two.wav", np.concatenate([q, spoken_clip("Where did I put the keys?")])),
        "wake": write_wav(d / "wake.wav", np.concatenate([q, woken])),
        "silence": write_wav(d / "silence.wav", np.zeros(2 * SAMPLE_RATE, np.float32)),
    }
    return paths


def assistant(runtime: EdgeRuntime, asr: Transcriber, out: str = "null", **options: object) -> VoiceAssistant:
    return VoiceAssistant(runtime, asr, Speaker(EspeakTts(), AudioOut(out)), VoiceOptions(**options))  # type: ignore[arg-type]


def answered(turn: VoiceTurn) -> None:
    assert turn.error is None and turn.ignored is None, (turn.error, turn.ignored)
    assert turn.answer is not None and turn.answer.parsed.format_ok and turn.answer.parsed.answer == "B"
    assert turn.spoken_text and turn.spoken_text.startswith("B.")
    lat = turn.latency
    assert lat is not None and lat.asr_ms > 0 and lat.decode_ms == 0 and lat.vad_ms == 0
    assert lat.transcript_ms >= lat.asr_ms + lat.endpoint_ms - 5  # ms rounding between clocks
    assert lat.answer_ms >= lat.first_token_ms >= lat.transcript_ms
    assert lat.spoken_ms is not None and lat.tts_ms is not None and lat.spoken_ms >= lat.answer_ms


def test_file_source_question_is_heard_answered_and_spoken(
    runtime: EdgeRuntime, asr: Transcriber, clips: dict[str, Path], tmp_path: Path
) -> None:
    va = assistant(runtime, asr, f"dir:{tmp_path}", vad=VadOptions(min_silence_ms=500))
    va.listen(f"file://{clips['question']}")  # realtime: paced like a microphone
    try:
        assert va.wait_for_turns(1, 60)
        turn = va.history[-1]
        assert turn.trigger == "vad" and turn.transcript is not None
        assert {"what", "pick", "up", "last"} <= set(words(turn.transcript.text)), turn.transcript.text
        answered(turn)
        assert turn.latency is not None and 450 <= turn.latency.endpoint_ms <= 900  # min_silence_ms + a block
        assert turn.speech is not None and turn.speech.result is not None
        spoken = turn.speech.result.path
        assert spoken is not None and spoken.parent == tmp_path and spoken.stat().st_size > 10_000
    finally:
        va.stop()
    assert not va.listening and va.state == "idle"


def test_two_questions_become_two_turns(
    runtime: EdgeRuntime, asr: Transcriber, clips: dict[str, Path]
) -> None:
    va = assistant(runtime, asr, speak=False)
    va.listen(f"file://{clips['two']}?realtime=0")
    try:
        assert va.wait_for_turns(2, 60)
        first, second = list(va.history)
        assert "pick" in words(first.transcript.text) and "keys" in words(second.transcript.text)  # type: ignore[union-attr]
        assert first.answer is not None and second.answer is not None and first.speech is None
    finally:
        va.stop()


def test_wake_phrase_gates_always_on_listening(
    runtime: EdgeRuntime, asr: Transcriber, clips: dict[str, Path]
) -> None:
    va = assistant(runtime, asr, speak=False, wake_phrase="hey ego")
    va.listen(f"file://{clips['wake']}?realtime=0")
    try:
        assert va.wait_for_turns(2, 60)
        plain, woken = list(va.history)
        assert (
            plain.ignored and "does not start with the wake phrase" in plain.ignored and plain.answer is None
        )
        assert woken.ignored is None and woken.answer is not None and woken.question is not None
        assert woken.question.lower().startswith("what did i pick up")  # the wake phrase is not asked
        assert woken.answer.question == woken.question
    finally:
        va.stop()


def test_new_speech_interrupts_the_spoken_answer(
    runtime: EdgeRuntime, asr: Transcriber, clips: dict[str, Path]
) -> None:
    va = assistant(runtime, asr)  # null sink: speaks in real time
    assert va.speaker is not None
    long_answer = va.speaker.speak("Here is a very long answer about everything you did today. " * 4)
    assert long_answer.started.wait(10) and va.speaker.speaking
    va.listen(f"file://{clips['question']}?realtime=0")
    try:
        assert long_answer.done.wait(5) and long_answer.interrupted  # speech onset stopped it
        assert va.wait_for_turns(1, 60)
        answered(va.history[-1])
    finally:
        va.stop()


def test_push_to_talk_over_http(runtime: EdgeRuntime, asr: Transcriber, clips: dict[str, Path]) -> None:
    va = assistant(runtime, asr, speak=False, listen="ptt")
    with TestClient(create_app(runtime, voice=va)) as c:
        va.listen(f"file://{clips['question']}")  # realtime, push-to-talk only
        try:
            r = c.post("/v1/voice/ptt", json={"pressed": True})
            assert r.status_code == 200 and r.json() == {"pressed": True, "queued": False}
            status = c.get("/v1/voice").json()
            assert (
                status["ptt_pressed"]
                and status["listen_mode"] == "ptt"
                and status["source"]["state"]
                in (
                    "starting",
                    "running",
                )
            )
            assert va._source is not None and va._source.wait_ended(20)
            assert va.turns == 0  # nothing is a question until the key is released
            r = c.post("/v1/voice/ptt", json={"pressed": False})
            assert r.status_code == 200 and r.json()["queued"] is True
            assert va.wait_for_turns(1, 60)
            turn = va.history[-1]
            assert turn.trigger == "ptt" and "pick" in words(turn.transcript.text)  # type: ignore[union-attr]
            assert turn.answer is not None and turn.latency is not None and turn.latency.endpoint_ms == 0
            assert turn.latency.vad_ms > 0  # push-to-talk audio is checked for speech
            body = c.get("/v1/voice").json()
            assert body["turns"][0]["trigger"] == "ptt" and body["turns"][0]["answer"]["answer"] == "B"
            assert c.post("/v1/voice/ptt", json={"pressed": "maybe"}).status_code == 422
        finally:
            va.stop()


def test_push_to_talk_on_silence_is_no_question(
    runtime: EdgeRuntime, asr: Transcriber, clips: dict[str, Path]
) -> None:
    va = assistant(runtime, asr, speak=False, listen="ptt")
    va.listen(f"file://{clips['silence']}")
    try:
        va.push_to_talk(True)
        assert va._source is not None and va._source.wait_ended(20)
        assert va.push_to_talk(False)
        assert va.wait_for_turns(1, 30)
        turn = va.history[-1]
        assert turn.ignored and "no speech detected" in turn.ignored and turn.transcript is None
    finally:
        va.stop()


def test_keyboard_enter_toggles_push_to_talk() -> None:
    calls: list[bool] = []
    said: list[str] = []

    class Fake:
        def push_to_talk(self, pressed: bool) -> bool:
            calls.append(pressed)
            return not pressed

    start_keyboard_ptt(Fake(), io.StringIO("\n\n\n"), echo=said.append).join(5)
    assert calls == [True, False, True, False]  # the stream closed while pressed: released
    assert said[0].startswith("push-to-talk") and "listening" in said[1] and said[2] == "asking"


def test_a_missing_microphone_keeps_retrying_without_hurting_the_runtime(
    runtime: EdgeRuntime, asr: Transcriber
) -> None:
    va = assistant(runtime, asr)
    va.listen("pulse://no-such-device")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and va.source_stats().errors == 0:
            time.sleep(0.05)
        st = va.source_stats()
        assert st.errors >= 1 and st.state in ("reconnecting", "starting") and st.last_error
        assert runtime.ask("still there?").parsed.format_ok
    finally:
        va.stop()


def test_questions_before_any_keyframe_are_logged_not_fatal(asr: Transcriber, clips: dict[str, Path]) -> None:
    rt = EdgeRuntime(scripted_engine(), None).start()  # no camera: the buffer stays empty
    try:
        va = assistant(rt, asr, speak=False)
        va.listen(f"file://{clips['two']}?realtime=0")
        assert va.wait_for_turns(2, 60)
        assert all(t.error and "no keyframes" in t.error for t in va.history)
        va.stop()
    finally:
        rt.stop()


def test_answer_to_speech_wording() -> None:
    from egovlm.contract import parse_answer
    from egovlm.edge.engine import CitedFrame

    class A:
        def __init__(self, text: str, options: dict[str, str] | None, cited: tuple[CitedFrame, ...]) -> None:
            self.parsed, self.options, self.cited = parse_answer(text), options, cited

    cited = (CitedFrame(2, 7, 10.0), CitedFrame(3, 9, 14.0))
    ok = "<think>x</think><keyframes>2, 3</keyframes><answer>B</answer>"
    assert answer_to_speech(A(ok, {"B": "a red cup"}, cited), 34.2) == "B: a red cup. Seen 20 seconds ago."
    assert answer_to_speech(A(ok, None, cited), 15.0) == "B. Seen 1 second ago."
    assert answer_to_speech(A(ok, None, cited), 14.5) == "B. Seen just now."
    assert answer_to_speech(A(ok, None, cited), None) == "B. Seen at 14 seconds."
    assert answer_to_speech(A("noise", None, ()), 3.0) == "Sorry, I could not work that out."


def test_edge_run_mic_dry_run_prints_both_pipelines(clips: dict[str, Path]) -> None:
    args = ["edge", "run", "--dry-run", "--source", "test://", "--mic", f"file://{clips['question']}"]
    res = CliRunner().invoke(root_app, args)
    assert res.exit_code == 0, res.output
    video, audio = res.output.strip().splitlines()
    assert video.startswith("videotestsrc") and audio.startswith(f'filesrc location="{clips["question"]}"')
    assert "audioresample ! audio/x-raw,format=F32LE,rate=16000,channels=1" in audio
    res = CliRunner().invoke(root_app, ["edge", "run", "--dry-run", "--mic", "speakers"])
    assert res.exit_code == 2 and "not a URI" in res.output
    res = CliRunner().invoke(root_app, ["edge", "run", "--dry-run", "--mic", "mic://", "--listen", "always"])
    assert res.exit_code == 2 and "vad or ptt" in res.output
