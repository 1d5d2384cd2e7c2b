"""``egovlm model tiny|nano|small --out DIR [--corpus egosynth]``: build an offline model of the real
architecture (``--corpus egosynth``: its tokenizer also learns EgoSynth's words as whole tokens);
``egovlm model slice3b --layers N --out DIR``: the real 3B's widths with only N layers."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(help="Build randomly initialised Qwen2.5-VL models offline (no hub).", no_args_is_help=True)


class Corpus(str, Enum):
    """The tokenizer's training text: the built-in corpus alone, or with a domain's words added."""

    default = "default"
    egosynth = "egosynth"


CORPUS_OPTION = typer.Option(
    Corpus.default,
    help="Tokenizer corpus: 'egosynth' adds EgoSynth's words (object names, places, questions).",
)


def _extra_corpus(corpus: Corpus) -> Sequence[str]:
    if corpus is Corpus.egosynth:
        from egovlm.synth.vocabulary import egosynth_vocabulary

        return egosynth_vocabulary()
    return ()


def _build(kind: str, out: Path, seed: int, corpus: Corpus) -> None:
    from egovlm.models.build import build_model
    from egovlm.models.presets import PRESETS

    path = build_model(kind, out, seed=seed, extra_corpus=_extra_corpus(corpus), corpus_name=corpus.value)
    preset = PRESETS[kind]
    typer.echo(
        f"built {kind} Qwen2.5-VL (keyframes {preset.keyframe_size[0]}x{preset.keyframe_size[1]}, "
        f"tokenizer corpus {corpus.value}) in {path}"
    )


@app.command()
def tiny(
    out: Path = typer.Option(..., help="Output folder (must be new or empty)."),
    seed: int = 0,
    corpus: Corpus = CORPUS_OPTION,
) -> None:
    """About 1 M parameters: for unit tests."""
    _build("tiny", out, seed, corpus)


@app.command()
def nano(
    out: Path = typer.Option(..., help="Output folder (must be new or empty)."),
    seed: int = 0,
    corpus: Corpus = CORPUS_OPTION,
) -> None:
    """About 5 M parameters: for the CPU GRPO experiment."""
    _build("nano", out, seed, corpus)


@app.command()
def small(
    out: Path = typer.Option(..., help="Output folder (must be new or empty)."),
    seed: int = 0,
    corpus: Corpus = CORPUS_OPTION,
) -> None:
    """About 35 M parameters: for benchmarks where Python overhead must not dominate."""
    _build("small", out, seed, corpus)


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
