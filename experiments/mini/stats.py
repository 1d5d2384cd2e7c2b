"""Significance tests for the miniature experiment's claims (issue 22's done-when) and its publish rule.

Every function takes **per-question correctness** arrays: one entry per question, 1.0 for a correct
answer and 0.0 otherwise (floats in between are allowed where a docstring says so, e.g. correctness
averaged over seeds). Arrays compared with each other must list the same questions in the same order;
aligning them (by question id) is the caller's job.

- **The test** for "GRPO beats its own base, significant at p < 0.01 across seeds" is
  :func:`compare_across_seeds`: per question, correctness is averaged over each model's seeds, and a
  one-sided paired sign-flip permutation test (:func:`paired_permutation_test`) is run on those
  per-question means. Per-seed exact McNemar tests (:func:`mcnemar_exact`) and a paired bootstrap
  interval of the accuracy difference (:func:`bootstrap_diff_ci`) are reported beside it.
- **Honest selection**: :func:`publish_decision` tests every candidate against a baseline and corrects
  for their number (Bonferroni, or Holm), and refuses to publish when nothing survives.
- **Keyframes**: :func:`keyframe_margin` is a model's keyframe F1 above the best content-free strategy.

Only numpy and the standard library: the experiment's environment need not carry scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Alternative = Literal["greater", "less", "two-sided"]
Correction = Literal["bonferroni", "holm"]

N_RESAMPLES = 100_000  # REDESIGN.md's 10^5 permutations
_CHUNK = 1 << 16  # sign patterns (or resamples) evaluated per matrix product


@dataclass(frozen=True)
class PermutationResult:
    """A paired permutation test's outcome.

    statistic: mean(a - b), the accuracy difference when the inputs are correctness.
    p_value: probability under H0 (a's and b's values are exchangeable within each question) of a
        statistic at least as extreme as the observed one, in the direction of ``alternative``.
    exact: True when every sign pattern was enumerated, False for a Monte Carlo estimate.
    n_resamples: the number of sign patterns evaluated (2**m when exact, m = questions whose values
        differ).
    """

    statistic: float
    p_value: float
    exact: bool
    n_resamples: int
    alternative: Alternative


@dataclass(frozen=True)
class McNemarResult:
    """An exact McNemar test on one pair of runs: b10 questions only a got right, b01 only b."""

    b10: int
    b01: int
    p_value: float
    alternative: Alternative


@dataclass(frozen=True)
class SeedsComparison:
    """Model a against model b over seeds (see :func:`compare_across_seeds`).

    difference: mean accuracy of a minus that of b (both averaged over their seeds), e.g. 0.08 = 8 points.
    ci: paired bootstrap percentile interval of ``difference``.
    test: the paired permutation test on per-question seed means (the test the claim rests on).
    mcnemar: one exact McNemar test per seed of a (secondary check).
    """

    n_questions: int
    n_seeds_a: int
    n_seeds_b: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci: tuple[float, float]
    test: PermutationResult
    mcnemar: tuple[McNemarResult, ...]


@dataclass(frozen=True)
class PublishDecision:
    """Which candidate to publish, or None, and why.

    accuracy, p_values, adjusted: per candidate; ``adjusted`` are the p-values after the correction
    for the number of candidates, and a candidate is significant when its adjusted p < alpha.
    """

    chosen: str | None
    reason: str
    accuracy: dict[str, float]
    p_values: dict[str, float]
    adjusted: dict[str, float]
    correction: Correction
    alpha: float

    @property
    def significant(self) -> list[str]:
        """Candidates significant after the correction, by name."""
        return sorted(n for n, p in self.adjusted.items() if p < self.alpha)


@dataclass(frozen=True)
class KeyframeMargin:
    """A model's keyframe F1 minus the best content-free strategy's (``best_baseline``)."""

    margin: float
    model_f1: float
    best_baseline: str
    best_baseline_f1: float


def _vector(x: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{name}: expected a non-empty 1-D array of per-question values, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite")
    return arr


def _pair(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    va, vb = _vector(a, "a"), _vector(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"a and b must score the same questions: {va.size} vs {vb.size} values")
    return va, vb


def _binary(x: npt.NDArray[np.float64], name: str) -> npt.NDArray[np.bool_]:
    if not np.all((x == 0.0) | (x == 1.0)):
        raise ValueError(f"{name}: expected 0/1 correctness per question")
    return np.equal(x, 1.0)


def _extreme(stats: npt.NDArray[np.float64], observed: float, alternative: Alternative, tol: float) -> int:
    """How many of ``stats`` are at least as extreme as ``observed`` (``tol`` absorbs float rounding)."""
    if alternative == "greater":
        hits = stats >= observed - tol
    elif alternative == "less":
        hits = stats <= observed + tol
    elif alternative == "two-sided":
        hits = np.abs(stats) >= abs(observed) - tol
    else:
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', not {alternative!r}")
    return int(np.count_nonzero(hits))


def paired_permutation_test(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    alternative: Alternative = "greater",
) -> PermutationResult:
    """Paired sign-flip permutation test of mean(a) against mean(b) over the same questions.

    H0: within each question, a's and b's values are exchangeable, so each difference d_i = a_i - b_i
    is as likely to carry either sign. The statistic is sum(d); ``alternative="greater"`` asks whether
    a scores higher than b. Questions with d_i = 0 leave the statistic unchanged under a flip and are
    dropped from the enumeration (this does not change the p-value).

    With m nonzero differences the null distribution has 2**m equally likely sign patterns. If
    2**m <= n_resamples they are all enumerated and the p-value is exact; otherwise ``n_resamples``
    patterns are drawn (numpy Generator seeded with ``seed``) and p = (1 + hits) / (1 + n_resamples),
    counting the observed pattern as one draw so that a Monte Carlo p is never 0 and the test stays
    valid. On 0/1 correctness the exact test equals the exact McNemar (sign) test.

    a, b: per-question values (0/1 correctness, or floats such as correctness averaged over seeds).
    """
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    va, vb = _pair(a, b)
    d = va - vb
    diffs = d[d != 0.0]
    m = int(diffs.size)
    observed = float(diffs.sum())
    tol = 1e-9 * max(1.0, float(np.abs(diffs).sum()))
    statistic = float(d.mean())
    if m < 63 and (1 << m) <= n_resamples:
        total = 1 << m
        hits = 0
        shifts = np.arange(m, dtype=np.int64)
        for start in range(0, total, _CHUNK):
            idx = np.arange(start, min(start + _CHUNK, total), dtype=np.int64)
            signs = 1.0 - 2.0 * ((idx[:, None] >> shifts) & 1)
            hits += _extreme(signs @ diffs, observed, alternative, tol)
        return PermutationResult(statistic, hits / total, True, total, alternative)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK * 16 // max(m, 1))
    hits, done = 0, 0
    while done < n_resamples:
        k = min(rows, n_resamples - done)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(k, m))
        hits += _extreme(signs @ diffs, observed, alternative, tol)
        done += k
    return PermutationResult(statistic, (1 + hits) / (1 + n_resamples), False, n_resamples, alternative)


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly term by term in log space (no overflow)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, not {p}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k, n + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


def mcnemar_exact(b01: int, b10: int, alternative: Alternative = "greater") -> McNemarResult:
    """Exact McNemar test on one pair of runs over the same questions.

    b10: questions model a answered correctly and model b wrongly; b01: the reverse. Under H0 each
    discordant question is equally likely to go either way, so b10 ~ Binomial(b01 + b10, 1/2).
    ``"greater"`` (a better): P(X >= b10); ``"less"``: P(X <= b10); ``"two-sided"``: twice the
    smaller tail, at most 1. No discordant questions gives p = 1.
    """
    if b01 < 0 or b10 < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b01 + b10
    upper = binomial_sf(b10, n, 0.5) if n else 1.0
    lower = 1.0 - binomial_sf(b10 + 1, n, 0.5) if n else 1.0
    if alternative == "greater":
        p = upper
    elif alternative == "less":
        p = lower
    elif alternative == "two-sided":
        p = min(1.0, 2.0 * min(upper, lower))
    else:
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', not {alternative!r}")
    return McNemarResult(b10=b10, b01=b01, p_value=p, alternative=alternative)


def discordant(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[int, int]:
    """(b01, b10) of two 0/1 correctness arrays: questions only b got right, questions only a got right."""
    va, vb = _pair(a, b)
    ca, cb = _binary(va, "a"), _binary(vb, "b")
    return int(np.count_nonzero(~ca & cb)), int(np.count_nonzero(ca & ~cb))


def bootstrap_diff_ci(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired bootstrap percentile interval of mean(a) - mean(b).

    Questions are resampled with replacement (the same indices for a and b, keeping the pairing);
    a and b may be 0/1 correctness or per-question means over seeds.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie strictly between 0 and 1")
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    va, vb = _pair(a, b)
    d = va - vb
    n = d.size
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    rows = max(1, _CHUNK * 16 // n)
    for start in range(0, n_resamples, rows):
        k = min(rows, n_resamples - start)
        means[start : start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _runs(x: npt.ArrayLike | Sequence[npt.ArrayLike], name: str) -> npt.NDArray[np.float64]:
    """Per-seed correctness as a (seeds, questions) array; a 1-D array is one seed."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name}: expected (seeds, questions) correctness, got shape {arr.shape}")
    _binary(arr.ravel(), name)
    return arr


