"""The motion probe (experiments.mini.motion_probe): its labels against the clips' events, and a real
run on the committed base's vision tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from egovlm.frames import Frame
from experiments.mini.motion_probe import (
    LABELS,
    fit_heads,
    frame_motion_labels,
    frame_tokens,
    placement_bound,
    probe,
)
from experiments.mini.place_probe import load_tower
from experiments.mini.pretrain_data import load_truth

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "models" / "egovlm-mini-base"


def test_labels_follow_the_events(synth_slice: Path) -> None:
    """Frames 0.1 s apart: "moving" only within 1.2 s before or 1 s after some event (the planner's
    reach/lower and lift/release bounds), and always at an event's own moment; "nearest" marks one
    frame per event, the closest."""
    moving_seen = 0
    for clip in load_truth(synth_slice):
        times = [float(t) for t in np.arange(0.05, clip.duration_s, 0.1)]
        frames = [Frame(i + 1, t, np.zeros((4, 4, 3), np.uint8)) for i, t in enumerate(times)]
        labels = frame_motion_labels(clip, frames)
        events = [float(e["t"]) for e in clip.events]
        for i, t in enumerate(times):
            near_event = any(-1.2 <= t - e <= 1.0 for e in events)
            assert not labels[i, 0] or near_event, (clip.clip_id, t)
            if any(abs(t - e) < 0.05 for e in events):
                assert labels[i, 0] == 1.0, (clip.clip_id, t)
        moving_seen += int(labels[:, 0].sum())
        closest = {min(range(len(times)), key=lambda i: abs(times[i] - e)) for e in events}
        assert set(np.flatnonzero(labels[:, 1])) == closest
    assert moving_seen > 0


def test_a_real_probe_scores_held_out_clips(synth_slice: Path) -> None:
    feats, labels, groups = frame_tokens(load_tower(str(BASE)), synth_slice, clips=3)
    assert feats.shape[0] == labels.shape[0] == len(groups) == 3 * 16  # two 8-frame sets per clip
    result = probe(feats, labels, groups, steps=50)
    assert result["frames_test"] == 16 and result["frames_train"] == 32
    for name in LABELS:
        assert 0.0 <= result[name]["positive_rate"] <= 1.0
        auc = result[name]["auroc"]
        assert np.isnan(auc) or 0.0 <= auc <= 1.0


def test_the_placement_bound_scores_each_label_against_the_references(synth_slice: Path) -> None:
    """A real bound on the committed base: probes fitted on the slice's frames place the slice's own
    events; each label's citations are scored on the questions the references score (same count),
    between 0 and 1; a question file about other clips is refused by name."""
    tower = load_tower(str(BASE))
    feats, labels, _ = frame_tokens(tower, synth_slice, clips=3)
    heads = fit_heads(feats, labels, steps=50)
    assert len(heads) == len(LABELS)
    result = placement_bound(tower, heads, synth_slice, synth_slice / "qa.jsonl")
    asked = {json.loads(line)["meta"]["clip_id"] for line in (synth_slice / "qa.jsonl").open()}
    assert result["test_clips"] == len(asked) > 0
    refs = result["references"]
    assert refs["all"]["questions"] > 0
    for name in LABELS:
        placed = result[f"placed_by_{name}"]
        assert set(placed) == set(refs)
        assert all(0.0 <= v <= 1.0 for v in placed.values())
        assert 0.0 <= result[f"choice_right_{name}"] <= 1.0
    elsewhere = synth_slice.parent / "elsewhere.jsonl"
    rows = [json.loads(line) for line in (synth_slice / "qa.jsonl").open()]
    for row in rows:
        row["meta"]["clip_id"] = "other-" + row["meta"]["clip_id"]
    elsewhere.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match="none of the clips"):
        placement_bound(tower, heads, synth_slice, elsewhere)
