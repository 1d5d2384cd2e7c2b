"""EgoPlan-Bench and EgoPlan-IT → the common JSONL schema, clips cut so the answer cannot leak.

Both files are lists of samples in the format of github.com/ChenYi99/EgoPlan (EgoPlan-Bench2,
github.com/qiulu66/EgoPlan-Bench2, uses the same fields)::

    {"sample_id", "video_source" ("EpicKitchens" | "Ego4D"; absent in older files), "video_id",
     "task_goal", "question", "task_start_frame" (EgoPlan-Bench2 only),
     "current_observation_frame", "task_progress_metadata": [{"narration_text", "start_frame",
     "stop_frame"}, …],
     # EgoPlan-Bench (evaluation): "choice_a" … "choice_d", "golden_choice_idx" ("A"–"D"), "answer"
     # EgoPlan-IT (training): "answer", "negative_answers": [...]}

The question is "what should I do next" at ``current_observation_frame``, so every row is cut to
the clip [task start, current observation]: ``start_s``/``end_s`` make the sampler decode
nothing after the observation frame (the next action, i.e. the answer, is never shown). The task
start is ``task_start_frame`` when the file has it, else the start of the first recorded step.

Frame numbers → seconds: EPIC-KITCHENS frames are numbered from 1 (``frame_0000000001.jpg`` is
t = 0, as EgoPlan's loader notes), Ego4D frames from 0 (EgoPlan seeks them with OpenCV). The frame
rate is each video's own (read from the file) unless ``fps`` is given: EPIC-KITCHENS videos run at
50 or 60 fps, Ego4D's at 30. Salient times are the ends of the completed steps inside the clip and
the observation itself. Test-split rows without ``golden_choice_idx`` are kept as unanswered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.datasets.common import (
    SOURCE_VIDEO,
    ImportReport,
    Where,
    check_videos,
    distinct,
    load_json,
    relative,
    row_rng_seed,
)
from egovlm.schema import OPTION_LETTERS, DatasetError, QAItem

CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")
EPIC_ID = re.compile(r"^P\d{2}_\d{2,3}$")  # EPIC-KITCHENS video ids, e.g. P01_13


def _question(row: dict[str, Any]) -> str:
    text = row.get("question")
    if isinstance(text, str) and text.strip():
        return text
    return (
        "Considering the progress shown in the video and my current observation in the last frame, "
        f"what action should I take next in order to {row['task_goal']}?"
    )


def _load_samples(path: Path, what: str) -> list[Any]:
    rows = load_json(path, what)
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: expected a list of samples")
    return rows


def _require(row: Any, keys: tuple[str, ...], where: Where, i: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DatasetError(f"{where(i)}: sample {i} is not an object")
    for key in keys:
        if key not in row or str(row[key]).strip() == "":
            raise DatasetError(f"{where(i)}:{key}: missing or empty in sample {i}")
    return row


def _frame(row: dict[str, Any], key: str, where: Where, i: int, field_name: str | None = None) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        name = field_name or key
        raise DatasetError(f"{where(i)}:{name}: expected a frame number >= 0, got {value!r} in sample {i}")
    return int(value)


@dataclass
class FrameClock:
    """Frame numbers of one source file → seconds (see the module docstring)."""

    fps: float | None  # None: read each video's own rate
    probed: dict[Path, float] = field(default_factory=dict)

    def rate(self, video: Path, where: Where, i: int) -> float:
        if self.fps is not None:
            return self.fps
        if video not in self.probed:
            if not video.is_file():
                raise DatasetError(
                    f"{where(i)}: cannot read the frame rate of {video}, which is not on disk; "
                    "pass --fps (EPIC-KITCHENS: 50 or 60, Ego4D: 30) to import without the videos"
                )
            from egovlm.video import VideoError, VideoReader

            try:
                self.probed[video] = VideoReader(video).info.fps
            except VideoError as e:
                raise DatasetError(f"{where(i)}: {e}") from None
            if self.probed[video] <= 0:
                raise DatasetError(f"{where(i)}: {video} reports no frame rate; pass --fps")
        return self.probed[video]


def _one_based(row: dict[str, Any]) -> bool:
    source = str(row.get("video_source") or "")
    if source:
        return source.lower().startswith("epic")
    return bool(EPIC_ID.match(str(row["video_id"])))


@dataclass(frozen=True)
class Clip:
    start_s: float
    end_s: float
    salient_times: list[float]


def clip_of(row: dict[str, Any], where: Where, i: int, fps: float) -> Clip:
    """The window [task start, current observation] and its salient times, in seconds."""
    obs = _frame(row, "current_observation_frame", where, i)
    steps = row.get("task_progress_metadata") or []
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise DatasetError(f"{where(i)}:task_progress_metadata: expected a list of steps in sample {i}")
    for k, step in enumerate(steps):
        for key in ("start_frame", "stop_frame"):
            if key in step:
                _frame(step, key, where, i, f"task_progress_metadata[{k}].{key}")
    if row.get("task_start_frame") is not None:
        start = _frame(row, "task_start_frame", where, i)
    else:
        starts = [int(s["start_frame"]) for s in steps if "start_frame" in s]
        start = min(starts) if starts else 0
    start = min(start, obs)
    offset = 1 if _one_based(row) else 0

    def sec(frame: int) -> float:
        return round(max(frame - offset, 0) / fps, 6)

    start_s, end_s = sec(start), sec(obs)
    if end_s <= start_s:  # the task starts at the observation: one frame, half a frame long
        end_s = round(start_s + 0.5 / fps, 6)
    salient = sorted(
        {sec(int(s["stop_frame"])) for s in steps if "stop_frame" in s and start <= s["stop_frame"] <= obs}
        | {sec(obs)}
    )
    return Clip(start_s, end_s, [t for t in salient if start_s <= t <= end_s])


def _meta(row: dict[str, Any], fps: float) -> dict[str, Any]:
    return {
        SOURCE_VIDEO: str(row["video_id"]),
        "task_goal": row["task_goal"],
        "video_source": row.get("video_source"),
        "sample_id": row["sample_id"],
        "fps": fps,
    }


def import_egoplan(
    path: Path, videos: Path, out: Path, fps: float | None = None, require_videos: bool = True
) -> list[QAItem]:
    """EgoPlan-Bench (evaluation): four given choices, clips cut at the observation frame."""
    rows = _load_samples(path, "EgoPlan-Bench file")
    where = Where(path)
    clock = FrameClock(fps)
    out_dir = out.parent.resolve()
    items, missing = [], []
    for i, raw in enumerate(rows):
        row = _require(raw, ("sample_id", "video_id", "task_goal", *CHOICE_KEYS), where, i)
        video = (videos / f"{row['video_id']}.mp4").resolve()
        if not video.is_file():
            missing.append(str(video))
            if require_videos:
                continue
        rate = clock.rate(video, where, i)
        clip = clip_of(row, where, i, rate)
        items.append(
            QAItem(
                id=str(row["sample_id"]),
                video=relative(video, out_dir),
                question=_question(row),
                options={letter: str(row[key]) for letter, key in zip("ABCD", CHOICE_KEYS, strict=True)},
                answer=row.get("golden_choice_idx"),
                start_s=clip.start_s,
                end_s=clip.end_s,
                salient_times=clip.salient_times,
                question_type="next_action",
                source="egoplan",
                meta=_meta(row, rate),
            )
        )
    check_videos(missing, require_videos)
    return items


def _same_video_actions(rows: list[Any]) -> dict[str, list[str]]:
    """Every action text seen in a video (answers and recorded steps): distractors from that video."""
    pool: dict[str, list[str]] = {}
    for row in rows:
        if not isinstance(row, dict) or "video_id" not in row:
            continue
        texts = pool.setdefault(str(row["video_id"]), [])
        if isinstance(row.get("answer"), str):
            texts.append(row["answer"])
        for step in row.get("task_progress_metadata") or []:
            if isinstance(step, dict) and isinstance(step.get("narration_text"), str):
                texts.append(step["narration_text"])
    return {video: distinct(texts) for video, texts in pool.items()}


def _choices(
    row: dict[str, Any], pool: list[str], n_options: int, seed: int
) -> tuple[dict[str, str], str] | None:
    """Options (answer + distractors, shuffled by a per-row seed) and the answer's letter; None when the
    sample and its video cannot supply ``n_options - 1`` distinct distractors."""
    rng = np.random.default_rng(row_rng_seed(seed, f"egoplan-it/{row['sample_id']}"))
    answer = str(row["answer"]).strip()
    negatives = [t for t in row.get("negative_answers") or [] if isinstance(t, str)]
    negatives = distinct(negatives, exclude=[answer])
    others = distinct(pool, exclude=[answer, *negatives])
    wanted = n_options - 1
    chosen = [negatives[int(k)] for k in rng.permutation(len(negatives))][:wanted]
    chosen += [others[int(k)] for k in rng.permutation(len(others))][: wanted - len(chosen)]
    if len(chosen) < wanted:
        return None
    texts = [answer, *chosen]
    order = [int(k) for k in rng.permutation(len(texts))]
    options = {OPTION_LETTERS[pos]: texts[k] for pos, k in enumerate(order)}
    return options, OPTION_LETTERS[order.index(0)]


def import_egoplan_it(
    path: Path,
    videos: Path,
    out: Path,
    fps: float | None = None,
    require_videos: bool = True,
    seed: int = 0,
    n_options: int = 4,
) -> tuple[list[QAItem], ImportReport]:
    """EgoPlan-IT (instruction tuning) as multiple choice: the answer among its negative answers (then
    other actions of the same video), shuffled deterministically by ``seed``; clips cut to
    [task start, current observation]."""
    if not 2 <= n_options <= len(OPTION_LETTERS):
        raise DatasetError(f"n_options must be 2..{len(OPTION_LETTERS)}, got {n_options}")
    rows = _load_samples(path, "EgoPlan-IT file")
    where = Where(path)
    clock = FrameClock(fps)
    pool = _same_video_actions(rows)
    out_dir = out.parent.resolve()
    report = ImportReport()
    items: list[QAItem] = []
    missing: list[str] = []
    for i, raw in enumerate(rows):
        row = _require(raw, ("sample_id", "video_id", "task_goal", "answer"), where, i)
        video = (videos / f"{row['video_id']}.mp4").resolve()
        if not video.is_file():
            missing.append(str(video))
            if require_videos:
                continue
        choices = _choices(row, pool.get(str(row["video_id"]), []), n_options, seed)
        if choices is None:
            report.skip(f"with fewer than {n_options - 1} distinct distractors")
            continue
        options, letter = choices
        rate = clock.rate(video, where, i)
        clip = clip_of(row, where, i, rate)
        items.append(
            QAItem(
                id=f"egoplan_it-{row['sample_id']}",
                video=relative(video, out_dir),
                question=_question(row),
                options=options,
                answer=letter,
                start_s=clip.start_s,
                end_s=clip.end_s,
                salient_times=clip.salient_times,
                question_type="next_action",
                source="egoplan-it",
                meta=_meta(row, rate),
            )
        )
    check_videos(missing, require_videos)
    report.rows = len(items)
    return items, report
