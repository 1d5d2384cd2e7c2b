"""The one command line, ``egovlm``: a verb per job.

Each stage keeps its own Typer app next to its code (``egovlm/<area>/cli.py`` or
``<stage>/cli.py``) and is mounted here. Heavy imports (torch, transformers, GStreamer) happen
inside commands, so ``egovlm --help`` stays fast.
"""

from __future__ import annotations

import typer

from egovlm.benchmarks.cli import app as bench_app
from egovlm.datasets.cli import app as data_app
from egovlm.edge.cli import app as edge_app
from egovlm.edge.cli import demo, doctor
from egovlm.export.cli import app as export_app
from egovlm.models.cli import app as model_app
from egovlm.train.cli import app as train_app
from egovlm.train.cli import eval_app

app = typer.Typer(
    name="egovlm",
    help="EgoVLM: GRPO training, export for Jetson, a live edge runtime and benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(edge_app, name="edge")
app.command("doctor")(doctor)
app.add_typer(export_app, name="export")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
app.command(
    "demo",
    help="The end-to-end demo (same as `egovlm edge demo`): live synthetic camera, questions, answers.",
)(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
