"""EgoSynth dataset files: determinism, split seeds, schema, letter balance, QA truth, decoding, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from egovlm.schema import read_jsonl
from egovlm.synth import seeds
from egovlm.synth.generate import SynthConfig, build_clip, clip_rows, synthesize
from egovlm.synth.qa import assign_letters
from egovlm.synth.scene import PLACE_BY_NAME
from egovlm.synth.script import ACTIVITY_BY_NAME

SMALL = SynthConfig(size=(160, 120), fps=10, duration=12)
GT_FILES = ("qa.jsonl", "open.jsonl", "events.jsonl", "captions.jsonl", "clips.jsonl")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("egosynth")
    synthesize(out, 3, seed=5, split="train", config=SMALL, preview=True)
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_same_seed_same_ground_truth_bytes(dataset: Path, tmp_path: Path) -> None:
    synthesize(tmp_path, 3, seed=5, split="train", config=SMALL, workers=2)  # workers must not matter
    for name in GT_FILES:
        assert (dataset / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_other_seed_other_ground_truth(dataset: Path, tmp_path: Path) -> None:
    synthesize(tmp_path, 1, seed=6, split="train", config=SMALL)
    assert (dataset / "events.jsonl").read_bytes()[:400] != (tmp_path / "events.jsonl").read_bytes()[:400]


def test_splits_never_share_clip_seeds() -> None:
    fingerprints = {
        split: {seeds.clip_seed_hex(seeds.clip_sequence(split, s, i)) for s in range(3) for i in range(200)}
        for split in ("train", "test", "val")
    }
    assert len(fingerprints["train"]) == 600  # distinct within a split too
    assert not fingerprints["train"] & fingerprints["test"]
    assert not fingerprints["train"] & fingerprints["val"]
    assert not fingerprints["test"] & fingerprints["val"]
    a = build_clip("train", 0, 0, SMALL)
    b = build_clip("test", 0, 0, SMALL)
    assert a.meta["clip_seed"] != b.meta["clip_seed"] and a.clip_id != b.clip_id
    assert [e.to_json() for e in a.script.events] != [e.to_json() for e in b.script.events]


def test_qa_validates_and_points_at_videos(dataset: Path) -> None:
    items = read_jsonl(dataset / "qa.jsonl")
    assert len(items) >= 3 * 5
    for item in items:
        assert item.source == "egosynth" and item.question_type and item.duration_s == 12.0
        assert item.media_path(dataset).is_file() and item.options is not None
        assert len(item.options) == 5 and len(set(item.options.values())) == 5
        assert item.salient_times and all(0 <= t <= item.duration_s for t in item.salient_times)
        assert item.meta["clip_id"] in item.id and item.meta["split"] == "train" and item.meta["seed"] == 5


def test_answers_agree_with_the_event_list(dataset: Path) -> None:
    """Recompute each answer from events.jsonl / clips.jsonl, independently of the QA code."""
    events = _rows(dataset / "events.jsonl")
    clips = {c["id"]: c for c in _rows(dataset / "clips.jsonl")}
    checked: Counter[str] = Counter()
    for item in read_jsonl(dataset / "qa.jsonl"):
        cid = item.meta["clip_id"]
        ev = [e for e in events if e["clip_id"] == cid]
        picks = [e for e in ev if e["action"] == "pick_up"]
        assert item.answer is not None and item.salient_times is not None and item.options is not None
        answer = item.options[item.answer]
        event_times = {e["t"] for e in ev}
        assert all(abs(e["t"] - e["frame"] / SMALL.fps) < 1e-6 for e in ev)  # events sit on frames
        assert set(item.salient_times) <= event_times, item.id
        if item.question_type == "first_pickup":
            assert answer == f"the {picks[0]['object']}"
        elif item.question_type == "last_pickup":
            assert answer == f"the {picks[-1]['object']}"
        elif item.question_type == "never_touched":
            touched = {e["object"] for e in ev}
            assert answer.removeprefix("the ") not in touched
            assert all(o.removeprefix("the ") in touched for o in item.options.values() if o != answer)
        elif item.question_type == "where_ended":
            name = item.question.removeprefix("Where did the ").removesuffix(" end up?")
            final = next(o["end_place"] for o in clips[cid]["objects"] if o["name"] == name)
            assert answer == PLACE_BY_NAME[final].at.capitalize() + "."
            assert final == [e for e in ev if e["object"] == name][-1]["place"]
        elif item.question_type == "count":
            assert int(answer) == len(item.salient_times)
            values = [int(v) for v in item.options.values()]
            assert values == sorted(values) and len(set(values)) == 5
        elif item.question_type == "order" and item.meta["variant"] == "pair":
            x, y = (
                item.question.removeprefix("Which statement about the ")
                .removesuffix(" is true?")
                .split(" and the ")
            )
            px = [e["t"] for e in picks if e["object"] == x]
            py = [e["t"] for e in picks if e["object"] == y]
            if px and py:
                assert len(px) == 1 and len(py) == 1  # "before" is only unambiguous for single pick-ups
                first, second = (x, y) if px[0] < py[0] else (y, x)
                assert answer == f"The {first} was picked up before the {second}."
            else:
                only, never = (x, y) if px else (y, x)
                assert answer == f"Only the {only} was picked up; the {never} was never picked up."
        elif item.question_type == "order":
            x = item.question.removeprefix("What did the wearer do right after picking up the ").removesuffix(
                "?"
            )
            i = next(k for k, e in enumerate(ev) if e["action"] == "pick_up" and e["object"] == x)
            nxt = ev[i + 1]
            if nxt["action"] == "pick_up":
                assert answer == f"picked up the {nxt['object']}"
            else:
                assert answer == f"put the {nxt['object']} {PLACE_BY_NAME[nxt['place']].to}"
        elif item.question_type == "overall":
            described = ACTIVITY_BY_NAME[clips[cid]["activity"]].description
            assert answer == described.capitalize() + "."
        checked[str(item.question_type)] += 1
    assert {"first_pickup", "where_ended", "count", "overall", "order"} <= set(checked)


def test_open_questions_answer_in_words_from_the_event_list(dataset: Path) -> None:
    """open.jsonl: first/last pick-up without options, the answer recomputed from events.jsonl and
    equal to the text of the correct option of the same multiple-choice question."""
    events = _rows(dataset / "events.jsonl")
    mc = {item.id: item for item in read_jsonl(dataset / "qa.jsonl")}
    opened = read_jsonl(dataset / "open.jsonl")
    assert opened and {i.question_type for i in opened} <= {"first_pickup", "last_pickup"}
    assert sum(i.question_type in ("first_pickup", "last_pickup") for i in mc.values()) == len(opened)
    for item in opened:
        assert item.options is None and item.answer is not None and item.is_open
        picks = [e for e in events if e["clip_id"] == item.meta["clip_id"] and e["action"] == "pick_up"]
        event = picks[0] if item.question_type == "first_pickup" else picks[-1]
        assert item.answer == f"the {event['object']}" and item.salient_times == [event["t"]]
        twin = mc[item.id.removesuffix("-open")]
        assert twin.options is not None and twin.answer is not None
        assert twin.question == item.question and twin.options[twin.answer] == item.answer
        assert item.media_path(dataset).is_file() and item.source == "egosynth"


def test_object_distractors_are_in_the_scene() -> None:
    for index in range(6):
        clip = build_clip("train", 3, index, SMALL)
        present = {f"the {o.name}" for o in clip.script.objects}
        for draft, _ in clip_rows(clip)[3]:
            if draft.question_type in ("first_pickup", "last_pickup", "never_touched") and len(present) >= 5:
                assert set(draft.distractors) <= present, draft


def test_answer_letters_are_balanced() -> None:
    drafts = []
    for index in range(40):
        drafts.extend(clip_rows(build_clip("train", 9, index, SMALL))[3])
    items = assign_letters(drafts, np.random.default_rng(0))
    counts = Counter(item.answer for item in items)
    assert set(counts) == set("ABCDE")
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    for qtype in ("first_pickup", "where_ended", "overall"):  # no type always on one letter
        per_type = Counter(i.answer for i in items if i.question_type == qtype)
        assert len(per_type) >= 3, (qtype, per_type)


def test_video_decodes_with_pyav_and_opencv(dataset: Path) -> None:
    from egovlm.video import VideoReader

    clips = _rows(dataset / "clips.jsonl")
    for clip in clips:
        path = dataset / clip["video"]
        info = VideoReader(path).info
        assert (info.width, info.height) == (160, 120)
        assert info.frames == clip["frames"] == 120
        assert abs(info.fps - 10) < 1e-6 and abs(info.duration_s - 12.0) < 0.15
        frames = list(VideoReader(path).iter_frames())
        assert len(frames) == 120 and frames[0][1].shape == (120, 160, 3)
        cap = cv2.VideoCapture(str(path))
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == 120


def test_decoded_video_matches_rendered_frames(dataset: Path) -> None:
    """The file holds the renderer's frames (up to H.264 loss), in order."""
    from egovlm.video import VideoReader

    clip = build_clip("train", 5, 1, SMALL)
    decoded = [f for _, f in VideoReader(dataset / clip.video).iter_frames()]
    for i in (0, 37, 119):
        rendered = clip.renderer.render(i / SMALL.fps, i)
        err = np.abs(decoded[i].astype(int) - rendered.astype(int)).mean()
        assert err < 8, (i, err)
        other = np.abs(decoded[(i + 60) % 120].astype(int) - rendered.astype(int)).mean()
        assert other > err


