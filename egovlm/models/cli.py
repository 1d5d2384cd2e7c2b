"""``egovlm model tiny|nano|small --out DIR``: build an offline model of the real architecture;
``egovlm model slice3b --layers N --out DIR``: the real 3B's widths with only N layers."""

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


@app.command()
def slice3b(
    out: Path = typer.Option(..., help="Output folder (must be new or empty)."),
    layers: int = typer.Option(..., help="Decoder layers to keep (the real Qwen2.5-VL-3B has 36)."),
    vision_layers: int | None = typer.Option(
        None, help="ViT blocks to keep (the real model has 32; default: as many as --layers)."
    ),
    seed: int = 0,
) -> None:
    """Qwen2.5-VL-3B-Instruct's real widths (hidden 2048, MLP 11008, 151,936 tied embedding rows, ViT
    1280) with only N layers, 448x336 keyframes (192 visual tokens): for tests where size matters.
    slice.json records the real layer counts (egovlm.models.presets.real_layer_counts)."""
    from egovlm.models.build import build_slice3b
    from egovlm.models.presets import checkpoint_weight_bytes, real_weight_bytes, slice3b_preset

    try:
        preset = slice3b_preset(layers, vision_layers)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    path = build_slice3b(out, layers, vision_layers, seed=seed)
    w = checkpoint_weight_bytes(path)
    typer.echo(
        f"built a {preset.num_layers}-layer / {preset.vision_depth}-block slice of Qwen2.5-VL-3B in {path} "
        f"(bf16 weights {w.total / 1e9:.2f} GB; "
        f"the full model by per-layer scaling: {real_weight_bytes(path) / 1e9:.2f} GB)"
    )
