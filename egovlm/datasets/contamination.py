"""Contamination guard: no training row may come from a video an evaluation set is cut from.

Identity is the *uncut* source video (:func:`egovlm.datasets.common.source_video`): an Ego4D
``video_uid`` or an EPIC-KITCHENS ``video_id``. A whole video is excluded, not only the evaluated
minutes, because a model that has trained on the rest of a video has seen its people, rooms and
objects. The evaluation sets are given as schema JSONL files (EgoSchema imported with its
``uid_to_ego4d.json`` map, EgoPlan-Bench validation, any other); EgoSchema rows imported without the
map carry only their q_uid, which cannot be matched against Ego4D videos — :class:`Guard` reports
how many, so a user is never told a check passed when it could not run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from egovlm.datasets.common import SOURCE_VIDEO, source_video
from egovlm.schema import QAItem, iter_jsonl


@dataclass
class Guard:
    """The source videos of the evaluation sets, and what they could not tell."""

    videos: set[str] = field(default_factory=set)
    files: list[Path] = field(default_factory=list)
    unmapped_egoschema: int = 0  # EgoSchema rows without an Ego4D video_uid

    @classmethod
    def load(cls, paths: Sequence[Path]) -> Guard:
        guard = cls(files=list(paths))
        for path in paths:
            for item in iter_jsonl(path):
                guard.videos.add(source_video(item))
                if item.source == "egoschema" and not item.meta.get(SOURCE_VIDEO):
                    guard.unmapped_egoschema += 1
        return guard

    def warnings(self) -> list[str]:
        if not self.unmapped_egoschema:
            return []
        return [
            f"{self.unmapped_egoschema} EgoSchema rows carry no Ego4D video_uid, so Ego4D-derived "
            "training rows cannot be checked against them: re-import EgoSchema with "
            "`--ego4d-map uid_to_ego4d.json` (from github.com/egoschema/EgoSchema)"
        ]


@dataclass
class Decontaminated:
    kept: list[QAItem]
    dropped: int
    videos: int  # distinct training source videos dropped

    def summary(self, guard: Guard) -> str:
        names = ", ".join(str(p) for p in guard.files)
        return (
            f"dropped {self.dropped} of {self.dropped + len(self.kept)} training rows from {self.videos} "
            f"source videos that appear in the evaluation sets ({names})"
        )


def decontaminate(items: Iterable[QAItem], guard: Guard) -> Decontaminated:
    """The training rows whose source video is in none of the evaluation sets, and how many were dropped."""
    kept: list[QAItem] = []
    dropped_videos: set[str] = set()
    dropped = 0
    for item in items:
        key = source_video(item)
        if key in guard.videos:
            dropped += 1
            dropped_videos.add(key)
        else:
            kept.append(item)
    return Decontaminated(kept, dropped, len(dropped_videos))


def rebase(item: QAItem, src_dir: Path, dst_dir: Path) -> QAItem:
    """The row with its relative media path rewritten for a JSONL written in ``dst_dir``."""
    rel = item.video if item.video is not None else item.frames_dir
    if rel is None or Path(rel).is_absolute() or src_dir.resolve() == dst_dir.resolve():
        return item
    moved = os.path.relpath((src_dir / rel).resolve(), dst_dir.resolve())
    key = "video" if item.video is not None else "frames_dir"
    return item.model_copy(update={key: moved})