def test_captions_narrate_every_event(dataset: Path) -> None:
    events = _rows(dataset / "events.jsonl")
    for row in _rows(dataset / "captions.jsonl"):
        text = row["text"]
        for e in (e for e in events if e["clip_id"] == row["id"]):
            verb = "picks up the" if e["action"] == "pick_up" else "puts the"
            assert f"At {e['t']:.1f} s the {e['hand']} hand {verb} {e['object']}" in text, e
        starts = [c["start"] for c in row["captions"]]
        assert starts == sorted(starts)


def test_preview_contact_sheets(dataset: Path) -> None:
    sheets = sorted((dataset / "preview").glob("*.png"))
    assert len(sheets) == 3
    img = cv2.imread(str(sheets[0]))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 600


def test_cli_synth(tmp_path: Path) -> None:
    # the `egovlm data` app (mounted as-is by the root CLI; importing the root pulls in every stage)
    from egovlm.datasets.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--clips", "1", "--seed", "2", "--split", "test"]
    result = runner.invoke(app, [*args, "--size", "128x96", "--fps", "8", "--duration", "10"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 clips" in result.output
    items = read_jsonl(out / "qa.jsonl")
    assert items and all(i.meta["split"] == "test" for i in items)
    bad = runner.invoke(app, ["synth", "--out", str(out), "--size", "big"])
    assert bad.exit_code != 0 and "640x480" in bad.output
    odd = runner.invoke(app, ["synth", "--out", str(out), "--size", "641x480"])
    assert odd.exit_code != 0 and "even" in odd.output


def test_gallery_png(tmp_path: Path) -> None:
    from egovlm.synth.generate import gallery

    path = gallery("test", 0, [0], tmp_path / "sheet.png", per_clip=3, width=120)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 3 * 124 + 4
    assert path.stat().st_size < 300_000


def test_writer_is_atomic_and_names_bad_frames(tmp_path: Path) -> None:
    from egovlm.synth.writer import Mp4Writer

    path = tmp_path / "v.mp4"
    with (
        pytest.raises(ValueError, match=r"v\.mp4: frame 1 must be 48x64x3"),
        Mp4Writer(path, (64, 48), 10) as w,
    ):
        w.write(np.zeros((48, 64, 3), np.uint8))
        w.write(np.zeros((40, 64, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(path, (65, 48), 10)