def compare_across_seeds(
    a_runs: npt.ArrayLike | Sequence[npt.ArrayLike],
    b_runs: npt.ArrayLike | Sequence[npt.ArrayLike],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    alternative: Alternative = "greater",
    confidence: float = 0.95,
) -> SeedsComparison:
    """Model a (e.g. GRPO) against model b (e.g. its base) on the same test questions, over seeds.

    The test: for every question, a's correctness is averaged over a's seeds and b's over b's seeds
    (a model with one run, such as a single base, is its own mean); a one-sided (``alternative``)
    paired sign-flip permutation test with ``n_resamples`` sign patterns
    (:func:`paired_permutation_test`) is run on these per-question means. Its unit is the question,
    so the p-value speaks for new questions on models trained this way with these seeds; it does not
    model seed-to-seed variation as a random effect (3 seeds are too few for that).

    Secondary: one exact McNemar test per seed of a, against b's run with the same index (or b's
    single run), and a paired bootstrap interval of the accuracy difference.

    a_runs, b_runs: 0/1 correctness, shape (seeds, questions), or (questions,) for a single run.
    To test a subset (e.g. the question types held out of the base stage), pass the subset's columns.
    """
    ra, rb = _runs(a_runs, "a_runs"), _runs(b_runs, "b_runs")
    if ra.shape[1] != rb.shape[1]:
        raise ValueError(f"a and b must score the same questions: {ra.shape[1]} vs {rb.shape[1]}")
    if rb.shape[0] not in (1, ra.shape[0]):
        raise ValueError(f"b has {rb.shape[0]} runs: expected 1 or as many as a ({ra.shape[0]})")
    ma, mb = ra.mean(axis=0), rb.mean(axis=0)
    test = paired_permutation_test(ma, mb, n_resamples=n_resamples, seed=seed, alternative=alternative)
    ci = bootstrap_diff_ci(ma, mb, confidence=confidence, seed=seed)
    mcnemar = tuple(
        mcnemar_exact(*discordant(ra[i], rb[i if rb.shape[0] > 1 else 0]), alternative=alternative)
        for i in range(ra.shape[0])
    )
    return SeedsComparison(
        n_questions=int(ra.shape[1]),
        n_seeds_a=int(ra.shape[0]),
        n_seeds_b=int(rb.shape[0]),
        accuracy_a=float(ma.mean()),
        accuracy_b=float(mb.mean()),
        difference=float(ma.mean() - mb.mean()),
        ci=ci,
        test=test,
        mcnemar=mcnemar,
    )


