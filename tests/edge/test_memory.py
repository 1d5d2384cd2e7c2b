"""The malloc arena cap (egovlm.edge.memory): applied on glibc, the environment wins."""

from __future__ import annotations

import subprocess
import sys

CODE = "from egovlm.edge.memory import limit_malloc_arenas as f; print(f(2), f(3))"


def _run(env_extra: dict[str, str]) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    return subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_cap_is_applied_once_on_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        assert _run({}).split() == ["None", "None"]
        return
    assert _run({}).split() == ["2", "2"]  # the first cap stays in force


def test_environment_setting_wins() -> None:
    assert _run({"MALLOC_ARENA_MAX": "4"}).split() == ["4", "4"]
