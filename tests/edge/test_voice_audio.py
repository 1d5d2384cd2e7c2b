"""Audio in through GStreamer: uploaded bytes and file/microphone sources become 16 kHz mono
float32, and bad input is refused with a reason before or while decoding."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.edge.voice import audio as audio_module
from egovlm.edge.voice.audio import (
    SAMPLE_RATE,
    AudioFormatError,
    AudioSource,
    AudioSourceError,
    AudioTooLongError,
    EmptyAudioError,
    audio_pipeline_description,
    decode_audio,
    parse_audio_source,
    read_wav,
    sample_to_pcm,
    sniff_format,
    wav_bytes,
    write_wav,
)

pytestmark = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="needs GStreamer tools")


def tone_wav(freq: float, seconds: float, rate: int, channels: int) -> bytes:
    """A 16-bit PCM WAV of a sine (the same in every channel)."""
    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return buf.getvalue()


def dominant_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[int(np.argmax(spectrum))])


def gst_encode(src: Path, encoder: str, out: Path) -> bytes:
    """Encode a WAV with gst-launch-1.0 (e.g. 'vorbisenc ! oggmux')."""
    cmd = f"gst-launch-1.0 -q filesrc location={src} ! wavparse ! audioconvert ! audioresample ! {encoder} ! filesink location={out}"
    subprocess.run(cmd.split(), check=True, timeout=60)
    return out.read_bytes()


def test_wav_at_any_rate_and_channels_becomes_16k_mono() -> None:
    for rate, channels in ((44100, 2), (22050, 1), (8000, 1), (48000, 2)):
        out = decode_audio(tone_wav(440.0, 1.0, rate, channels))
        assert out.dtype == np.float32 and out.ndim == 1
        assert abs(out.size - SAMPLE_RATE) <= 64, (rate, channels, out.size)
        assert abs(dominant_hz(out) - 440.0) < 3.0, (rate, channels)
        assert 0.3 < float(np.abs(out).max()) < 0.6  # amplitude preserved (0.5 full scale)


def test_ogg_vorbis_opus_and_flac_decode(tmp_path: Path) -> None:
    src = tmp_path / "tone.wav"
    src.write_bytes(tone_wav(660.0, 1.0, 22050, 1))
    for name, enc, fmt in (
        ("v.ogg", "vorbisenc ! oggmux", "ogg"),
        ("o.ogg", "opusenc ! oggmux", "ogg"),
        ("f.flac", "flacenc", "flac"),
        ("w.webm", "opusenc ! webmmux", "webm"),
    ):
        data = gst_encode(src, enc, tmp_path / name)
        assert sniff_format(data) == fmt
        out = decode_audio(data)
        assert abs(out.size - SAMPLE_RATE) < 0.05 * SAMPLE_RATE, (name, out.size)
        assert abs(dominant_hz(out) - 660.0) < 5.0, name


def test_bad_audio_is_refused_with_a_reason() -> None:
    with pytest.raises(EmptyAudioError, match="empty"):
        decode_audio(b"")
    with pytest.raises(AudioFormatError, match=r"not WAV, OGG.*starts with '\{\"question"):
        decode_audio(b'{"question": "what did I pick up?"}')
    with pytest.raises(AudioFormatError, match="ff d8 ff"):  # a JPEG
        decode_audio(bytes.fromhex("ffd8ffe000104a4649460001") + bytes(100))
    with pytest.raises(AudioFormatError, match="cannot decode"):
        decode_audio(b"OggS" + bytes(200))
    header_only = tone_wav(440.0, 0.0, 16000, 1)
    with pytest.raises(EmptyAudioError, match="no audio samples"):
        decode_audio(header_only)


def test_duration_limit_stops_decoding_early(monkeypatch: pytest.MonkeyPatch) -> None:
    long_wav = tone_wav(440.0, 20.0, 16000, 1)
    pulled: list[int] = []  # samples of each decoded block the decoder handed over

    def counting(sample: Any) -> np.ndarray:
        block = sample_to_pcm(sample)
        pulled.append(block.size)
        return block

    monkeypatch.setattr(audio_module, "sample_to_pcm", counting)
    with pytest.raises(AudioTooLongError, match="longer than the 2 s limit"):
        decode_audio(long_wav, max_duration_s=2.0)
    # stopped just past the limit: a few decoder blocks over 2 s, not the whole 20 s file
    assert 2 * SAMPLE_RATE < sum(pulled) < 4 * SAMPLE_RATE, sum(pulled)
    assert decode_audio(long_wav[: 44 + 2 * 16000], max_duration_s=2.0).size == 16000


def test_wav_helpers_round_trip(tmp_path: Path) -> None:
    x = (0.25 * np.sin(np.linspace(0, 100, 8000))).astype(np.float32)
    y, rate = read_wav(wav_bytes(x, 8000))
    assert rate == 8000 and np.abs(x - y).max() < 1e-4
    path = write_wav(tmp_path / "x.wav", x, 8000)
    assert path.read_bytes() == wav_bytes(x, 8000)


def test_source_uris() -> None:
    assert parse_audio_source("mic://").kind == "mic"
    assert parse_audio_source("alsa://hw:1,0").location == "hw:1,0"
    assert parse_audio_source("pulse://").location == ""
    spec = parse_audio_source("file:///tmp/q.wav?realtime=0")
    assert spec.kind == "file" and spec.location == "/tmp/q.wav" and not spec.realtime and not spec.live
    for bad, match in (
        ("q.wav", "not a URI"),
        ("v4l2:///dev/video0", "unknown audio source scheme"),
        ("file://q.wav", "absolute path"),
        ("file:///tmp/clip.mp4", "not an audio file"),
        ("mic://?gain=3", "unknown parameter"),
        ("file:///tmp/q.wav?realtime=maybe", "realtime"),
    ):
        with pytest.raises(AudioSourceError, match=match):
            parse_audio_source(bad)
    desc = audio_pipeline_description(parse_audio_source("alsa://hw:1,0"))
    assert desc.startswith(
        'alsasrc device="hw:1,0" ! audioconvert ! audioresample ! audio/x-raw,format=F32LE'
    )
    assert "drop=true" in desc and "sync=false" in desc
    paced = audio_pipeline_description(spec.__class__("file", "file:///q.wav", "/q.wav", True))
    assert "sync=true" in paced and "drop=false" in paced


def test_file_source_delivers_every_sample(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    path.write_bytes(tone_wav(440.0, 2.0, 44100, 2))
    blocks: list[np.ndarray] = []
    src = AudioSource(f"file://{path}?realtime=0", lambda b, wall: blocks.append(b)).start()
    assert src.wait_ended(20)
    total = np.concatenate(blocks)
    assert abs(total.size - 2 * SAMPLE_RATE) <= 64 and abs(dominant_hz(total) - 440.0) < 3.0
    st = src.stats()
    assert st.state == "ended" and abs(st.seconds - 2.0) < 0.01 and st.errors == 0
    assert -10 < st.level_dbfs < -5  # a 0.5-amplitude sine is about -9 dBFS


def test_realtime_file_source_is_paced_like_a_microphone(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    path.write_bytes(tone_wav(440.0, 1.0, 16000, 1))
    arrivals: list[float] = []
    t0 = time.monotonic()
    src = AudioSource(f"file://{path}", lambda b, wall: arrivals.append(wall)).start()
    assert src.wait_ended(10)
    assert arrivals[-1] - t0 > 0.8  # a second of audio took about a second to arrive


def test_missing_file_and_consumer_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioSourceError, match="file not found"):
        AudioSource(f"file://{tmp_path}/nothing.wav", lambda b, w: None).start()
    path = tmp_path / "tone.wav"
    path.write_bytes(tone_wav(440.0, 0.5, 16000, 1))

    def broken(block: np.ndarray, wall: float) -> None:
        raise RuntimeError("consumer bug")

    src = AudioSource(f"file://{path}?realtime=0", broken).start()
    assert src.wait_ended(10)
    st = src.stats()
    assert st.state == "ended" and st.errors >= 1 and "consumer bug" in (st.last_error or "")
