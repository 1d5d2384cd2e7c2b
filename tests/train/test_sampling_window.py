"""Clip windows: frames are sampled only inside a row's [start_s, end_s], in the source timebase."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from egovlm.train import sampling
from tests.datasets.media import frame_index, write_counter_video

FPS = 10  # the counter video: 40 frames, frame i at i / 10 s


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_counter_video(tmp_path_factory.mktemp("w") / "v.mp4", frames=40, fps=FPS)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    from PIL import Image

    entries = []
    for i in range(20):  # frame i at 0.5 * i s, grey 10 * i
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(tmp_path / f"{i}.png")
        entries.append({"file": f"{i}.png", "t": 0.5 * i})
    (tmp_path / "frames.json").write_text(json.dumps(entries))
    return tmp_path


def test_uniform_video_window(video: Path) -> None:
    timed = sampling.sample(video, 4, "uniform", start_s=1.0, end_s=2.0)
    times = [t for t, _ in timed]
    # centres of 4 segments of [1, 2]: 1.125, 1.375, 1.625, 1.875 -> the frames shown then
    assert times == pytest.approx([1.1, 1.3, 1.6, 1.8], abs=1e-6)
    assert [frame_index(img) for _, img in timed] == [11, 13, 16, 18]  # the pixels match the times


def test_open_ended_windows(video: Path) -> None:
    early = [t for t, _ in sampling.sample(video, 5, "uniform", end_s=0.5)]
    assert max(early) <= 0.5 and min(early) >= 0.0
    late = [t for t, _ in sampling.sample(video, 5, "uniform", start_s=3.0)]
    assert min(late) >= 3.0 - 1e-6 and max(late) <= 3.9 + 1e-6


def test_whole_video_unchanged_without_a_window(video: Path) -> None:
    whole = [t for t, _ in sampling.sample(video, 4, "uniform")]
    assert whole == pytest.approx([0.5, 1.5, 2.5, 3.5], abs=1e-6)


def test_window_end_past_the_video_is_clamped_but_start_past_it_fails(video: Path) -> None:
    times = [t for t, _ in sampling.sample(video, 2, "uniform", start_s=3.0, end_s=99.0)]
    assert all(3.0 <= t <= 3.9 + 1e-6 for t in times)
    with pytest.raises(sampling.SamplingError, match=r"clip window \[start_s=7.0, end_s=None\] is empty"):
        sampling.sample(video, 2, "uniform", start_s=7.0)


def test_frame_folder_window(folder: Path) -> None:
    timed = sampling.sample(folder, 2, "uniform", start_s=2.0, end_s=4.0)  # times 2.5 and 3.5
    assert [t for t, _ in timed] == [2.5, 3.5]
    assert [int(img.mean()) for _, img in timed] == [50, 70]
    candidates = sampling.decode_candidates(folder, 2.0, 4.0)
    assert [t for t, _ in candidates] == [2.0, 2.5, 3.0, 3.5, 4.0]
    with pytest.raises(sampling.SamplingError, match="no frame of the folder"):
        sampling.sample(folder, 2, "uniform", start_s=9.6, end_s=9.7)


def test_salient_candidates_stay_in_the_window(video: Path) -> None:
    candidates = sampling.decode_candidates(video, 2.0, 3.0)
    times = [t for t, _ in candidates]
    assert times and min(times) >= 2.0 and max(times) <= 3.0
    few = sampling.decode_salient(video, 8, None, 2.0, 3.0)  # fewer candidates than n: spread over window
    assert len(few) == 8 and all(2.0 <= t <= 3.0 for t, _ in few)


def test_salient_selection_stays_in_the_window(video: Path) -> None:
    pytest.importorskip("egovlm.keyframes")
    timed = sampling.sample(video, 2, "salient", start_s=0.5, end_s=3.0)
    assert len(timed) == 2
    assert all(0.5 <= t <= 3.0 for t, _ in timed)
    assert all(frame_index(img) <= 30 for _, img in timed)
