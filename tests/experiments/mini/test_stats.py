"""The miniature experiment's significance tests and publish rule (experiments/mini/stats.py).

Expected p-values are computed here independently: by enumerating sign patterns with itertools, or
by exact binomial sums over integers (fractions), never by calling the code under test.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from experiments.mini.stats import (
    N_RESAMPLES,
    adjust_p_values,
    binomial_sf,
    bootstrap_diff_ci,
    compare_across_seeds,
    discordant,
    keyframe_margin,
    mcnemar_exact,
    paired_permutation_test,
    publish_decision,
)


def _binom_sf_exact(k: int, n: int, p: Fraction) -> float:
    """P(X >= k), X ~ Binomial(n, p), in exact rational arithmetic."""
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def _enumerated_p(a: list[float], b: list[float], alternative: str) -> float:
    """Sign-flip p-value by brute force over all 2**n sign patterns (zeros included)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    obs = sum(d)
    hits = 0
    patterns = list(itertools.product((1, -1), repeat=len(d)))
    for signs in patterns:
        t = sum(s * x for s, x in zip(signs, d, strict=True))
        if alternative == "greater":
            hits += t >= obs - 1e-12
        elif alternative == "less":
            hits += t <= obs + 1e-12
        else:
            hits += abs(t) >= abs(obs) - 1e-12
    return hits / len(patterns)


# --- paired permutation test -------------------------------------------------------------------


def test_all_ten_pairs_favour_one_side_gives_one_in_1024() -> None:
    b = [1.0] * 10
    a = [0.0] * 10
    assert _enumerated_p(b, a, "greater") == 1 / 1024
    res = paired_permutation_test(b, a, alternative="greater")
    assert res.exact
    assert res.n_resamples == 1024
    assert res.p_value == pytest.approx(1 / 1024, abs=1e-15)
    assert res.statistic == 1.0
    # the same data seen from a: b is better, so "less" is the significant direction
    assert paired_permutation_test(a, b, alternative="less").p_value == pytest.approx(1 / 1024, abs=1e-15)
    assert paired_permutation_test(a, b, alternative="greater").p_value == 1.0
    assert paired_permutation_test(b, a, alternative="two-sided").p_value == pytest.approx(2 / 1024)


def test_zero_differences_do_not_change_the_exact_p() -> None:
    a = [1, 1, 1, 0, 1, 0, 1, 1]
    b = [0, 1, 0, 0, 0, 1, 1, 0]  # 3 ties, 4 wins for a, 1 for b
    for alt in ("greater", "less", "two-sided"):
        expected = _enumerated_p([float(x) for x in a], [float(x) for x in b], alt)
        assert paired_permutation_test(a, b, alternative=alt).p_value == pytest.approx(expected, abs=1e-12)


def test_float_values_match_enumeration() -> None:
    rng = np.random.default_rng(3)
    a = (rng.integers(0, 4, 11) / 3).tolist()  # seed means over 3 seeds
    b = (rng.integers(0, 4, 11) / 3).tolist()
    for alt in ("greater", "less", "two-sided"):
        expected = _enumerated_p(a, b, alt)
        got = paired_permutation_test(a, b, alternative=alt)
        assert got.exact
        assert got.p_value == pytest.approx(expected, abs=1e-12)


def test_identical_inputs_are_not_significant() -> None:
    x = [1, 0, 1, 1, 0, 0, 1]
    for alt in ("greater", "less", "two-sided"):
        assert paired_permutation_test(x, x, alternative=alt).p_value == 1.0
    big = np.random.default_rng(0).integers(0, 2, 500)
    res = paired_permutation_test(big, big, n_resamples=1000)
    assert res.p_value == 1.0


def test_symmetry_swapping_the_models_swaps_the_direction() -> None:
    rng = np.random.default_rng(1)
    for size, n in ((12, N_RESAMPLES), (300, 5000)):  # exact, then Monte Carlo
        a = rng.integers(0, 2, size).astype(float)
        b = (rng.random(size) < 0.4).astype(float)
        assert paired_permutation_test(a, b, n_resamples=n).exact == (size == 12)
        ab = paired_permutation_test(a, b, n_resamples=n, seed=7, alternative="greater")
        ba = paired_permutation_test(b, a, n_resamples=n, seed=7, alternative="less")
        assert ab.p_value == ba.p_value
        assert ab.statistic == -ba.statistic
        two_ab = paired_permutation_test(a, b, n_resamples=n, seed=7, alternative="two-sided")
        two_ba = paired_permutation_test(b, a, n_resamples=n, seed=7, alternative="two-sided")
        assert two_ab.p_value == two_ba.p_value


