"""``python -m experiments.mini …``: the miniature experiment's own commands.

``pretrain --config experiments/mini/configs/<phase>.yaml [key=value …]`` runs one phase of the base
stage (base_1frame, base, or the development recipe base_dev; :mod:`experiments.mini.pretrain`).
It lives here, not in ``egovlm train``, because only the
miniature needs a base stage: a real run starts GRPO from a pre-trained instruct model. Logging and
error reporting are the ``egovlm`` commands', so its output reads like theirs. Heavy imports happen
inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from egovlm.train.cli import _fail, _quiet_libraries

app = typer.Typer(
    help="The miniature EgoVLM experiment (docs/mini_experiment/README.md).", no_args_is_help=True
)


@app.callback()
def main() -> None:
    """A group, so the command is named on the command line (Typer runs a lone command without it)."""


@app.command("pretrain")
def pretrain_cmd(
    config: Path = typer.Option(
        ..., "--config", "-c", help="Base-stage recipe (experiments/mini/configs/base.yaml)."
    ),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides, e.g. optim.steps=50."),
) -> None:
    """Base stage: answer-only training on the base question types in the exact eval prompt."""
    from egovlm.train.config import ConfigError
    from experiments.mini.pretrain import load_pretrain_config, pretrain
    from experiments.mini.pretrain_data import PretrainDataError

    _quiet_libraries()
    try:
        summary = pretrain(load_pretrain_config(config, overrides or []))
    except (ConfigError, PretrainDataError) as e:
        _fail(f"pretrain error: {e}")
        return
    mc, opened = summary.get("greedy_mc_acc"), summary.get("greedy_open_acc")
    shown = f", greedy val accuracy MC {mc:.1%}" if mc is not None else ""
    shown += f", open {opened:.1%}" if opened is not None else ""
    where = summary["final_dir"]
    typer.echo(f"pre-trained {summary['steps']} steps in {summary['wall_time_s']} s{shown}; model in {where}")


@app.command("story")
def story_cmd(
    config: Path = typer.Option(
        ...,
        "--config",
        "-c",
        help="GRPO recipe, data.train an EgoSynth folder (configs/story_rl.yaml).",
    ),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides, e.g. grpo.max_steps=50."),
    state_credit: float = typer.Option(0.5, help="Credit for an event at the other frame of its bracket."),
    beta: float = typer.Option(1.0, help="F-beta of the placed events: > 1 weights missed over invented."),
    sets: int = typer.Option(2, help="Frame sets per clip (the first uniform, the others jittered)."),
    clips: int | None = typer.Option(None, help="The folder's first N clips (default: all)."),
) -> None:
    """Development phase: GRPO on the `events` description, rewarded by the events it places right."""
    from egovlm.train.config import ConfigError, load_config
    from experiments.mini.pretrain_data import PretrainDataError
    from experiments.mini.story_rl import StoryReward, train_story

    _quiet_libraries()
    try:
        reward = StoryReward(state_credit, beta)
    except ValueError as e:  # the options' bounds; a ValueError from training itself keeps its traceback
        _fail(f"story error: {e}")
        return
    try:
        final = train_story(load_config(config, overrides or []), reward, sets, clips)
    except (ConfigError, PretrainDataError) as e:
        _fail(f"story error: {e}")
        return
    typer.echo(f"story GRPO done; model in {final}")
