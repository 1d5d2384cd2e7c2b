"""``egovlm train`` end to end on the tiny model (checkpoints, TensorBoard, curves, final model),
``egovlm train plot``, and the CLI's error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from egovlm.train.plot import PlotError, plot_run, read_scalars

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "configs" / "tiny_cpu.yaml")


def train_args(run: Path, fixture_data: Path, tiny_model_dir: Path) -> list[str]:
    return [
        "train",
        "--config",
        RECIPE,
        f"run.output_dir={run}",
        f"model.path={tiny_model_dir}",
        f"data.train={fixture_data}",
        "grpo.max_steps=3",
        "grpo.save_steps=2",
        "grpo.max_completion_length=16",
        "grpo.per_device_train_batch_size=4",
        "grpo.num_generations=4",
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, fixture_data: Path, tiny_model_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(app, train_args(run, fixture_data, tiny_model_dir))
    assert result.exit_code == 0, result.output
    assert "trained to step 3" in result.output
    return run


def test_train_writes_checkpoints_logs_curves_and_a_loadable_model(tiny_run: Path) -> None:
    from egovlm.models.loading import load_model

    assert (tiny_run / "checkpoint-2" / "trainer_state.json").is_file()
    assert (tiny_run / "curves.png").stat().st_size > 10_000
    assert (tiny_run / "config.yaml").is_file()
    summary = json.loads((tiny_run / "run.json").read_text())
    assert summary["global_step"] == 3 and summary["step_time_s"] > 0
    tags = read_scalars(tiny_run)
    for tag in (
        "train/rewards/format/mean",
        "train/rewards/accuracy/mean",
        "train/rewards/keyframe/mean",
        "train/format_failure_rate",
        "train/completions/mean_length",
        "train/kl",
        "train/learning_rate",
    ):
        assert [s for s, _ in tags[tag]] == [1, 2, 3], tag
    loaded = load_model(tiny_run / "final")
    assert loaded.keyframe_size == (112, 84)
    meta = json.loads((tiny_run / "final" / "egovlm.json").read_text())
    assert meta["trained"] is True and meta["steps"] == 3


def test_rerunning_a_finished_run_does_not_train_past_max_steps(
    tiny_run: Path, fixture_data: Path, tiny_model_dir: Path
) -> None:
    from safetensors.torch import load_file

    order_before = (tiny_run / "data_order.jsonl").read_text()
    weights_before = load_file(tiny_run / "final" / "model.safetensors")
    result = CliRunner().invoke(app, train_args(tiny_run, fixture_data, tiny_model_dir))
    assert result.exit_code == 0, result.output
    assert "trained to step 3" in result.output and "checkpoint-3" in result.output
    assert (tiny_run / "data_order.jsonl").read_text() == order_before  # no rollout happened
    assert not (tiny_run / "checkpoint-4").exists()
    weights_after = load_file(tiny_run / "final" / "model.safetensors")
    assert all((weights_after[k] == v).all() for k, v in weights_before.items())


def test_plot_command_and_later_event_files_win(tiny_run: Path, tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "c.png"
    result = CliRunner().invoke(app, ["train", "plot", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A resumed run re-does step 3 in a new event file: its value replaces the first try's.
    writer = SummaryWriter(log_dir=str(tiny_run / "tensorboard"))
    writer.add_scalar("train/reward", 123.0, 3)
    writer.close()
    series = dict(read_scalars(tiny_run)["train/reward"])
    assert series[3] == 123.0 and len(series) == 3


def test_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="no TensorBoard event files"):
        plot_run(tmp_path)
    result = CliRunner().invoke(app, ["train", "plot", str(tmp_path)])
    assert result.exit_code == 2 and "no TensorBoard event files" in result.output


def test_config_errors_exit_2_with_the_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--config", RECIPE, "grpo.max_stepz=3"])
    assert result.exit_code == 2
    assert "unknown key grpo.max_stepz" in result.output and "tiny_cpu.yaml" in result.output


def test_train_help_lists_the_subcommands() -> None:
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for word in ("run", "plot", "merge"):
        assert word in result.output
