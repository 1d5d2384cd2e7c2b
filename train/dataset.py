"""Dataset rows → frame sets on disk → the rows GRPO and eval consume.

Video is decoded once per (clip, frame count, sampling, keyframe size): the chosen frames are
resized to the model's keyframe size and cached as PNG files plus a ``frames.json`` index (the
same layout :func:`egovlm.video.read_frame_dir` reads), so GRPO steps and repeated evals never
touch the decoder. A cache entry is written to a temporary folder and renamed into place: a
killed preparation leaves no half-written entry.

The training dataset (a ``datasets.Dataset``) has the columns TRL and the rewards read:
``prompt`` (contract messages with image placeholders), ``images`` (the frame PNGs, decoded to
PIL on access), ``answer``, ``letters``, ``frame_times``, ``salient_times``,
``selector_frames``, ``question_type``, ``id``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from egovlm.contract import Message, build_messages
from egovlm.frames import Frame, resize_for_model
from egovlm.schema import QAItem, read_jsonl
from egovlm.train import sampling

CACHE_VERSION = 1


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


def cache_key(media: Path, spec: FrameSpec) -> str:
    """Changes when the clip file, the frame count, the sampling or the keyframe size change."""
    st = media.stat()
    ident = [str(media.resolve()), st.st_size, st.st_mtime_ns, spec.ident(), CACHE_VERSION]
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


def prepare_item(item: QAItem, base: Path, spec: FrameSpec, cache_dir: Path) -> PreparedItem:
    """Decode (or reuse) the item's frame set. Errors name the row and the clip."""
    media = item.media_path(base)
    if not media.exists():
        raise sampling.SamplingError(f"row {item.id!r}: media not found: {media}")
    folder = cache_dir / f"{_safe(item.id)}-{cache_key(media, spec)}"
    if (folder / "frames.json").is_file():
        return PreparedItem(item, folder, load_entry(folder))
    try:
        timed = sampling.sample(media, spec.n, spec.mode, spec.selector)
    except Exception as e:
        raise sampling.SamplingError(f"row {item.id!r}: cannot sample frames from {media}: {e}") from e
    return PreparedItem(item, folder, write_entry(folder, timed, spec.size))


def prepare_items(
    items: Iterable[QAItem], base: Path, spec: FrameSpec, cache_dir: Path, progress: bool = False
) -> list[PreparedItem]:
    items = list(items)
    if progress:
        from rich.progress import track

        it: Iterable[QAItem] = track(items, description=f"decoding frames ({spec.n}/clip, {spec.mode})")
    else:
        it = items
    return [prepare_item(item, base, spec, cache_dir) for item in it]


def row(p: PreparedItem, selector_k: int, selector: dict[str, Any] | None = None) -> dict[str, Any]:
    """One training row (see module docstring for the columns)."""
    item = p.item
    has_times = bool(item.salient_times)
    return {
        "id": item.id,
        "prompt": p.messages(),
        "images": [str(f) for f in p.frame_files],
        "answer": item.answer,
        "letters": "".join(item.options),
        "frame_times": p.frame_times,
        "salient_times": list(item.salient_times or []),
        "selector_frames": [] if has_times else sampling.selector_frames(p.frames, selector_k, selector),
        "question_type": item.question_type,
    }


def to_hf_dataset(
    prepared: list[PreparedItem], selector_k: int, selector: dict[str, Any] | None = None
) -> Any:
    """A ``datasets.Dataset`` whose ``images`` column decodes the cached PNGs lazily to PIL."""
    from datasets import Dataset, Image, List

    rows = [row(p, selector_k, selector) for p in prepared]
    ds = Dataset.from_list(rows)
    return ds.cast_column("images", List(Image()))


def load_items(path: Path, max_items: int | None = None, answered_only: bool = False) -> list[QAItem]:
    items = read_jsonl(path)
    if answered_only:
        items = [i for i in items if i.answered]
    return items[:max_items] if max_items is not None else items
