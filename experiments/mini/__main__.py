"""``python -m experiments.mini pretrain …`` (run from the repository root): :mod:`experiments.mini.cli`."""

from experiments.mini.cli import app

if __name__ == "__main__":
    app(prog_name="python -m experiments.mini")
