"""Dataset rows → frame sets on disk → the rows GRPO and eval consume.

Video is decoded once per (clip, frame count, sampling, keyframe size): the chosen frames are
resized to the model's keyframe size and cached as PNG files plus a ``frames.json`` index (the
same layout :func:`egovlm.video.read_frame_dir` reads), so GRPO steps and repeated evals never
touch the decoder. A cache entry is written to a temporary folder and renamed into place: a
killed preparation leaves no half-written entry. A row's clip window (``start_s``/``end_s``,
seconds in the source video) is part of the entry's key: two rows cut from one video never share
frames. ``egovlm data prepare`` (:mod:`egovlm.train.prepare`) fills the cache for a whole
training set before launch; the trainer then only reads it (:func:`read_prepared`).

The training dataset (a ``datasets.Dataset``) has the columns TRL and the rewards read:
``prompt`` (contract messages with image placeholders), ``question`` (its text, so a per-rollout
option shuffle can re-render the prompt: :mod:`egovlm.train.rollouts`), ``images`` (the frame
PNGs, decoded to PIL on access), ``answer``, ``letters`` (None for an open question), ``option_texts`` (the
options' texts in letter order, empty for an open question: the rewards map an answer written
as an option's text to its letter), ``frame_times``, ``salient_times``, ``selector_frames``,
``question_type``, ``id``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from egovlm.contract import Message, build_messages
from egovlm.frames import Frame, resize_for_model
from egovlm.schema import QAItem, read_jsonl
from egovlm.train import sampling

CACHE_VERSION = 2  # 2: the clip window is part of the key


class NotPreparedError(RuntimeError):
    """A row's frame set is not in the cache and the caller may not decode it (the trainer)."""


@dataclass(frozen=True)
class FrameSpec:
    """How a prompt's frames are chosen and sized; part of the cache key."""

    n: int
    mode: str  # uniform | salient
    size: tuple[int, int]  # the model's keyframe size (w, h)
    selector: dict[str, Any] | None = None  # SelectorParams fields, for salient mode

    def ident(self) -> list[Any]:
        sel = self.selector if self.mode == "salient" else None
        return [self.n, self.mode, list(self.size), sorted((sel or {}).items())]


@dataclass
class PreparedItem:
    item: QAItem
    folder: Path  # cache entry: frame_XXX.png + frames.json
    frames: list[Frame]  # resized, indices 1..N

    @property
    def frame_files(self) -> list[Path]:
        return [self.folder / f"frame_{f.index:03d}.png" for f in self.frames]

    @property
    def frame_times(self) -> list[float]:
        return [f.timestamp_s for f in self.frames]

    def messages(self) -> list[Message]:
        return build_messages(self.frames, self.item.question, self.item.options)


Window = tuple[float | None, float | None]


def clip_window(item: QAItem) -> Window:
    """The row's clip in its source video (seconds; None: from the start / to the end)."""
    return (item.start_s, item.end_s)


def cache_key(media: Path, spec: FrameSpec, window: Window = (None, None)) -> str:
    """Changes when the clip file, its window, the frame count, the sampling or the keyframe size change."""
    st = media.stat()
    ident = [str(media.resolve()), st.st_size, st.st_mtime_ns, spec.ident(), list(window), CACHE_VERSION]
    if media.is_dir() and (media / "frames.json").is_file():
        ident.append((media / "frames.json").stat().st_mtime_ns)
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:48]


def load_entry(folder: Path) -> list[Frame]:
    entries = json.loads((folder / "frames.json").read_text())
    return [
        Frame(
            index=i + 1,
            timestamp_s=float(e["t"]),
            image=np.asarray(Image.open(folder / e["file"]).convert("RGB")),
        )
        for i, e in enumerate(entries)
    ]


