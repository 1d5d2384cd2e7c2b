"""The miniature experiment's report: spreads over seeds and the base stage's "does it look" table."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from tests.scripts.script_module import load_script


def _module() -> ModuleType:
    return load_script("repro_mini_report")


def test_spread_is_mean_sample_std_min_max() -> None:
    s = _module().spread([0.2, 0.3, 0.4])
    assert abs(s["mean"] - 0.3) < 1e-12 and abs(s["std"] - 0.1) < 1e-12
    assert (s["min"], s["max"], s["n"]) == (0.2, 0.4, 3)
    assert _module().spread([0.5])["std"] == 0.0


def test_base_stage_table_reads_both_comparisons(tmp_path: Path) -> None:
    mod = _module()
    assert mod.base_stage_table(tmp_path) == []  # no base stage yet: no table
    (tmp_path / "pretrain").mkdir()
    info = {
        "vision": [{"vision_step": 900, "train": 0.15, "held_out": 0.2112}, {"constant_predictor": 0.2215}],
        "val_loss": 0.6512,
        "val_loss_shuffled_frames": 0.6733,
    }
    (tmp_path / "pretrain" / "run.json").write_text(json.dumps(info))
    text = "\n".join(mod.base_stage_table(tmp_path))
    assert "| 0.2112 | 0.2215 |" in text
    assert "| 0.6512 | 0.6733 |" in text


def test_top_letter_share_shows_a_collapse_onto_one_letter(tmp_path: Path) -> None:
    mod = _module()
    assert mod.top_letter_share(tmp_path) is None
    rows = [{"predicted": x} for x in "CCCCCCABD"] + [{"predicted": None}]
    (tmp_path / "completions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert abs(mod.top_letter_share(tmp_path) - 0.6) < 1e-12  # 6 of 10 questions, unanswered included
