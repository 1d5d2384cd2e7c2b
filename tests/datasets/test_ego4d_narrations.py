"""Ego4D narrations → multiple-choice questions, from a narration.json fixture in Ego4D's real format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from egovlm.datasets.common import ImportReport
from egovlm.datasets.ego4d_narrations import build_ego4d_narrations, parse_narration
from egovlm.schema import DatasetError, QAItem, read_jsonl

NARRATIONS = Path(__file__).parents[1] / "fixtures" / "datasets" / "narration.json"
KITCHEN = "2fa72a4f-b318-4e04-97b8-efdc3b039258"
Built = tuple[list[QAItem], ImportReport]


@pytest.mark.parametrize(
    ("text", "verb", "obj", "place"),
    [
        ("#C C picks up the knife from the table", "pick up", "knife", None),
        ("#c c puts the knife on the table with his right hand", "put", "knife", "on the table"),
        ("#C C drops  the spoon into the sink.", "drop", "spoon", "in the sink"),
        ("#C C places the pan back on the cooker", "place", "pan", "on the cooker"),
        ("#C C picks a piece of cloth and wipes the table", "pick", "piece of cloth", None),
        ("#C C carries the bucket", "carry", "bucket", None),
        ("#C C washes the plate", "wash", "plate", None),
        ("#C C looks around", "look", None, None),
    ],
)
def test_parse_narration(text: str, verb: str, obj: str | None, place: str | None) -> None:
    event = parse_narration(text, 2.5)
    assert event is not None
    assert (event.verb, event.obj, event.place, event.t) == (verb, obj, place, 2.5)
    assert event.text.startswith("C ") and "#" not in event.text


@pytest.mark.parametrize(
    "text", ["#O man X picks a phone", "C picks a screw", "#C C", "#C C 123 !!", None, 42, ""]
)
def test_odd_narrations_are_not_events(text: object) -> None:
    assert parse_narration(text, 1.0) is None


def test_unsure_narrations_are_kept_only_as_doubt() -> None:
    event = parse_narration("#C C picks up #unsure", 1.0)
    assert event is not None and not event.sure and event.kind == "pick"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("n") / "ego4d.jsonl"
    return build_ego4d_narrations(NARRATIONS, out.parent / "videos", out, require_videos=False, window_s=20.0)


def test_every_question_type_is_built_with_times_inside_its_clip(built: Built) -> None:
    items, _ = built
    types = {it.question_type for it in items}
    assert {
        "first_pickup",
        "last_pickup",
        "first_putdown",
        "last_putdown",
        "order",
        "count",
        "where",
    } <= types
    data = json.loads(NARRATIONS.read_text())
    for it in items:
        assert it.source == "ego4d-narrations" and it.answer in it.options and len(it.options) == 5
        assert it.start_s is not None and it.end_s is not None and it.salient_times
        assert all(it.start_s <= t <= it.end_s for t in it.salient_times)
        uid = it.meta["source_video"]
        stamps = {
            n["timestamp_sec"]
            for p in data[uid].values()
            for n in p["narrations"]
            if isinstance(n.get("timestamp_sec"), float)
        }
        assert set(it.salient_times) <= stamps  # ground truth = narration timestamps


def _right(item: QAItem) -> str:
    return item.options[str(item.answer)]


def test_answers_follow_the_narrations(built: Built) -> None:
    items, _ = built
    kitchen = {(it.meta["window"], it.question_type, it.question): it for it in items if KITCHEN in it.id}
    first = next(it for (w, q, _), it in kitchen.items() if w == 0 and q == "first_pickup")
    assert _right(first) == "the bottle of milk" and first.salient_times == [3.0]
    # "the milk" shares a word with the answer: it would be a second right answer, so it is no distractor
    assert "the milk" not in first.options.values()
    where = next(it for (w, q, _), it in kitchen.items() if w == 0 and q == "where")
    assert where.question == "Where did C put the spoon in this clip?"
    assert _right(where) == "in the sink"  # "drops the spoon into the sink"
    count = next(it for (w, q, _), it in kitchen.items() if w == 0 and q == "count")
    assert _right(count) == str(len(count.salient_times or []))
    # window 1 has a "#C C picks up #unsure": no last-pick-up or pick-up count question there
    assert not any(w == 1 and q in {"last_pickup", "count"} for (w, q, _) in kitchen)
    # pass 1 is used when present; pass 2 ("refrigerator") is never mixed in
    assert not any("refrigerator" in " ".join(it.options.values()) for it in items)


def test_skips_are_counted_not_fatal(built: Built) -> None:
    _, report = built
    assert report.skipped == {
        "narrations not of the camera wearer (#C C …)": 4,
        "narrations that could not be parsed": 2,
        "narrations without a valid timestamp_sec": 2,
        "uncertain narrations (#unsure, or no object; kept only to rule questions out)": 1,
        "videos without narrations": 1,
    }


def test_deterministic_by_seed(tmp_path: Path) -> None:
    def run(seed: int) -> list[str]:
        items, _ = build_ego4d_narrations(
            NARRATIONS, tmp_path, tmp_path / "o.jsonl", require_videos=False, seed=seed, window_s=20.0
        )
        return [it.model_dump_json() for it in items]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_clips_stop_halfway_to_the_neighbouring_window(built: Built) -> None:
    items, _ = built
    bounds = sorted({(it.start_s, it.end_s) for it in items if KITCHEN in it.id})
    assert bounds == [(0.0, 22.25), (22.25, 41.9)]  # 21.0 and 23.5 are the two windows' edge narrations


def test_cli_builds_from_the_fixture(tmp_path: Path) -> None:
    out = tmp_path / "ego4d.jsonl"
    args = ["data", "import", "ego4d-narrations", "--narrations", str(NARRATIONS), "--videos", str(tmp_path)]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--window-s", "20", "--allow-missing-videos"])
    assert res.exit_code == 0, res.output
    assert "wrote 19 rows" in res.output and "2 narrations without a valid timestamp_sec" in res.output
    assert len(read_jsonl(out)) == 19
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 2 and "videos not found" in res.output


def test_bad_structure_names_the_entry(tmp_path: Path) -> None:
    data = json.loads(NARRATIONS.read_text())
    data[KITCHEN] = ["not", "passes"]
    bad = tmp_path / "narration.json"
    bad.write_text(json.dumps(data, indent=1))
    with pytest.raises(
        DatasetError, match=rf"narration.json:2:{KITCHEN}: expected an object of narration passes"
    ):
        build_ego4d_narrations(bad, tmp_path, tmp_path / "o.jsonl", require_videos=False)
    bad.write_text("[]")
    with pytest.raises(DatasetError, match="expected an object mapping video_uid"):
        build_ego4d_narrations(bad, tmp_path, tmp_path / "o.jsonl", require_videos=False)
