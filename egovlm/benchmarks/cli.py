"""``egovlm bench <part> --out DIR``: measure and write DIR/<part>.json, .md and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

OutDir = Annotated[Path, typer.Option(help="Output folder")]

app = typer.Typer(
    help="Benchmarks: latency and quality, written as JSON + Markdown + plots.", no_args_is_help=True
)


@app.command()
def ingest(out: OutDir = Path("bench"), quick: bool = False) -> None:
    """Per-frame decode, descriptor (native vs numpy vs OpenCV) and selection cost at 3 resolutions."""
    from egovlm.benchmarks import ingest as part

    report = part.run(out, quick=quick)
    typer.echo(report.markdown())


@app.command()
def keyframes(
    out: OutDir = Path("bench"),
    data: Path = typer.Option(
        ..., help="EgoSynth folder (events.jsonl + videos/), e.g. from `egovlm data synth`"
    ),
    max_clips: int = typer.Option(None, help="Use only the first N clips"),
    quick: bool = typer.Option(False, help="Only the first 2 clips (unless --max-clips is given)"),
) -> None:
    """Recall of ground-truth event frames: our selector vs uniform vs PySceneDetect, K in {8, 16, 32}."""
    from egovlm.benchmarks import keyframes as part

    report = part.run(out, data, max_clips=max_clips or (2 if quick else None))
    typer.echo(report.markdown())


@app.command()
def latency(
    out: OutDir = Path("bench"),
    model: Path = typer.Option(
        None,
        help="Model folder (default: the offline small model); a `egovlm model slice3b` slice adds"
        " per-layer times and a projection to the real depth",
    ),
    k: list[int] = typer.Option([1, 4, 8, 16, 32], help="Buffer sizes K (repeat the option)"),
    quick: bool = typer.Option(False, help="Fewer repeats"),
    threads: int = typer.Option(1, help="torch / ONNX Runtime intra-op threads (0: library default)"),
    backend: str = typer.Option(
        "torch", help="torch (model folder) or onnx (export folder from `egovlm export`)"
    ),
    repeats: int = typer.Option(None, min=1, help="Cached questions per K (default 11; 5 with --quick)"),
    scratch_repeats: int = typer.Option(None, min=1, help="From-scratch questions per K (default 5; 2)"),
    fresh_repeats: int = typer.Option(3, min=1, help="Keyframe arrivals timed per K"),
    compare_attention: bool = typer.Option(
        True, help="torch: also time the cached question with transformers' stock sdpa, for comparison"
    ),
) -> None:
    """Time to first token and decode tokens/s vs K: cached prefix vs from-scratch re-encoding."""
    from egovlm.benchmarks import latency as part
    from egovlm.models.presets import SLICE_META

    default_repeats, default_scratch = (5, 2) if quick else (11, 5)
    is_slice = model is not None and (model / SLICE_META).is_file()
    report = part.run(
        out,
        model,
        k,
        repeats=repeats or default_repeats,
        scratch_repeats=scratch_repeats or default_scratch,
        threads=threads or None,
        backend_kind=backend,
        fresh_repeats=fresh_repeats,
        compare_attention=compare_attention,
        warmup=1 if is_slice else 2,
        part="latency_slice" if is_slice else "latency",
    )
    typer.echo(report.markdown())


@app.command()
def roofline(
    out: OutDir = Path("bench"),
    model: Path = typer.Option(..., help="Model folder, e.g. `egovlm model slice3b --layers 2 --out DIR`"),
    k: int = typer.Option(8, min=1, help="Keyframes cached before the question"),
    repeats: int = typer.Option(3, min=1, help="Questions per implementation (interleaved)"),
    exports: Path = typer.Option(
        None, help="Folder of <precision>/ cpu exports of MODEL to reuse (missing ones are exported there)"
    ),
    quick: bool = typer.Option(False, help="Smaller STREAM arrays, fewer GEMM passes"),
) -> None:
    """Memory bandwidth (STREAM) and fp32 GEMM throughput of this machine, and torch / ONNX Runtime
    fp32 / int8 / int4 decode and prefill as fractions of those limits."""
    from egovlm.benchmarks import roofline as part

    report = part.run(
        out, model, k=k, repeats=repeats, exports=exports, quick=quick, keep_exports=exports is not None
    )
    typer.echo(report.markdown())


@app.command()
def projection(out: OutDir = Path("bench")) -> None:
    """PROJECTION for Jetson modules: Qwen2.5-VL-3B bytes per decoded token and per question at each
    TensorRT precision over each module's published bandwidth, next to published figures."""
    from egovlm.benchmarks import projection as part

    typer.echo(part.run(out).markdown())


@app.command()
def voice(
    out: OutDir = Path("bench"),
    model: Path = typer.Option(None, help="Model folder (default: build the offline tiny model)"),
    repeats: int = typer.Option(5, min=1, help="Spoken questions per mode (medians over them)"),
    quick: bool = typer.Option(False, help="2 repeats, upload mode only"),
) -> None:
    """Spoken question (espeak-ng) → transcript → first answer token → spoken answer, per stage."""
    from egovlm.benchmarks import voice as part

    report = part.run(out, model, repeats=2 if quick else repeats, live=not quick)
    typer.echo(report.markdown())


