"""The miniature EgoVLM experiment's table and plot, from the runs ``experiments/mini/repro.py`` made.

Reads ``<runs>/eval/<model>/metrics.json`` and ``completions.jsonl`` (``egovlm eval`` on the held-out
test split's multiple-choice and open questions; also ``<model>-otherclip`` evals, where each question
is shown another clip's frames), each GRPO run's TensorBoard curves and ``<runs>/timings.jsonl``;
writes ``results.md`` (the tables and a "Statistics" section: the significance tests of
:mod:`experiments.mini.stats` on per-question correctness), ``results.json`` (every number) and
``curves.png`` (reward curves, mean and min-max over seeds) into ``--out``.

    .venv/bin/python -m experiments.mini.report --runs runs/mini --out docs/mini_experiment
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from egovlm.atomic import atomic_path, atomic_write_text
from egovlm.train.eval import best_fixed_set_of, content_free_keyframe_f1, keyframe_groups
from experiments.mini import stats
from experiments.mini.base_data import GRPO_TYPES

CHANCE = 0.2  # five options
ARMS = {"a": "GRPO (a): format + accuracy", "b": "GRPO (b): format + accuracy + keyframe"}
CURVES = [
    ("accuracy reward", "train/rewards/accuracy/mean"),
    ("format reward", "train/rewards/format/mean"),
    ("keyframe F1 (paid in b only)", "train/rewards/keyframe/mean"),
    ("format-failure rate", "train/format_failure_rate"),
]


def _metrics(path: Path) -> dict[str, Any] | None:
    f = path / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample std (0 for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def collect(runs: Path) -> dict[str, Any]:
    """Every eval's metrics, grouped: base, and per arm a list over seeds."""
    ev = runs / "eval"

    def read(name: str) -> dict[str, Any] | None:
        m = _metrics(ev / name)
        if m is not None:
            m["top_letter_share"] = top_letter_share(ev / name)
        return m

    out: dict[str, Any] = {"base": read("base"), "base_otherclip": read("base-otherclip")}
    for arm in ARMS:
        seeds = sorted(p.name for p in ev.glob(f"grpo_{arm}-seed*") if not p.name.endswith("-otherclip"))
        out[arm] = {s: read(s) for s in seeds}
        out[f"{arm}_otherclip"] = {s: read(f"{s}-otherclip") for s in seeds}
    return out


def _num(m: dict[str, Any] | None, key: str) -> float | None:
    return None if m is None or m.get(key) is None else float(m[key])


def completion_rows(eval_dir: Path) -> list[dict[str, Any]] | None:
    """The rows of an eval's ``completions.jsonl`` (None without one). Read-only: eval's own
    ``read_done`` trims a torn last line in place, which a report must not do."""
    f = eval_dir / "completions.jsonl"
    if not f.is_file():
        return None
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def top_letter_share(eval_dir: Path) -> float | None:
    """Share of the questions answered with the model's most frequent letter (letters are balanced,
    so 20% is no preference and 100% is one letter for every question)."""
    rows = completion_rows(eval_dir)
    if rows is None:
        return None
    letters = [r.get("predicted") for r in rows if r.get("answer_form", "letter") == "letter"]
    counts = Counter(x for x in letters if x)
    return max(counts.values()) / len(letters) if counts and letters else None


def arm_stats(per_seed: dict[str, Any], key: str) -> dict[str, float] | None:
    vals = [v for v in (_num(m, key) for m in per_seed.values()) if v is not None]
    return spread(vals) if vals else None


def pct(s: dict[str, float] | float | None, digits: int = 1) -> str:
    if s is None:
        return "n/a"
    if isinstance(s, float | int):
        return f"{100 * s:.{digits}f}%"
    lo, hi = 100 * s["min"], 100 * s["max"]
    return f"{100 * s['mean']:.{digits}f}% ± {100 * s['std']:.{digits}f} ({lo:.0f}–{hi:.0f})"


def f1s(s: dict[str, float] | float | None) -> str:
    if s is None:
        return "n/a"
    if isinstance(s, float | int):
        return f"{s:.3f}"
    return f"{s['mean']:.3f} ± {s['std']:.3f} ({s['min']:.3f}–{s['max']:.3f})"


