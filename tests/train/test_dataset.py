"""Frame sampling, the decoded-frame cache, and the rows GRPO reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.schema import read_jsonl
from egovlm.train import sampling
from egovlm.train.dataset import (
    FrameSpec,
    NotPreparedError,
    PreparedItem,
    hf_dataset,
    prepare_item,
    read_prepared,
    row,
)

SIZE = (112, 84)


def prepare_all(items: list[Any], base: Path, spec: FrameSpec, cache: Path) -> list[PreparedItem]:
    return [prepare_item(item, base, spec, cache) for item in items]


def training_dataset(prepared: list[PreparedItem]) -> Any:
    return hf_dataset([row(p, selector_k=2) for p in prepared])


def test_uniform_sampling_times_and_order(fixture_data: Path) -> None:
    timed = sampling.sample(fixture_data.parent / "clip00.mp4", 4, "uniform")
    times = [t for t, _ in timed]
    assert times == sorted(times)
    assert times == pytest.approx([0.3, 1.1, 1.8, 2.6], abs=0.11)  # centres of 4 segments of a 3 s clip


def test_frame_folder_sampling_picks_the_frame_shown_at_each_time(tmp_path: Path) -> None:
    from PIL import Image

    entries = []
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(tmp_path / f"{i}.png")
        entries.append({"file": f"{i}.png", "t": i * 0.5})
    (tmp_path / "frames.json").write_text(json.dumps(entries))
    timed = sampling.sample(tmp_path, 2, "uniform")  # clip 0..5 s: times 1.25 and 3.75
    assert [t for t, _ in timed] == [1.0, 3.5]


def test_salient_sampling_uses_the_edge_selector(fixture_data: Path) -> None:
    pytest.importorskip("egovlm.keyframes")
    clip = fixture_data.parent / "clip01.mp4"  # the square appears at t = 1.0 s
    timed = sampling.sample(clip, 3, "salient")
    times = [t for t, _ in timed]
    assert len(times) == 3 and times == sorted(times)
    assert len(set(times)) == 3
    # The selector keeps the first view after the scene changes (the square's appearance).
    assert any(1.0 <= t <= 1.3 for t in times), times


def test_unknown_sampling_and_bad_counts(fixture_data: Path) -> None:
    with pytest.raises(sampling.SamplingError, match="unknown frame sampling"):
        sampling.sample(fixture_data.parent / "clip00.mp4", 4, "random")
    with pytest.raises(sampling.SamplingError, match="at least one frame"):
        sampling.sample(fixture_data.parent / "clip00.mp4", 0, "uniform")


def test_cache_is_written_once_resized_and_reused(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = read_jsonl(fixture_data)
    spec = FrameSpec(4, "uniform", SIZE)
    first = prepare_all(items, fixture_data.parent, spec, tmp_path / "cache")
    assert all(f.image.shape == (SIZE[1], SIZE[0], 3) for p in first for f in p.frames)
    assert all(len(p.frame_files) == 4 and all(f.is_file() for f in p.frame_files) for p in first)
    index = json.loads((first[0].folder / "frames.json").read_text())
    assert [e["t"] for e in index] == first[0].frame_times

    def no_decoding(*_: Any, **__: Any) -> None:
        raise AssertionError("decoded again although the cache holds the frames")

    monkeypatch.setattr(sampling, "sample", no_decoding)
    again = prepare_all(items, fixture_data.parent, spec, tmp_path / "cache")
    assert [p.folder for p in again] == [p.folder for p in first]
    assert np.array_equal(again[0].frames[2].image, first[0].frames[2].image)
    # A different frame count is a different cache entry (and would need decoding).
    with pytest.raises(sampling.SamplingError, match="decoded again"):
        prepare_item(items[0], fixture_data.parent, FrameSpec(6, "uniform", SIZE), tmp_path / "cache")
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary folders left behind


def test_missing_media_names_the_row(fixture_data: Path, tmp_path: Path) -> None:
    item = read_jsonl(fixture_data)[0].model_copy(update={"video": "gone.mp4"})
    with pytest.raises(sampling.SamplingError, match=r"row 'fx00'.*gone\.mp4"):
        prepare_item(item, fixture_data.parent, FrameSpec(4, "uniform", SIZE), tmp_path)


def test_training_rows(fixture_data: Path, tmp_path: Path) -> None:
    items = read_jsonl(fixture_data)
    prepared = prepare_all(items, fixture_data.parent, FrameSpec(4, "uniform", SIZE), tmp_path)
    ds = training_dataset(prepared)
    assert len(ds) == len(items)
    row = ds[0]
    assert row["id"] == "fx00" and row["answer"] == items[0].answer and row["letters"] == "ABCD"
    assert len(row["images"]) == 4 and row["images"][0].size == SIZE  # PIL, decoded lazily
    assert row["salient_times"] == items[0].salient_times
    assert row["selector_frames"] == []  # annotated rows do not need the selector
    user = row["prompt"][1]["content"]
    assert [c["type"] for c in user].count("image") == 4
    assert user[0]["text"].startswith("Frame 1 (t=0.3 s)")


def test_rows_without_annotations_get_selector_frames(fixture_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("egovlm.keyframes")
    item = read_jsonl(fixture_data)[1].model_copy(update={"salient_times": None})
    prepared = prepare_all([item], fixture_data.parent, FrameSpec(4, "uniform", SIZE), tmp_path)
    ds = training_dataset(prepared)
    frames = ds[0]["selector_frames"]
    assert len(frames) == 2 and all(1 <= i <= 4 for i in frames)


def test_read_prepared_never_decodes(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = read_jsonl(fixture_data)
    spec = FrameSpec(4, "uniform", SIZE)
    real = prepare_item(items[0], fixture_data.parent, spec, tmp_path)
    monkeypatch.setattr(sampling, "sample", lambda *a, **k: pytest.fail("read_prepared decoded"))
    assert read_prepared(items[0], fixture_data.parent, spec, tmp_path).folder == real.folder
    with pytest.raises(NotPreparedError, match=r"row 'fx01': no frames in the cache for .*clip01\.mp4"):
        read_prepared(items[1], fixture_data.parent, spec, tmp_path)
    cut = items[0].model_copy(update={"start_s": 0.5, "end_s": 2.0})  # another window: another entry
    with pytest.raises(NotPreparedError, match=r"clip00\.mp4 \[0\.5 s – 2 s\]"):
        read_prepared(cut, fixture_data.parent, spec, tmp_path)
