"""The step benchmark's arithmetic: medians after the warm-up, ratios, the losses' agreement."""

from __future__ import annotations

import pytest

from experiments.mini.bench_steps import summarise


def _steps(step_s: list[float], optimise_s: list[float]) -> list[dict[str, float]]:
    return [
        {"step_s": a, "generate_s": 1.0, "score_s": 0.1, "optimise_s": b}
        for a, b in zip(step_s, optimise_s, strict=True)
    ]


def test_ratios_come_from_medians_after_the_warm_up_step() -> None:
    results = {
        # the first step (a slow warm-up) is left out of both medians
        "skipped": {"steps": _steps([60.0, 6.0, 5.0, 7.0], [30.0, 3.0, 2.0, 4.0]), "losses": [0.5, -0.25]},
        "forwarded": {"steps": _steps([90.0, 9.0, 10.0, 8.0], [60.0, 6.0, 7.0, 5.0]), "losses": [0.5, -0.2]},
    }
    rows, (summary,) = summarise(results)
    assert [r["arm"] for r in rows] == ["skipped", "forwarded"] and rows[0]["step_s"] == 6.0
    assert summary["speedup"] == pytest.approx(9.0 / 6.0)
    assert summary["optimise_speedup"] == pytest.approx(6.0 / 3.0)
    assert summary["logged_losses"] == 2 and summary["loss_max_rel_diff"] == pytest.approx(0.25)


def test_an_arm_without_timed_steps_is_refused() -> None:
    one = {"steps": _steps([5.0], [2.0]), "losses": []}
    with pytest.raises(ValueError, match="--steps 2 or more"):
        summarise({"skipped": one, "forwarded": one})
