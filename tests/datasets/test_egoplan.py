"""EgoPlan-Bench and EgoPlan-IT from fixtures in their real format: clips end at the observation frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from egovlm.datasets.egoplan import import_egoplan, import_egoplan_it
from egovlm.schema import DatasetError, QAItem, read_jsonl
from egovlm.train import sampling
from tests.datasets.media import frame_index, write_counter_video

FIXTURES = Path(__file__).parents[1] / "fixtures" / "datasets"
BENCH = FIXTURES / "egoplan_validation.json"
IT = FIXTURES / "egoplan_it.json"
FPS = 10


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame counter video (frame i shows grey 6 * i) for every video_id in the fixtures."""
    folder = tmp_path_factory.mktemp("videos")
    ids = {row["video_id"] for path in (BENCH, IT) for row in json.loads(path.read_text())}
    for video_id in ids:
        write_counter_video(folder / f"{video_id}.mp4", frames=40, fps=FPS)
    return folder


def _observation_index(row: dict) -> int:
    """The observation's 0-based frame index in the file (EPIC-KITCHENS numbers frames from 1)."""
    return row["current_observation_frame"] - (1 if row["video_source"] == "EpicKitchens" else 0)


def _sampled_indices(item: QAItem, base: Path, mode: str, n: int = 8) -> list[int]:
    timed = sampling.sample(item.media_path(base), n, mode, start_s=item.start_s, end_s=item.end_s)
    assert all(t <= item.end_s + 1e-6 for t, _ in timed)  # type: ignore[operator]
    return [frame_index(img) for _, img in timed]


@pytest.mark.parametrize("source", [BENCH, IT])
def test_every_sampled_frame_precedes_the_observation(source: Path, videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    if source == BENCH:
        items = import_egoplan(source, videos, out)  # frame rate read from each video (10 fps)
    else:
        items, _ = import_egoplan_it(source, videos, out)
    rows = {str(r["sample_id"]): r for r in json.loads(source.read_text())}
    assert items
    modes = ["uniform", "salient"] if sampling.selector_available() else ["uniform"]
    for item in items:
        row = rows[str(item.meta["sample_id"])]
        last = _observation_index(row)
        for mode in modes:
            seen = _sampled_indices(item, out.parent, mode)
            assert max(seen) <= last, (item.id, mode, seen, last)
        # the negative control: the uncut video shows frames after the observation (the answer)
        uncut = [frame_index(img) for _, img in sampling.sample(item.media_path(out.parent), 8, "uniform")]
        assert max(uncut) > last


def test_bench_windows_use_task_start_and_observation(videos: Path, tmp_path: Path) -> None:
    epic, ego4d = import_egoplan(BENCH, videos, tmp_path / "o.jsonl")
    # EPIC, no task_start_frame: from the first step's start (frame 4 -> 0.3 s) to the observation (26 -> 2.5 s)
    assert (epic.start_s, epic.end_s) == (0.3, 2.5)
    assert epic.salient_times == [0.7, 1.2, 1.7, 2.0, 2.5]  # step ends, then the observation
    # Ego4D (EgoPlan-Bench2 style): task_start_frame 5 -> 0.5 s, observation 21 -> 2.1 s, frames from 0
    assert (ego4d.start_s, ego4d.end_s) == (0.5, 2.1)
    assert ego4d.salient_times == [0.7, 1.1, 2.0, 2.1]
    assert ego4d.meta["source_video"] == "ca6e9ec9-46ac-4a02-8034-7c31157dc52c"
    assert epic.meta["fps"] == pytest.approx(FPS)


def test_it_options_come_from_negatives_then_the_same_video(videos: Path, tmp_path: Path) -> None:
    items, report = import_egoplan_it(IT, videos, tmp_path / "o.jsonl", seed=0)
    rows = {r["sample_id"]: r for r in json.loads(IT.read_text())}
    by_id = {it.meta["sample_id"]: it for it in items}
    assert set(by_id) == {39, 40, 41}  # 42 has no distractor at all
    assert report.skipped == {"with fewer than 3 distinct distractors": 1}
    for sid, item in by_id.items():
        row = rows[sid]
        assert len(item.options) == 4 and len(set(item.options.values())) == 4
        assert item.answer is not None and item.options[item.answer] == row["answer"]
        assert item.id == f"egoplan_it-{sid}" and item.source == "egoplan-it"
    # 39 has six negatives: all three distractors are negatives
    negatives = set(rows[39]["negative_answers"])
    assert {t for k, t in by_id[39].options.items() if k != by_id[39].answer} <= negatives
    # 40 has one negative; the others are actions recorded in the same video (P07_113)
    wrong40 = {t for k, t in by_id[40].options.items() if k != by_id[40].answer}
    assert "grab onion" in wrong40
    assert wrong40 - {"grab onion"} <= {"open drawer", "grab knife", "close drawer"}
    # a step that ends after the observation (41's "put tea bag in cup", frame 31) is no salient time
    assert by_id[41].salient_times == [1.2, 1.6, 2.4]


def test_it_is_deterministic_by_seed(videos: Path, tmp_path: Path) -> None:
    def options(seed: int) -> list[tuple[dict[str, str], str | None]]:
        items, _ = import_egoplan_it(IT, videos, tmp_path / "o.jsonl", seed=seed)
        return [(it.options, it.answer) for it in items]

    assert options(0) == options(0)
    assert any(options(s) != options(0) for s in range(1, 6))


def test_it_cli_writes_rows_and_reports_skips(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "it" / "egoplan_it.jsonl"
    res = CliRunner().invoke(
        app, ["data", "import", "egoplan-it", "--data", str(IT), "--videos", str(videos), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert (
        "wrote 3 rows" in res.output and "skipped 1: 1 with fewer than 3 distinct distractors" in res.output
    )
    items = read_jsonl(out)
    assert all(it.end_s is not None and it.start_s is not None for it in items)
    assert items[0].media_path(out.parent).is_file()


def test_missing_frame_rate_and_bad_frames_are_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"egoplan_it.json:2: cannot read the frame rate .* pass --fps"):
        import_egoplan_it(IT, tmp_path, tmp_path / "o.jsonl", require_videos=False)
    rows = json.loads(IT.read_text())
    rows[1]["current_observation_frame"] = "soon"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rows, indent=4))
    line = [i for i, text in enumerate(bad.read_text().splitlines(), 1) if text == "    {"][1]  # sample 1
    with pytest.raises(DatasetError, match=rf"bad.json:{line}:current_observation_frame: expected a frame"):
        import_egoplan_it(bad, tmp_path, tmp_path / "o.jsonl", fps=30.0, require_videos=False)
