"""Generate EgoSynth datasets: clips (MP4) with exact ground truth, questions and narrations.

Layout of an output folder (paths inside rows are relative to it)::

    videos/<clip_id>.mp4   H.264, yuv420p
    qa.jsonl               egovlm.schema.QAItem rows (source "egosynth"), multiple choice
    open.jsonl             the same clips' first/last pick-up questions in open form (no options,
                           the answer in words: "the yellow banana"; egovlm.synth.qa.open_items)
    events.jsonl           one row per pick-up / put-down: time, frame, object, place, hand, salient frames
    captions.jsonl         one row per clip: time-stamped narration sentences and the joined text
    clips.jsonl            one row per clip: activity, objects (start and end places), idle stretches
    preview/<clip_id>.png  contact sheets (with ``preview=True``)

Clip ``i`` of split ``s`` with base seed ``b`` always gets the same stream (``seeds.clip_sequence``),
so the ground-truth files are byte-identical across runs, machines and worker counts.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.atomic import atomic_write_bytes, atomic_write_text
from egovlm.schema import write_jsonl
from egovlm.synth import seeds
from egovlm.synth.captions import caption_entries, narration
from egovlm.synth.preview import Tile, contact_sheet, plan_tiles, write_png
from egovlm.synth.qa import QADraft, assign_letters, make_drafts, open_items
from egovlm.synth.renderer import RenderConfig, Renderer
from egovlm.synth.script import Script, plan_clip
from egovlm.synth.writer import Mp4Writer


@dataclass(frozen=True)
class SynthConfig:
    """How clips look: size (w, h), frame rate, length, and which camera effects are on."""

    size: tuple[int, int] = (640, 480)
    fps: float = 30.0
    duration: float = 30.0
    head_motion: bool = True
    noise: bool = True
    exposure: bool = True
    blur: bool = True

    def __post_init__(self) -> None:
        w, h = self.size
        if w < 64 or h < 48 or w % 2 or h % 2:
            raise ValueError(f"size must be even and at least 64x48, got {w}x{h}")
        if not 1.0 <= self.fps <= 240.0:
            raise ValueError(f"fps must be within 1..240, got {self.fps}")
        if self.duration < 3.0:
            raise ValueError(f"duration must be at least 3 s, got {self.duration}")

    @property
    def n_frames(self) -> int:
        return round(self.duration * self.fps)

    def render_config(self) -> RenderConfig:
        return RenderConfig(self.size, self.head_motion, self.noise, self.exposure, self.blur)


@dataclass
class Clip:
    """A planned clip: its script and a renderer for its frames (nothing written yet)."""

    clip_id: str
    split: str
    seed: int
    index: int
    config: SynthConfig
    script: Script
    renderer: Renderer
    meta: dict[str, Any]

    @property
    def video(self) -> str:
        return f"videos/{self.clip_id}.mp4"

    def times(self) -> list[float]:
        return [i / self.config.fps for i in range(self.config.n_frames)]


def clip_id(split: str, seed: int, index: int) -> str:
    return f"egosynth-{split}-s{seed}-{index:05d}"


def build_clip(split: str, seed: int, index: int, config: SynthConfig) -> Clip:
    """Plan clip ``index`` of ``split`` (deterministic in its arguments)."""
    seq = seeds.clip_sequence(split, seed, index)
    script = plan_clip(
        seeds.rng(seq, seeds.SCRIPT),
        config.n_frames / config.fps,
        config.fps,
        head_motion=config.head_motion,
        head_rng=seeds.rng(seq, seeds.HEAD),
    )
    renderer = Renderer(script, config.render_config(), seeds.child(seq, seeds.RENDER))
    cid = clip_id(split, seed, index)
    meta = {
        "clip_id": cid,
        "split": split,
        "seed": seed,
        "index": index,
        "clip_seed": seeds.clip_seed_hex(seq),
    }
    return Clip(cid, split, seed, index, config, script, renderer, meta)


@dataclass
class ClipOutput:
    """What one clip contributes to the dataset files (picklable: returned by worker processes)."""

    clip_id: str
    events: list[dict[str, Any]]
    captions: dict[str, Any]
    clip_row: dict[str, Any]
    drafts: list[tuple[QADraft, dict[str, Any]]]
    frames: int
    seconds: float
    cpu_seconds: float
    preview: str | None = None


def clip_rows(
    clip: Clip,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], list[tuple[QADraft, dict[str, Any]]]]:
    """Ground-truth rows of one clip: events, captions, clip summary, question drafts."""
    s, cfg = clip.script, clip.config
    duration = cfg.n_frames / cfg.fps
    base = {"clip_id": clip.clip_id, "video": clip.video}
    events = [{**base, **e.to_json()} for e in s.events]
    entries = caption_entries(s, duration)
    captions = {
        "id": clip.clip_id,
        "video": clip.video,
        "duration_s": duration,
        "captions": entries,
        "text": narration(entries),
        "meta": clip.meta,
    }
    touched = {e.object for e in s.events}
    clip_row = {
        "id": clip.clip_id,
        "video": clip.video,
        "duration_s": duration,
        "fps": cfg.fps,
        "frames": cfg.n_frames,
        "size": list(cfg.size),
        "activity": s.activity.name,
        "objects": [
            {
                "name": o.name,
                "start_place": o.place,
                "end_place": s.final_place(o.id),
                "touched": o.name in touched,
            }
            for o in s.objects
        ],
        "idle": [[round(a, 6), round(b, 6)] for a, b in s.idle],
        "walks": [[round(m.t0, 6), round(m.t1, 6)] for m in s.head.moves if m.walking],
        "quick_turns": [[round(m.t0, 6), round(m.t1, 6)] for m in s.head.moves if m.quick],
        "meta": clip.meta,
    }
    drafts = make_drafts(s, seeds.rng(seeds.clip_sequence(clip.split, clip.seed, clip.index), seeds.QA))
    rows = [
        (
            d,
            {
                "id": f"{clip.clip_id}-q{k:02d}-{d.question_type}",
                "video": clip.video,
                "duration_s": duration,
                "meta": clip.meta,
            },
        )
        for k, d in enumerate(drafts)
    ]
    return events, captions, clip_row, rows


def render_clip(
    out: Path, split: str, seed: int, index: int, config: SynthConfig, preview: bool = False
) -> ClipOutput:
    """Plan, render and encode one clip under ``out``; returns its ground-truth rows."""
    start, cpu = time.perf_counter(), time.process_time()
    clip = build_clip(split, seed, index, config)
    events, captions, clip_row, drafts = clip_rows(clip)
    tiles = plan_tiles(clip.script.events, config.n_frames, config.fps) if preview else []
    keep = {t.frame for t in tiles}
    kept: dict[int, np.ndarray] = {}
    with Mp4Writer(out / clip.video, config.size, config.fps) as writer:
        for i, t in enumerate(clip.times()):
            frame = clip.renderer.render(t, i)
            writer.write(frame)
            if i in keep:
                kept[i] = frame.copy()
    preview_rel = None
    if preview:
        preview_rel = f"preview/{clip.clip_id}.png"
        title = f"{clip.clip_id}  {clip.script.activity.name}  ({len(clip.script.events)} events)"
        write_png(out / preview_rel, contact_sheet(kept, tiles, title))
    return ClipOutput(
        clip.clip_id,
        events,
        captions,
        clip_row,
        drafts,
        config.n_frames,
        time.perf_counter() - start,
        time.process_time() - cpu,
        preview_rel,
    )


@dataclass
class SynthSummary:
    out: Path
    clips: int
    frames: int
    questions: int  # multiple choice (qa.jsonl)
    events: int
    seconds: float  # wall clock for the whole call
    cpu_seconds: float  # CPU time spent on clips, summed over workers
    open_questions: int = 0  # open form (open.jsonl)

    @property
    def frames_per_cpu_second(self) -> float:
        """Rendering + encoding speed on one core (frames per CPU second)."""
        return self.frames / self.cpu_seconds if self.cpu_seconds else 0.0


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def synthesize(
    out: Path,
    clips: int,
    seed: int,
    split: str = "train",
    config: SynthConfig | None = None,
    *,
    preview: bool = False,
    workers: int = 1,
) -> SynthSummary:
    """Write ``clips`` clips of ``split`` and their ground truth under ``out`` (see module doc)."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    seeds.clip_sequence(split, seed, 0)  # validates split and seed early
    cfg = config or SynthConfig()
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if workers <= 1:
        _init_worker()
        outputs = [render_clip(out, split, seed, i, cfg, preview) for i in range(clips)]
    else:
        # spawn, not fork: a forked child of a process whose torch/OpenCV thread pools are running
        # can deadlock on a lock held by a thread that does not exist in the child.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=ctx) as pool:
            futures = [pool.submit(render_clip, out, split, seed, i, cfg, preview) for i in range(clips)]
            outputs = [f.result() for f in futures]
    drafts = [d for o in outputs for d in o.drafts]
    items = assign_letters(drafts, np.random.default_rng(seeds.letters_sequence(split, seed)))
    write_jsonl(out / "qa.jsonl", items)
    open_questions = write_jsonl(out / "open.jsonl", open_items(drafts))
    atomic_write_text(out / "events.jsonl", _jsonl([e for o in outputs for e in o.events]))
    atomic_write_text(out / "captions.jsonl", _jsonl([o.captions for o in outputs]))
    atomic_write_text(out / "clips.jsonl", _jsonl([o.clip_row for o in outputs]))
    return SynthSummary(
        out,
        clips,
        sum(o.frames for o in outputs),
        len(items),
        sum(len(o.events) for o in outputs),
        time.perf_counter() - start,
        sum(o.cpu_seconds for o in outputs),
        open_questions,
    )