def test_monte_carlo_is_close_to_exact_on_a_medium_case() -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(0, 4, 24) / 3
    b = rng.integers(0, 3, 24) / 3
    m = int(np.count_nonzero(a - b))
    assert m == 18
    exact = paired_permutation_test(a, b, n_resamples=2**m)
    assert exact.exact
    assert 0.005 < exact.p_value < 0.05  # in the tail, where the decisions are made
    mc = paired_permutation_test(a, b, n_resamples=40_000, seed=5)
    assert not mc.exact
    se = math.sqrt(exact.p_value * (1 - exact.p_value) / 40_000)
    assert abs(mc.p_value - exact.p_value) < 5 * se


def test_monte_carlo_p_is_never_zero() -> None:
    a = np.ones(200)
    b = np.zeros(200)
    res = paired_permutation_test(a, b, n_resamples=999, seed=0)
    assert not res.exact
    assert res.p_value == 1 / 1000


def test_exact_permutation_on_binary_data_is_the_sign_test() -> None:
    a = [1] * 9 + [0] * 3 + [1] * 5 + [0] * 4
    b = [0] * 9 + [1] * 3 + [1] * 5 + [0] * 4
    b01, b10 = discordant(a, b)
    assert (b01, b10) == (3, 9)
    perm = paired_permutation_test(a, b)
    assert perm.exact
    assert perm.p_value == pytest.approx(mcnemar_exact(b01, b10).p_value, abs=1e-12)


def test_scipy_agrees_where_available() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    a = rng.integers(0, 4, 12) / 3
    b = rng.integers(0, 4, 12) / 3
    ref = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.sum(x - y, axis=axis),
        permutation_type="samples",
        alternative="greater",
        n_resamples=np.inf,
    )
    assert paired_permutation_test(a, b).p_value == pytest.approx(ref.pvalue, abs=1e-12)
    assert binomial_sf(31, 100, 0.2) == pytest.approx(stats.binom.sf(30, 100, 0.2), rel=1e-10)


def test_rejects_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError):
        paired_permutation_test([1, 0], [1, 0, 1])
    with pytest.raises(ValueError):
        paired_permutation_test([], [])
    with pytest.raises(ValueError):
        paired_permutation_test([1, 0], [0, 1], alternative="bigger")  # type: ignore[arg-type]


# --- McNemar and the binomial tail -------------------------------------------------------------


def test_mcnemar_exact_by_hand() -> None:
    # 10 discordant questions, 8 won by a: P(X >= 8 | Bin(10, 1/2)) = (45 + 10 + 1) / 1024
    res = mcnemar_exact(b01=2, b10=8)
    assert res.p_value == pytest.approx(56 / 1024, abs=1e-15)
    assert mcnemar_exact(b01=2, b10=8, alternative="two-sided").p_value == pytest.approx(112 / 1024)
    # P(X <= 8) = 1 - P(X >= 9) = 1 - 11/1024
    assert mcnemar_exact(b01=2, b10=8, alternative="less").p_value == pytest.approx(1013 / 1024)
    assert mcnemar_exact(0, 0).p_value == 1.0
    assert mcnemar_exact(5, 5, alternative="two-sided").p_value == 1.0


def test_binomial_sf_matches_exact_rational_sums() -> None:
    for k, n in ((31, 100), (30, 100), (0, 10), (11, 10), (250, 1000)):
        assert binomial_sf(k, n, 0.2) == pytest.approx(_binom_sf_exact(k, n, Fraction(1, 5)), rel=1e-10)


