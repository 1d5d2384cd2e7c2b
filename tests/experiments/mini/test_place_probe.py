"""The place probe (experiments.mini.place_probe): it reads a place that is in the features, and
scores about the majority class on features that hold none."""

from __future__ import annotations

import numpy as np

from experiments.mini.place_probe import probe


def _groups(n: int) -> np.ndarray:
    return np.arange(n) % 40  # 40 "clips": the last quarter is the test split


def test_probe_reads_a_linearly_encoded_place() -> None:
    rng = np.random.default_rng(0)
    places = rng.integers(0, 6, 1200)
    centres = rng.normal(size=(6, 16)) * 3
    feats = (centres[places] + rng.normal(size=(1200, 16))).astype(np.float32)
    result = probe(feats, places, _groups(1200), 6, steps=300)
    assert result["probe_accuracy"] > 0.9 > result["majority_accuracy"]
    assert result["tokens_train"] + result["tokens_test"] == 1200
    assert set(result["per_place"]) == set(range(6))


def test_probe_on_features_without_the_place_is_near_the_majority() -> None:
    rng = np.random.default_rng(1)
    places = np.where(rng.random(1200) < 0.5, 0, rng.integers(1, 6, 1200))  # class 0 is half the tokens
    feats = rng.normal(size=(1200, 16)).astype(np.float32)
    result = probe(feats, places, _groups(1200), 6, steps=300)
    assert result["probe_accuracy"] < result["majority_accuracy"] + 0.05
