"""A tiny EgoSynth-like dataset written in the test itself: short .mp4 clips of coloured frames
(a coloured square appears at a known time) and a qa.jsonl with exact salient_times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.schema import QAItem, write_jsonl

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def write_clip(
    path: Path, colour: tuple[int, int, int], event_t: float, seconds: float = 3.0, fps: int = 10
) -> None:
    import av

    w, h = 96, 72
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            t = i / fps
            img = np.full((h, w, 3), 90 + 4 * i, dtype=np.uint8)
            if t >= event_t:
                img[20:52, 30:66] = colour
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_dataset(folder: Path, clips: int = 6, answered: bool = True) -> Path:
    """Write ``clips`` clips and ``qa.jsonl``; returns the JSONL path."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    items = []
    for i in range(clips):
        name = names[i % len(names)]
        event_t = 0.6 + 0.4 * (i % 4)
        write_clip(folder / f"clip{i:02d}.mp4", COLOURS[name], event_t)
        options = {letter: c for letter, c in zip("ABCD", names, strict=True)}
        answer = "ABCD"[names.index(name)]
        items.append(
            QAItem(
                id=f"fx{i:02d}",
                video=f"clip{i:02d}.mp4",
                question="What colour was the object that appeared?",
                options=options,
                answer=answer if answered else None,
                salient_times=[event_t],
                duration_s=3.0,
                question_type="colour" if i % 2 == 0 else "appearance",
                source="fixture",
            )
        )
    path = folder / "qa.jsonl"
    write_jsonl(path, items)
    return path


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six answered clips with exact salient times (the EgoSynth stand-in for unit tests)."""
    return make_dataset(tmp_path_factory.mktemp("fixture_data"))


@pytest.fixture
def dataset_factory() -> Any:
    """``make_dataset(folder, clips=…, answered=…)`` for tests that need their own variant."""
    return make_dataset
