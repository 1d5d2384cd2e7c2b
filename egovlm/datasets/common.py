"""What every importer shares: reading a source's JSON with errors that name ``file:line``, video
paths written relative to the output JSONL, the missing-videos check, and the source-video key.

Source-video identity (used by the contamination guard, :mod:`egovlm.datasets.contamination`) is
defined here once: every importer records ``meta["source_video"]`` — the id of the *uncut* video
a row's frames come from (an Ego4D ``video_uid``, an EPIC-KITCHENS ``video_id`` such as
``P01_13``). Rows without it fall back to their media file's stem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egovlm.schema import DatasetError, QAItem

SOURCE_VIDEO = "source_video"  # the meta key


def load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def line_of_entries(path: Path) -> list[int]:
    """Line number where each top-level entry starts (list items, or values of a top-level object).

    Written by hand because ``json`` keeps no positions; a character scan is slow on big files,
    so callers compute it only when they are about to report an error (see :class:`Where`)."""
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


class Where:
    """``file:line`` of the i-th top-level entry, scanned lazily on the first error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lines: list[int] | None = None

    def __call__(self, index: int) -> str:
        if self._lines is None:
            self._lines = line_of_entries(self.path)
        return f"{self.path}:{self._lines[index] if index < len(self._lines) else '?'}"


def relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def check_videos(missing: list[str], require: bool) -> None:
    if missing and require:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(
            f"{len(missing)} videos not found: {shown} (pass --allow-missing-videos to import anyway)"
        )


def source_video(item: QAItem) -> str:
    """The uncut source video a row is about (normalised: stripped, lower case)."""
    key = item.meta.get(SOURCE_VIDEO)
    if not key:
        media = item.video if item.video is not None else item.frames_dir
        key = Path(str(media)).stem
    return str(key).strip().lower()


def row_rng_seed(seed: int, key: str) -> list[int]:
    """A per-row seed for ``numpy.random.default_rng``: the same row shuffles the same way whatever
    else is in the file (Python's ``hash`` is salted per process, so a digest is used)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


def distinct(texts: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Texts in first-seen order, without repeats or excluded ones (compared case-insensitively)."""
    seen = {t.strip().lower() for t in exclude}
    out = []
    for t in texts:
        key = t.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(t.strip())
    return out


@dataclass
class ImportReport:
    """What an importer kept and what it skipped, and why (printed by the CLI)."""

    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        if not self.skipped:
            return "none skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"skipped {sum(self.skipped.values())}: {parts}"
