"""The events probe (experiments.mini.events_probe): how written events are matched and scored, the
citations derived from them against the questions' own salient moments, and a real run of the
committed base on EgoSynth clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from egovlm.frames import Frame
from egovlm.schema import read_jsonl
from egovlm.train.rewards import salient_frame_indices
from experiments.mini.events_probe import (
    RULE_TYPES,
    Written,
    derived_citation,
    derived_scores,
    event_brackets,
    events_written,
    nearest_in_bracket,
    placed_events,
    placement,
    run,
    score,
    written_events,
)
from experiments.mini.pretrain_data import ClipTruth, describe, load_truth

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "models" / "egovlm-mini-base"

TRUTH = """At 4.3 s the right hand picks up the silver spoon from the left of the table (frame 3).
At 7.4 s the right hand puts the silver spoon down into the drawer (frame 4).
At 9.0 s the left hand picks up the silver spoon from the drawer (frame 5).
At 15.0 s the left hand puts the silver spoon down on the shelf (frame 8)."""


def test_events_are_matched_by_action_object_and_occurrence() -> None:
    assert events_written(TRUTH) == [
        ("pick_up", "silver spoon", 1, 3),
        ("put_down", "silver spoon", 1, 4),
        ("pick_up", "silver spoon", 2, 5),
        ("put_down", "silver spoon", 2, 8),
    ]
    # other times and places, the second pick-up one frame off, the last put-down missing, a stray line
    written = """<what>At 4.7 s the right hand picks up the silver spoon from the centre of the table (frame 3).