def gallery(
    split: str, seed: int, indices: list[int], path: Path, per_clip: int = 6, width: int = 208
) -> Path:
    """One PNG showing several clips (a row of ``per_clip`` tiles each): the docs' contact sheet.

    Rendered directly from the scripts (no video files); palette-quantised to stay small.
    """
    from PIL import Image

    rows = []
    for index in indices:
        clip = build_clip(split, seed, index, SynthConfig())
        cfg = clip.config
        tiles = plan_tiles(clip.script.events, cfg.n_frames, cfg.fps, total=per_clip * 2)
        events = [t for t in tiles if t.colour is not None]
        others = [t for t in tiles if t.colour is None]
        turns = [m for m in clip.script.head.moves if m.quick or m.walking]
        if turns:  # show one blurred turn or a walk too
            mid = round((turns[0].t0 + turns[0].t1) / 2 * cfg.fps)
            kind = "walking" if turns[0].walking else "quick turn"
            others = [Tile(mid, f"{mid / cfg.fps:.1f}s {kind}", None), *others]
        chosen = sorted((events[: per_clip - 2] + others)[:per_clip], key=lambda t: t.frame)
        frames = {t.frame: clip.renderer.render(t.frame / cfg.fps, t.frame) for t in chosen}
        title = f"{clip.clip_id}: {clip.script.activity.description}"
        rows.append(contact_sheet(frames, chosen, title, cols=per_clip, width=width))
    sheet = np.vstack(rows)
    img = Image.fromarray(sheet).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
