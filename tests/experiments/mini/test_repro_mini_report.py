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


def _eval(
    folder: Path, correct: list[bool], types: list[str], metrics: dict[str, object] | None = None
) -> None:
    """An eval folder: completions.jsonl (one MC row per question, ids q0.., plus an open row that the
    multiple-choice tests must ignore) and metrics.json."""
    folder.mkdir(parents=True)
    rows = [
        {"id": f"q{i}", "answer_form": "letter", "question_type": t, "correct": c, "predicted": "A"}
        for i, (c, t) in enumerate(zip(correct, types, strict=True))
    ]
    rows.append({"id": "q0-open", "answer_form": "words", "question_type": "last_pickup", "correct": True})
    (folder / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))  # any order
    (folder / "metrics.json").write_text(json.dumps(metrics or {"accuracy": sum(correct) / len(correct)}))


def _fixture(runs: Path, base: list[bool], grpo: list[bool]) -> list[str]:
    n = len(base)
    types = ["last_pickup" if i % 2 else "first_pickup" for i in range(n)]  # a GRPO type, a base type
    kf = {
        "keyframe_f1": 0.6,
        "keyframe_f1_cite_all": 0.3,
        "keyframe_f1_best_fixed_set": 0.45,
        "keyframe_f1_positional_prior": 0.9,  # the reward's per-question baseline: shown, not compared with
    }
    opened = {
        "open_items": 20,
        "open_accuracy": 0.25,
        "open_per_question_type": {"last_pickup": {"items": 20, "accuracy": 0.25}},
    }
    _eval(runs / "eval" / "base", base, types, {"accuracy": sum(base) / n, **opened})
    for arm in "ab":
        for s in range(3):
            _eval(
                runs / "eval" / f"grpo_{arm}-seed{s}",
                grpo,
                types,
                {"accuracy": sum(grpo) / n, **kf, **opened},
            )
            _eval(runs / "eval" / f"grpo_{arm}-seed{s}-otherclip", base, types)  # never in the tests
    return types


def test_statistics_grpo_clearly_above_its_base_is_significant(tmp_path: Path) -> None:
    mod = _module()
    n = 60
    base = [i % 5 == 0 for i in range(n)]  # 20%
    grpo = [i % 5 != 4 for i in range(n)]  # 80%, every question the base got right among them
    _fixture(tmp_path, base, grpo)
    s = mod.significance(tmp_path, n_resamples=20_000)
    a = s["vs_base"]["a"]
    assert s["questions"] == n and s["grpo_type_questions"] == n // 2
    assert a["seeds"] == ["grpo_a-seed0", "grpo_a-seed1", "grpo_a-seed2"]
    assert abs(a["all"]["difference"] - 0.6) < 1e-12 and a["all"]["p_value"] < 1e-4
    assert a["all"]["ci95"][0] > 0.4
    g = a["grpo_types"]  # the odd questions only: base right on q5, q15, ...; GRPO on all but q9, q19, ...
    assert (
        g["questions"] == n // 2
        and abs(g["accuracy_base"] - 0.2) < 1e-12
        and abs(g["accuracy"] - 0.8) < 1e-12
    )
    assert g["p_value"] < 0.01
    assert [(m["b10"], m["b01"]) for m in a["all"]["mcnemar"]] == [(36, 0)] * 3
    assert all(m["p_value"] < 1e-9 for m in a["all"]["mcnemar"])
    assert abs(s["b_vs_a"]["difference"]) < 1e-12 and s["b_vs_a"]["p_two_sided"] == 1.0
    kf = s["keyframes"]
    assert kf["per_seed"]["grpo_b-seed0"]["best_baseline"] == "best fixed set"
    assert abs(kf["mean_margin"] - 0.15) < 1e-12
    assert s["open"]["base"]["accuracy"] == 0.25 and s["open"]["grpo_a-seed1"]["items"] == 20
    assert json.loads(json.dumps(s)) == s  # results.json carries it as it is
    assert s["grpo_types"] == ["last_pickup"]  # the GRPO types these questions have
    text = "\n".join(mod.statistics_section(s))
    assert "## Statistics" in text and "one-sided paired sign-flip permutation test" in text
    assert "| GRPO (a) vs base, all types | 60 | 20.0% | 80.0% | +60.0 |" in text
    assert "| GRPO (a) vs base, GRPO types | 30 | 20.0% | 80.0% | +60.0 |" in text
    assert "| < 1e-4 | 36/0, p < 1e-4; 36/0, p < 1e-4; 36/0, p < 1e-4 |" in text
    assert "| grpo_b-seed0 | 0.600 | 0.300 | 0.450 | +0.150 | 0.900 |" in text
    assert "| base | 20 | 25.0% | 25.0% |" in text  # open questions, exact answer, per type


def test_statistics_identical_models_give_p_one(tmp_path: Path) -> None:
    mod = _module()
    same = [i % 3 == 0 for i in range(30)]
    _fixture(tmp_path, same, same)
    s = mod.significance(tmp_path, n_resamples=1000)
    for arm in "ab":
        for subset in ("all", "grpo_types"):
            c = s["vs_base"][arm][subset]
            assert c["p_value"] == 1.0 and c["difference"] == 0.0
            assert all(m["p_value"] == 1.0 and m["b10"] == m["b01"] == 0 for m in c["mcnemar"])
    assert "| +0.0 | [+0.0, +0.0] | 1 |" in "\n".join(mod.statistics_section(s))


