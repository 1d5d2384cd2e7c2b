"""``egovlm train plot RUN_DIR``: the run's TensorBoard curves as one PNG (matplotlib, Agg).

Reads every event file under ``<run>/tensorboard`` (a resumed run adds files; where two files
hold the same step, the later-written value wins, so a re-done step replaces its first try).
"""

from __future__ import annotations

import math
from pathlib import Path

from egovlm.atomic import atomic_path

# (title, TensorBoard tags tried in order): TRL's metric names, as the TensorBoard callback writes them.
PANELS: list[tuple[str, list[str]]] = [
    ("total reward", ["train/reward"]),
    ("accuracy reward", ["train/rewards/accuracy/mean"]),
    ("format reward", ["train/rewards/format/mean"]),
    ("keyframe reward (F1)", ["train/rewards/keyframe/mean"]),
    ("length reward", ["train/rewards/length/mean"]),
    ("format-failure rate", ["train/format_failure_rate"]),
    ("completion length (tokens)", ["train/completions/mean_length"]),
    ("KL to reference", ["train/kl"]),
    ("learning rate", ["train/learning_rate"]),
    ("loss", ["train/loss"]),
]


class PlotError(RuntimeError):
    pass


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag → [(step, value)] sorted by step, merged over all event files of the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = run_dir / "tensorboard"
    files = sorted(tb.rglob("events.out.tfevents.*")) if tb.is_dir() else []
    if not files:
        raise PlotError(f"no TensorBoard event files under {tb}")
    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            series = latest.setdefault(tag, {})
            for ev in acc.Scalars(tag):
                if ev.step not in series or ev.wall_time >= series[ev.step][0]:
                    series[ev.step] = (ev.wall_time, ev.value)
    return {tag: sorted((s, v) for s, (_, v) in series.items()) for tag, series in latest.items()}


def plot_run(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write ``curves.png`` (or ``out``) with one panel per logged metric; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir)
    panels = [(title, tag) for title, tags in PANELS for tag in tags[:1] if tag in scalars]
    if not panels:
        raise PlotError(f"{run_dir}: the event files hold none of the training curves")
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (title, tag) in zip(axes.flat, panels, strict=False):
        steps, values = zip(*scalars[tag], strict=True)
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"GRPO run {run_dir.name}", fontsize=11)
    fig.tight_layout()
    path = Path(out) if out is not None else run_dir / "curves.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
