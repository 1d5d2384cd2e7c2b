"""``egovlm model tiny|nano|small --out DIR``: build an offline model of the real architecture."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Build randomly initialised Qwen2.5-VL models offline (no hub).", no_args_is_help=True)


def _build(kind: str, out: Path, seed: int) -> None:
    from egovlm.models.build import build_model
    from egovlm.models.presets import PRESETS

    path = build_model(kind, out, seed=seed)
    preset = PRESETS[kind]
    typer.echo(
        f"built {kind} Qwen2.5-VL (keyframes {preset.keyframe_size[0]}x{preset.keyframe_size[1]}) in {path}"
    )


@app.command()
def tiny(out: Path = typer.Option(..., help="Output folder (must be new or empty)."), seed: int = 0) -> None:
    """About 1 M parameters: for unit tests."""
    _build("tiny", out, seed)


@app.command()
def nano(out: Path = typer.Option(..., help="Output folder (must be new or empty)."), seed: int = 0) -> None:
    """About 5 M parameters: for the CPU GRPO experiment."""
    _build("nano", out, seed)


@app.command()
def small(out: Path = typer.Option(..., help="Output folder (must be new or empty)."), seed: int = 0) -> None:
    """About 35 M parameters: for benchmarks where Python overhead must not dominate."""
    _build("small", out, seed)