def main_table(data: dict[str, Any]) -> list[str]:
    base, base_o = data["base"], data["base_otherclip"]
    n = base["answered_items"] - (base.get("open_items") or 0) if base else "?"
    rows = [
        f"Held-out EgoSynth test split ({n} multiple-choice questions, 5 options). "
        "Mean ± std over seeds (min–max).",
        "",
        "| model | accuracy | accuracy, another clip's frames | format failures | no answer letter "
        "| most frequent letter | keyframe F1 | keyframe F1, another clip's frames |",
        "|---|---|---|---|---|---|---|---|",
        f"| chance | {pct(CHANCE)} | {pct(CHANCE)} | – | – | {pct(CHANCE)} | – | – |",
        "| base (base stage only) | "
        + " | ".join(
            [
                pct(_num(base, "accuracy")),
                pct(_num(base_o, "accuracy")),
                pct(_num(base, "format_failure_rate")),
                pct(_num(base, "no_answer_rate")),
                pct(_num(base, "top_letter_share")),
                f1s(_num(base, "keyframe_f1")),
                f1s(_num(base_o, "keyframe_f1")),
            ]
        )
        + " |",
    ]
    for arm, label in ARMS.items():
        seeds = data[arm]
        if not seeds:
            continue
        rows.append(
            f"| {label} ({len(seeds)} seeds) | "
            + " | ".join(
                [
                    pct(arm_stats(seeds, "accuracy")),
                    pct(arm_stats(data[f"{arm}_otherclip"], "accuracy")),
                    pct(arm_stats(seeds, "format_failure_rate")),
                    pct(arm_stats(seeds, "no_answer_rate")),
                    pct(arm_stats(seeds, "top_letter_share")),
                    f1s(arm_stats(seeds, "keyframe_f1")),
                    f1s(arm_stats(data[f"{arm}_otherclip"], "keyframe_f1")),
                ]
            )
            + " |"
        )
    return rows


def type_table(data: dict[str, Any]) -> list[str]:
    base = data["base"] or {}
    types = sorted((base.get("per_question_type") or {}).keys())
    if not types:
        return []
    head = "| question type | items | base | " + " | ".join(ARMS[a].split(":")[0] for a in ARMS) + " |"
    rows = ["Accuracy per question type (mean over seeds):", "", head, "|---|---|---|" + "---|" * len(ARMS)]
    for t in types:
        cells = [t, str(base["per_question_type"][t]["items"]), pct(base["per_question_type"][t]["accuracy"])]
        for arm in ARMS:
            vals = [
                m["per_question_type"][t]["accuracy"]
                for m in data[arm].values()
                if m and t in m.get("per_question_type", {})
            ]
            cells.append(pct(statistics.fmean(vals)) if vals else "n/a")
        rows.append("| " + " | ".join(cells) + " |")
    for label, family in (
        ("**GRPO types** (held out of the base)", [t for t in types if t in GRPO_TYPES]),
        ("**base types**", [t for t in types if t not in GRPO_TYPES]),
    ):
        if family:
            cells = [label, str(sum(base["per_question_type"][t]["items"] for t in family))]
            cells.append(pct(family_accuracy(base, family)))
            for arm in ARMS:
                vals = [v for v in (family_accuracy(m, family) for m in data[arm].values()) if v is not None]
                cells.append(pct(statistics.fmean(vals)) if vals else "n/a")
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def family_accuracy(m: dict[str, Any] | None, family: list[str]) -> float | None:
    """Accuracy over the questions of several types, from an eval's per-type accuracy and counts."""
    per = [(m or {}).get("per_question_type", {}).get(t) for t in family]
    per = [r for r in per if r]
    n = sum(r["items"] for r in per)
    return sum(r["accuracy"] * r["items"] for r in per) / n if n else None


FINAL_BASE = "pretrain"  # the base stage's last phase: its final/ is the model GRPO starts from


