"""A spoken question end to end: end of speech → transcript → first answer token → spoken answer.

The question is synthesised with espeak-ng (no microphone on the benchmark hosts) and asked two
ways, each ``repeats`` times, against a live runtime (the synthetic camera feeding a model):

* ``upload``: a WAV posted as ``/v1/ask/audio`` would be: GStreamer decode to 16 kHz, VAD
  speech check, Whisper, ``runtime.ask``, espeak-ng + a clock-synced null sink;
* ``live``: the same speech played through GStreamer from a file at real-time pace (what a
  microphone delivers), cut by the streaming VAD, which adds the endpoint wait
  (``min_silence_ms``) before recognition can start.

Rows are per stage (median and p95 over the repeats, milliseconds); the summary row per mode
has the three numbers a user feels. The default model is the offline random-init tiny
Qwen2.5-VL (its answers are noise; the time to its first token is real).

    egovlm bench voice --out bench [--model DIR] [--repeats 5] [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.benchmarks.report import Report, percentiles

QUESTION = "What did I pick up last?"
KEY_WORDS = {"what", "pick", "up", "last"}
STAGES = (
    "decode_ms",
    "endpoint_ms",
    "vad_ms",
    "asr_ms",
    "transcript_ms",
    "ttft_ms",
    "first_token_ms",
    "answer_ms",
    "tts_ms",
    "spoken_ms",
)


def _runtime(model: Path | None, tmp: Path, max_new_tokens: int) -> Any:
    from egovlm.edge.runtime import build_runtime

    if model is None:
        from egovlm.models.build import build_model

        model = tmp / "tiny"
        build_model("tiny", model, seed=0)
    rt = build_runtime(
        model, "synth://?fps=10&size=320x240&seed=0", capacity=4, max_new_tokens=max_new_tokens
    )
    rt.start()
    if not rt.wait_for_keyframes(3, timeout=120):
        rt.stop()
        raise RuntimeError(f"the runtime never held 3 keyframes: {rt.status_line()}")
    return rt


def _upload_turns(voice: Any, wav: bytes, repeats: int) -> list[Any]:
    turns = []
    for _ in range(repeats + 1):  # the first one warms the caches and is dropped
        turns.append(voice.answer_upload(wav, speak=True))
        voice.interrupt("next repeat")
    return turns[1:]


def _live_turns(voice: Any, clip: np.ndarray, repeats: int, tmp: Path) -> list[Any]:
    from egovlm.edge.voice.audio import SAMPLE_RATE, write_wav

    gap = np.zeros(int(2.5 * SAMPLE_RATE), np.float32)  # time for the answer before the next question
    stream = write_wav(tmp / "questions.wav", np.concatenate([np.concatenate([clip, gap])] * repeats))
    before = voice.turns
    voice.listen(f"file://{stream}")
    try:
        if not voice.wait_for_turns(before + repeats, timeout=60 + 10 * repeats):
            raise RuntimeError(f"heard {voice.turns - before} of {repeats} spoken questions")
    finally:
        voice.stop()
    return list(voice.history)[-repeats:]


def _rows(mode: str, turns: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for stage in STAGES:
        values = [getattr(t.latency, stage) for t in turns if t.latency is not None]
        values = [v for v in values if v is not None]
        if not values:
            continue
        p50, p95 = percentiles(values)
        rows.append({"mode": mode, "stage": stage, "ms_p50": p50, "ms_p95": p95, "n": len(values)})
    return rows


def _summary(mode: str, turns: list[Any]) -> dict[str, Any]:
    from egovlm.edge.voice.wake import words

    ok = [t for t in turns if t.latency is not None]
    med = {s: percentiles([getattr(t.latency, s) or 0.0 for t in ok])[0] for s in STAGES}
    heard = sum(set(words(t.transcript.text)) >= KEY_WORDS for t in ok if t.transcript is not None)
    audio_s = float(np.median([t.latency.audio_s for t in ok]))
    return {
        "mode": mode,
        "speech_end_to_transcript_ms": med["transcript_ms"],
        "speech_end_to_first_token_ms": med["first_token_ms"],
        "speech_end_to_spoken_ms": med["spoken_ms"],
        "asr_real_time_factor": med["asr_ms"] / 1000 / audio_s,
        "transcripts_with_key_words": f"{heard}/{len(turns)}",
        "errors": sum(t.error is not None or t.ignored is not None for t in turns),
    }


def run(
    out: Path,
    model: Path | None = None,
    repeats: int = 5,
    live: bool = True,
    max_new_tokens: int = 16,
    question: str = QUESTION,
) -> Report:
    """Measure both modes and write ``out/voice.json`` + ``.md``."""
    from egovlm.edge.voice.asr import AsrOptions, Transcriber
    from egovlm.edge.voice.audio import wav_bytes
    from egovlm.edge.voice.pipeline import VoiceAssistant, VoiceOptions
    from egovlm.edge.voice.tts import AudioOut, EspeakTts, Speaker, spoken_clip

    t0 = time.perf_counter()
    asr = Transcriber(AsrOptions())
    options = VoiceOptions()
    clip = spoken_clip(question, lead_s=0.5, tail_s=1.0)
    report = Report(
        "voice",
        params={
            "question": question,
            "repeats": repeats,
            "asr": {**asr.describe(), "load_ms": asr.load_ms},
            "tts": "espeak-ng -> GStreamer fakesink (clock-synced)",
            "vad_min_silence_ms": options.vad.min_silence_ms,
            "max_new_tokens": max_new_tokens,
            "model": str(model) if model else "offline tiny Qwen2.5-VL (random init)",
        },
    )
    with tempfile.TemporaryDirectory(prefix="egovlm-bench-voice-") as tmp_dir:
        tmp = Path(tmp_dir)
        rt = _runtime(model, tmp, max_new_tokens)
        try:
            voice = VoiceAssistant(rt, asr, Speaker(EspeakTts(), AudioOut("null")), options)
            modes = {"upload": _upload_turns(voice, wav_bytes(clip), repeats)}
            if live:
                modes["live"] = _live_turns(voice, clip, repeats, tmp)
        finally:
            rt.stop()
    for mode, turns in modes.items():
        report.rows += _rows(mode, turns)
        report.summary.append(_summary(mode, turns))
    report.notes += [
        "All times in ms from the end of speech: an upload's end of speech is the request body "
        "received; live speech ends at the last VAD speech window (endpoint_ms later the utterance "
        "is closed).",
        "ttft_ms is transcript → first answer token (the runtime's queue + prefill); the spoken answer "
        "starts after the full answer, because the contract puts <answer> last.",
        f"The spoken question is {clip.size / 16000:.2f} s of espeak-ng speech; run took "
        f"{time.perf_counter() - t0:.0f} s.",
    ]
    from egovlm.benchmarks.plots import write_plots

    report.write(out)
    write_plots(report, out)
    return report
