"""EgoSchema → the common JSONL schema.

EgoSchema's own files: ``questions.json`` is a list of ``{"q_uid", "google_drive_id",
"question", "option 0" … "option 4"}``; ``subset_answers.json`` maps q_uid → 0-based option
index for the public 500-question subset; videos are ``<q_uid>.mp4``. The other 4,500 answers
are withheld by the benchmark: those rows are kept with ``answer: null`` and evaluation on them
produces a submission file, not a score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from egovlm.schema import OPTION_LETTERS, DatasetError, QAItem

N_OPTIONS = 5
REQUIRED_KEYS = ("q_uid", "question", *(f"option {i}" for i in range(N_OPTIONS)))


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _line_of_entries(path: Path) -> list[int]:
    """Line number where each top-level list entry starts (for error messages)."""
    lines: list[int] = []
    depth, line = 0, 1
    in_str = escape = False
    for ch in path.read_text(encoding="utf-8"):
        if ch == "\n":
            line += 1
        if in_str:
            escape = not escape and ch == "\\"
            if ch == '"' and not escape:
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth == 2:
                lines.append(line)
        elif ch in "]}":
            depth -= 1
    return lines


def load_answers(path: Path) -> dict[str, int]:
    answers = _load_json(path, "answers file")
    if not isinstance(answers, dict):
        raise DatasetError(f"{path}: expected an object mapping q_uid to option index")
    for uid, idx in answers.items():
        if not isinstance(idx, int) or not 0 <= idx < N_OPTIONS:
            raise DatasetError(f"{path}: q_uid {uid}: answer must be an integer 0..4, got {idx!r}")
    return answers


def import_egoschema(
    questions: Path, answers: Path | None, videos: Path, out: Path, require_videos: bool = True
) -> list[QAItem]:
    """Read EgoSchema's files and return schema rows; video paths are written relative to ``out``'s folder."""
    rows = _load_json(questions, "questions file")
    if not isinstance(rows, list):
        raise DatasetError(f"{questions}: expected a list of question objects")
    answer_map = load_answers(answers) if answers is not None else {}
    lines = _line_of_entries(questions)
    out_dir = out.parent.resolve()
    items: list[QAItem] = []
    missing: list[str] = []
    for i, row in enumerate(rows):
        where = f"{questions}:{lines[i] if i < len(lines) else '?'}"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: entry {i} is not an object")
        for key in REQUIRED_KEYS:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DatasetError(
                    f"{where}:{key}: missing or empty in entry {i} (q_uid {row.get('q_uid')!r})"
                )
        uid = row["q_uid"]
        video = (videos / f"{uid}.mp4").resolve()
        if not video.is_file():
            missing.append(str(video))
        idx = answer_map.get(uid)
        items.append(
            QAItem(
                id=uid,
                video=_relative(video, out_dir),
                question=row["question"],
                options={OPTION_LETTERS[k]: row[f"option {k}"] for k in range(N_OPTIONS)},
                answer=OPTION_LETTERS[idx] if idx is not None else None,
                duration_s=180.0,
                source="egoschema",
                meta={"google_drive_id": row.get("google_drive_id"), "subset": idx is not None},
            )
        )
    unknown = sorted(set(answer_map) - {it.id for it in items})
    if unknown and len(unknown) == len(answer_map):
        raise DatasetError(f"{answers}: none of its {len(answer_map)} q_uids appear in {questions}")
    if missing and require_videos:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(
            f"{len(missing)} videos not found: {shown} (pass --allow-missing-videos to import anyway)"
        )
    return items


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
