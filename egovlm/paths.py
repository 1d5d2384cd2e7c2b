"""Folders of the source checkout that the package reads but the wheel does not ship.

The project is installed editable from its checkout (``make setup``, the device venvs, the
containers), so the checkout's ``configs/`` (recipes, device profiles, export targets) and
``models/`` (the committed demo model) sit next to the package.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"
DEMO_MODEL = REPO_ROOT / "models" / "egovlm-mini"
