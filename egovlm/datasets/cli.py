"""``egovlm data …``: import benchmarks into the common JSONL schema, or synthesise EgoSynth."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Import datasets into the common JSONL schema, or generate EgoSynth.", no_args_is_help=True
)
import_app = typer.Typer(
    help="Import a benchmark's own files into the common JSONL schema.", no_args_is_help=True
)
app.add_typer(import_app, name="import")
