"""The contamination guard: training rows from an evaluation set's source videos are dropped and counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from egovlm.datasets.common import source_video
from egovlm.datasets.contamination import Guard, decontaminate, rebase
from egovlm.datasets.egoschema import import_egoschema
from egovlm.schema import DatasetError, QAItem, read_jsonl, write_jsonl

FIXTURES = Path(__file__).parents[1] / "fixtures" / "datasets"
KITCHEN = "2fa72a4f-b318-4e04-97b8-efdc3b039258"  # EgoSchema q_uid 001934bb-… is cut from it
BAKERY = "ca6e9ec9-46ac-4a02-8034-7c31157dc52c"  # an EgoPlan-Bench(2) validation video


def _invoke(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _egoschema(tmp_path: Path, mapped: bool = True) -> Path:
    out = tmp_path / "eval" / ("egoschema.jsonl" if mapped else "egoschema_unmapped.jsonl")
    args = ["data", "import", "egoschema", "--questions", str(FIXTURES / "egoschema_questions.json")]
    args += ["--videos", str(tmp_path / "es_videos"), "--out", str(out), "--allow-missing-videos"]
    _invoke(*args, *(["--ego4d-map", str(FIXTURES / "uid_to_ego4d.json")] if mapped else []))
    return out


def _egoplan_val(tmp_path: Path) -> Path:
    out = tmp_path / "eval" / "egoplan_val.jsonl"
    args = ["data", "import", "egoplan", "--data", str(FIXTURES / "egoplan_validation.json"), "--fps", "30"]
    _invoke(*args, "--videos", str(tmp_path / "ep_videos"), "--out", str(out), "--allow-missing-videos")
    return out


def _narrations(tmp_path: Path, *against: Path) -> tuple[Path, str]:
    out = tmp_path / "train" / "ego4d.jsonl"
    args = ["data", "import", "ego4d-narrations", "--narrations", str(FIXTURES / "narration.json")]
    args += [
        "--videos",
        str(tmp_path / "videos"),
        "--out",
        str(out),
        "--window-s",
        "20",
        "--allow-missing-videos",
    ]
    for path in against:
        args += ["--against", str(path)]
    return out, _invoke(*args)


def test_egoschema_rows_record_their_ego4d_video(tmp_path: Path) -> None:
    items = read_jsonl(_egoschema(tmp_path))
    assert [source_video(it) for it in items] == [KITCHEN, "b4461fe4-c5ed-4764-8ef0-bcff0eb2714c"]
    assert (items[0].meta["ego4d_start_s"], items[0].meta["ego4d_end_s"]) == (240, 420)


def test_importer_drops_and_counts_rows_from_evaluation_videos(tmp_path: Path) -> None:
    clean, _ = _narrations(tmp_path)
    all_rows = read_jsonl(clean)
    per_video = {v: sum(source_video(it) == v for it in all_rows) for v in (KITCHEN, BAKERY)}
    assert per_video[KITCHEN] > 0 and per_video[BAKERY] > 0

    guarded, output = _narrations(tmp_path, _egoschema(tmp_path), _egoplan_val(tmp_path))
    dropped = per_video[KITCHEN] + per_video[BAKERY]
    assert f"dropped {dropped} of {len(all_rows)} training rows from 2 source videos" in output
    kept = read_jsonl(guarded)
    assert len(kept) == len(all_rows) - dropped
    assert not {source_video(it) for it in kept} & {KITCHEN, BAKERY}


def test_standalone_decontaminate_rewrites_paths_and_reports(tmp_path: Path) -> None:
    train, _ = _narrations(tmp_path)
    n_train = len(read_jsonl(train))
    out = tmp_path / "elsewhere" / "deep" / "clean.jsonl"
    output = _invoke(
        "data", "decontaminate", str(train), "--against", str(_egoschema(tmp_path)), "--out", str(out)
    )
    kept = read_jsonl(out)
    assert f"dropped {n_train - len(kept)} of {n_train} training rows from 1 source videos" in output
    assert n_train - len(kept) > 0
    original = {it.id: it for it in read_jsonl(train)}
    for it in kept:  # media paths still point at the same files from the new folder
        assert it.media_path(out.parent).resolve() == original[it.id].media_path(train.parent).resolve()


def test_egoplan_it_rows_are_guarded_too(tmp_path: Path) -> None:
    from tests.datasets.media import write_counter_video

    videos = tmp_path / "videos"
    for vid in ("P07_113", KITCHEN, "P02_01"):
        write_counter_video(videos / f"{vid}.mp4", frames=40, fps=10)
    out = tmp_path / "it.jsonl"
    args = [
        "data",
        "import",
        "egoplan-it",
        "--data",
        str(FIXTURES / "egoplan_it.json"),
        "--videos",
        str(videos),
    ]
    output = _invoke(*args, "--out", str(out), "--against", str(_egoschema(tmp_path)))
    assert "dropped 1 of 3 training rows from 1 source videos" in output
    assert [it.meta["sample_id"] for it in read_jsonl(out)] == [39, 40]


def test_unmapped_egoschema_is_reported_not_silently_passed(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["data", "import", "ego4d-narrations", "--narrations", str(FIXTURES / "narration.json"),
         "--videos", str(tmp_path), "--out", str(tmp_path / "o.jsonl"), "--allow-missing-videos",
         "--against", str(_egoschema(tmp_path, mapped=False))],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 EgoSchema rows carry no Ego4D video_uid" in res.output and "--ego4d-map" in res.output
    assert "dropped 0 of" in res.output


def test_decontaminate_function_and_rebase(tmp_path: Path) -> None:
    def row(rid: str, video: str, **meta: str) -> QAItem:
        return QAItem(id=rid, video=video, question="q?", options={"A": "x", "B": "y"}, source="t", meta=meta)

    evaluation = tmp_path / "eval.jsonl"
    write_jsonl(evaluation, [row("e1", "clips/q1.mp4", source_video="VID-1"), row("e2", "abc.mp4")])
    guard = Guard.load([evaluation])
    assert guard.videos == {"vid-1", "abc"}  # meta key, else the media stem; compared lower-case
    train = [row("t1", "x/VID-1.mp4"), row("t2", "y.mp4", source_video="abc"), row("t3", "z.mp4")]
    result = decontaminate(train, guard)
    assert (result.dropped, result.videos, [it.id for it in result.kept]) == (2, 2, ["t3"])
    moved = rebase(row("r", "v/a.mp4"), tmp_path / "d1", tmp_path / "d2" / "sub")
    assert moved.video == "../../d1/v/a.mp4"
    with pytest.raises(DatasetError, match="dataset file not found"):
        Guard.load([tmp_path / "missing.jsonl"])


def test_egoschema_map_must_match_the_questions(tmp_path: Path) -> None:
    wrong = tmp_path / "map.json"
    wrong.write_text('{"someone-else": {"video_uid": "v", "starting_sec": 0, "ending_sec": 180}}')
    with pytest.raises(DatasetError, match="none of its 1 q_uids appear"):
        import_egoschema(
            FIXTURES / "egoschema_questions.json", None, tmp_path, tmp_path / "o.jsonl", False, wrong
        )
    wrong.write_text('{"x": {"starting_sec": 0}}')
    with pytest.raises(DatasetError, match=r"map.json:1:video_uid: missing for q_uid 'x'"):
        import_egoschema(
            FIXTURES / "egoschema_questions.json", None, tmp_path, tmp_path / "o.jsonl", False, wrong
        )