def adjust_p_values(p_values: Mapping[str, float], correction: Correction = "bonferroni") -> dict[str, float]:
    """Family-wise adjusted p-values; a hypothesis is rejected at level alpha when its adjusted p < alpha.

    bonferroni: min(1, m p). holm (step-down, never less powerful than Bonferroni): sort p ascending,
    the i-th smallest (1-based) becomes max over j <= i of min(1, (m - j + 1) p_(j)); rejecting
    adjusted p < alpha is the same as walking up the sorted list while p_(i) < alpha / (m - i + 1)
    and stopping at the first failure.
    """
    m = len(p_values)
    for name, p in p_values.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}: p-value {p} is not in [0, 1]")
    if correction == "bonferroni":
        return {name: min(1.0, m * p) for name, p in p_values.items()}
    if correction == "holm":
        adjusted: dict[str, float] = {}
        running = 0.0
        for i, (name, p) in enumerate(sorted(p_values.items(), key=lambda item: (item[1], item[0]))):
            running = max(running, min(1.0, (m - i) * p))
            adjusted[name] = running
        return adjusted
    raise ValueError(f"correction must be 'bonferroni' or 'holm', not {correction!r}")


def publish_decision(
    candidates: Mapping[str, npt.ArrayLike],
    baseline: float | npt.ArrayLike,
    alpha: float = 0.05,
    correction: Correction = "bonferroni",
    *,
    tiebreak: Mapping[str, float] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> PublishDecision:
    """Choose the model to publish on **val**, or refuse.

    Every candidate is tested one-sided against ``baseline``:
    - a float is a chance rate (0.2 for five options): exact binomial test of the candidate's number
      of correct answers, P(X >= correct) with X ~ Binomial(questions, chance); candidates are 0/1
      correctness and may have different numbers of questions;
    - an array is a baseline model's per-question correctness on the same questions: paired
      permutation test (:func:`paired_permutation_test`, ``n_resamples``, ``seed``).

    Picking the best of m candidates is m chances to be lucky, so p-values are corrected for m
    (:func:`adjust_p_values`; Bonferroni: p < alpha / m). Among the candidates significant after the
    correction, the one with the highest val accuracy is chosen (ties: higher ``tiebreak`` value,
    e.g. val keyframe F1, then smaller p, then name). If none is significant, ``chosen`` is None and
    ``reason`` says why: nothing is published.
    """
    if not candidates:
        raise ValueError("no candidates")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie strictly between 0 and 1")
    accuracy: dict[str, float] = {}
    p_values: dict[str, float] = {}
    if isinstance(baseline, (int, float)):
        chance = float(baseline)
        what = f"chance ({chance:.1%}), one-sided exact binomial test"
        for name, x in candidates.items():
            correct = _binary(_vector(x, name), name)
            accuracy[name] = float(correct.mean())
            p_values[name] = binomial_sf(int(correct.sum()), int(correct.size), chance)
    else:
        base = _vector(baseline, "baseline")
        what = f"the baseline model ({base.mean():.1%}), one-sided paired permutation test"
        for name, x in candidates.items():
            v = _vector(x, name)
            accuracy[name] = float(v.mean())
            p_values[name] = paired_permutation_test(v, base, n_resamples=n_resamples, seed=seed).p_value
    adjusted = adjust_p_values(p_values, correction)
    decision = PublishDecision(None, "", accuracy, p_values, adjusted, correction, alpha)
    m = len(candidates)
    if not decision.significant:
        best = min(p_values, key=lambda n: (p_values[n], n))
        return PublishDecision(
            None,
            f"nothing published: no candidate beats {what} after {correction} correction for {m} "
            f"candidates at alpha {alpha}; the best, {best} (val accuracy {accuracy[best]:.1%}), has "
            f"p = {p_values[best]:.4g}, adjusted {adjusted[best]:.4g}",
            accuracy,
            p_values,
            adjusted,
            correction,
            alpha,
        )
    ties = tiebreak or {}
    chosen = min(decision.significant, key=lambda n: (-accuracy[n], -ties.get(n, 0.0), p_values[n], n))
    return PublishDecision(
        chosen,
        f"{chosen}: val accuracy {accuracy[chosen]:.1%}, beats {what} with p = {p_values[chosen]:.4g}, "
        f"adjusted {adjusted[chosen]:.4g} < {alpha} ({correction} over {m} candidates)",
        accuracy,
        p_values,
        adjusted,
        correction,
        alpha,
    )


def keyframe_margin(model_f1: float, baselines: Mapping[str, float]) -> KeyframeMargin:
    """The model's keyframe F1 minus the best content-free strategy's on the same test set.

    baselines: F1 of strategies that cite frames without looking at them, e.g. ``{"cite_all": 0.31,
    "best_fixed_set": 0.43}`` (every frame; the best fixed frames per question type). The done-when
    asks for a margin of at least 0.15.
    """
    if not baselines:
        raise ValueError("no content-free baselines to compare with")
    best = max(baselines, key=lambda n: (baselines[n], n))
    return KeyframeMargin(
        margin=float(model_f1) - float(baselines[best]),
        model_f1=float(model_f1),
        best_baseline=best,
        best_baseline_f1=float(baselines[best]),
    )