def test_no_evals_no_statistics_section(tmp_path: Path) -> None:
    mod = _module()
    assert mod.statistics_section(mod.significance(tmp_path)) == []


def test_top_letter_share_ignores_open_answers(tmp_path: Path) -> None:
    mod = _module()
    rows = [{"predicted": x, "answer_form": "letter"} for x in "ABCD"]
    rows += [{"predicted": "the red mug", "answer_form": "words"}] * 6
    (tmp_path / "completions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert abs(mod.top_letter_share(tmp_path) - 0.25) < 1e-12


def test_the_type_table_reports_the_grpo_types_apart() -> None:
    mod = _module()
    per = {"last_pickup": {"items": 10, "accuracy": 0.5}, "where_ended": {"items": 30, "accuracy": 0.1}}
    per |= {"first_pickup": {"items": 20, "accuracy": 0.6}}
    better = {t: {**r, "accuracy": r["accuracy"] + 0.1} for t, r in per.items()}
    data = {"base": {"per_question_type": per}, "a": {"grpo_a-seed0": {"per_question_type": better}}, "b": {}}
    text = "\n".join(mod.type_table(data))
    assert "| **GRPO types** (held out of the base) | 40 | 20.0% | 30.0% | n/a |" in text
    assert "| **base types** | 20 | 60.0% | 70.0% | n/a |" in text


def test_keyframe_margins_of_an_older_eval_compute_the_best_fixed_set(tmp_path: Path) -> None:
    mod = _module()
    run = tmp_path / "eval" / "grpo_b-seed0"
    run.mkdir(parents=True)
    # one question type, salient {1}, {2}, {1, 2}: the best fixed set {1, 2} scores 7/9, any one frame 5/9
    salient = [[1], [2], [1, 2]]
    rows = [
        {
            "question_type": "count",
            "frame_times": [0.0, 1.0, 2.0, 3.0],
            "salient_frames": t,
            "keyframe_f1": 1.0,
        }
        for t in salient
    ]
    (run / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    older = {"keyframe_f1": 1.0, "keyframe_f1_cite_all": 0.5, "keyframe_f1_positional_prior": 0.9}
    (run / "metrics.json").write_text(json.dumps(older))
    kf = mod.keyframe_margins(tmp_path / "eval")["per_seed"]["grpo_b-seed0"]
    assert kf["best_baseline"] == "best fixed set"
    assert abs(kf["baselines"]["best fixed set"] - 7 / 9) < 1e-12
    assert abs(kf["margin"] - 2 / 9) < 1e-12
    assert kf["reward_baseline"] == 0.9  # the metrics' own numbers are kept


def test_keyframe_f1_per_type_beside_the_best_fixed_set(tmp_path: Path) -> None:
    """Per type: the model's mean F1 and the best fixed set on the same rows; rows without salient
    frames (keyframe_f1 None) are left out; the table shows each model's column."""
    mod = _module()
    frames = [0.0, 1.0, 2.0, 3.0]
    rows = [
        {"question_type": "count", "frame_times": frames, "salient_frames": [1], "keyframe_f1": 1.0},
        {"question_type": "count", "frame_times": frames, "salient_frames": [2], "keyframe_f1": 0.0},
        {"question_type": "count", "frame_times": frames, "salient_frames": [1, 2], "keyframe_f1": 2 / 3},
        {"question_type": "order", "frame_times": frames, "salient_frames": [4], "keyframe_f1": 0.0},
        {"question_type": "order", "frame_times": frames, "salient_frames": [], "keyframe_f1": None},
    ]
    t = mod.keyframe_by_type(rows)
    assert t["count"]["rows"] == 3 and abs(t["count"]["f1"] - 5 / 9) < 1e-12
    assert t["count"]["fixed_set"] == [1, 2] and abs(t["count"]["fixed_set_f1"] - 7 / 9) < 1e-12
    assert t["order"] == {"rows": 1, "f1": 0.0, "fixed_set_f1": 1.0, "fixed_set": [4]}
    table = "\n".join(
        mod.keyframe_type_rows({"base": t, "grpo_b-seed0": {"count": {**t["count"], "f1": 0.25}}})
    )
    assert "| question type | questions | best fixed set (positions) | base | grpo_b-seed0 |" in table
    assert "| count | 3 | 0.778 (1, 2) | 0.556 | 0.250 |" in table
    assert "| order | 1 | 1.000 (4) | 0.000 | n/a |" in table
    # the control eval (another clip's frames): its mean F1 per type, in brackets where measured
    other = [{**r, "keyframe_f1": 0.0 if r["keyframe_f1"] is not None else None} for r in rows[:2]]
    other[1]["keyframe_f1"] = 0.5
    with_other = mod.keyframe_by_type(rows, other)
    assert with_other["count"]["other_f1"] == 0.25 and "other_f1" not in with_other["order"]
    assert {k: v for k, v in with_other["count"].items() if k != "other_f1"} == t["count"]
    table = "\n".join(mod.keyframe_type_rows({"base": with_other}))
    assert "| count | 3 | 0.778 (1, 2) | 0.556 (0.250) |" in table
    assert "| order | 1 | 1.000 (4) | 0.000 |" in table
