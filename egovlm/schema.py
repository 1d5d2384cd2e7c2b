"""The one dataset schema every importer writes and every stage reads (docs/architecture.md#data).

A dataset is a JSONL file, one :class:`QAItem` per line. Paths inside a row (``video``,
``frames_dir``) are relative to the JSONL file's folder unless absolute, so a dataset folder
can be moved as a whole. A row may cut a clip out of a longer source video with ``start_s`` /
``end_s``: frames are sampled only inside that window, while every time in the row
(``salient_times``) and every frame timestamp stays in the source video's timebase, so one
video file serves many questions and the keyframe reward compares like with like.
Reading validates every row; an invalid row raises :class:`DatasetError` naming
``file:line:field`` — rows are never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from egovlm.atomic import atomic_write_text

OPTION_LETTERS = "ABCDE"
SCHEMA_VERSION = 1


class DatasetError(ValueError):
    """A dataset row or file that does not follow the schema; the message names where."""


class QAItem(BaseModel):
    """One question about one video (or folder of frames): multiple choice (``options``, and
    ``answer`` the correct letter) or open (``options`` None, and ``answer`` the short answer in
    words, compared by :func:`egovlm.contract.answers_match`)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    video: str | None = None
    frames_dir: str | None = None
    question: str = Field(min_length=1)
    options: dict[str, str] | None  # None: an open question
    answer: str | None = None  # a letter, or words for an open question; None: withheld (EgoSchema's 4,500)
    # clip window in the source video (seconds): frames are sampled only within [start_s, end_s];
    # None means the video's start / end. Declared before salient_times, which are checked against it.
    start_s: float | None = Field(default=None, ge=0)
    end_s: float | None = None
    salient_times: list[float] | None = None  # seconds in the source video; exact for EgoSynth
    duration_s: float | None = Field(default=None, gt=0)
    question_type: str | None = None
    source: str = Field(min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _letters(cls, options: dict[str, str] | None) -> dict[str, str] | None:
        if options is None:
            return None
        letters = list(options)
        if len(letters) < 2:
            raise ValueError("needs at least two options")
        if letters != list(OPTION_LETTERS[: len(letters)]):
            raise ValueError(f"option keys must be consecutive letters from A, got {letters}")
        if any(not str(text).strip() for text in options.values()):
            raise ValueError("option texts must be non-empty")
        return options

    @field_validator("end_s")
    @classmethod
    def _end_after_start(cls, end: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("start_s") or 0.0
        if end is not None and end <= start:
            raise ValueError(f"end_s ({end}) must be greater than start_s ({start})")
        return end

    @field_validator("salient_times")
    @classmethod
    def _times(cls, times: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if times is None:
            return None
        if any(t < 0 for t in times):
            raise ValueError("timestamps must be >= 0")
        lo, hi = info.data.get("start_s"), info.data.get("end_s")
        outside = [
            t for t in times if (lo is not None and t < lo - 1e-6) or (hi is not None and t > hi + 1e-6)
        ]
        if outside:
            raise ValueError(
                f"{outside} lie outside the clip window [start_s={lo}, end_s={hi}]; salient times are "
                "in the source video's timebase and must fall inside the window"
            )
        return sorted(times)

    @model_validator(mode="after")
    def _consistent(self) -> QAItem:
        if self.options is None:
            if self.answer is not None and not self.answer.strip():
                raise ValueError("an open question's answer (words) must be non-empty")
        elif self.answer is not None and self.answer not in self.options:
            raise ValueError(f"answer {self.answer!r} is not one of the options {list(self.options)}")
        if (self.video is None) == (self.frames_dir is None):
            raise ValueError("exactly one of 'video' and 'frames_dir' must be set")
        if self.end_s is not None and self.duration_s is not None and self.end_s > self.duration_s + 1e-6:
            raise ValueError(f"end_s ({self.end_s}) is past the video's duration_s ({self.duration_s})")
        return self

    @property
    def answered(self) -> bool:
        return self.answer is not None

    @property
    def is_open(self) -> bool:
        """An open question: no options, the answer is words."""
        return self.options is None

    @property
    def letters(self) -> str | None:
        """The option letters (``"ABCDE"``), or None for an open question (the parser's ``letters``)."""
        return "".join(self.options) if self.options is not None else None

    def media_path(self, base: Path) -> Path:
        """The video file or frame folder, resolved against the dataset file's folder."""
        rel = self.video if self.video is not None else self.frames_dir
        assert rel is not None
        p = Path(rel)
        return p if p.is_absolute() else base / p


def _field_of(error: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in error.get("loc", ())) or "<row>"
    return loc


def parse_row(line: str, path: Path | str, lineno: int) -> QAItem:
    """Parse one JSONL line; errors name ``file:line:field``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}:{lineno}: a row must be a JSON object, got {type(obj).__name__}")
    try:
        return QAItem.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise DatasetError(f"{path}:{lineno}:{_field_of(dict(first))}: {first['msg']}{more}") from None


def iter_jsonl(path: Path | str) -> Iterator[QAItem]:
    """Yield validated rows; blank lines are allowed, anything else invalid raises."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield parse_row(line, path, lineno)


def read_jsonl(path: Path | str) -> list[QAItem]:
    items = list(iter_jsonl(path))
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            raise DatasetError(f"{path}: duplicate id {item.id!r} (rows {seen[item.id] + 1} and {i + 1})")
        seen[item.id] = i
    return items


def write_jsonl(path: Path | str, items: Iterable[QAItem]) -> int:
    """Write rows atomically (a crash never leaves a half-written dataset); returns the count."""
    lines = [item.model_dump_json(exclude_none=False) for item in items]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)