def base_phases(runs: Path) -> list[tuple[str, dict[str, Any]]]:
    """The base stage's phases in the order they ran, as (run folder, run.json), found by walking
    back from the last phase through each run's ``continued_from`` (by folder name under ``runs``, so
    a moved runs folder still reads): the chain is what ran, not a list kept beside the recipe."""
    chain: list[tuple[str, dict[str, Any]]] = []
    folder: str | None = FINAL_BASE
    while folder and (runs / folder / "run.json").is_file() and all(f != folder for f, _ in chain):
        info = json.loads((runs / folder / "run.json").read_text())
        chain.append((folder, info))
        previous = info.get("continued_from")
        folder = Path(previous).parent.name if previous else None
    return chain[::-1]


def _phase_label(runs: Path, folder: str, k: int, n: int) -> str:
    config = runs / folder / "config.yaml"
    frames = yaml.safe_load(config.read_text()).get("data", {}).get("frames") if config.is_file() else None
    per_prompt = f", {frames} frame{'s' if frames != 1 else ''} per prompt" if frames else ""
    return f"phase {k} of {n} ({folder}{per_prompt})"


def base_stage_table(runs: Path) -> list[str]:
    """Does the base model look at the frames? Per phase: the text steps' letter accuracy on held-out
    lookup drills (where the phase ran them), the vision head's held-out loss against a
    constant predictor (where the phase ran vision steps), and the description/perception validation
    loss with the right vs another clip's frames."""
    rows: list[str] = []
    phases = base_phases(runs)
    for k, (folder, info) in enumerate(phases, 1):
        rows += _phase_rows(info, _phase_label(runs, folder, k, len(phases)))
    rows += _perception_rows(runs / "eval_val" / "base-perception")
    if not rows:
        return []
    head = ["Base stage: does the model use the frames, and does it answer what it was trained on?", ""]
    head += ["| measure | with the right frames | without (see note) |", "|---|---|---|"]
    note = [
        "",
        "Losses: lower is better. Without: the vision head's loss when it predicts each label's rate (it",
        "reads nothing), and the language loss with each example shown another clip's frames. Perception",
        "questions and lookup drills: without is what answering at random gives (five options).",
    ]
    return head + rows + note


def _perception_rows(eval_dir: Path) -> list[str]:
    """The base model's greedy answers to perception questions about the val clips, the kind of
    question it was trained on: accuracy and the most frequent letter's share (20% each by chance)."""
    m = _metrics(eval_dir)
    if m is None:
        return []
    share = top_letter_share(eval_dir)
    rows = [
        f"| base model, greedy answers to {m['items']} perception questions about the val clips: accuracy "
        f"| {pct(m['accuracy'])} | {pct(CHANCE)} (chance) |",
    ]
    for kind, r in sorted((m.get("per_question_type") or {}).items()):  # lookup: binding; visible: reading
        rows.append(
            f"| the same, {kind} ({r['items']} questions) | {pct(r['accuracy'])} | {pct(CHANCE)} (chance) |"
        )
    rows.append(
        f"| the same answers: share of the most frequent letter | {pct(share)} "
        f"| {pct(CHANCE)} (no preference) |"
    )
    return rows


def _phase_rows(info: dict[str, Any], label: str) -> list[str]:
    rows = []
    text = info.get("text") or []
    if text:  # the text steps' held-out lookup drills (pretrain_text): no frames, so chance is the "without"
        last = text[-1]
        rows.append(
            f"| {label}: text steps, held-out lookup drills, option letter right (teacher-forced) "
            f"| {pct(last['text_letter_accuracy'])} after {last['text_step']} steps "
            f"| {pct(CHANCE)} (chance) |"
        )
    vision = info.get("vision") or []
    steps = [r for r in vision if "vision_step" in r]
    const = next((r["constant_predictor"] for r in vision if "constant_predictor" in r), None)
    if steps and const is not None:
        rows.append(
            f"| {label}: object-label loss of the vision head, held-out frames "
            f"| {steps[-1]['held_out']:.4f} | {const:.4f} |"
        )
    if steps and steps[-1].get("auroc_cells") is not None:
        rows.append(
            f"| {label}: vision head AUROC on held-out frames, objects per token / held per frame "
            f"| {steps[-1]['auroc_cells']:.3f} / {steps[-1]['auroc_held']:.3f} | 0.500 (reads nothing) |"
        )
    if info.get("val_loss") is not None:
        rows.append(
            f"| {label}: language loss on val descriptions and perception questions "
            f"| {info['val_loss']:.4f} | {info['val_loss_shuffled_frames']:.4f} |"
        )
    if info.get("drill_letter_accuracy") is not None:  # drills mixed into the language steps
        rows.append(
            f"| {label}: held-out lookup drills (mixed into its steps), option letter right (teacher-forced) "
            f"| {pct(info['drill_letter_accuracy'])} at the end | {pct(CHANCE)} (chance) |"
        )
    return rows


