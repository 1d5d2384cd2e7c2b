"""``python -m experiments.mini pretrain``: the base stage's command, as repro.py runs it, outside egovlm."""

from __future__ import annotations

import subprocess
from pathlib import Path

from typer.testing import CliRunner

from experiments.mini import repro
from experiments.mini.cli import app


def test_repro_runs_the_pretrain_command_from_the_repository_root() -> None:
    done = subprocess.run(
        [*repro.PRETRAIN, "--help"], cwd=repro.ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout and "Base stage" in done.stdout


def test_a_config_error_is_reported_without_a_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("run: {output_dir: x}\ndata: {train: y}\noptim: {stepz: 3}\n")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "pretrain error" in result.output and "optim.stepz" in result.output


def test_the_shipped_train_command_has_no_base_stage() -> None:
    from egovlm.train.cli import app as train_app

    result = CliRunner().invoke(train_app, ["pretrain", "--help"])
    assert "Base stage" not in result.output


def test_the_shipped_package_never_imports_the_experiments() -> None:
    import ast

    importing = []
    for path in sorted((repro.ROOT / "egovlm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "experiments" or n.startswith("experiments.") for n in names):
                importing.append(str(path.relative_to(repro.ROOT)))
    assert not importing, f"egovlm must not depend on experiments/: {importing}"


def test_story_reports_a_missing_folder_and_a_bad_option_without_a_traceback(tmp_path: Path) -> None:
    cfg = repro.ROOT / "experiments" / "mini" / "configs" / "story_rl.yaml"
    out = f"run.output_dir={tmp_path / 'run'}"
    result = CliRunner().invoke(app, ["story", "--config", str(cfg), out, f"data.train={tmp_path / 'none'}"])
    assert result.exit_code == 2
    assert "story error" in result.output and "none/events.jsonl not found" in result.output
    result = CliRunner().invoke(app, ["story", "--config", str(cfg), "--beta", "0", out])
    assert result.exit_code == 2 and "beta must be > 0" in result.output
    result = CliRunner().invoke(app, ["story", "--config", str(cfg), out, "grpo.max_stepz=3"])
    assert result.exit_code == 2 and "grpo.max_stepz" in result.output