def test_discordant_needs_binary_correctness() -> None:
    with pytest.raises(ValueError):
        discordant([0.5, 1.0], [0.0, 1.0])


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_interval() -> None:
    assert bootstrap_diff_ci(np.ones(30), np.zeros(30)) == (1.0, 1.0)
    x = np.random.default_rng(0).integers(0, 2, 40)
    assert bootstrap_diff_ci(x, x) == (0.0, 0.0)
    rng = np.random.default_rng(2)
    a = (rng.random(2000) < 0.6).astype(float)
    b = (rng.random(2000) < 0.4).astype(float)
    low, high = bootstrap_diff_ci(a, b, n_resamples=4000, seed=1)
    d = a - b
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert low < d.mean() < high
    assert low == pytest.approx(d.mean() - 1.96 * se, abs=0.25 * se)
    assert high == pytest.approx(d.mean() + 1.96 * se, abs=0.25 * se)
    assert bootstrap_diff_ci(a, b, n_resamples=500, seed=3) == bootstrap_diff_ci(
        a, b, n_resamples=500, seed=3
    )


# --- across seeds ------------------------------------------------------------------------------


def test_compare_across_seeds_tests_per_question_seed_means() -> None:
    rng = np.random.default_rng(9)
    n = 120
    base = (rng.random(n) < 0.3).astype(float)
    grpo = np.stack([(rng.random(n) < 0.55).astype(float) for _ in range(3)])
    res = compare_across_seeds(grpo, base, n_resamples=20_000, seed=2)
    means = grpo.mean(axis=0)
    direct = paired_permutation_test(means, base, n_resamples=20_000, seed=2)
    assert res.test == direct
    assert res.difference == pytest.approx(means.mean() - base.mean())
    assert res.accuracy_a == pytest.approx(grpo.mean())
    assert (res.n_seeds_a, res.n_seeds_b, res.n_questions) == (3, 1, n)
    assert res.test.p_value < 0.01
    assert res.ci[0] < res.difference < res.ci[1]
    assert len(res.mcnemar) == 3
    for i, mc in enumerate(res.mcnemar):
        assert (mc.b01, mc.b10) == discordant(grpo[i], base)
    # a subset of questions (e.g. types held out of the base stage) is a column selection
    held_out = np.arange(n) % 4 == 0
    sub = compare_across_seeds(grpo[:, held_out], base[held_out], n_resamples=2000)
    assert sub.n_questions == int(held_out.sum())


def test_compare_across_seeds_pairs_seed_by_seed_when_both_have_seeds() -> None:
    a = np.array([[1, 1, 0, 1], [1, 0, 1, 1]])
    b = np.array([[0, 1, 0, 0], [1, 1, 1, 0]])
    res = compare_across_seeds(a, b, n_resamples=1000)
    assert [(m.b01, m.b10) for m in res.mcnemar] == [(0, 2), (1, 1)]
    with pytest.raises(ValueError):
        compare_across_seeds(a, np.zeros((3, 4)))
    with pytest.raises(ValueError):
        compare_across_seeds(a, np.zeros(5))


# --- publish rule ------------------------------------------------------------------------------


def _correct(k: int, n: int = 100) -> list[int]:
    return [1] * k + [0] * (n - k)


def test_bonferroni_over_seven_candidates_on_both_sides_of_the_threshold() -> None:
    # 31/100 against chance 0.2: p = 0.00606 < 0.05 / 7 = 0.00714; 30/100: p = 0.0112, not < 0.00714
    p31 = _binom_sf_exact(31, 100, Fraction(1, 5))
    p30 = _binom_sf_exact(30, 100, Fraction(1, 5))
    assert p31 < 0.05 / 7 < p30 < 0.05
    others = {f"grpo_{i}": _correct(22) for i in range(6)}
    yes = publish_decision({**others, "best": _correct(31)}, 0.2)
    assert yes.chosen == "best"
    assert yes.p_values["best"] == pytest.approx(p31, rel=1e-10)
    assert yes.adjusted["best"] == pytest.approx(7 * p31, rel=1e-10)
    no = publish_decision({**others, "best": _correct(30)}, 0.2)
    assert no.chosen is None
    assert "nothing published" in no.reason and "best" in no.reason
    assert no.significant == []
    # the same candidate alone would be published: the correction is what refuses it
    assert publish_decision({"best": _correct(30)}, 0.2).chosen == "best"


def test_publish_chooses_the_most_accurate_significant_candidate() -> None:
    cands = {"a": _correct(40), "b": _correct(45), "c": _correct(45), "d": _correct(10)}
    assert publish_decision(cands, 0.2).chosen == "b"  # tie on accuracy and p: by name
    assert publish_decision(cands, 0.2, tiebreak={"b": 0.1, "c": 0.3}).chosen == "c"
    nothing = publish_decision({"x": _correct(20), "y": _correct(21)}, 0.2, correction="holm")
    assert nothing.chosen is None


