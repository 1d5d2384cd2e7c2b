"""The web page's voice panel in headless Chromium: a question recorded with the browser's
microphone is sent to ``/v1/ask/audio`` and its transcript and answer appear; a question heard
on the device side appears too (the page polls ``/v1/voice``).

The "microphone" is an espeak-ng WAV played into a Web Audio stream that replaces
``getUserMedia`` before the page loads (Chromium's ``--use-file-for-fake-audio-capture`` gives
its beep tone instead in headless mode here); the page's MediaRecorder, the WebM/Opus upload and
the server's decoding are the real ones."""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from egovlm.edge.runtime import EdgeRuntime
from egovlm.edge.server import create_app
from egovlm.edge.voice.asr import AsrOptions, Transcriber
from egovlm.edge.voice.audio import wav_bytes, write_wav
from egovlm.edge.voice.pipeline import VoiceAssistant
from egovlm.edge.voice.tts import spoken_clip
from tests.edge.edge_fakes import CHROMEDRIVER, CHROMIUM, ServerThread, headless_chromium, scripted_engine

pytest.importorskip("faster_whisper")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and shutil.which("espeak-ng")),
    reason="needs Debian's chromium, chromium-driver and espeak-ng (scripts/system-deps.sh)",
)


FAKE_MIC = """
navigator.mediaDevices.getUserMedia = async () => {
  const ctx = new AudioContext();
  const bytes = Uint8Array.from(atob("%s"), (c) => c.charCodeAt(0));
  const source = ctx.createBufferSource();
  source.buffer = await ctx.decodeAudioData(bytes.buffer);
  const sink = ctx.createMediaStreamDestination();
  source.connect(sink);
  source.start();
  return sink.stream;
};
"""


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(
        tmp_path_factory.mktemp("mic") / "q.wav", spoken_clip("What did I pick up last?", 0.3, 1.0)
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, EdgeRuntime]]:
    rt = EdgeRuntime(scripted_engine(capacity=8), "synth://?fps=15&size=320x240&seed=6")
    rt.start()
    try:
        assert rt.wait_for_keyframes(3, timeout=30), rt.status_line()
        voice = VoiceAssistant(rt, Transcriber(AsrOptions(threads=2)))
        with ServerThread(create_app(rt, voice=voice)) as s:
            yield s.url, rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def browser(question_wav: Path) -> Iterator[object]:
    with headless_chromium("--window-size=1200,1000", "--autoplay-policy=no-user-gesture-required") as driver:
        wav = base64.b64encode(question_wav.read_bytes()).decode()
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FAKE_MIC % wav})
        yield driver


def test_browser_microphone_question_shows_transcript_and_answer(
    server: tuple[str, EdgeRuntime], browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    d = browser
    d.get(f"{url}/")  # type: ignore[attr-defined]
    wait = WebDriverWait(d, 30)
    wait.until(lambda drv: drv.find_element(By.ID, "voice").is_displayed())
    record = d.find_element(By.ID, "record-button")  # type: ignore[attr-defined]
    assert record.is_displayed() and not d.find_element(By.ID, "talk-button").is_displayed()  # type: ignore[attr-defined]
    d.find_element(By.ID, "options").send_keys("A. a banana\nB. a red cup\nC. a book")  # type: ignore[attr-defined]
    record.click()
    wait.until(lambda drv: drv.find_element(By.ID, "record-button").text == "Stop and ask")
    time.sleep(3.5)  # the microphone plays the question (2.9 s)
    record.click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-answered]")))
    transcript = d.find_element(By.ID, "voice-transcript").text  # type: ignore[attr-defined]
    assert "pick up" in transcript.lower() and transcript.startswith("You said:")
    assert d.find_element(By.ID, "answer-main").text == "B. a red cup"  # type: ignore[attr-defined]
    assert "first token" in d.find_element(By.ID, "voice-latency").text  # type: ignore[attr-defined]
    assert len(d.find_elements(By.CSS_SELECTOR, "#cited .kf.cited")) == 2  # type: ignore[attr-defined]


def test_device_side_question_appears_on_the_page(server: tuple[str, EdgeRuntime], browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    d = browser
    d.get(f"{url}/")  # type: ignore[attr-defined]
    wait = WebDriverWait(d, 30)
    wait.until(lambda drv: drv.find_element(By.ID, "voice").is_displayed())
    body = wav_bytes(spoken_clip("Where did I put the keys?"))
    r = httpx.post(f"{url}/v1/ask/audio", content=body, headers={"Content-Type": "audio/wav"}, timeout=60)
    assert r.status_code == 200, r.text
    wait.until(lambda drv: "keys" in drv.find_element(By.ID, "voice-transcript").text.lower())
    assert d.find_element(By.ID, "answer-main").text == "B"  # type: ignore[attr-defined]
    silence = wav_bytes(spoken_clip(".", 0.5, 0.5) * 0)
    assert httpx.post(f"{url}/v1/ask/audio", content=silence, timeout=60).status_code == 422
    wait.until(lambda drv: "no speech" in drv.find_element(By.ID, "voice-note").text)
