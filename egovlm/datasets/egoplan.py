"""EgoPlan-Bench → the common JSONL schema.

EgoPlan-Bench's validation file is a list of ``{"sample_id", "video_source", "video_id",
"task_goal", "question", "choice_a" … "choice_d", "golden_choice_idx" ("A"–"D"), "answer",
"current_observation_frame", "task_progress_metadata": [{"narration_text", "start_frame",
"stop_frame"}, …]}``. Frames are numbers in the source video; ``fps`` converts them to seconds.
The salient times are the end of each completed step and the current observation, which is
the moment the question is about. Test-split rows have no ``golden_choice_idx``: kept as
unanswered.
"""

from __future__ import annotations

import json
from pathlib import Path

from egovlm.datasets.egoschema import _line_of_entries, _relative
from egovlm.schema import DatasetError, QAItem

CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")


def import_egoplan(
    path: Path, videos: Path, out: Path, fps: float = 30.0, require_videos: bool = True
) -> list[QAItem]:
    if not path.is_file():
        raise DatasetError(f"{path}: EgoPlan-Bench file not found")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: expected a list of samples")
    lines = _line_of_entries(path)
    out_dir = out.parent.resolve()
    items, missing = [], []
    for i, row in enumerate(rows):
        where = f"{path}:{lines[i] if i < len(lines) else '?'}"
        for key in ("sample_id", "video_id", "task_goal", *CHOICE_KEYS):
            if key not in row or str(row[key]).strip() == "":
                raise DatasetError(f"{where}:{key}: missing or empty in sample {i}")
        video = (videos / f"{row['video_id']}.mp4").resolve()
        if not video.is_file():
            missing.append(str(video))
        steps = row.get("task_progress_metadata") or []
        salient = [s["stop_frame"] / fps for s in steps if "stop_frame" in s]
        if "current_observation_frame" in row:
            salient.append(row["current_observation_frame"] / fps)
        question = row.get("question") or f"What action should I take next in order to {row['task_goal']}?"
        items.append(
            QAItem(
                id=str(row["sample_id"]),
                video=_relative(video, out_dir),
                question=question,
                options={letter: str(row[key]) for letter, key in zip("ABCD", CHOICE_KEYS, strict=True)},
                answer=row.get("golden_choice_idx"),
                salient_times=salient or None,
                question_type="next_action",
                source="egoplan",
                meta={"task_goal": row["task_goal"], "video_source": row.get("video_source"), "fps": fps},
            )
        )
    if missing and require_videos:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(
            f"{len(missing)} videos not found: {shown} (pass --allow-missing-videos to import anyway)"
        )
    return items
