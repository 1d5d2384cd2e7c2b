"""``egovlm bench <part> --out DIR``: measure and write DIR/<part>.json, .md and plots."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Benchmarks: latency and quality, written as JSON + Markdown + plots.", no_args_is_help=True
)


@app.command()
def ingest(out: Path = typer.Option(Path("bench"), help="Output folder"), quick: bool = False) -> None:
    """Per-frame decode, descriptor (native vs numpy vs OpenCV) and selection cost at 3 resolutions."""
    from egovlm.benchmarks import ingest as part

    report = part.run(out, quick=quick)
    typer.echo(report.markdown())


@app.command()
def keyframes(
    out: Path = typer.Option(Path("bench"), help="Output folder"),
    data: Path = typer.Option(
        ..., help="EgoSynth folder (events.jsonl + videos/), e.g. from `egovlm data synth`"
    ),
    max_clips: int = typer.Option(None, help="Use only the first N clips"),
) -> None:
    """Recall of ground-truth event frames: our selector vs uniform vs PySceneDetect, K in {8, 16, 32}."""
    from egovlm.benchmarks import keyframes as part

    report = part.run(out, data, max_clips=max_clips)
    typer.echo(report.markdown())


@app.command()
def latency(
    out: Path = typer.Option(Path("bench"), help="Output folder"),
    model: Path = typer.Option(None, help="Model folder (default: build the offline small model)"),
    k: list[int] = typer.Option([1, 4, 8, 16, 32], help="Buffer sizes K (repeat the option)"),
    quick: bool = typer.Option(False, help="Fewer repeats"),
    threads: int = typer.Option(1, help="torch / ONNX Runtime intra-op threads (0: library default)"),
    backend: str = typer.Option(
        "torch", help="torch (model folder) or onnx (export folder from `egovlm export`)"
    ),
) -> None:
    """Time to first token and decode tokens/s vs K: cached prefix vs from-scratch re-encoding."""
    from egovlm.benchmarks import latency as part

    repeats, scratch = (5, 2) if quick else (11, 5)
    report = part.run(
        out, model, k, repeats=repeats, scratch_repeats=scratch, threads=threads or None, backend_kind=backend
    )
    typer.echo(report.markdown())


@app.command()
def voice(
    out: Path = typer.Option(Path("bench"), help="Output folder"),
    model: Path = typer.Option(None, help="Model folder (default: build the offline tiny model)"),
    repeats: int = typer.Option(5, min=1, help="Spoken questions per mode (medians over them)"),
    quick: bool = typer.Option(False, help="2 repeats, upload mode only"),
) -> None:
    """Spoken question (espeak-ng) → transcript → first answer token → spoken answer, per stage."""
    from egovlm.benchmarks import voice as part

    report = part.run(out, model, repeats=2 if quick else repeats, live=not quick)
    typer.echo(report.markdown())
