"""The export and train parts: real measurements on the tiny model, and their bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from egovlm.benchmarks import export as bench_export
from egovlm.benchmarks import train as bench_train


def test_export_part_on_tiny(tmp_path: Path, tiny_model_dir: Path) -> None:
    report = bench_export.run(tmp_path, tiny_model_dir, quick=True, repeats=1, new_tokens=4)
    rows = {r["impl"]: r for r in report.rows}
    assert list(rows) == ["torch", "onnx-fp32", "onnx-int8", "onnx-int4"]
    assert rows["onnx-int4"]["decoder_mb"] < rows["onnx-int8"]["decoder_mb"] < rows["onnx-fp32"]["decoder_mb"]
    # fp32 ONNX holds the same weights as torch (plus graph overhead)
    assert rows["onnx-fp32"]["decoder_mb"] == pytest.approx(rows["torch"]["decoder_mb"], rel=0.15)
    for r in rows.values():
        assert 0 < r["ms_per_token_p50"] <= r["ms_per_token_p95"]
        assert r["prefill_ms_p50"] > 0 and 0 < r["top1_agree"] <= 1
    assert rows["onnx-fp32"]["logit_cosine_mean"] > 0.999
    data = json.loads((tmp_path / "export.json").read_text())
    assert data["params"]["repeats"] == 1 and len(data["rows"]) == 4
    metrics = {s["metric"] for s in report.summary}
    assert "int4 decoder size / fp32" in metrics
    assert (tmp_path / "export.png").read_bytes().startswith(b"\x89PNG")


class _FakeClock:
    """A clock that only moves when told to: the split is checked exactly, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _FakeTrainer:
    """Stands in for GRPOTrainer: generation takes 0.05 s, scoring 0.03 s on top of it (fake clock)."""

    def __init__(self, clock: _FakeClock) -> None:
        self.clock = clock

    def _generate(self, prompts: list[Any]) -> str:
        self.clock.advance(0.05)
        return "completions"

    def _generate_and_score_completions(self, inputs: list[Any]) -> str:
        self._generate(inputs)
        self.clock.advance(0.03)
        return "scored"


def test_step_timer_splits_generation_scoring_and_optimisation() -> None:
    clock = _FakeClock()
    timer, trainer = bench_train.StepTimer(clock=clock), _FakeTrainer(clock)
    timer.wrap(trainer)
    cb, args = timer.callback(), SimpleNamespace()
    for _ in range(2):
        cb.on_step_begin(args, None, None)
        assert trainer._generate_and_score_completions([]) == "scored"
        clock.advance(0.02)  # "optimiser"
        cb.on_step_end(args, None, None)
    assert len(timer.steps) == 2
    for s in timer.steps:  # the second step equals the first: the counters reset each step
        assert s["generate_s"] == pytest.approx(0.05)
        assert s["score_s"] == pytest.approx(0.03)
        assert s["optimise_s"] == pytest.approx(0.02)
        assert s["step_s"] == pytest.approx(0.10)


def test_train_summary_medians_and_throughput() -> None:
    steps = [
        {"step_s": 2.0, "generate_s": 1.0, "score_s": 0.5, "optimise_s": 0.5},
        {"step_s": 4.0, "generate_s": 1.0, "score_s": 1.0, "optimise_s": 2.0},
        {"step_s": 1.0, "generate_s": 0.4, "score_s": 0.2, "optimise_s": 0.4},
    ]
    (s,) = bench_train.summarise(steps, samples_per_step=8)
    assert s["step_s_median"] == 2.0 and s["steps_per_s"] == 0.5 and s["samples_per_s"] == 4.0
    assert s["generate_fraction"] == 0.5
    assert bench_train.summarise([], 8) == []


@pytest.mark.slow
def test_train_part_on_tiny_recipe(tmp_path: Path) -> None:
    report = bench_train.run(tmp_path, steps=2)
    assert len(report.rows) == 3  # 1 warm-up + 2 timed
    (s,) = report.summary
    assert s["steps_per_s"] > 0 and 0 < s["generate_fraction"] < 1
    assert s["trl_step_time_median"] == pytest.approx(s["step_s_median"], rel=0.5)
    assert (tmp_path / "train.png").is_file()