@app.command()
def export(
    out: OutDir = Path("bench"),
    model: Path = typer.Option(
        None, help="Model folder (default: the offline small model; tiny with --quick)"
    ),
    quick: bool = typer.Option(False, help="Tiny model, fewer repeats and parity prompts"),
    threads: int = typer.Option(1, min=1, help="torch / ONNX Runtime intra-op threads"),
) -> None:
    """PyTorch vs ONNX Runtime fp32 / int8 / int4: decoder size, ms/token, prefill, parity."""
    from egovlm.benchmarks import export as part

    report = part.run(out, model, quick=quick, threads=threads)
    typer.echo(report.markdown())


@app.command()
def train(
    out: OutDir = Path("bench"),
    steps: int = typer.Option(6, min=1, help="GRPO steps timed (plus one warm-up step)"),
    quick: bool = typer.Option(False, help="3 timed steps"),
    override: list[str] = typer.Option([], help="Recipe override key=value (repeat the option)"),
) -> None:
    """GRPO steps/s and samples/s on the tiny recipe; generation vs scoring vs optimisation time."""
    from egovlm.benchmarks import train as part

    report = part.run(out, steps=steps, quick=quick, overrides=override)
    typer.echo(report.markdown())


@app.command()
def soak(
    out: OutDir = Path("bench"),
    minutes: float = typer.Option(30.0, min=0.05, help="Soak length, warm-up included (fractions allowed)"),
    clients: int = typer.Option(4, min=1, help="Concurrent HTTP clients, one question in flight each"),
    model: Path = typer.Option(None, help="Model folder (default: build the offline tiny model)"),
    max_new_tokens: int = typer.Option(24, min=1, help="Answer length limit"),
    think_s: tuple[float, float] = typer.Option(
        (0.5, 2.0), help="Each client waits a random MIN MAX seconds between questions"
    ),
    warmup_minutes: float = typer.Option(None, min=0, help="Warm-up (default: min(5, minutes / 6))"),
    rss_bound: float = typer.Option(
        0.05, help="Fail when RSS grows by more than this fraction after warm-up"
    ),
    fd_bound: int = typer.Option(8, help="Fail when open file descriptors grow by more after warm-up"),
    thread_bound: int = typer.Option(4, help="Fail when threads grow by more after warm-up"),
    p95_bound: float = typer.Option(
        1.5, help="Fail when p95 latency, 2nd / 1st half after warm-up, exceeds (0: off)"
    ),
    sample_s: float = typer.Option(5.0, min=0.1, help="Seconds between resource samples and health polls"),
    window_s: float = typer.Option(60.0, min=1.0, help="Width of a report row in seconds"),
    threads: int = typer.Option(1, help="torch intra-op threads (0: library default)"),
) -> None:
    """The runtime on the synthetic live stream under C clients for N minutes: RSS, fds, threads, latency.

    The exit code is 1 on any error or when a growth / latency bound is exceeded."""
    from egovlm.benchmarks import soak as part

    report = part.run(
        out,
        model,
        minutes=minutes,
        clients=clients,
        warmup_minutes=warmup_minutes,
        max_new_tokens=max_new_tokens,
        think_s=think_s,
        sample_s=sample_s,
        window_s=window_s,
        bounds=part.Bounds(rss_bound, fd_bound, thread_bound, p95_bound),
        threads=threads or None,
        echo=typer.echo,
    )
    typer.echo(report.markdown())
    if not report.passed:
        typer.echo(f"soak failed: {'; '.join(report.reasons)} (see {out / 'soak.md'})", err=True)
        raise typer.Exit(1)


@app.command("all")
def all_parts(
    out: Path = typer.Option(Path("bench"), help="Output folder (summary.md + every part's files)"),
    quick: bool = typer.Option(False, help="Quick settings for every part (under 10 minutes on 2 cores)"),
    part: list[str] = typer.Option([], help="Run only these parts (repeat the option)"),
) -> None:
    """Every part in turn, all tables in DIR/summary.md; a failing part is recorded, the others run.

    The exit code is 1 when any part failed."""
    from egovlm.benchmarks.all import run_all

    outcomes = run_all(out, quick=quick, only=part or None, echo=typer.echo)
    typer.echo((out / "summary.md").read_text())
    failed = [o.part for o in outcomes if not o.ok]
    if failed:
        typer.echo(f"failed: {', '.join(failed)} (see {out / 'summary.md'})", err=True)
        raise typer.Exit(1)


@app.command()
def peers(
    out: OutDir = Path("bench"),
    model: Path = typer.Option(
        None, help="Model folder (default: the offline small model; nano with --quick)"
    ),
    quick: bool = typer.Option(False, help="Nano model, K=2, 2 repeats"),
    k: list[int] = typer.Option([], help="Buffer sizes K (repeat the option; default 1 8 16 32)"),
    repeats: int = typer.Option(None, min=1, help="Timed repeats per K (default 3; 2 with --quick)"),
    venv: Path = typer.Option(None, help="The peers venv (default .venv-peers, built by `make bench-peers`)"),
) -> None:
    """Same weights and frames in llama.cpp, OpenVINO GenAI, ONNX Runtime GenAI and ours: TTFT, tok/s, RSS."""
    from egovlm.benchmarks import peers as part

    try:
        report = part.run(
            out, model, quick=quick, ks=k or None, repeats=repeats, venv=venv or part.DEFAULT_VENV
        )
    except part.PeersUnavailableError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from e
    typer.echo(report.markdown())
