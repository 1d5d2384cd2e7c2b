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


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with sharpened decoder weights (tests/exports.py says why), per test module."""
    from tests.exports import sharpened_tiny

    return sharpened_tiny(tmp_path_factory.mktemp("models") / "tiny-sharp")


@pytest.fixture(scope="module")
def tiny_fp32_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cpu fp32 export of the tiny model, per test module (tests may tamper with their copy)."""
    from tests.exports import quick_export

    return quick_export(tiny_model_dir, tmp_path_factory.mktemp("exports") / "tiny-fp32", max_new_tokens=4)
