"""``egovlm data prepare``: decode a recipe's whole training set into the frame cache, before launch.

Why a separate step: a distributed launch starts every rank at once. If one rank decoded while the
others waited (at ``main_process_first`` or at the process group's rendezvous), thousands of
3-minute clips would outlast the collective timeout (30 minutes by default) and the run would die
before its first step. So the frames are decoded here, in parallel on one machine, and the trainer
only reads the cache (:func:`egovlm.train.dataset.read_prepared`) after checking the manifest
(:func:`check_prepared`); an unprepared dataset is refused with the command to run.

* One cache entry per row (:mod:`egovlm.train.dataset`: PNGs + ``frames.json``, renamed into place),
  keyed by the clip file, its window (``start_s``/``end_s``), the frame count, the sampling and the
  model's keyframe size. Entries already there are skipped, so a killed prepare simply continues.
* At the end a manifest ``prepared-<key>.json`` (the recipe's frame spec, the dataset's path, size,
  mtime and SHA-256, row and done counts) is written atomically into the cache folder. The trainer
  accepts the cache only if the manifest matches its recipe and the dataset's current SHA-256.
* Keyframe size comes from the model folder's ``egovlm.json`` (read without torch), as in
  :func:`egovlm.train.trainer.load_policy`: no model is loaded here.

The exception is the single-process CPU demo: a recipe with a ``data.synth`` block, run as one
process, is prepared by the trainer itself (:func:`egovlm.train.trainer.build_trainer`); with one
process there is nobody to wait at a barrier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from egovlm.atomic import atomic_write_text
from egovlm.models.files import keyframe_size_of
from egovlm.schema import QAItem
from egovlm.train.config import TrainConfig
from egovlm.train.dataset import FrameSpec, decode_item, entry_folder, is_prepared, load_items

log = logging.getLogger("egovlm.train.prepare")

MANIFEST_VERSION = 1
MAX_LISTED_ERRORS = 10


class DataNotPreparedError(RuntimeError):
    """Training data whose frames are not (or no longer) in the cache; says what to run."""

    def __init__(self, reason: str, source: str) -> None:
        self.reason = reason
        self.source = source
        super().__init__(self.message(prepare_command(source, None)))

    def message(self, command: str) -> str:
        return (
            f"training data not prepared: {self.reason}\n"
            f"The trainer never decodes video (every other process would wait for it). Run once, before "
            f"launching:\n  {command}"
        )


class PrepareError(RuntimeError):
    """Some rows could not be decoded; the message names each row and its clip."""


@dataclass
class PrepareResult:
    manifest: Path
    rows: int
    decoded: int  # decoded in this call
    reused: int  # already in the cache (a previous, possibly killed, prepare)
    seconds: float


def prepare_command(config: str | Path, overrides: Sequence[str] | None) -> str:
    """The exact command line that prepares a recipe (``overrides`` None: unknown, say so)."""
    words = ["egovlm", "data", "prepare", "--config", str(config)]
    tail = " [the same key=value overrides as the training command]" if overrides is None else ""
    return shlex.join([*words, *(overrides or [])]) + tail


def frame_spec(cfg: TrainConfig, size: tuple[int, int]) -> FrameSpec:
    return FrameSpec(cfg.data.frames, cfg.data.sampling, size, cfg.data.selector)


def cache_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.run.output_dir) / "frame_cache"


def training_items(cfg: TrainConfig, data: Path) -> list[QAItem]:
    """The rows a recipe trains on (answered, at most ``data.max_items``): the rows prepare decodes."""
    items = load_items(data, cfg.data.max_items, answered_only=True)
    if not items:
        raise ValueError(f"{data}: no rows with an answer to train on")
    return items


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_identity(data: Path) -> dict[str, Any]:
    st = data.stat()
    return {
        "path": str(data.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": _sha256(data),
    }


def _spec_record(spec: FrameSpec) -> dict[str, Any]:
    return asdict(spec) | {"size": list(spec.size)}


def manifest_path(cache_dir: Path, data: Path, spec: FrameSpec) -> Path:
    """One manifest per (dataset file, frame spec): recipes with other frame counts can share a cache."""
    ident = json.dumps([str(data.resolve()), _spec_record(spec)], sort_keys=True)
    return cache_dir / f"prepared-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.json"


def _decode_one(item: QAItem, base: Path, spec: FrameSpec, folder: Path) -> str:
    """Worker: decode one row (runs in a pool process)."""
    decode_item(item, base, spec, folder)
    return item.id


def _pool(workers: int) -> ProcessPoolExecutor:
    # The stdlib's process pool, not datasets.map(num_proc=...): a task is one clip whose result is
    # files in the cache (our own atomic entries, which make prepare resumable), so an Arrow copy and
    # datasets' fingerprint cache would only duplicate it; and a failed row must be reported by id
    # while the others go on. "spawn": PyAV/FFmpeg and torch keep threads that a fork would copy
    # mid-state (the caller may already have imported torch through the recipe's validation).
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


def prepare_dataset(
    data: Path,
    spec: FrameSpec,
    cache_dir: Path,
    items: list[QAItem],
    workers: int | None = None,
    progress: bool = False,
) -> PrepareResult:
    """Decode every row of ``items`` (from ``data``) not yet in ``cache_dir``, in ``workers``
    processes (default: the CPUs this process may use), then write the manifest. Raises
    :class:`PrepareError` naming every failed row (the others stay cached: rerun after fixing)."""
    t0 = time.perf_counter()
    base = data.parent
    todo = []
    for item in items:
        folder = entry_folder(item, base, spec, cache_dir)  # raises for missing media, naming the row
        if not is_prepared(folder):
            todo.append((item, folder))
    reused = len(items) - len(todo)
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(todo) or 1))
    log.info(
        "%s: %d rows, %d already prepared, decoding %d in %d process(es)",
        data,
        len(items),
        reused,
        len(todo),
        workers,
    )
    errors = _run(todo, base, spec, workers, progress)
    if errors:
        listed = "\n".join(f"  - {e}" for e in errors[:MAX_LISTED_ERRORS])
        more = (
            f"\n  ... and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
        )
        raise PrepareError(
            f"{len(errors)} of {len(items)} rows of {data} could not be decoded (the other rows are cached; "
            f"fix or drop these and run prepare again):\n{listed}{more}"
        )
    seconds = time.perf_counter() - t0
    manifest = manifest_path(cache_dir, data, spec)
    record = {
        "version": MANIFEST_VERSION,
        "dataset": dataset_identity(data),
        "frame_spec": _spec_record(spec),
        "rows": len(items),
        "done": len(items),
        "decoded": len(todo),
        "reused": reused,
        "workers": workers,
        "seconds": round(seconds, 2),
    }
    atomic_write_text(manifest, json.dumps(record, indent=2) + "\n")
    return PrepareResult(manifest, len(items), len(todo), reused, seconds)


def _run(
    todo: list[tuple[QAItem, Path]], base: Path, spec: FrameSpec, workers: int, progress: bool
) -> list[str]:
    """Decode ``todo`` (in this process when ``workers`` is 1, else in a process pool); returns
    the error messages of the rows that failed, each naming the row and its clip."""
    if not todo:
        return []
    if workers == 1:
        outcomes: Iterable[tuple[QAItem, Callable[[], Any]]] = (
            (item, partial(decode_item, item, base, spec, folder)) for item, folder in todo
        )
        return _collect(outcomes, len(todo), spec, progress)
    with _pool(workers) as pool:
        futures = {pool.submit(_decode_one, item, base, spec, folder): item for item, folder in todo}
        return _collect(((futures[f], f.result) for f in as_completed(futures)), len(todo), spec, progress)


def _collect(
    outcomes: Iterable[tuple[QAItem, Callable[[], Any]]], total: int, spec: FrameSpec, progress: bool
) -> list[str]:
    """Run each outcome's getter (a decode, or a finished future's result) and gather the errors."""
    if progress:
        from rich.progress import track

        outcomes = track(outcomes, total=total, description=f"decoding frames ({spec.n}/clip, {spec.mode})")
    errors: list[str] = []
    for item, get in outcomes:
        try:
            get()
        except Exception as e:  # the message names the row and the clip (decode_item)
            errors.append(str(e) if item.id in str(e) else f"row {item.id!r}: {e}")
    return errors


def prepare(cfg: TrainConfig, workers: int | None = None, progress: bool = False) -> PrepareResult:
    """Prepare a recipe's training set: build its offline model / EgoSynth data if the recipe says
    so (both are file creation, needed to know the keyframe size and the rows), then decode."""
    from egovlm.train.trainer import ensure_data, ensure_model

    size = keyframe_size_of(ensure_model(cfg))  # a hub id has no egovlm.json: the deployment default
    data = ensure_data(cfg)
    if cfg.rewards.keyframe_prior == "positional":  # fail before hours of decoding, not at the first reward
        from egovlm.train.rewards import PositionalPrior

        PositionalPrior.from_jsonl(cfg.rewards.keyframe_prior_data or data)
    return prepare_dataset(
        data, frame_spec(cfg, size), cache_dir_of(cfg), training_items(cfg, data), workers, progress
    )


def check_prepared(cfg: TrainConfig, data: Path, spec: FrameSpec) -> dict[str, Any]:
    """The manifest of a prepared dataset matching this recipe; :class:`DataNotPreparedError`
    (with the command to run) when there is none, or when the dataset changed since."""
    cache = cache_dir_of(cfg)
    if not data.is_file():
        raise DataNotPreparedError(f"{data} does not exist", cfg.source)
    path = manifest_path(cache, data, spec)
    if not path.is_file():
        raise DataNotPreparedError(
            f"no manifest for {data} with {spec.n} {spec.mode} frames of {spec.size[0]}x{spec.size[1]} "
            f"in {cache} (expected {path.name})",
            cfg.source,
        )
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("dataset", {}).get("sha256") != _sha256(data):
        raise DataNotPreparedError(f"{data} changed since it was prepared ({path})", cfg.source)
    return manifest