# --- statistics (experiments/mini/stats.py) on per-question correctness --------------------------------

PERMUTATION_TEST = (
    "one-sided paired sign-flip permutation test over the test questions, on each question's correctness "
    "averaged over the seeds (10^5 random sign patterns, or all of them when few questions differ)"
)


def correctness(eval_dir: Path, form: str = "letter") -> dict[str, tuple[float, str]]:
    """id -> (1.0 correct / 0.0 not, question type) of an eval's answered questions of one
    ``answer_form`` (``letter``: multiple choice; ``words``: open), from its ``completions.jsonl``."""
    out: dict[str, tuple[float, str]] = {}
    for r in completion_rows(eval_dir) or []:
        if r.get("answer_form", "letter") != form or r.get("correct") is None:
            continue
        out[r["id"]] = (float(bool(r["correct"])), r.get("question_type") or "untyped")
    return out


def aligned(
    runs: dict[str, dict[str, tuple[float, str]]],
) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """(ids, their question types, name -> correctness array) over the questions every run answered,
    in the first run's order: the tests pair question with question."""
    first = next(iter(runs.values()))
    ids = [i for i in first if all(i in r for r in runs.values())]
    types = [first[i][1] for i in ids]
    return ids, types, {n: np.array([r[i][0] for i in ids]) for n, r in runs.items()}


def _comparison(c: stats.SeedsComparison) -> dict[str, Any]:
    return {
        "questions": c.n_questions,
        "seeds": c.n_seeds_a,
        "accuracy": c.accuracy_a,
        "accuracy_base": c.accuracy_b,
        "difference": c.difference,
        "ci95": list(c.ci),
        "p_value": c.test.p_value,
        "exact": c.test.exact,
        "mcnemar": [{"b10": m.b10, "b01": m.b01, "p_value": m.p_value} for m in c.mcnemar],
    }


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def significance(runs: Path, n_resamples: int = stats.N_RESAMPLES) -> dict[str, Any]:
    """The significance tests on the test split (every number the Statistics section shows):

    - each GRPO arm against the base, on all multiple-choice questions and on the GRPO types alone
      (held out of the base stage): :func:`experiments.mini.stats.compare_across_seeds`;
    - arm b against arm a: accuracy difference with a paired bootstrap interval (and a two-sided
      permutation p);
    - arm b's keyframe F1 above the content-free baselines eval computed on the same test set
      (cite all frames; the best fixed set of frame positions per question type);
    - open questions: exact-answer accuracy per model."""
    ev = runs / "eval"
    names = ["base"] + [
        p.name for a in ARMS for p in sorted(ev.glob(f"grpo_{a}-seed*")) if not p.name.endswith("-otherclip")
    ]
    mc = {n: correctness(ev / n) for n in names}
    mc = {n: r for n, r in mc.items() if r}
    out: dict[str, Any] = {"test": PERMUTATION_TEST, "grpo_types": list(GRPO_TYPES)}
    if "base" not in mc:
        return out
    ids, types, corr = aligned(mc)
    g = np.array([t in GRPO_TYPES for t in types], dtype=bool)
    arms: dict[str, Any] = {}
    seeds_of: dict[str, np.ndarray] = {}
    for arm in ARMS:
        seeds = [n for n in corr if n.startswith(f"grpo_{arm}-")]
        if not seeds:
            continue
        seeds_of[arm] = np.stack([corr[n] for n in seeds])
        arms[arm] = {"seeds": seeds}
        for subset, mask in (("all", np.ones_like(g)), ("grpo_types", g)):
            if mask.any():
                c = stats.compare_across_seeds(
                    seeds_of[arm][:, mask], corr["base"][mask], n_resamples=n_resamples
                )
                arms[arm][subset] = _comparison(c)
    present = [t for t in GRPO_TYPES if t in types]  # never_touched, e.g., needs 30 s clips
    out.update(questions=len(ids), grpo_type_questions=int(g.sum()), grpo_types=present, vs_base=arms)
    if {"a", "b"} <= seeds_of.keys():
        ma, mb = seeds_of["a"].mean(axis=0), seeds_of["b"].mean(axis=0)
        out["b_vs_a"] = {
            "accuracy_a": float(ma.mean()),
            "accuracy_b": float(mb.mean()),
            "difference": float(mb.mean() - ma.mean()),
            "ci95": list(stats.bootstrap_diff_ci(mb, ma)),
            "p_two_sided": stats.paired_permutation_test(
                mb, ma, n_resamples=n_resamples, alternative="two-sided"
            ).p_value,
        }
    out["keyframes"] = keyframe_margins(ev)
    out["open"] = {n: _open(ev / n) for n in names if (ev / n / "metrics.json").is_file()}
    return out


