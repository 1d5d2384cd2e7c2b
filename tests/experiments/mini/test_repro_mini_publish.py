"""The miniature experiment's publish step: chosen on val among the base and the GRPO runs, only when
significantly above chance after a Bonferroni correction, refused when unfit, swapped in whole."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from experiments.mini import publish


def _module() -> ModuleType:
    return publish


def _runs(
    tmp: Path, val: dict[str, tuple[float, float, float]], questions: dict[str, int] | None = None
) -> Path:
    """val: run name -> (accuracy, format failure rate, keyframe F1); each run gets a final/ model and
    a val completions.jsonl of ``questions[name]`` (default 100) multiple-choice rows, the first
    round(accuracy x questions) correct, plus two open rows (never part of the selection)."""
    runs = tmp / "runs"
    for name, (acc, fail, kf) in val.items():
        ev = runs / "eval_val" / name
        ev.mkdir(parents=True)
        metrics = {"accuracy": acc, "format_failure_rate": fail, "keyframe_f1": kf}
        (ev / "metrics.json").write_text(json.dumps(metrics))
        n = (questions or {}).get(name, 100)
        rows = [{"id": f"q{i}", "answer_form": "letter", "correct": i < round(acc * n)} for i in range(n)]
        rows += [{"id": f"q{i}-open", "answer_form": "words", "correct": True} for i in range(2)]
        (ev / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        final = publish.model_dir(runs, name)
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
    meta = json.loads((out / "egovlm.json").read_text())
    assert meta["chosen_by"] == "val accuracy"
    sel = meta["selection"]  # the decision, its reason and the adjusted p travel with the model
    assert sel["correction"] == "bonferroni" and sel["candidates"] == [
        "grpo_a-seed0",
        "grpo_b-seed1",
        "grpo_b-seed2",
    ]
    assert abs(sel["adjusted_p"] - min(1.0, 3 * sel["p_value"])) < 1e-12 and sel["adjusted_p"] < 0.05
    assert "grpo_b-seed2: val accuracy 45.0%" in sel["reason"]
    card = (out / "README.md").read_text()
    assert "Selection: grpo_b-seed2: val accuracy 45.0%" in card and "bonferroni correction for the 3" in card
    assert sorted(p.name for p in out.parent.iterdir()) == ["egovlm-mini"]


def test_a_model_that_never_follows_the_grammar_is_not_published(tmp_path: Path) -> None:
    mod = _module()
    assert "grammar" in (mod.unfit({"accuracy": 0.0, "format_failure_rate": 1.0}) or "")
    assert mod.unfit({"accuracy": 0.5, "format_failure_rate": 0.5}) is None
    # significant on val (answers parsed despite the grammar) but no completion in the grammar: refused
    runs = _runs(tmp_path, {"grpo_a-seed0": (0.6, 1.0, 0.0)})
    out = tmp_path / "models" / "egovlm-mini"
    assert mod.publish(runs, out, None) is None
    assert not out.exists()


SEVEN = ["base", *(f"grpo_{a}-seed{s}" for a in "ab" for s in range(3))]


def test_nothing_is_published_when_no_candidate_survives_bonferroni(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule changed deliberately: 52 of 192 (27%) passed the old single binomial test (p = 0.011);
    as the best of seven candidates it needs p < 0.05 / 7, and 0.011 x 7 = 0.076 does not."""
    mod = _module()
    runs = _runs(tmp_path, {n: (52 / 192, 0.0, 0.0) for n in SEVEN}, {n: 192 for n in SEVEN})
    out = tmp_path / "models" / "egovlm-mini"
    assert mod.publish(runs, out, None) is None
    assert not out.exists()
    said = capsys.readouterr().out
    assert "nothing published" in said and "bonferroni correction for 7 candidates" in said
    decision, _ = mod.choose(runs)
    assert decision.chosen is None and set(decision.p_values) == set(SEVEN)
    assert abs(decision.p_values["base"] - 0.0109) < 1e-4  # the exact binomial tail, as before
    assert abs(decision.adjusted["base"] - 7 * decision.p_values["base"]) < 1e-12
    # alone, the same val accuracy is significant: it is the number of candidates that refuses
    alone = _runs(tmp_path / "alone", {"grpo_a-seed0": (52 / 192, 0.0, 0.0)}, {"grpo_a-seed0": 192})
    assert mod.choose(alone)[0].chosen == "grpo_a-seed0"


def test_the_most_accurate_significant_candidate_is_published(tmp_path: Path) -> None:
    """grpo_a-seed1 is right on all of its 3 questions (100%, p = 0.008, adjusted 0.056): the highest
    accuracy, not significant; of the significant ones grpo_b-seed0 is the most accurate, and the
    base is a candidate like the GRPO runs."""
    mod = _module()
    val = {"base": (0.35, 0.0, 0.1), "grpo_a-seed0": (0.40, 0.0, 0.2), "grpo_a-seed1": (1.0, 0.0, 0.9)}
    val |= {
        "grpo_a-seed2": (0.2, 0.0, 0.0),
        "grpo_b-seed0": (0.50, 0.0, 0.3),
        "grpo_b-seed1": (0.45, 0.0, 0.4),
    }
    val |= {"grpo_b-seed2": (0.1, 0.0, 0.0)}
    runs = _runs(tmp_path, val, {"grpo_a-seed1": 3})
    decision, _ = mod.choose(runs)
    assert decision.significant == ["base", "grpo_a-seed0", "grpo_b-seed0", "grpo_b-seed1"]
    assert decision.chosen == "grpo_b-seed0"
    out = tmp_path / "models" / "egovlm-mini"
    assert mod.publish(runs, out, None) == out
    assert (out / "model.safetensors").read_text() == "grpo_b-seed0"
    # the base alone above chance is published as the base stage's model
    base_only = _runs(tmp_path / "b", {"base": (0.5, 0.0, 0.0), "grpo_a-seed0": (0.2, 0.0, 0.0)})
    out2 = tmp_path / "models2" / "egovlm-mini"
    assert mod.publish(base_only, out2, None) == out2
    assert (out2 / "model.safetensors").read_text() == "base"
    assert "This is `base`: the base stage only (no GRPO)" in (out2 / "README.md").read_text()


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
        assert info["commit"] is None and info["local_changes"] is None
    else:
        assert info["commit"] == head.stdout.strip() and isinstance(info["local_changes"], bool)
    machine = info["machine"]
    capabilities = {"DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "SVE256"}
    assert machine["cores"] >= 1 and machine["torch_cpu_capability"] in capabilities
