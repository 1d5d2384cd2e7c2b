"""Importers on the benchmarks' real formats (EgoSchema's real public answers file ships as a fixture)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from egovlm.datasets.egoplan import import_egoplan
from egovlm.datasets.egoschema import import_egoschema
from egovlm.schema import DatasetError, read_jsonl

ANSWERS = Path(__file__).parents[1] / "fixtures" / "egoschema" / "subset_answers.json"


def _questions(tmp_path: Path, extra: int = 20) -> tuple[Path, list[str]]:
    """questions.json in EgoSchema's format: the 500 public-subset q_uids plus `extra` withheld ones."""
    uids = list(json.loads(ANSWERS.read_text())) + [f"withheld-{i:04d}" for i in range(extra)]
    rows = [
        {
            "q_uid": uid,
            "google_drive_id": f"gd{i}",
            "question": f"What is the overarching goal of c in video {i}?",
            **{f"option {k}": f"option {k} of {i}" for k in range(5)},
        }
        for i, uid in enumerate(uids)
    ]
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(rows, indent=4))
    return path, uids


def test_egoschema_round_trip_with_real_answers(tmp_path):
    questions, uids = _questions(tmp_path)
    out = tmp_path / "out" / "egoschema.jsonl"
    res = CliRunner().invoke(
        app,
        ["data", "import", "egoschema", "--questions", str(questions), "--answers", str(ANSWERS),
         "--videos", str(tmp_path / "videos"), "--out", str(out), "--allow-missing-videos"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "500 with public answers, 20 unanswered" in res.output
    items = read_jsonl(out)
    assert [it.id for it in items] == uids
    answers = json.loads(ANSWERS.read_text())
    for it in items:
        if it.id in answers:
            assert it.answer is not None and "ABCDE".index(it.answer) == answers[it.id]
        else:
            assert it.answer is None and not it.answered
    assert items[0].media_path(out.parent) == (tmp_path / "videos" / f"{uids[0]}.mp4").resolve()
    assert set(items[3].options) == set("ABCDE")


def test_egoschema_malformed_row_is_reported_with_its_line(tmp_path):
    questions, _ = _questions(tmp_path, extra=0)
    rows = json.loads(questions.read_text())
    del rows[2]["option 3"]
    questions.write_text(json.dumps(rows, indent=4))
    text_lines = questions.read_text().splitlines()
    expected_line = [i for i, line in enumerate(text_lines, 1) if line.strip() == "{"][2]
    with pytest.raises(DatasetError, match=rf"questions.json:{expected_line}:option 3: missing"):
        import_egoschema(questions, ANSWERS, tmp_path, tmp_path / "o.jsonl", require_videos=False)


def test_egoschema_missing_videos_are_an_error_by_default(tmp_path):
    questions, _ = _questions(tmp_path, extra=0)
    with pytest.raises(DatasetError, match="500 videos not found"):
        import_egoschema(questions, ANSWERS, tmp_path / "videos", tmp_path / "o.jsonl")


def test_egoschema_answer_index_out_of_range(tmp_path):
    questions, uids = _questions(tmp_path, extra=0)
    bad = tmp_path / "answers.json"
    bad.write_text(json.dumps({uids[0]: 7}))
    with pytest.raises(DatasetError, match="answer must be an integer 0..4"):
        import_egoschema(questions, bad, tmp_path, tmp_path / "o.jsonl", require_videos=False)


def test_egoplan(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "P01_13.mp4").write_bytes(b"")
    sample = {
        "sample_id": 115, "video_source": "EpicKitchens", "video_id": "P01_13", "task_goal": "store cereal",
        "question": "What action should I take next in order to store cereal?",
        "choice_a": "put cereal box into cupboard", "choice_b": "take cereal bag", "choice_c": "open cupboard",
        "choice_d": "put cereal bag into cereal box", "golden_choice_idx": "A",
        "answer": "put cereal box into cupboard", "current_observation_frame": 760,
        "task_progress_metadata": [{"narration_text": "take cereal bag", "start_frame": 36, "stop_frame": 105}],
    }  # fmt: skip
    path = tmp_path / "egoplan.json"
    path.write_text(json.dumps([sample, {**sample, "sample_id": 116, "golden_choice_idx": None}], indent=2))
    items = import_egoplan(path, tmp_path / "videos", tmp_path / "o.jsonl", fps=10.0)
    assert items[0].answer == "A" and items[1].answer is None
    # EPIC-KITCHENS frames count from 1: frame f is at (f - 1) / fps
    assert items[0].salient_times == [10.4, 75.9]
    assert (items[0].start_s, items[0].end_s) == (3.5, 75.9)  # first step's start .. observation
    assert items[0].meta["source_video"] == "P01_13"
    assert list(items[0].options) == ["A", "B", "C", "D"]
    del sample["choice_b"]
    path.write_text(json.dumps([sample], indent=2))
    with pytest.raises(DatasetError, match=r"egoplan.json:2:choice_b"):
        import_egoplan(path, tmp_path / "videos", tmp_path / "o.jsonl")
