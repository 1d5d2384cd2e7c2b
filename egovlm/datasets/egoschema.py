"""EgoSchema → the common JSONL schema.

EgoSchema's own files: ``questions.json`` is a list of ``{"q_uid", "google_drive_id",
"question", "option 0" … "option 4"}``; ``subset_answers.json`` maps q_uid → 0-based option
index for the public 500-question subset; videos are ``<q_uid>.mp4``. The other 4,500 answers
are withheld by the benchmark: those rows are kept with ``answer: null`` and evaluation on them
produces a submission file, not a score.

EgoSchema's clips are 3-minute cuts of Ego4D videos. Its repository publishes ``uid_to_ego4d.json``
(``{q_uid: {"video_uid", "starting_sec", "ending_sec"}}``); given with ``ego4d_map``, each row
records the Ego4D ``video_uid`` as its source video, so the contamination guard can drop Ego4D
training rows cut from the same videos. Without it a row's source video is its own q_uid, which
no Ego4D-derived training row can match (the guard then says so).
"""

from __future__ import annotations

from pathlib import Path

from egovlm.datasets.common import SOURCE_VIDEO, Where, check_videos, load_json, relative
from egovlm.schema import OPTION_LETTERS, DatasetError, QAItem

N_OPTIONS = 5
REQUIRED_KEYS = ("q_uid", "question", *(f"option {i}" for i in range(N_OPTIONS)))


def load_answers(path: Path) -> dict[str, int]:
    answers = load_json(path, "answers file")
    if not isinstance(answers, dict):
        raise DatasetError(f"{path}: expected an object mapping q_uid to option index")
    for uid, idx in answers.items():
        if not isinstance(idx, int) or not 0 <= idx < N_OPTIONS:
            raise DatasetError(f"{path}: q_uid {uid}: answer must be an integer 0..4, got {idx!r}")
    return answers


def load_ego4d_map(path: Path) -> dict[str, dict[str, object]]:
    """EgoSchema's ``uid_to_ego4d.json``: q_uid → the Ego4D video and the seconds the clip was cut from."""
    mapping = load_json(path, "EgoSchema uid_to_ego4d map")
    if not isinstance(mapping, dict):
        raise DatasetError(
            f"{path}: expected an object mapping q_uid to {{video_uid, starting_sec, ending_sec}}"
        )
    where = Where(path)
    for i, (uid, entry) in enumerate(mapping.items()):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("video_uid"), str)
            or not entry["video_uid"]
        ):
            raise DatasetError(f"{where(i)}:video_uid: missing for q_uid {uid!r}")
    return mapping


def import_egoschema(
    questions: Path,
    answers: Path | None,
    videos: Path,
    out: Path,
    require_videos: bool = True,
    ego4d_map: Path | None = None,
) -> list[QAItem]:
    """Read EgoSchema's files and return schema rows; video paths are written relative to ``out``'s folder."""
    rows = load_json(questions, "questions file")
    if not isinstance(rows, list):
        raise DatasetError(f"{questions}: expected a list of question objects")
    answer_map = load_answers(answers) if answers is not None else {}
    origin = load_ego4d_map(ego4d_map) if ego4d_map is not None else {}
    where_in = Where(questions)
    out_dir = out.parent.resolve()
    items: list[QAItem] = []
    missing: list[str] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{where_in(i)}: entry {i} is not an object")
        for key in REQUIRED_KEYS:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DatasetError(
                    f"{where_in(i)}:{key}: missing or empty in entry {i} (q_uid {row.get('q_uid')!r})"
                )
        uid = row["q_uid"]
        video = (videos / f"{uid}.mp4").resolve()
        if not video.is_file():
            missing.append(str(video))
        idx = answer_map.get(uid)
        meta: dict[str, object] = {"google_drive_id": row.get("google_drive_id"), "subset": idx is not None}
        if uid in origin:
            src = origin[uid]
            meta |= {SOURCE_VIDEO: src["video_uid"], "ego4d_start_s": src.get("starting_sec"),
                     "ego4d_end_s": src.get("ending_sec")}  # fmt: skip
        items.append(
            QAItem(
                id=uid,
                video=relative(video, out_dir),
                question=row["question"],
                options={OPTION_LETTERS[k]: row[f"option {k}"] for k in range(N_OPTIONS)},
                answer=OPTION_LETTERS[idx] if idx is not None else None,
                duration_s=180.0,
                source="egoschema",
                meta=meta,
            )
        )
    unknown = sorted(set(answer_map) - {it.id for it in items})
    if unknown and len(unknown) == len(answer_map):
        raise DatasetError(f"{answers}: none of its {len(answer_map)} q_uids appear in {questions}")
    if origin and not any(it.id in origin for it in items):
        raise DatasetError(f"{ego4d_map}: none of its {len(origin)} q_uids appear in {questions}")
    check_videos(missing, require_videos)
    return items