At 7.7 s the right hand puts the silver spoon down into the sink (frame 4).
At 11 s the left hand picks up the silver spoon from the drawer (frame 6).
The wearer looks around (frame 7).</what>"""
    s = score(TRUTH, written)
    assert s["pick_up"] == {"events": 2, "written": 2, "frame_right": 1, "within_one": 2}
    assert s["put_down"] == {"events": 2, "written": 1, "frame_right": 1, "within_one": 1}
    assert score(TRUTH, "")["put_down"] == {"events": 2, "written": 0, "frame_right": 0, "within_one": 0}


def test_each_question_form_has_its_citation_rule() -> None:
    events = written_events(TRUTH)
    assert events[1] == Written("put_down", "silver spoon", "into the drawer", 4)
    cases = {
        ("first_pickup", "Which object did the wearer pick up first?"): [3],
        ("last_pickup", "Which object did the wearer pick up last?"): [5],
        ("where_ended", "Where did the silver spoon end up?"): [8],
        ("where_ended", "Where did the red cup end up?"): [],  # never written: nothing to cite
        ("count", "How many times did the wearer pick up the silver spoon?"): [3, 5],
        ("count", "How many times did the wearer put something down in the drawer?"): [4],
        ("count", "How many times did the wearer put something down on the shelf?"): [8],
        ("count", "How many times did the wearer pick something up?"): [3, 5],
        ("order", "Which statement about the silver spoon and the red cup is true?"): [3],
        ("order", "What did the wearer do right after picking up the silver spoon?"): [3, 4],
        ("overall", "What was the wearer doing overall in this video?"): [3, 4, 5, 8],
    }
    for (qtype, question), frames in cases.items():
        assert derived_citation(question, qtype, events) == frames, question
    with pytest.raises(ValueError, match="never_touched"):
        derived_citation("Which of these objects did the wearer never touch?", "never_touched", events)


def test_truth_placed_at_nearest_frames_gives_each_questions_salient_frames(tmp_path: Path) -> None:
    """Every rule against EgoSynth's own salient moments, on 16 s clips: the truth's events at their
    nearest frames yield exactly the question's salient frames (a subset where a moment lies midway
    between two frames); at the first frame after, every cited frame is at or after its event; at
    the frame of the motion, at most one from the nearest, and right more often than the first after."""
    from egovlm.synth.generate import SynthConfig, synthesize
    from egovlm.video import uniform_times

    synthesize(tmp_path, 8, 3, "test", SynthConfig(size=(160, 120), fps=5, duration=16.0))
    clips = {c.clip_id: c for c in load_truth(tmp_path)}
    questions = read_jsonl(tmp_path / "qa.jsonl") + read_jsonl(tmp_path / "open.jsonl")
    checked = set()

    def frames(clip: ClipTruth) -> list[Frame]:
        times = uniform_times(clip.duration_s, 8)
        return [Frame(i + 1, t, np.zeros((4, 4, 3), np.uint8)) for i, t in enumerate(times)]

    for q in questions:
        clip = clips[str(q.meta["clip_id"])]
        times = uniform_times(clip.duration_s, 8)
        salient = salient_frame_indices(times, q.salient_times, None)
        nearest = written_events(describe(clip, frames(clip), "events"))
        got = derived_citation(q.question, str(q.question_type), nearest)
        tie = any(abs(abs(t - s) - 1.0) < 1e-6 for s in q.salient_times or [] for t in times)
        assert set(got) <= set(salient) and (tie or got == salient), (q.id, got, salient)
        checked.add(q.question_type)
        motion = written_events(placed_events(clip, times, "motion"))
        assert len(motion) == len(nearest) and all(
            abs(m.frame - n.frame) <= 1 for m, n in zip(motion, nearest, strict=True)
        )
        named = written_events(describe(clip, frames(clip), "events_named"))
        assert named == nearest  # the probe reads every form alike
        assert written_events(describe(clip, frames(clip), "events_scan")) == nearest
        after = written_events(placed_events(clip, times, "after"))
        moments = sorted(t for t, _ in _moments(clip))
        assert [e.frame for e in after] == [
            next(i + 1 for i, ft in enumerate(times) if ft >= t) for t in moments
        ]
    assert checked == set(RULE_TYPES)
    per_clip = [
        {
            "clip_id": c.clip_id,
            "times": uniform_times(c.duration_s, 8),
            "truth": describe(c, frames(c), "events"),
            "written": describe(c, frames(c), "events"),
        }
        for c in clips.values()
    ]
    summary = derived_scores(questions, per_clip, clips)
    assert summary["all"]["model"] == summary["all"]["truth_nearest"] > 0.9
    # seeing each frame's motion places more events right than seeing only its state
    assert summary["all"]["truth_motion"] > summary["all"]["truth_after"]
    assert summary["all"]["questions"] == sum(summary[t]["questions"] for t in RULE_TYPES if t in summary)


def test_scored_placement_picks_between_the_two_frames_around_each_event(tmp_path: Path) -> None:
    """``placed_events(..., "scores", s)``: equal scores give the first frame after (ties go after);
    a score marking each event's nearest frame gives the nearest-frame description wherever the two
    frames around an event are not both marked; every event stays within one of the first after."""
    from egovlm.synth.generate import SynthConfig, synthesize
    from egovlm.video import uniform_times
    from experiments.mini.motion_probe import frame_motion_labels

    synthesize(tmp_path, 6, 4, "test", SynthConfig(size=(160, 120), fps=5, duration=16.0))
    right = total = 0
    for clip in load_truth(tmp_path):
        times = uniform_times(clip.duration_s, 8)
        frames = [Frame(i + 1, t, np.zeros((4, 4, 3), np.uint8)) for i, t in enumerate(times)]
        after = written_events(placed_events(clip, times, "after"))
        assert written_events(placed_events(clip, times, "scores", [0.0] * 8)) == after
        nearest = written_events(describe(clip, frames, "events"))
        marked = frame_motion_labels(clip, frames)[:, 1]
        scored = written_events(placed_events(clip, times, "scores", list(marked)))
        for s, a, n in zip(scored, after, nearest, strict=True):
            assert a.frame - 1 <= s.frame <= a.frame
            both = a.frame > 1 and marked[a.frame - 2] == marked[a.frame - 1] == 1.0
            assert both or s.frame == n.frame, (clip.clip_id, s, n)
            right += int(s.frame == n.frame)
            total += 1
    assert total > 0 and right > 0.8 * total
    with pytest.raises(ValueError, match="8 frames"):
        placed_events(clip, times, "scores", [0.0] * 7)
    with pytest.raises(ValueError, match="only with it"):
        placed_events(clip, times, "after", [0.0] * 8)


def test_placement_tells_the_state_from_the_motion(tmp_path: Path) -> None:
    """``placement`` on synthesized 16 s clips: the truth's description puts every event at its
    nearest frame; the first frame after puts each inside its bracket (the state right) and misses
    some two-frame choices (the motion); ``nearest_in_bracket`` turns the latter into the former. A
    dropped line is missed, an invented one extra, an event two frames off is outside its bracket
    and is left where it was written."""
    from egovlm.synth.generate import SynthConfig, synthesize
    from egovlm.video import uniform_times

    synthesize(tmp_path, 6, 5, "test", SynthConfig(size=(160, 120), fps=5, duration=16.0))
    asked = wrong = edited_clips = 0
    for clip in load_truth(tmp_path):
        times = uniform_times(clip.duration_s, 8)
        frames = [Frame(i + 1, t, np.zeros((4, 4, 3), np.uint8)) for i, t in enumerate(times)]
        brackets = event_brackets(clip, times)
        truth = describe(clip, frames, "events")
        n = len(brackets)
        assert n == len(written_events(truth)) > 0
        got = placement(brackets, truth)
        assert got["right"] == n and got["choice_right"] == got["choice_asked"]
        assert got["other_of_bracket"] == got["outside_bracket"] == got["missed"] == got["extra"] == 0
        after = placed_events(clip, times, "after")
        got = placement(brackets, after)
        assert got["right"] + got["other_of_bracket"] == n and got["outside_bracket"] == got["missed"] == 0
        assert got["choice_asked"] - got["choice_right"] == got["other_of_bracket"]
        asked, wrong = asked + got["choice_asked"], wrong + got["other_of_bracket"]
        assert written_events(nearest_in_bracket(brackets, after)) == written_events(truth)

        # one event (not the last) two frames late, the last line dropped, an invented one added
        lines = truth.splitlines()
        far = next((i for i, e in enumerate(written_events(truth)[:-1]) if e.frame + 2 <= 8), None)
        if far is None:
            continue
        frame = written_events(lines[far])[0].frame
        lines[far] = lines[far].replace(f"(frame {frame})", f"(frame {frame + 2})")
        edited = "\n".join(
            [*lines[:-1], "At 1.0 s the left hand picks up the red zebra from the shelf (frame 1)."]
        )
        got = placement(brackets, edited)
        assert (got["outside_bracket"], got["missed"], got["extra"]) == (1, 1, 1)
        assert got["right"] == n - 2
        assert written_events(nearest_in_bracket(brackets, edited))[far].frame == frame + 2
        edited_clips += 1
    assert asked > 0 and 0 < wrong < asked  # precondition: the state alone errs on some choices
    assert edited_clips > 0  # precondition: some clip had an event to move


def _moments(clip: object) -> list[tuple[float, str]]:
    from experiments.mini.pretrain_data import event_moments

    return event_moments(clip)  # type: ignore[arg-type]


def test_a_real_run_counts_every_true_event(synth_slice: Path) -> None:
    result = run(str(BASE), synth_slice, clips=2, max_new_tokens=160, questions=synth_slice / "qa.jsonl")
    assert result["clips"] == 2 and len(result["per_clip"]) == 2
    for clip in result["per_clip"]:
        for action, t in clip["score"].items():
            truth = [e for e in events_written(clip["truth"]) if e[0] == action]
            assert t["events"] == len(truth)
            assert t["frame_right"] <= t["within_one"] <= t["written"] <= t["events"]
    assert sum(t["events"] for t in result["totals"].values()) > 0, "precondition: the clips have events"
    p = result["placement"]
    true_events = sum(t["events"] for t in result["totals"].values())
    assert p["right"] + p["other_of_bracket"] + p["outside_bracket"] + p["missed"] == true_events
    assert p["right"] == sum(t["frame_right"] for t in result["totals"].values())
    derived = result["derived"]
    asked = [
        q
        for q in read_jsonl(synth_slice / "qa.jsonl")
        if q.meta["clip_id"] in {c["clip_id"] for c in result["per_clip"]}
    ]
    assert 0 < derived["all"]["questions"] <= len(asked)
    assert derived["all"]["truth_nearest"] > 0.8  # the rules on the truth (ties aside)
    assert all(
        0.0 <= derived[t][k] <= 1.0
        for t in derived
        for k in ("model", "model_nearest_in_bracket", "truth_after", "best_fixed_set")
    )
