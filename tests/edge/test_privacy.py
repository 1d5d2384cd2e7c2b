"""Privacy (issue 21): pause and forget, retention by the wall clock, the visible capture state and
its hook, no-store thumbnails, spoken privacy commands and transcripts kept out of the log.

Runs the real runtime and Engine around the scripted model (edge_fakes.py), with EgoSynth frames
through GStreamer where frames must keep arriving (pause), and keyframes pushed directly where the
camera must be silent (retention when the camera stops)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from egovlm.edge.profile import ProfileError, load_profile
from egovlm.edge.runtime import EdgeRuntime, RuntimeOptions
from egovlm.edge.server import create_app
from egovlm.edge.voice.pipeline import privacy_command
from tests.edge.edge_fakes import running, scripted_engine, wait_until

SYNTH = "synth://?fps=20&size=320x240&seed=7"
QUESTION = {"question": "What did I pick up?", "options": {"A": "a cup", "B": "a book"}}


def pushed_runtime(n: int = 3, **options: object) -> EdgeRuntime:
    """No camera: ``n`` keyframes pushed in, then silence (as when the camera stops)."""
    rt = EdgeRuntime(scripted_engine(capacity=6), None, RuntimeOptions(**options))
    rt.start()
    rng = np.random.default_rng(3)
    for i in range(n):
        rt.engine.add_keyframe(1.0 + i, rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    assert rt.wait_for_keyframes(n, timeout=30), rt.status_line()
    return rt


@pytest.fixture
def live() -> Iterator[EdgeRuntime]:
    rt = EdgeRuntime(scripted_engine(capacity=6), SYNTH)
    with running(rt, 3, timeout=30):
        yield rt


def test_pause_stops_frames_before_the_engine_and_resume_restarts_them(live: EdgeRuntime) -> None:
    with TestClient(create_app(live)) as c:
        assert c.get("/healthz").json()["capture"] == "on"
        assert c.post("/v1/capture/pause").json() == {"capture": "paused"}
        received, seen = live.ingest_stats().frames_received, live.engine.status().frames_seen
        version = live.engine.buffer.version
        assert wait_until(lambda: live.ingest_stats().frames_received >= received + 10)
        assert live.engine.status().frames_seen == seen, "a frame reached the selector while paused"
        assert live.engine.buffer.version == version, "the buffer changed while paused"
        assert c.get("/healthz").json()["capture"] == "paused"
        assert c.get("/v1/capture").json() == {"capture": "paused"}
        assert live.status_line().endswith(" | capture paused")
        assert c.post("/v1/capture/resume").json() == {"capture": "on"}
        assert wait_until(lambda: live.engine.status().frames_seen > seen + 5)
        assert live.status_line().endswith(" | capture on")


def test_forget_leaves_nothing_reachable_through_any_endpoint() -> None:
    rt = pushed_runtime(3)
    try:
        with TestClient(create_app(rt)) as c:
            answer = c.post("/v1/ask", json=QUESTION).json()
            cited = [f["id"] for f in answer["cited"]]
            old = [k.id for k in rt.snapshot().keyframes]
            assert cited and all(c.get(f"/v1/keyframes/{i}.jpg").status_code == 200 for i in old)
            assert rt.engine.status().features_cached > 0
            r = c.delete("/v1/keyframes")
            assert r.status_code == 200 and r.json()["forgotten"] is True
            assert c.get("/v1/keyframes").json()["keyframes"] == []
            for kid in {*old, *cited, max(old) + 1}:  # cited thumbnails are kept after eviction: not these
                assert c.get(f"/v1/keyframes/{kid}.jpg").status_code == 404, kid
            status = rt.engine.status()
            assert status.features_cached == 0 and status.state_version is None and status.keyframes == 0
            assert c.post("/v1/ask", json=QUESTION).status_code == 503  # no frames left to answer from
            assert c.get("/healthz").json()["keyframes"] == 0
    finally:
        rt.stop()


def test_a_rebuild_running_when_forget_comes_is_discarded() -> None:
    rt = pushed_runtime(2)
    try:
        snapshot = rt.snapshot()
        rt.forget()
        assert rt.engine.refresh(snapshot) is None  # built from forgotten frames: thrown away
        assert rt.engine.status().state_version is None and rt.engine.status().features_cached == 0
    finally:
        rt.stop()


def test_retention_drops_keyframes_and_cited_thumbnails_when_the_camera_has_stopped() -> None:
    rt = pushed_runtime(3, retention_s=1.5)
    try:
        with TestClient(create_app(rt)) as c:
            cited = [f["id"] for f in c.post("/v1/ask", json=QUESTION).json()["cited"]]
            assert cited and c.get(f"/v1/keyframes/{cited[0]}.jpg").status_code == 200
            # no frame arrives any more: the housekeeping thread alone drops them by wall-clock age
            assert wait_until(lambda: len(rt.engine.buffer) == 0, timeout=5), rt.status_line()
            assert all(c.get(f"/v1/keyframes/{i}.jpg").status_code == 404 for i in cited)
            assert wait_until(lambda: rt.engine.status().state_version is None, timeout=5)
    finally:
        rt.stop()


def test_retention_counts_from_when_each_keyframe_was_taken() -> None:
    rt = pushed_runtime(2, retention_s=100.0)
    try:
        first, second = rt.snapshot().keyframes
        assert rt.jpeg(first.id) is not None and second.wall >= first.wall
        assert rt.enforce_retention(now=first.wall + 99.0) == 0  # both younger than 100 s
        # keyframe and thumbnail: two items, both older than 100 s; the second keyframe is not
        assert (
            rt.enforce_retention(now=max(first.wall + 100.0001, second.wall)) >= 2
            or second.wall == first.wall
        )
        assert first.id not in rt.snapshot().ids and rt.jpeg(first.id) is None
    finally:
        rt.stop()


def test_thumbnails_are_never_cached_by_a_browser() -> None:
    rt = pushed_runtime(1)
    try:
        with TestClient(create_app(rt)) as c:
            kid = rt.snapshot().keyframes[0].id
            r = c.get(f"/v1/keyframes/{kid}.jpg")
            assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    finally:
        rt.stop()


def test_the_capture_hook_runs_on_every_change(tmp_path: Path) -> None:
    led = tmp_path / "led.txt"
    hook = f"sh -c 'echo \"$0\" >> {led}'"  # the state is appended as the last argument ($0 of sh -c)
    rt = EdgeRuntime(scripted_engine(capacity=6), SYNTH, RuntimeOptions(capture_hook=hook))
    rt.start()
    try:
        lines = lambda: led.read_text().split() if led.exists() else []  # noqa: E731
        assert wait_until(lambda: lines() == ["on"], 10), lines()
        rt.pause()
        assert wait_until(lambda: lines() == ["on", "paused"], 10), lines()
        rt.resume()
        assert wait_until(lambda: lines() == ["on", "paused", "on"], 10), lines()
    finally:
        rt.stop()
    assert lines() == ["on", "paused", "on", "off"]


def test_privacy_settings_come_from_the_profile(tmp_path: Path) -> None:
    for name in ("cpu", "orin-nano", "orin-nx", "agx-orin", "thor"):
        privacy = load_profile(name).privacy
        assert privacy.retention_s == 600 and privacy.log_transcripts is False
    bad = tmp_path / "bad.yaml"
    text = (Path(load_profile("cpu").source)).read_text().replace("retention_s: 600", "retention_s: -1")
    bad.write_text(text)
    with pytest.raises(ProfileError, match="privacy.retention_s"):
        load_profile(bad)


@pytest.mark.parametrize(
    ("said", "command"),
    [
        ("Pause recording.", "pause"),
        ("pause recording", "pause"),
        ("Resume recording!", "resume"),
        ("Forget that.", "forget"),
        ("Did I forget that key?", None),
        ("What did I pick up?", None),
    ],
)
def test_privacy_commands_are_whole_utterances(said: str, command: str | None) -> None:
    assert privacy_command(said) == command


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_spoken_commands_pause_and_forget_and_transcripts_stay_out_of_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("faster_whisper")
    from egovlm.edge.voice.asr import AsrOptions, Transcriber
    from egovlm.edge.voice.audio import wav_bytes
    from egovlm.edge.voice.pipeline import VoiceAssistant, VoiceOptions
    from egovlm.edge.voice.tts import spoken_clip

    rt = pushed_runtime(3)
    va = VoiceAssistant(rt, Transcriber(AsrOptions(threads=2)), None, VoiceOptions())
    caplog.set_level(logging.INFO)
    try:
        with TestClient(create_app(rt, voice=va)) as c:

            def say(text: str) -> dict[str, object]:
                r = c.post("/v1/ask/audio", content=wav_bytes(spoken_clip(text)),
                           headers={"Content-Type": "audio/wav"})  # fmt: skip
                assert r.status_code == 200, r.text
                return dict(r.json())

            asked = say("What did I pick up last?")
            assert asked["answer"] == "B" and va.history  # a question: answered
            assert say("Pause recording.") == {
                "command": "pause", "spoken_text": "Recording paused.", "capture": "paused"
            }  # fmt: skip
            assert say("Forget that.")["command"] == "forget"
            assert len(rt.engine.buffer) == 0
            assert [t.command for t in va.history] == ["forget"]  # earlier turns forgotten too
            # "resume recording" works too, but espeak's "resume" reaches tiny.en as "re-boom"
            assert say("Start recording.")["command"] == "resume"
            assert rt.capture_state() == "off"  # resumed; no camera in this runtime
    finally:
        rt.stop()
    logged = caplog.text.lower()
    assert "heard (upload" in logged
    assert "pick up" not in logged and "pause recording" not in logged, caplog.text


def test_cli_pause_resume_forget_talk_to_the_server() -> None:
    from typer.testing import CliRunner

    from egovlm.cli import app
    from tests.edge.edge_fakes import ServerThread

    rt = pushed_runtime(2)
    try:
        with ServerThread(create_app(rt, token="cli-privacy-token-7Qx")) as s:

            def run(*args: str) -> str:
                r = CliRunner().invoke(
                    app, ["edge", *args, "--url", s.url, "--token", "cli-privacy-token-7Qx"]
                )
                assert r.exit_code == 0, r.output
                return r.output.strip()

            assert run("pause") == "capture paused" and rt.capture_state() == "paused"
            assert run("resume") == "capture off"  # resumed; this runtime has no camera
            assert run("forget") == "forgotten; capture off" and len(rt.engine.buffer) == 0
            bad = CliRunner().invoke(app, ["edge", "forget", "--url", s.url])  # no token: refused
            assert bad.exit_code == 1 and "401" in bad.output
    finally:
        rt.stop()


# What camera or audio content looks like on disk: image, audio and video containers, numpy arrays.
MEDIA_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG": "PNG",
    b"RIFF": "RIFF (WAV/WebP/AVI)",
    b"OggS": "Ogg",
    b"fLaC": "FLAC",
    b"\x1a\x45\xdf\xa3": "WebM/Matroska",
    b"\x93NUMPY": "numpy array",
    b"P6\n": "PPM",
}


def new_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def media_kind(path: Path) -> str | None:
    head = path.read_bytes()[:16]
    if head[4:8] == b"ftyp":
        return "MP4/MOV"
    return next((kind for magic, kind in MEDIA_MAGIC.items() if head.startswith(magic)), None)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_a_full_run_leaves_no_camera_or_audio_content_on_disk_or_in_the_log(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``egovlm edge run --voice`` with HOME, TMPDIR and the working directory in empty
    folders: frames flow, a question by text and one by voice (answer spoken to the null sink) are
    answered, thumbnails are fetched; then every file that appeared there is listed and none may
    be an image, audio, video or array, nor hold the question or the transcript; and the process's
    log holds neither."""
    pytest.importorskip("faster_whisper")
    import httpx

    from egovlm.edge.voice.audio import wav_bytes
    from egovlm.edge.voice.tts import spoken_clip
    from tests.live_server import edge_run

    home, tmp, cwd = (tmp_path / d for d in ("home", "tmp", "cwd"))
    for d in (home, tmp, cwd):
        d.mkdir()
    monkeypatch.chdir(cwd)  # the server inherits it
    env = {"HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
           "XDG_RUNTIME_DIR": str(tmp / "run")}  # fmt: skip
    (tmp / "run").mkdir()
    typed, spoken = "Which object is on the table?", "What did I pick up last?"
    log = tmp_path / "run.log"
    args = ["--model", str(tiny_model_dir), "--source", "synth://?fps=15&size=320x240&seed=2",
            "--max-new-tokens", "8", "--voice", "--audio-out", "null", "--status-every", "1"]  # fmt: skip
    with edge_run(args, log, env=env) as server:
        server.wait_ready(keyframes=3)
        r = httpx.post(f"{server.url}/v1/ask", json={"question": typed}, timeout=120)
        assert r.status_code == 200, r.text
        thumbs = [f["thumbnail_url"] for f in r.json()["frames"]]
        for url in thumbs:
            assert httpx.get(f"{server.url}{url}", timeout=10).headers["cache-control"] == "no-store"
        heard = httpx.post(
            f"{server.url}/v1/ask/audio?speak=true", content=wav_bytes(spoken_clip(spoken)),
            headers={"Content-Type": "audio/wav"}, timeout=120,
        )  # fmt: skip
        assert heard.status_code == 200, heard.text
        transcript = heard.json()["transcript"]["text"]
        assert httpx.delete(f"{server.url}/v1/keyframes", timeout=10).status_code == 200
        assert server.stop() == 0, server.tail()
    found = new_files(home, tmp, cwd)
    print(
        "files the run left:",
        *[f"{p.relative_to(tmp_path)} ({p.stat().st_size} B)" for p in found],
        sep="\n  ",
    )
    for path in found:
        assert media_kind(path) is None, f"{path}: {media_kind(path)} written to disk"
        data = path.read_bytes()
        for text in (typed, spoken, transcript):
            assert text.encode() not in data, f"{path} holds {text!r}"
    text = log.read_text(errors="replace")
    assert "heard (upload" in text, text[-3000:]  # the log is the process's, and it heard the question
    for said in (typed, transcript, spoken):
        assert said not in text and said.lower() not in text.lower(), f"the log holds {said!r}"


def test_retention_and_forget_reach_the_voice_history() -> None:
    from egovlm.edge.voice.pipeline import VoiceAssistant, VoiceTurn

    rt = pushed_runtime(1, retention_s=100.0)
    try:
        va = VoiceAssistant(rt, transcriber=None)  # no speech in this test
        va.history.extend([VoiceTurn("voice-1", "upload", 0.0, mono=time.monotonic() - 101.0),
                           VoiceTurn("voice-2", "upload", 0.0)])  # fmt: skip
        rt.enforce_retention()
        assert [t.id for t in va.history] == ["voice-2"]  # the one older than 100 s went
        rt.forget()
        assert list(va.history) == []
    finally:
        rt.stop()
