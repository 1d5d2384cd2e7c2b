"""``egovlm train …`` and ``egovlm eval``.

``egovlm train --config RECIPE.yaml [key=value …]`` runs (or resumes) GRPO;
``egovlm train plot RUN_DIR`` draws the curves; ``egovlm train merge --adapter DIR --out DIR``
folds a LoRA adapter into a 16-bit checkpoint. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup


class _DefaultRun(TyperGroup):
    """``egovlm train --config …`` means ``egovlm train run --config …``: the recipe's overrides
    are bare ``key=value`` words, which a plain group would take for sub-command names."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored click Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultRun,
    help="GRPO fine-tuning on egocentric video QA (TRL): `egovlm train --config RECIPE.yaml key=value ...`.",
    no_args_is_help=True,
)
eval_app = typer.Typer(help="Evaluate a model on a JSONL dataset (accuracy, format, keyframe F1).")


def _quiet_libraries() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns on import, on every CPU machine, about an optional kernel package.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="Training recipe (configs/*.yaml)."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides, e.g. grpo.max_steps=20."),
) -> None:
    """Train (or resume) a recipe: checkpoints, TensorBoard logs and curves.png in run.output_dir."""
    from egovlm.train.config import ConfigError, load_config

    _quiet_libraries()
    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as e:
        _fail(f"config error: {e}")
        return
    from egovlm.train.preflight import PreflightError
    from egovlm.train.prepare import DataNotPreparedError, prepare_command
    from egovlm.train.trainer import train

    try:
        result = train(cfg)
    except PreflightError as e:
        _fail(str(e))
        return
    except DataNotPreparedError as e:
        if os.environ.get("RANK", "0") != "0":  # every rank refuses; one of them says why
            raise typer.Exit(2) from None
        _fail(e.message(prepare_command(config, overrides or [])))
        return
    step = f"{result.step_time_s:.3f} s/step (median)" if result.step_time_s else "no steps run"
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    typer.echo(f"trained to step {result.global_step} ({step}{resumed}); model in {result.final_dir}")


