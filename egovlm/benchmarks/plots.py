"""One PNG per benchmark part, drawn from its report rows (matplotlib, Agg: no display needed).

``write_plots(report, out)`` picks the part's plot; each is saved atomically as
``out/<part>.png`` so a reader of the Markdown table can see the trend at a glance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from egovlm.benchmarks.report import Report, save_figure


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4))
    return fig, axes


def plot_latency(report: Report, out: Path) -> Path:
    """TTFT vs K, cached prefix vs from scratch (log y: the gap is the point); dashed: the projection
    to the real depth, when the report has one (a slice)."""
    fig, ax = _figure()
    for mode in dict.fromkeys(r["mode"] for r in report.rows):
        rows = sorted((r for r in report.rows if r["mode"] == mode), key=lambda r: r["k"])
        line = ax.plot([r["k"] for r in rows], [r["ttft_ms_median"] for r in rows], "o-", label=mode)[0]
        if all("ttft_ms_projected" in r for r in rows):
            ax.plot(
                [r["k"] for r in rows],
                [r["ttft_ms_projected"] for r in rows],
                "s--",
                color=line.get_color(),
                label=f"{mode}, projected to real depth",
            )
    ax.set(
        xlabel="keyframes in buffer (K)", ylabel="TTFT median (ms)", yscale="log", title="Time to first token"
    )
    ax.legend(fontsize="small")
    return save_figure(fig, out / f"{report.part}.png")


def plot_roofline(report: Report, out: Path) -> Path:
    """Measured vs roofline time per implementation: decode step and question prefill."""
    import numpy as np

    fig, (left, right) = _figure(2)
    names = [r["impl"] for r in report.rows]
    xs = np.arange(len(names))
    for ax, measured, bound, title in (
        (left, "ms_per_token", "roofline_ms_per_token", "Decode step (bandwidth roofline)"),
        (right, "prefill_ms", "roofline_prefill_ms", "Question prefill (fp32 GEMM roofline)"),
    ):
        ax.bar(xs - 0.2, [r[measured] for r in report.rows], 0.4, label="measured")
        ax.bar(xs + 0.2, [r[bound] for r in report.rows], 0.4, label="roofline (shortest possible)")
        ax.set_xticks(xs, names, rotation=20)
        ax.set(ylabel="ms", title=title)
        ax.legend(fontsize="small")
    return save_figure(fig, out / "roofline.png")


def plot_projection(report: Report, out: Path) -> Path:
    """Bandwidth-bound decode tok/s per Jetson module and precision (a projection)."""
    fig, ax = _figure()
    for precision in dict.fromkeys(r["precision"] for r in report.rows):
        rows = [r for r in report.rows if r["precision"] == precision]
        ax.barh([f"{r['module']} {precision}" for r in rows], [r["max_tok_s"] for r in rows], label=precision)
    ax.set(xlabel="decode tok/s upper bound (bandwidth / bytes per token)", title="PROJECTION: Qwen2.5-VL-3B")
    ax.tick_params(axis="y", labelsize="x-small")
    ax.legend(fontsize="small")
    return save_figure(fig, out / "projection.png")


def plot_keyframes(report: Report, out: Path) -> Path:
    """Event recall vs budget K, one line per method."""
    fig, ax = _figure()
    for method in dict.fromkeys(r["method"] for r in report.rows):
        rows = sorted((r for r in report.rows if r["method"] == method), key=lambda r: r["K"])
        ax.plot([r["K"] for r in rows], [r["recall"] for r in rows], "o-", label=method)
    ax.set(xlabel="keyframes kept (K)", ylabel="event recall", ylim=(0, 1.05), title="Keyframe recall")
    ax.legend()
    return save_figure(fig, out / "keyframes.png")


def plot_ingest(report: Report, out: Path) -> Path:
    """Microseconds per frame per implementation, grouped by resolution (log y)."""
    import numpy as np

    fig, ax = _figure()
    resolutions = list(dict.fromkeys(r["resolution"] for r in report.rows))
    impls = list(dict.fromkeys(r["impl"] for r in report.rows))
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        vals = {r["resolution"]: r["us_per_frame_p50"] for r in report.rows if r["impl"] == impl}
        xs = np.arange(len(resolutions)) + i * width
        ax.bar(xs, [vals.get(res, 0.0) for res in resolutions], width, label=impl)
    ax.set_xticks(np.arange(len(resolutions)) + 0.4 - width / 2, resolutions)
    ax.set(ylabel="µs per frame (median)", yscale="log", title="Ingest cost per frame")
    ax.legend(fontsize="small")
    return save_figure(fig, out / "ingest.png")


def plot_export(report: Report, out: Path) -> Path:
    """Decoder size and ms/token per implementation, side by side."""
    fig, (left, right) = _figure(2)
    names = [r["impl"] for r in report.rows]
    left.bar(names, [r["decoder_mb"] for r in report.rows], color="tab:blue")
    left.set(ylabel="decoder MB", title="Decoder size")
    right.bar(names, [r["ms_per_token_p50"] for r in report.rows], color="tab:orange")
    right.set(ylabel="ms per token (median)", title="Decode step")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
    return save_figure(fig, out / "export.png")


def plot_train(report: Report, out: Path) -> Path:
    """Per-step time split: generation vs the rest (scoring + loss + optimiser), per step."""
    fig, ax = _figure()
    steps = [r for r in report.rows if "step" in r]
    xs = [r["step"] for r in steps]
    gen = [r["generate_s"] for r in steps]
    rest = [r["step_s"] - r["generate_s"] for r in steps]
    ax.bar(xs, gen, label="generation")
    ax.bar(xs, rest, bottom=gen, label="scoring + optimisation")
    ax.set(xlabel="GRPO step", ylabel="seconds", title="GRPO step time")
    ax.legend()
    return save_figure(fig, out / "train.png")


def plot_voice(report: Report, out: Path) -> Path:
    """Median milliseconds per stage of a spoken question, one bar per (mode, stage)."""
    fig, ax = _figure()
    rows = [r for r in report.rows if "ms_p50" in r]
    ax.barh([f"{r.get('mode', '')}: {r.get('stage', '')}" for r in rows], [float(r["ms_p50"]) for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel="ms (median)", title="Voice round trip, per stage")
    return save_figure(fig, out / "voice.png")


def plot_soak(report: Report, out: Path) -> Path:
    """RSS, fds and threads over time, per-window latency p50/p95; a dashed line ends the warm-up.

    Reads the raw resource samples when the report carries them (``SoakReport.samples``), else
    the per-window rows."""
    fig, (rss_ax, res_ax, lat_ax) = _figure(3)
    window_min = float(report.params.get("window_s", 60.0)) / 60
    samples = getattr(report, "samples", None) or [
        {"t": r["minute"] * 60, "rss_mb": r["rss_mb"], "fds": r["fds"], "threads": r["threads"]}
        for r in report.rows
        if r.get("rss_mb") is not None
    ]
    minutes = [s["t"] / 60 for s in samples]
    rss_ax.plot(minutes, [s["rss_mb"] for s in samples], ".-", color="tab:blue")
    rss_ax.set(xlabel="minutes", ylabel="RSS (MB)", title="Resident memory")
    res_ax.plot(minutes, [s["fds"] for s in samples], ".-", label="open fds")
    res_ax.plot(minutes, [s["threads"] for s in samples], ".-", label="threads")
    res_ax.set(xlabel="minutes", ylabel="count", title="File descriptors and threads")
    res_ax.legend()
    rows = [r for r in report.rows if r.get("p50_ms") is not None]
    centres = [r["minute"] + window_min / 2 for r in rows]
    lat_ax.plot(centres, [r["p50_ms"] for r in rows], "o-", label="p50")
    lat_ax.plot(centres, [r["p95_ms"] for r in rows], "o-", label="p95")
    lat_ax.set(xlabel="minutes", ylabel="request latency (ms)", title="Latency per window", ylim=(0, None))
    lat_ax.legend()
    warmup, total = report.params.get("warmup_minutes"), report.params.get("minutes")
    for ax in (rss_ax, res_ax, lat_ax):
        if warmup:
            ax.axvline(float(warmup), color="grey", linestyle="--", linewidth=1)
        if total:
            ax.set_xlim(0, float(total))
    return save_figure(fig, out / "soak.png")


PLOTS: dict[str, Callable[[Report, Path], Path]] = {
    "latency": plot_latency,
    "keyframes": plot_keyframes,
    "ingest": plot_ingest,
    "export": plot_export,
    "train": plot_train,
    "voice": plot_voice,
    "soak": plot_soak,
    "latency_slice": plot_latency,
    "roofline": plot_roofline,
    "projection": plot_projection,
}


def write_plots(report: Report, out: Path) -> Path | None:
    """The part's PNG, or None for a part without a plot or without matplotlib (the device install
    has no plotting stack: its reports are JSON and Markdown)."""
    import importlib.util

    plot = PLOTS.get(report.part)
    if plot is None or importlib.util.find_spec("matplotlib") is None:
        return None
    return plot(report, out)
