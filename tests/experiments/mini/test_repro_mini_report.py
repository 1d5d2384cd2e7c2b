"""The miniature experiment's report: spreads over seeds and the base stage's "does it look" table."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from experiments.mini import report


def _module() -> ModuleType:
    return report


def test_spread_is_mean_sample_std_min_max() -> None:
    s = _module().spread([0.2, 0.3, 0.4])
    assert abs(s["mean"] - 0.3) < 1e-12 and abs(s["std"] - 0.1) < 1e-12
    assert (s["min"], s["max"], s["n"]) == (0.2, 0.4, 3)
    assert _module().spread([0.5])["std"] == 0.0


def test_base_stage_table_reads_both_comparisons_of_both_phases(tmp_path: Path) -> None:
    mod = _module()
    assert mod.base_stage_table(tmp_path) == []  # no base stage yet: no table
    phase1 = {
        "vision": [{"vision_step": 900, "train": 0.15, "held_out": 0.2112}, {"constant_predictor": 0.2215}],
        "val_loss": 0.4601,
        "val_loss_shuffled_frames": 0.4922,
        "text": [
            {"text_step": 0, "text_letter_accuracy": 0.0},
            {"text_step": 800, "text_letter_accuracy": 0.915},
        ],
    }
    # the phases chain through continued_from (absolute paths of another machine: only the folder counts)
    phase1b = {
        "vision": [],
        "val_loss": 0.4311,
        "val_loss_shuffled_frames": 0.5562,
        "drill_letter_accuracy": 0.93,
        "continued_from": "/elsewhere/runs/mini/first_phase/final",
    }
    phase2 = {
        "vision": [],
        "val_loss": 0.6512,
        "val_loss_shuffled_frames": 0.6733,
        "continued_from": "runs/mini/binding_phase/final",
    }
    for folder, info, frames in (
        ("first_phase", phase1, 1),
        ("binding_phase", phase1b, 1),
        ("pretrain", phase2, 8),
        ("unrelated_run", {"val_loss": 9.0, "val_loss_shuffled_frames": 9.1}, 1),  # not in the chain
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run.json").write_text(json.dumps(info))
        (tmp_path / folder / "config.yaml").write_text(f"data:\n  frames: {frames}\n")
    assert [f for f, _ in mod.base_phases(tmp_path)] == ["first_phase", "binding_phase", "pretrain"]
    lines = mod.base_stage_table(tmp_path)
    text = "\n".join(lines)
    first = "phase 1 of 3 (first_phase, 1 frame per prompt)"
    assert f"{first}: object-label loss of the vision head, held-out frames | 0.2112 | 0.2215 |" in text
    assert f"{first}: language loss" in text and "| 0.4601 | 0.4922 |" in text
    assert (
        "phase 3 of 3 (pretrain, 8 frames per prompt): language loss" in text
        and "| 0.6512 | 0.6733 |" in text
    )
    assert "9.0000" not in text
    assert text.count("object-label loss") == 1  # phase 2 ran no vision steps: no vision row
    assert f"{first}: text steps, held-out lookup drills" in text
    assert "| 91.5% after 800 steps | 20.0% (chance) |" in text and text.count("lookup drills,") == 1
    assert text.index("text steps") < text.index("object-label loss")  # in the order they ran
    # the drills mixed into phase 1b's steps: their held-out accuracy at its end
    assert (
        "phase 2 of 3 (binding_phase, 1 frame per prompt): held-out lookup drills (mixed into its steps)"
        in text
    )
    assert "| 93.0% at the end | 20.0% (chance) |" in text
    # phases in order
    assert text.index("0.4601") < text.index("0.4311") < text.index("0.6512")
    # the base model on perception questions about the val clips: 3 of 10 right, one letter for 9
    ev = tmp_path / "eval_val" / "base-perception"
    ev.mkdir(parents=True)
    kinds = {
        "perception_lookup": {"items": 4, "accuracy": 0.75},
        "perception_visible": {"items": 6, "accuracy": 0.0},
    }
    (ev / "metrics.json").write_text(json.dumps({"items": 10, "accuracy": 0.3, "per_question_type": kinds}))
    (ev / "completions.jsonl").write_text("".join(json.dumps({"predicted": x}) + "\n" for x in "DDDDDDDDDA"))
    text = "\n".join(mod.base_stage_table(tmp_path))
    assert "10 perception questions about the val clips: accuracy | 30.0% | 20.0% (chance) |" in text
    assert "most frequent letter | 90.0% |" in text
    assert "the same, perception_lookup (4 questions) | 75.0% |" in text
    assert "the same, perception_visible (6 questions) | 0.0% |" in text


def test_top_letter_share_shows_a_collapse_onto_one_letter(tmp_path: Path) -> None:
    mod = _module()
    assert mod.top_letter_share(tmp_path) is None
    rows = [{"predicted": x} for x in "CCCCCCABD"] + [{"predicted": None}]
    (tmp_path / "completions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert abs(mod.top_letter_share(tmp_path) - 0.6) < 1e-12  # 6 of 10 questions, unanswered included