def prepare_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Training recipe (configs/*.yaml)."),
    overrides: list[str] | None = typer.Argument(
        None, help="The same dotted overrides as the training command, e.g. data.train=DIR/qa.jsonl."
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-j", min=1, help="Decoding processes (default: every CPU this process may use)."
    ),
) -> None:
    """Decode a recipe's training frames into its frame cache, in parallel, before any launch;
    resumable (rows already cached are skipped). Registered as `egovlm data prepare`."""
    from egovlm.schema import DatasetError
    from egovlm.train.config import ConfigError, load_config
    from egovlm.train.prepare import PrepareError, prepare
    from egovlm.train.sampling import SamplingError

    _quiet_libraries()
    try:
        result = prepare(load_config(config, overrides or []), workers, progress=True)
    except (ConfigError, DatasetError, PrepareError, SamplingError, ValueError) as e:
        _fail(f"prepare error: {e}")
        return
    typer.echo(
        f"prepared {result.rows} rows ({result.decoded} decoded now, {result.reused} already cached) "
        f"in {result.seconds:.1f} s; manifest {result.manifest}"
    )


@app.command("plot")
def plot(
    run_dir: Path = typer.Argument(..., help="A run folder (run.output_dir)."),
    out: Path | None = typer.Option(None, help="PNG path (default RUN_DIR/curves.png)."),
) -> None:
    """Draw the run's reward, accuracy, format-failure, length, KL and learning-rate curves."""
    from egovlm.train.plot import PlotError, plot_run

    try:
        typer.echo(str(plot_run(run_dir, out)))
    except PlotError as e:
        _fail(str(e))


@app.command("merge")
def merge(
    adapter: Path = typer.Option(..., help="LoRA adapter folder (a run's final/ or a checkpoint)."),
    out: Path = typer.Option(..., help="Output folder for the merged 16-bit checkpoint."),
    base: str | None = typer.Option(
        None, help="Base model (default: the adapter's base_model_name_or_path)."
    ),
    dtype: str = typer.Option("bfloat16", help="bfloat16 or float16."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder."),
) -> None:
    """Merge LoRA into the 16-bit base weights (the input export/ expects)."""
    from egovlm.train.merge import MergeError
    from egovlm.train.merge import merge as do_merge

    _quiet_libraries()
    try:
        typer.echo(f"merged checkpoint in {do_merge(adapter, out, base, dtype, overwrite)}")
    except MergeError as e:
        _fail(str(e))


@eval_app.callback(invoke_without_command=True)
def evaluate(
    model: str = typer.Option(..., help="Checkpoint folder, LoRA adapter folder or hub id."),
    data: Path = typer.Option(..., help="JSONL dataset (egovlm.schema)."),
    out: Path = typer.Option(..., help="Output folder (completions.jsonl, metrics.json, submission.csv)."),
    prompt: str = typer.Option(
        "egovlm",
        help="egovlm (the answer grammar, keyframe F1) or plain (the option letter only, as published).",
    ),
    answers: str = typer.Option(
        "options",
        help="options: a multiple-choice <answer> may only be an option's text or letter (constrained "
        "decoding, as on the device); free: whatever the model writes (egovlm prompt only).",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="The model's training recipe: max_new_tokens defaults to its max_completion_length.",
    ),
    frames: int = typer.Option(8, help="Frames per prompt."),
    sampling: str = typer.Option("uniform", help="uniform or salient (the edge keyframe selector)."),
    batch_size: int = typer.Option(4, help="Prompts per generate() call."),
    max_new_tokens: int | None = typer.Option(
        None,
        help="Completion length limit (default: --config's or the model run's recipe, else 512; plain: 16).",
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    limit: int | None = typer.Option(None, help="Evaluate only the first N items."),
    keyframe_tolerance: float | None = typer.Option(None, help="Seconds (default: nearest frame)."),
    cache_dir: Path | None = typer.Option(
        None, help="Decoded-frame cache (default: OUT/frame_cache); evals of one dataset can share one."
    ),
    keyframe_prior_data: Path | None = typer.Option(
        None,
        "--keyframe-prior-data",
        help="Training JSONL the positional keyframe baseline is fitted on (default: --config's data.train).",
    ),
) -> None:
    """Greedy eval; resumable (skips ids already done). Under `accelerate launch` the items are split
    across the processes and the main one writes the merged results."""
    from egovlm.schema import DatasetError
    from egovlm.train.eval import EvalOptions
    from egovlm.train.eval import evaluate as run_eval

    _quiet_libraries()
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    opts = EvalOptions(
        frames=frames,
        sampling=sampling,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        prompt=prompt,
        answers=answers,
        recipe=config,
        device=device,
        keyframe_tolerance_s=keyframe_tolerance,
        limit=limit,
        cache_dir=cache_dir,
        prior_data=keyframe_prior_data,
    )
    try:
        result = run_eval(model, data, out, opts)
    except (DatasetError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(_summary(result))


def _summary(m: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    kf = "n/a" if m["keyframe_f1"] is None else f"{m['keyframe_f1']:.3f}"
    lines = [
        f"items {m['items']} (answered {m['answered_items']}, withheld {m['withheld_items']}), "
        f"--prompt {m.get('prompt', 'egovlm')}, max_new_tokens {m.get('max_new_tokens')}",
        f"accuracy {pct(m['accuracy'])}  format failures {pct(m['format_failure_rate'])}  keyframe F1 {kf}",
    ]
    lines += [f"  {t}: {pct(v['accuracy'])} of {v['items']}" for t, v in m["per_question_type"].items()]
    if m.get("open_items"):
        lines.append(f"open questions {m['open_items']}: exact answer {pct(m['open_accuracy'])}")
        lines += [
            f"  {t}: {pct(v['accuracy'])} of {v['items']}" for t, v in m["open_per_question_type"].items()
        ]
    return "\n".join(lines)
