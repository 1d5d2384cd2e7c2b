"""EgoSynth clips for the base stage's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short EgoSynth clips (train split, seed 1: the pre-training seed range)."""
    from egovlm.synth.generate import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("egosynth_pre")
    synthesize(out, 3, 1, "train", SynthConfig(size=(160, 120), fps=5, duration=8.0))
    return out
