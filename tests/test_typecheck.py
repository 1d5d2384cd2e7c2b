"""mypy sees every stage: each ``egovlm.*`` module resolves to its source, never to ``Any``.

With ``ignore_missing_imports`` on, an ``egovlm.*`` import that mypy cannot resolve to a file (a
stage mapped in by an import hook rather than living in the package) silently becomes ``Any``, and
every check across stages with it. These tests run mypy (the project's configuration, the cache ``make typecheck``
fills) on a probe that imports every module of the package and reveals a few of the types the
stages exchange.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "egovlm"

# Types that cross a stage boundary: the checker must see the classes, not Any.
REVEALED = {
    "egovlm.edge.backends.base.Backend": "egovlm.edge.backends.base.Backend",
    "egovlm.edge.engine.Engine": "egovlm.edge.engine.Engine",
    "egovlm.edge.runtime.EdgeRuntime": "egovlm.edge.runtime.EdgeRuntime",
    "egovlm.edge.runtime.EdgeRuntime.ask": "-> egovlm.edge.engine.Answer",
    "egovlm.edge.server.RuntimeApi.engine": "egovlm.edge.engine.Engine",
    "egovlm.train.config.TrainConfig": "egovlm.train.config.TrainConfig",
    "egovlm.export.manifest.Manifest": "egovlm.export.manifest.Manifest",
    "egovlm.benchmarks.report.Report": "egovlm.benchmarks.report.Report",
}


def package_modules() -> list[str]:
    """Every importable module of the package, from the files on disk."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run_mypy(tmp_path: Path, source: str) -> tuple[str, int]:
    probe = tmp_path / "probe_types.py"
    probe.write_text(source, encoding="utf-8")
    stdout, stderr, status = mypy_api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--follow-imports",
            "silent",
            "--no-error-summary",
            str(probe),
        ]
    )
    return stdout + stderr, status


def test_every_stage_module_resolves_and_stage_types_are_not_any(tmp_path: Path) -> None:
    modules = package_modules()
    stages = {m.split(".")[1] for m in modules if m.count(".") >= 1}
    assert {"train", "export", "edge", "benchmarks"} <= stages, sorted(stages)
    lines = [f"import {m}" for m in modules]
    lines += [f"reveal_type({dotted})" for dotted in REVEALED]
    out, status = run_mypy(tmp_path, "\n".join(lines) + "\n")
    assert "Cannot find implementation" not in out, out
    assert "import-not-found" not in out, out
    revealed = re.findall(r'Revealed type is "(.+)"', out)
    assert len(revealed) == len(REVEALED), out
    for (dotted, want), got in zip(REVEALED.items(), revealed, strict=True):
        assert got != "Any" and want in got, f"{dotted} revealed as {got!r}"
    assert status == 0 and "error:" not in out, out  # reveal_type notes only


def test_a_missing_egovlm_module_is_an_error_not_any(tmp_path: Path) -> None:
    """The control: the configuration refuses an ``egovlm.*`` import it cannot resolve (the old
    layout's stages looked exactly like this to mypy), instead of typing it as ``Any``."""
    out, status = run_mypy(tmp_path, "from egovlm.train.no_such_module import Thing\nreveal_type(Thing)\n")
    assert status == 1
    assert "egovlm.train.no_such_module" in out and "error:" in out, out
