"""Shared fixtures: offline models are built once per test session (a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from egovlm.models.build import build_model

    return build_model("tiny", tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from egovlm.models.build import build_model

    return build_model("small", tmp_path_factory.mktemp("models") / "small", seed=0)
