"""``egovlm data …``: import benchmarks into the common JSONL schema, or synthesise EgoSynth."""

from __future__ import annotations

from pathlib import Path

import typer

from egovlm.synth.cli import synth

app = typer.Typer(
    help="Import datasets into the common JSONL schema, or make EgoSynth.", no_args_is_help=True
)
import_app = typer.Typer(
    help="Import a benchmark's own files into the common JSONL schema.", no_args_is_help=True
)
app.add_typer(import_app, name="import")
app.command("synth")(synth)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@import_app.command("egoschema")
def egoschema(
    questions: Path = typer.Option(..., help="EgoSchema questions.json"),
    answers: Path = typer.Option(None, help="subset_answers.json (public answers for 500 questions)"),
    videos: Path = typer.Option(..., help="Folder holding <q_uid>.mp4"),
    out: Path = typer.Option(..., help="Output JSONL"),
    allow_missing_videos: bool = typer.Option(False, help="Import rows whose video is not on disk yet"),
) -> None:
    """EgoSchema: rows without a public answer are kept, marked unanswered."""
    from egovlm.datasets.egoschema import import_egoschema
    from egovlm.schema import DatasetError, write_jsonl

    try:
        items = import_egoschema(questions, answers, videos, out, require_videos=not allow_missing_videos)
    except DatasetError as e:
        _fail(e)
    n = write_jsonl(out, items)
    answered = sum(it.answered for it in items)
    typer.echo(f"wrote {n} rows to {out} ({answered} with public answers, {n - answered} unanswered)")


@import_app.command("egoplan")
def egoplan(
    data: Path = typer.Option(..., help="EgoPlan-Bench JSON (e.g. EgoPlan_validation.json)"),
    videos: Path = typer.Option(..., help="Folder holding <video_id>.mp4"),
    out: Path = typer.Option(..., help="Output JSONL"),
    fps: float = typer.Option(30.0, help="Frame rate of the source videos (frame numbers → seconds)"),
    allow_missing_videos: bool = typer.Option(False, help="Import rows whose video is not on disk yet"),
) -> None:
    """EgoPlan-Bench: next-action questions with four options."""
    from egovlm.datasets.egoplan import import_egoplan
    from egovlm.schema import DatasetError, write_jsonl

    try:
        items = import_egoplan(data, videos, out, fps=fps, require_videos=not allow_missing_videos)
    except DatasetError as e:
        _fail(e)
    n = write_jsonl(out, items)
    typer.echo(f"wrote {n} rows to {out}")


@app.command("validate")
def validate(path: Path) -> None:
    """Check a JSONL file against the schema; errors name file:line:field."""
    from egovlm.schema import DatasetError, read_jsonl

    try:
        items = read_jsonl(path)
    except DatasetError as e:
        _fail(e)
    typer.echo(f"{path}: {len(items)} valid rows")
