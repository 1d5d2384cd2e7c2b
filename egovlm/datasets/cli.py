"""``egovlm data …``: import benchmarks and training sources into the common JSONL schema, guard
training sets against evaluation videos, or synthesise EgoSynth (see egovlm/datasets/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from egovlm.synth.cli import synth

if TYPE_CHECKING:
    from egovlm.schema import QAItem

app = typer.Typer(
    help="Import datasets into the common JSONL schema, or make EgoSynth.", no_args_is_help=True
)
import_app = typer.Typer(
    help="Import a benchmark's or training source's own files into the common JSONL schema.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")
app.command("synth")(synth)


# An option every importer takes.
AllowMissingVideos = Annotated[bool, typer.Option(help="Import rows whose video is not on disk yet")]

AGAINST_HELP = (
    "Evaluation JSONL (repeatable): training rows cut from any of its source videos are dropped "
    "(EgoSchema imported with --ego4d-map, EgoPlan-Bench validation, …)"
)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _write_training(items: list[QAItem], out: Path, against: list[Path], note: str = "") -> int:
    """Drop rows whose source video is in an evaluation set, write the rest; returns the count dropped."""
    from egovlm.datasets.contamination import Guard, decontaminate
    from egovlm.schema import write_jsonl

    dropped = 0
    if against:
        guard = Guard.load(against)
        result = decontaminate(items, guard)
        for warning in guard.warnings():
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        typer.echo(result.summary(guard))
        items, dropped = result.kept, result.dropped
    n = write_jsonl(out, items)
    typer.echo(f"wrote {n} rows to {out}" + (f" ({note})" if note else ""))
    return dropped


@import_app.command("egoschema")
def egoschema(
    questions: Path = typer.Option(..., help="EgoSchema questions.json"),
    answers: Path = typer.Option(None, help="subset_answers.json (public answers for 500 questions)"),
    videos: Path = typer.Option(..., help="Folder holding <q_uid>.mp4"),
    out: Path = typer.Option(..., help="Output JSONL"),
    allow_missing_videos: AllowMissingVideos = False,
    ego4d_map: Path = typer.Option(
        None, help="EgoSchema's uid_to_ego4d.json: records each clip's Ego4D video_uid (contamination guard)"
    ),
) -> None:
    """EgoSchema: rows without a public answer are kept, marked unanswered."""
    from egovlm.datasets.egoschema import import_egoschema
    from egovlm.schema import DatasetError, write_jsonl

    try:
        items = import_egoschema(
            questions, answers, videos, out, require_videos=not allow_missing_videos, ego4d_map=ego4d_map
        )
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
    fps: float = typer.Option(
        None, help="Frame rate for frame numbers → seconds (default: read from each video)"
    ),
    allow_missing_videos: AllowMissingVideos = False,
) -> None:
    """EgoPlan-Bench: next-action questions with four options, clips cut at the observation frame."""
    from egovlm.datasets.egoplan import import_egoplan
    from egovlm.schema import DatasetError, write_jsonl

    try:
        items = import_egoplan(data, videos, out, fps=fps, require_videos=not allow_missing_videos)
    except DatasetError as e:
        _fail(e)
    n = write_jsonl(out, items)
    typer.echo(f"wrote {n} rows to {out}")


@import_app.command("egoplan-it")
def egoplan_it(
    data: Path = typer.Option(..., help="EgoPlan-IT instruction-tuning JSON (EgoPlan_IT.json)"),
    videos: Path = typer.Option(..., help="Folder holding <video_id>.mp4"),
    out: Path = typer.Option(..., help="Output JSONL"),
    fps: float = typer.Option(
        None, help="Frame rate for frame numbers → seconds (default: read from each video)"
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the distractor choice and option order"),
    options: int = typer.Option(4, min=2, max=5, help="Options per question (EgoPlan-Bench has 4)"),
    against: list[Path] = typer.Option([], help=AGAINST_HELP),
    allow_missing_videos: AllowMissingVideos = False,
) -> None:
    """EgoPlan-IT (training): the answer among its negative answers; clips end at the observation."""
    from egovlm.datasets.egoplan import import_egoplan_it
    from egovlm.schema import DatasetError

    try:
        items, report = import_egoplan_it(
            data, videos, out, fps=fps, require_videos=not allow_missing_videos, seed=seed, n_options=options
        )
        _write_training(items, out, against, report.summary())
    except DatasetError as e:
        _fail(e)


@import_app.command("ego4d-narrations")
def ego4d_narrations(
    narrations: Path = typer.Option(..., help="Ego4D narration.json (from the `annotations` download)"),
    videos: Path = typer.Option(..., help="Folder holding <video_uid>.mp4 (Ego4D full-scale videos)"),
    out: Path = typer.Option(..., help="Output JSONL"),
    seed: int = typer.Option(0, min=0, help="Seed of the question, distractor and letter choices"),
    window_s: float = typer.Option(180.0, min=1.0, help="Seconds of narrations per clip (EgoSchema: 180)"),
    against: list[Path] = typer.Option([], help=AGAINST_HELP),
    allow_missing_videos: AllowMissingVideos = False,
) -> None:
    """Ego4D narrations → multiple-choice questions (order, first/last, count, where) with salient times."""
    from egovlm.datasets.ego4d_narrations import build_ego4d_narrations
    from egovlm.schema import DatasetError

    try:
        items, report = build_ego4d_narrations(
            narrations, videos, out, require_videos=not allow_missing_videos, seed=seed, window_s=window_s
        )
        _write_training(items, out, against, report.summary())
    except DatasetError as e:
        _fail(e)


@app.command("decontaminate")
def decontaminate(
    train: Path = typer.Argument(..., help="Training JSONL"),
    against: list[Path] = typer.Option(..., help=AGAINST_HELP),
    out: Path = typer.Option(..., help="Output JSONL (media paths are rewritten for its folder)"),
) -> None:
    """Drop training rows whose source video appears in an evaluation set; prints the count dropped."""
    from egovlm.datasets.contamination import rebase
    from egovlm.schema import DatasetError, read_jsonl

    try:
        items = [rebase(it, train.parent, out.parent) for it in read_jsonl(train)]
        _write_training(items, out, against)
    except DatasetError as e:
        _fail(e)


@app.command("validate")
def validate(path: Path) -> None:
    """Check a JSONL file against the schema; errors name file:line:field."""
    from egovlm.schema import DatasetError, read_jsonl

    try:
        items = read_jsonl(path)
    except DatasetError as e:
        _fail(e)
    typer.echo(f"{path}: {len(items)} valid rows")


# `egovlm data prepare --config RECIPE.yaml`: the training recipe's frame cache (egovlm.train.prepare).
from egovlm.train.cli import prepare_cmd  # noqa: E402

app.command("prepare")(prepare_cmd)