def keyframe_margins(ev: Path) -> dict[str, Any]:
    """Arm b's test keyframe F1 (per seed and mean) minus the best content-free strategy on the same
    questions: the better of cite-all and the best fixed set of frame positions per question type
    (both chosen on the test rows: :func:`egovlm.train.eval.content_free_keyframe_f1`). Evals written
    before the fixed set was computed get it from their ``completions.jsonl``. The keyframe reward's
    per-question baseline (``positional prior``) is shown beside them, not used in the margin: it
    picks its citation knowing the salient frames, so it is not a strategy."""
    per_seed: dict[str, Any] = {}
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for p in sorted(ev.glob("grpo_b-seed*")):
        m = _metrics(p)
        if p.name.endswith("-otherclip") or m is None or m.get("keyframe_f1") is None:
            continue
        rows = completion_rows(p) or []  # read once: the per-type table and older evals' fixed set
        by_type[p.name] = keyframe_by_type(rows, completion_rows(ev / f"{p.name}-otherclip"))
        if m.get("keyframe_f1_best_fixed_set") is None and rows:
            best_set = content_free_keyframe_f1(rows)["keyframe_f1_best_fixed_set"]
            m = {**m, "keyframe_f1_best_fixed_set": best_set}
        strategies = (("cite all", "keyframe_f1_cite_all"), ("best fixed set", "keyframe_f1_best_fixed_set"))
        baselines = {name: float(m[key]) for name, key in strategies if m.get(key) is not None}
        if baselines:
            k = stats.keyframe_margin(m["keyframe_f1"], baselines)
            per_seed[p.name] = {
                "keyframe_f1": k.model_f1,
                "baselines": baselines,
                "best_baseline": k.best_baseline,
                "margin": k.margin,
                "reward_baseline": m.get("keyframe_f1_positional_prior"),
            }
    if not per_seed:
        return {}
    base = keyframe_by_type(completion_rows(ev / "base") or [], completion_rows(ev / "base-otherclip"))
    by_type = {"base": base, **by_type}
    return {
        "per_seed": per_seed,
        "mean_margin": statistics.fmean(v["margin"] for v in per_seed.values()),
        "by_type": {n: t for n, t in by_type.items() if t and (n == "base" or n in per_seed)},
    }


