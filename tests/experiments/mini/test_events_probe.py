"""The events probe (experiments.mini.events_probe): how written events are matched and scored, and
a real run of the committed base on EgoSynth clips."""

from __future__ import annotations

from pathlib import Path

from experiments.mini.events_probe import events_written, run, score

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


def test_a_real_run_counts_every_true_event(synth_slice: Path) -> None:
    result = run(str(BASE), synth_slice, clips=2, max_new_tokens=160)
    assert result["clips"] == 2 and len(result["per_clip"]) == 2
    for clip in result["per_clip"]:
        for action, t in clip["score"].items():
            truth = [e for e in events_written(clip["truth"]) if e[0] == action]
            assert t["events"] == len(truth)
            assert t["frame_right"] <= t["within_one"] <= t["written"] <= t["events"]
    assert sum(t["events"] for t in result["totals"].values()) > 0, "precondition: the clips have events"
