"""The pass@k probe: GRPO's view of a base model (is there a group with a non-zero advantage?)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.mini import passk


def test_chance_pass_at_k_is_one_minus_the_miss_rate_to_the_k() -> None:
    assert passk.chance_pass_at_k(1) == pytest.approx(0.2)
    assert passk.chance_pass_at_k(8) == pytest.approx(1 - 0.8**8)


def test_summary_counts_passes_means_and_informative_groups() -> None:
    correct = {
        "a": [False] * 8,  # never right: no advantage
        "b": [True] * 8,  # always right: no advantage either
        "c": [True, False] * 4,  # mixed: a group GRPO learns from
        "d": [False] * 7 + [True],
    }
    types = {"a": "order", "b": "order", "c": "where_ended", "d": "where_ended"}
    s = passk.summarise(correct, types)
    assert s["overall"] == {"questions": 4, "pass_at_k": 0.75, "mean_accuracy": 13 / 32, "informative": 0.5}
    assert s["per_question_type"]["order"] == {
        "questions": 2,
        "pass_at_k": 0.5,
        "mean_accuracy": 0.5,
        "informative": 0.0,
    }
    assert s["per_question_type"]["where_ended"]["informative"] == 1.0


def test_probe_samples_k_answers_per_question(
    synth_slice: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """End to end on an offline random-init model: k scored samples per question, written out."""
    rows = [json.loads(line) for line in (synth_slice / "qa.jsonl").read_text().splitlines()][:2]
    data = synth_slice / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "passk"
    result = passk.run(str(tiny_model_dir), data, out, k=3, temperature=1.0, frames=2, seed=0)
    assert result["mc"]["overall"]["questions"] == 2
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and {s["id"] for s in samples} == {r["id"] for r in rows}
    assert json.loads((out / "passk.json").read_text())["k"] == 3