def test_publish_against_a_baseline_model_uses_the_paired_test() -> None:
    base = np.array(_correct(30, 60))
    better = base.copy()
    better[30:45] = 1  # 15 questions won, none lost
    same = base.copy()
    dec = publish_decision({"better": better, "same": same}, base, n_resamples=1 << 15)
    assert dec.p_values["better"] == pytest.approx(1 / 2**15)
    assert dec.p_values["same"] == 1.0
    assert dec.chosen == "better"
    dec2 = publish_decision({"same": same}, base)
    assert dec2.chosen is None


def test_bonferroni_and_holm_adjustments() -> None:
    p = {"w": 0.01, "x": 0.04, "y": 0.03, "z": 0.005}
    bonf = adjust_p_values(p, "bonferroni")
    assert bonf == pytest.approx({"w": 0.04, "x": 0.16, "y": 0.12, "z": 0.02})
    holm = adjust_p_values(p, "holm")
    # sorted: z 0.005*4 = 0.02; w max(0.02, 0.01*3) = 0.03; y max(0.03, 0.03*2) = 0.06; x max(0.06, 0.04*1)
    assert holm == pytest.approx({"z": 0.02, "w": 0.03, "y": 0.06, "x": 0.06})
    # Holm stops at y (0.03 >= 0.05/2), so x (0.04 < 0.05/1) is not rejected either
    assert sorted(n for n, q in holm.items() if q < 0.05) == ["w", "z"]
    # Holm rejects more than Bonferroni where the step-down allows it
    p2 = {"a": 0.02, "b": 0.04}
    assert [n for n, q in adjust_p_values(p2, "bonferroni").items() if q < 0.05] == ["a"]
    assert sorted(n for n, q in adjust_p_values(p2, "holm").items() if q < 0.05) == ["a", "b"]


def test_holm_widens_the_significant_set_but_not_whether_to_publish() -> None:
    # 32 and 31 of 100 (p ≈ 0.0031, 0.0061) among 10 candidates: Bonferroni needs p < 0.005 for both;
    # Holm tests the second smallest against 0.05 / 9 ≈ 0.0056: refused by both ...
    cands = {"one": _correct(31), "two": _correct(32)} | {f"n{i}": _correct(15) for i in range(8)}
    bonf = publish_decision(cands, 0.2, correction="bonferroni")
    holm = publish_decision(cands, 0.2, correction="holm")
    assert bonf.significant == holm.significant == ["two"]
    assert bonf.chosen == holm.chosen == "two"
    # ... with 9 candidates Bonferroni needs p < 0.0056 and refuses "one", Holm tests it against
    # 0.05 / 8 = 0.00625 and accepts it
    cands9 = {"one": _correct(31), "two": _correct(32)} | {f"n{i}": _correct(15) for i in range(7)}
    assert publish_decision(cands9, 0.2, correction="bonferroni").significant == ["two"]
    assert publish_decision(cands9, 0.2, correction="holm").significant == ["one", "two"]
    # the smallest p faces alpha / m under both, so "publish anything?" never differs
    only31 = {"one": _correct(31)} | {f"n{i}": _correct(15) for i in range(9)}
    assert publish_decision(only31, 0.2, correction="bonferroni").chosen is None
    assert publish_decision(only31, 0.2, correction="holm").chosen is None


def test_publish_validates_inputs() -> None:
    with pytest.raises(ValueError):
        publish_decision({}, 0.2)
    with pytest.raises(ValueError):
        publish_decision({"a": [0.5, 1.0]}, 0.2)  # the binomial test needs 0/1 correctness


# --- keyframes ---------------------------------------------------------------------------------


def test_keyframe_margin_is_over_the_best_content_free_strategy() -> None:
    res = keyframe_margin(0.62, {"cite_all": 0.31, "best_fixed_set": 0.43})
    assert res.best_baseline == "best_fixed_set"
    assert res.margin == pytest.approx(0.19)
    assert res.margin >= 0.15
    low = keyframe_margin(0.20, {"cite_all": 0.31, "best_fixed_set": 0.43})
    assert low.margin == pytest.approx(-0.23)
    with pytest.raises(ValueError):
        keyframe_margin(0.5, {})