def keyframe_by_type(
    rows: list[dict[str, Any]], other_rows: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Per question type (multiple-choice and open rows together, as eval groups them): how many
    rows have salient frames, the model's mean keyframe F1, and the best fixed set of positions on
    those rows (its mean F1 and the positions): where a model cites better or worse than not looking.
    With ``other_rows`` (the same model's eval with another clip's frames) also ``other_f1``, its
    mean F1 there: a citation that follows the clip falls with the wrong frames, a habit does not."""
    other = keyframe_groups(other_rows or [])
    out: dict[str, dict[str, Any]] = {}
    for qt, group in sorted(keyframe_groups(rows).items()):
        total, positions = best_fixed_set_of(group)
        out[qt] = {
            "rows": len(group),
            "f1": statistics.fmean(float(r["keyframe_f1"]) for r in group),
            "fixed_set_f1": total / len(group),
            "fixed_set": list(positions),
        }
        if other.get(qt):
            out[qt]["other_f1"] = statistics.fmean(float(r["keyframe_f1"]) for r in other[qt])
    return out


def _open(eval_dir: Path) -> dict[str, Any]:
    m = _metrics(eval_dir) or {}
    return {
        "items": m.get("open_items") or 0,
        "accuracy": m.get("open_accuracy"),
        "per_question_type": m.get("open_per_question_type") or {},
    }


def keyframe_type_rows(by_type: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The per-type keyframe table: each model's F1 beside the best fixed set of positions."""
    if not by_type:
        return []
    names = list(by_type)
    reference = by_type[names[0]]
    rows = [
        "",
        "Keyframe F1 per question type (multiple-choice and open questions together) beside the best "
        "fixed set of frame positions chosen on the same rows: where a model cites better than not "
        "looking, and where its citation is a habit. In brackets, the same model shown another clip's "
        "frames (the control eval): a citation that follows the clip falls there, a habit does not.",
        "",
        "| question type | questions | best fixed set (positions) | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for qt, ref in reference.items():
        fixed = f"{ref['fixed_set_f1']:.3f} ({', '.join(str(p) for p in ref['fixed_set'])})"
        cells = [_with_other(by_type[n].get(qt, {})) for n in names]
        rows.append(f"| {qt} | {ref['rows']} | {fixed} | " + " | ".join(cells) + " |")
    return rows


def _with_other(t: dict[str, Any]) -> str:
    """A per-type cell: the F1, and in brackets the F1 with another clip's frames when measured."""
    if t.get("other_f1") is None:
        return f1s(t.get("f1"))
    return f"{f1s(t.get('f1'))} ({f1s(t['other_f1'])})"


def statistics_section(s: dict[str, Any]) -> list[str]:
    """results.md's Statistics section from :func:`significance`."""
    if not s.get("vs_base"):
        return []
    g = ", ".join(s["grpo_types"])
    rows = [
        "## Statistics",
        "",
        f"GRPO against its base on the same {s['questions']} multiple-choice test questions "
        f"({s['grpo_type_questions']} of the GRPO types {g}, held out of the base stage). The test: a "
        f"{s['test']}; the claim is p < 0.01. Points: accuracy difference in percentage points, with a "
        "paired bootstrap 95% interval. McNemar: an exact McNemar test of each seed against the base "
        "(secondary check; b10 questions only the GRPO model got right, b01 only the base).",
        "",
        "| comparison | questions | base | GRPO (mean over seeds) | points | 95% CI | p | McNemar per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in s["vs_base"].items():
        for subset, label in (("all", "all types"), ("grpo_types", "GRPO types")):
            c = r.get(subset)
            if c is None:
                continue
            mcn = "; ".join(f"{m['b10']}/{m['b01']}, p {_p(m['p_value'])}" for m in c["mcnemar"])
            lo, hi = c["ci95"]
            who = ARMS[arm].split(":")[0]
            rows.append(
                f"| {who} vs base, {label} | {c['questions']} | {pct(c['accuracy_base'])} "
                f"| {pct(c['accuracy'])} | {_points(c['difference'])} | [{_points(lo)}, {_points(hi)}] "
                f"| {_p(c['p_value'])} | {mcn} |"
            )
    ba = s.get("b_vs_a")
    if ba:
        lo, hi = ba["ci95"]
        rows += [
            "",
            f"Arm (b) against arm (a), accuracy on all test questions (means over seeds): "
            f"{pct(ba['accuracy_b'])} vs {pct(ba['accuracy_a'])}, {_points(ba['difference'])} points, "
            f"paired bootstrap 95% CI [{_points(lo)}, {_points(hi)}], two-sided permutation p "
            f"{_p(ba['p_two_sided'])}.",
        ]
    kf = s.get("keyframes")
    if kf:
        rows += [
            "",
            "Keyframes, arm (b): test keyframe F1 minus the best content-free citation on the same "
            "questions (cite all frames; the best fixed set of frame positions per question type, "
            "chosen on these test rows); the done-when asks for a margin of at least 0.15. The "
            "keyframe reward's per-question baseline is shown for reference: it chooses its citation "
            "knowing the salient frames, so it is not a strategy and not in the margin.",
            "",
            "| run | keyframe F1 | cite all | best fixed set | margin over the best | reward's baseline |",
            "|---|---|---|---|---|---|",
        ]
        for name, k in kf["per_seed"].items():
            b = k["baselines"]
            rows.append(
                f"| {name} | {k['keyframe_f1']:.3f} | {f1s(b.get('cite all'))} "
                f"| {f1s(b.get('best fixed set'))} | {k['margin']:+.3f} | {f1s(k.get('reward_baseline'))} |"
            )
        rows.append(f"| mean over seeds | | | | {kf['mean_margin']:+.3f} | |")
        rows += keyframe_type_rows(kf.get("by_type") or {})
    opened = {n: o for n, o in (s.get("open") or {}).items() if o["items"]}
    if opened:
        types = sorted({t for o in opened.values() for t in o["per_question_type"]})
        rows += [
            "",
            "Open questions (no options, answered in words), exact answer after normalising:",
            "",
            "| model | questions | exact answer | " + " | ".join(types) + " |",
            "|---|---|---|" + "---|" * len(types),
        ]
        for name, o in opened.items():
            cells = [pct(o["per_question_type"].get(t, {}).get("accuracy")) for t in types]
            rows.append(f"| {name} | {o['items']} | {pct(o['accuracy'])} | " + " | ".join(cells) + " |")
    return rows


def timing_table(runs: Path) -> list[str]:
    path = runs / "timings.jsonl"
    if not path.is_file():
        return []
    rows = ["| stage | wall time | load average (1 min) at start → end |", "|---|---|---|"]
    for line in path.read_text().splitlines():
        t = json.loads(line)
        rows.append(
            f"| {t['stage']} | {t['seconds'] / 60:.1f} min | {t['load_start']:.1f} → {t['load_end']:.1f} |"
        )
    return rows


def plot_curves(runs: Path, out: Path) -> Path | None:
    """Reward curves per arm: mean over seeds, shaded min-max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from egovlm.train.plot import PlotError, read_scalars

    series: dict[str, list[dict[str, list[tuple[int, float]]]]] = {}
    for arm in ARMS:
        for run in sorted((runs / f"grpo_{arm}").glob("seed*")):
            try:
                series.setdefault(arm, []).append(read_scalars(run))
            except PlotError:
                continue
    if not series:
        return None
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.2))
    for ax, (title, tag) in zip(axes, CURVES, strict=True):
        for arm, runs_scalars in series.items():
            curves = [dict(s[tag]) for s in runs_scalars if tag in s]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            vals = np.array([[c[s] for s in steps] for c in curves])
            ax.plot(steps, vals.mean(0), label=f"({arm}) {len(curves)} seeds")
            ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GRPO step", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].axhline(CHANCE, color="grey", linestyle=":", linewidth=1, label="chance")
    axes[0].legend(fontsize=8)
    fig.suptitle("miniature EgoVLM: GRPO training rewards (mean over seeds, min–max shaded)", fontsize=11)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/mini"))
    ap.add_argument("--out", type=Path, default=Path("docs/mini_experiment"))
    args = ap.parse_args()
    data = collect(args.runs)
    if data["base"] is None:
        raise SystemExit(
            f"{args.runs}/eval/base/metrics.json missing: run python -m experiments.mini.repro first"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    plot = plot_curves(args.runs, args.out / "curves.png")
    lines = ["# Miniature EgoVLM: results (generated by python -m experiments.mini.report)", ""]
    lines += [*main_table(data), "", *type_table(data), ""]
    base_stage = base_stage_table(args.runs)
    if base_stage:
        lines += [*base_stage, ""]
    stat = significance(args.runs)
    section = statistics_section(stat)
    if section:
        lines += [*section, ""]
    timing = timing_table(args.runs)
    if timing:
        lines += ["Wall time per stage (this run):", "", *timing, ""]
    if plot:
        lines += [f"![reward curves]({plot.name})", ""]
    atomic_write_text(args.out / "results.md", "\n".join(lines))
    summary = {
        "chance": CHANCE,
        "evals": data,
        "arms": {
            arm: {
                k: arm_stats(data[arm], k)
                for k in ("accuracy", "format_failure_rate", "keyframe_f1", "top_letter_share")
            }
            for arm in ARMS
        },
        "statistics": stat,
    }
    atomic_write_text(args.out / "results.json", json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
