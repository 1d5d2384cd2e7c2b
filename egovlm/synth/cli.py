"""``egovlm data synth``: generate an EgoSynth dataset folder (videos + exact ground truth)."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480), with an error that says what was wrong."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"size must look like 640x480, got {text!r}")
    return int(parts[0]), int(parts[1])


def synth(
    out: Path = typer.Option(..., help="Output folder (created; existing files are replaced)."),
    clips: int = typer.Option(10, min=1, help="Number of clips."),
    seed: int = typer.Option(0, min=0, help="Base seed; clip seeds derive from (split, seed, index)."),
    split: str = typer.Option("train", help="train | test | val: splits never share clip seeds."),
    size: str = typer.Option("640x480", help="Frame size WxH (even numbers), e.g. 1280x720."),
    fps: float = typer.Option(30.0, help="Frames per second."),
    duration: float = typer.Option(30.0, help="Seconds per clip."),
    preview: bool = typer.Option(False, help="Also write a contact sheet PNG per clip under preview/."),
    workers: int = typer.Option(1, min=0, help="Worker processes (0: one per CPU core)."),
) -> None:
    """Render EgoSynth clips (H.264 MP4) with qa.jsonl, events.jsonl, captions.jsonl and clips.jsonl."""
    from egovlm.synth.generate import SynthConfig, synthesize

    if split not in ("train", "test", "val"):
        raise typer.BadParameter(f"split must be train, test or val, got {split!r}")
    try:
        config = SynthConfig(size=parse_size(size), fps=fps, duration=duration)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    n_workers = workers or (os.cpu_count() or 1)
    summary = synthesize(out, clips, seed, split, config, preview=preview, workers=n_workers)
    typer.echo(
        f"wrote {summary.clips} clips ({summary.frames} frames, {summary.events} events, "
        f"{summary.questions} questions) to {out} in {summary.seconds:.1f} s; "
        f"{summary.frames_per_cpu_second:.0f} frames per CPU-second"
    )