def write_entry(folder: Path, timed: list[tuple[float, np.ndarray]], size: tuple[int, int]) -> list[Frame]:
    """Resize and write a frame set atomically (temp folder, then rename)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        frames = [
            Frame(index=i + 1, timestamp_s=float(t), image=resize_for_model(img, size))
            for i, (t, img) in enumerate(sorted(timed, key=lambda x: x[0]))
        ]
        index = []
        for f in frames:
            name = f"frame_{f.index:03d}.png"
            f.pil().save(tmp / name)
            index.append({"file": name, "t": f.timestamp_s})
        (tmp / "frames.json").write_text(json.dumps(index, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race: its entry is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return frames


def _describe(media: Path, window: Window) -> str:
    start, end = window
    if start is None and end is None:
        return str(media)
    return f"{media} [{start if start is not None else 0:g} s – {f'{end:g} s' if end is not None else 'end'}]"


def entry_folder(item: QAItem, base: Path, spec: FrameSpec, cache_dir: Path) -> Path:
    """Where the row's frame set lives in the cache. Errors name the row and the clip."""
    media = item.media_path(base)
    if not media.exists():
        raise sampling.SamplingError(f"row {item.id!r}: media not found: {media}")
    return cache_dir / f"{_safe(item.id)}-{cache_key(media, spec, clip_window(item))}"


def is_prepared(folder: Path) -> bool:
    return (folder / "frames.json").is_file()


def decode_item(item: QAItem, base: Path, spec: FrameSpec, folder: Path) -> list[Frame]:
    """Decode the row's frames (inside its clip window) and write them to ``folder``."""
    media = item.media_path(base)
    window = clip_window(item)
    try:
        timed = sampling.sample(media, spec.n, spec.mode, spec.selector, start_s=window[0], end_s=window[1])
    except Exception as e:
        raise sampling.SamplingError(
            f"row {item.id!r}: cannot sample frames from {_describe(media, window)}: {e}"
        ) from e
    return write_entry(folder, timed, spec.size)


def prepare_item(item: QAItem, base: Path, spec: FrameSpec, cache_dir: Path) -> PreparedItem:
    """Decode (or reuse) the item's frame set. Errors name the row and the clip."""
    folder = entry_folder(item, base, spec, cache_dir)
    if is_prepared(folder):
        return PreparedItem(item, folder, load_entry(folder))
    return PreparedItem(item, folder, decode_item(item, base, spec, folder))


def read_prepared(item: QAItem, base: Path, spec: FrameSpec, cache_dir: Path) -> PreparedItem:
    """The item's cached frame set; :class:`NotPreparedError` instead of decoding (the trainer
    must never decode: every rank would wait for it, see :mod:`egovlm.train.prepare`)."""
    folder = entry_folder(item, base, spec, cache_dir)
    if not is_prepared(folder):
        clip = _describe(item.media_path(base), clip_window(item))
        raise NotPreparedError(
            f"row {item.id!r}: no frames in the cache for {clip} "
            f"(expected {folder}; the clip or the recipe's frame settings changed since it was prepared?)"
        )
    return PreparedItem(item, folder, load_entry(folder))


def row_options(letters: str | None, texts: Sequence[str] | None) -> dict[str, str] | None:
    """A row's options as letter -> text, from its ``letters`` and ``option_texts`` columns (as the
    rollout shows them, after any shuffle); None for an open question."""
    return dict(zip(letters, texts, strict=True)) if letters and texts else None


def row(p: PreparedItem, selector_k: int, selector: dict[str, Any] | None = None) -> dict[str, Any]:
    """One training row (see module docstring for the columns)."""
    item = p.item
    has_times = bool(item.salient_times)
    return {
        "id": item.id,
        "prompt": p.messages(),
        "question": item.question,
        "images": [str(f) for f in p.frame_files],
        "answer": item.answer,
        "letters": item.letters,
        "option_texts": list((item.options or {}).values()),
        "frame_times": p.frame_times,
        "salient_times": list(item.salient_times or []),
        "selector_frames": [] if has_times else sampling.selector_frames(p.frames, selector_k, selector),
        "question_type": item.question_type,
    }


def hf_dataset(rows: list[dict[str, Any]]) -> Any:
    """Training rows (:func:`row`) as a ``datasets.Dataset``; ``images`` decode lazily to PIL."""
    from datasets import Dataset, Image, List

    return Dataset.from_list(rows).cast_column("images", List(Image()))


def load_items(path: Path, max_items: int | None = None, answered_only: bool = False) -> list[QAItem]:
    items = read_jsonl(path)
    if answered_only:
        items = [i for i in items if i.answered]
    return items[:max_items] if max_items is not None else items
