"""Streaming VAD (Silero, shipped in faster-whisper) cuts spoken questions out of a stream;
push-to-talk bypasses it; the wake phrase is matched on transcripts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from egovlm.edge.voice.audio import SAMPLE_RATE
from egovlm.edge.voice.tts import spoken_clip
from egovlm.edge.voice.vad import (
    WINDOW,
    Segmenter,
    SileroVad,
    VadOptions,
    speech_probabilities,
    speech_seconds,
)
from egovlm.edge.voice.wake import strip_wake_phrase

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return spoken_clip("What did I pick up last?", lead_s=0.6, tail_s=1.0)


def voiced_bounds(x: np.ndarray) -> tuple[float, float]:
    """First and last sample louder than -34 dBFS, in seconds (the synthetic speech's extent)."""
    idx = np.flatnonzero(np.abs(x) > 0.02)
    return idx[0] / SAMPLE_RATE, idx[-1] / SAMPLE_RATE


def feed(seg: Segmenter, audio: np.ndarray, block: int = 1600, t0: float = 100.0) -> list:
    """Feed in blocks, with wall times as if the audio arrived in real time."""
    out = []
    for i in range(0, audio.size, block):
        out += seg.feed(audio[i : i + block], t0 + (i + block) / SAMPLE_RATE)
    return out


def test_streaming_probabilities_equal_the_batch_model(question: np.ndarray) -> None:
    vad = SileroVad()
    n = question.size // WINDOW
    streamed = np.array([vad(question[i * WINDOW : (i + 1) * WINDOW]) for i in range(n)])
    batch = speech_probabilities(question)[:n]
    assert np.allclose(streamed, batch, atol=1e-5)
    assert streamed.max() > 0.9 and streamed[:10].max() < 0.1  # speech found, leading silence not
    with pytest.raises(ValueError, match="512 samples"):
        vad(np.zeros(100, np.float32))


def test_speech_amount_of_speech_silence_and_noise(question: np.ndarray) -> None:
    lo, hi = voiced_bounds(question)
    assert abs(speech_seconds(question) - (hi - lo)) < 0.4
    assert speech_seconds(np.zeros(SAMPLE_RATE, np.float32)) == 0.0
    noise = np.random.default_rng(0).normal(0, 0.05, 2 * SAMPLE_RATE).astype(np.float32)
    assert speech_seconds(noise) < 0.1


def test_two_questions_in_a_stream_become_two_utterances(question: np.ndarray) -> None:
    starts: list[str] = []
    seg = Segmenter(VadOptions(min_silence_ms=500), on_speech_start=starts.append)
    stream = np.concatenate([question, question])
    utts = feed(seg, stream)
    assert len(utts) == 2 and starts == ["vad", "vad"]
    lo, hi = voiced_bounds(question)
    offset = question.size / SAMPLE_RATE
    for u, shift in zip(utts, (0.0, offset), strict=True):
        assert abs(u.start_s - (lo + shift)) < 0.15 and abs(u.end_s - (hi + shift)) < 0.25
        assert u.trigger == "vad"
        # the audio spans the speech plus the padding, no more
        assert hi - lo <= u.audio.size / SAMPLE_RATE <= hi - lo + 2 * 0.2 + 0.2
        # closed min_silence after the last speech window, on the stream's clock
        assert 450 <= u.endpoint_ms <= 650
    assert seg.flush(999.0) is None


def test_silence_noise_and_clicks_are_not_utterances() -> None:
    seg = Segmenter()
    rng = np.random.default_rng(1)
    assert feed(seg, np.zeros(3 * SAMPLE_RATE, np.float32)) == []
    assert feed(seg, rng.normal(0, 0.03, 3 * SAMPLE_RATE).astype(np.float32)) == []
    click = np.zeros(2 * SAMPLE_RATE, np.float32)
    click[SAMPLE_RATE : SAMPLE_RATE + 80] = 0.9
    assert feed(seg, click) == []


def test_unpaused_speech_is_cut_at_the_limit(question: np.ndarray) -> None:
    lo, hi = voiced_bounds(question)
    speech = question[int(lo * SAMPLE_RATE) : int(hi * SAMPLE_RATE)]
    seg = Segmenter(VadOptions(max_utterance_s=3.0))
    utts = feed(seg, np.concatenate([speech] * 4))
    assert utts and utts[0].trigger == "vad-max" and utts[0].audio.size / SAMPLE_RATE <= 3.3


def test_stream_ending_mid_question_is_flushed(question: np.ndarray) -> None:
    lo, hi = voiced_bounds(question)
    seg = Segmenter()
    assert feed(seg, question[: int(hi * SAMPLE_RATE)]) == []
    u = seg.flush(200.0)
    assert u is not None and u.trigger == "eos" and u.audio.size > 0.8 * (hi - lo) * SAMPLE_RATE


def test_push_to_talk_captures_everything_between_press_and_release(question: np.ndarray) -> None:
    starts: list[str] = []
    seg = Segmenter(on_speech_start=starts.append, use_vad=False)  # push-to-talk only
    assert feed(seg, question) == []  # not pressed: speech is ignored
    assert seg.push_to_talk(False, 1.0) is None  # a release without a press
    assert seg.push_to_talk(True, 1.0) is None and seg.ptt_active and starts == ["ptt"]
    assert feed(seg, question) == []
    u = seg.push_to_talk(False, 123.0)
    assert u is not None and u.trigger == "ptt" and not seg.ptt_active
    assert abs(u.audio.size - question.size) < WINDOW  # everything heard while pressed
    assert u.speech_end_wall == 123.0 and u.endpoint_ms == 0.0
    assert abs(u.start_s - question.size / SAMPLE_RATE) < 0.05


def test_push_to_talk_overrides_an_open_vad_utterance(question: np.ndarray) -> None:
    lo, _ = voiced_bounds(question)
    seg = Segmenter()
    feed(seg, question[: int((lo + 0.5) * SAMPLE_RATE)])
    assert seg.in_speech
    seg.push_to_talk(True, 1.0)
    feed(seg, question)
    u = seg.push_to_talk(False, 2.0)
    assert u is not None and u.trigger == "ptt" and abs(u.audio.size - question.size) < WINDOW


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        ("Hey Ego, what did I pick up last?", "what did I pick up last?"),
        ("hey ego what did I pick up", "what did I pick up"),
        ("Hey, Eggo. Where are my keys?", "Where are my keys?"),
        ("Hey ego.", ""),
        ("What did I pick up last?", None),
        ("Hey", None),
        ("Okay Google, what did I pick up?", None),
    ],
)
def test_wake_phrase(transcript: str, expected: str | None) -> None:
    assert strip_wake_phrase(transcript, "hey ego") == expected


def test_empty_wake_phrase_passes_everything() -> None:
    assert strip_wake_phrase("  what now? ", "") == "what now?"
