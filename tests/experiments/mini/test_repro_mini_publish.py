"""The miniature experiment's publish step: chosen on val, refused when unfit, swapped in whole."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from experiments.mini import publish


def _module() -> ModuleType:
    return publish


def _runs(tmp: Path, val: dict[str, tuple[float, float, float]]) -> Path:
    """val: run name -> (accuracy, format failure rate, keyframe F1); each run gets a final/ model."""
    runs = tmp / "runs"
    for name, (acc, fail, kf) in val.items():
        ev = runs / "eval_val" / name
        ev.mkdir(parents=True)
        metrics = {"accuracy": acc, "format_failure_rate": fail, "keyframe_f1": kf}
        (ev / "metrics.json").write_text(json.dumps(metrics))
        arm, _, seed = name.partition("-")
        final = runs / arm / seed / "final"
        final.mkdir(parents=True)
        (final / "model.safetensors").write_text(name)
        (final / "config.json").write_text("{}")
        (final / "training_args.bin").write_text("pickle")  # never published
    return runs


def test_best_val_accuracy_is_published_with_a_card(tmp_path: Path) -> None:
    mod = _module()
    runs = _runs(
        tmp_path,
        {
            "grpo_a-seed0": (0.40, 0.1, 0.2),
            "grpo_b-seed1": (0.45, 0.2, 0.1),
            "grpo_b-seed2": (0.45, 0.2, 0.3),
        },
    )
    out = tmp_path / "models" / "egovlm-mini"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_text("old")
    assert mod.publish(runs, out, None) == out
    assert (out / "model.safetensors").read_text() == "grpo_b-seed2"  # tie on accuracy: keyframe F1
    assert not (out / "training_args.bin").exists()
    assert "real footage" in (out / "README.md").read_text()
    assert json.loads((out / "egovlm.json").read_text())["chosen_by"] == "val accuracy"
    assert sorted(p.name for p in out.parent.iterdir()) == ["egovlm-mini"]


@pytest.mark.parametrize(
    ("acc", "fail", "reason"),
    [(0.0, 1.0, "grammar"), (0.2, 0.5, "not above chance")],
)
def test_unfit_models_are_not_published(tmp_path: Path, acc: float, fail: float, reason: str) -> None:
    mod = _module()
    runs = _runs(tmp_path, {"grpo_a-seed0": (acc, fail, 0.0)})
    out = tmp_path / "models" / "egovlm-mini"
    assert mod.publish(runs, out, None) is None
    assert reason in (mod.unfit({"accuracy": acc, "format_failure_rate": fail}) or "")
    assert not out.exists()


@pytest.mark.parametrize(("acc", "fit"), [(0.22, False), (0.24, False), (0.27, True), (0.40, True)])
def test_above_chance_means_significantly_above(acc: float, fit: bool) -> None:
    mod = _module()
    reason = mod.unfit({"accuracy": acc, "format_failure_rate": 0.0, "answered_items": 192})
    assert (reason is None) == fit
    if not fit:
        assert "not significantly above chance" in reason and "binomial p" in reason


def test_binomial_p_value_matches_the_exact_tail() -> None:
    mod = _module()
    assert abs(mod.p_above_chance(0, 10) - 1.0) < 1e-12
    assert abs(mod.p_above_chance(10, 10) - 0.2**10) < 1e-15
    assert abs(mod.p_above_chance(1, 2) - (1 - 0.8**2)) < 1e-12
    assert abs(mod.p_above_chance(52, 192) - 0.0109) < 1e-4  # 27% of 192: significant


def test_the_card_shows_test_accuracy_with_another_clips_frames_beside_its_own() -> None:
    mod = _module()
    m = {"accuracy": 0.279, "format_failure_rate": 0.0, "keyframe_f1": 0.0}
    results = {
        "evals": {
            "a": {"grpo_a-seed0": m},
            "a_otherclip": {"grpo_a-seed0": m | {"accuracy": 0.253}},
        }
    }
    text = mod.card("grpo_a-seed0", {"accuracy": 0.286}, results, 10_000_000)
    assert "| EgoSynth test (held out) | 27.9% |" in text
    assert "| EgoSynth test, each question shown another clip's frames | 25.3% |" in text
    assert "each question shown" not in mod.card("grpo_a-seed0", {"accuracy": 0.286}, None, 10_000_000)


def test_the_card_names_the_commit_and_minutes_of_the_run_that_made_it(tmp_path: Path) -> None:
    mod = _module()
    assert mod.made_by(tmp_path) == "`make repro-mini`"  # no records: no claim
    (tmp_path / "code.json").write_text(json.dumps({"commit": "abc1234", "local_changes": True}))
    rows = [{"stage": "data", "seconds": 60.0}, {"stage": "total", "seconds": 3438.0}]
    (tmp_path / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    made = mod.made_by(tmp_path)
    assert made == "`make repro-mini` at commit abc1234 with local changes, 57.3 minutes on this 2-core CPU"
    text = mod.card("grpo_a-seed0", {"accuracy": 0.286}, None, 10_000_000, made)
    assert "made by\n`make repro-mini` at commit abc1234" in text and "78 minutes" not in text


def test_repro_mini_records_the_commit_of_its_code(tmp_path: Path) -> None:
    import subprocess

    from experiments.mini import repro

    repro.write_code_version(tmp_path / "code.json")
    info = json.loads((tmp_path / "code.json").read_text())
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repro.ROOT, capture_output=True, text=True
    )
    if head.returncode:  # not a git checkout (an sdist): nothing to name
        assert info == {"commit": None, "local_changes": None}
    else:
        assert info["commit"] == head.stdout.strip() and isinstance(info["local_changes"], bool)
