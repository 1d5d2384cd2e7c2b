"""Keyframe quality: how many ground-truth events land in the frames a method keeps.

On an EgoSynth split (exact event times), for each budget K, each method picks K frames per
clip; an event is recalled when a kept frame lies within ±``tolerance_s`` of its time. Methods,
measured on the same decoded frames in one run:

* ``selector`` — ours (egovlm.keyframes.select_keyframes, the edge buffer's rule);
* ``uniform`` — K frames at the centres of equal segments (what most VLM pipelines do);
* ``pyscenedetect`` — PySceneDetect's AdaptiveDetector: the first frame of each detected scene
  (plus frame 0), thinned uniformly to K or topped up with uniform times when it finds fewer.

Target (issue 8): recall at K=16 ≥ 0.9 and above both baselines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from egovlm.benchmarks.report import Report
from egovlm.keyframes import select_keyframes
from egovlm.video import VideoReader, uniform_times

BUDGETS = (8, 16, 32)
TOLERANCE_S = 0.5

Frames = list[tuple[float, np.ndarray]]


def recall(
    kept: Sequence[float], events: Sequence[float], tolerance_s: float = TOLERANCE_S
) -> tuple[int, int]:
    """(events hit, events) — an event is hit when some kept time is within the tolerance."""
    kept_arr = np.asarray(sorted(kept))
    hits = sum(bool(len(kept_arr)) and float(np.min(np.abs(kept_arr - t))) <= tolerance_s for t in events)
    return int(hits), len(events)


def by_selector(frames: Frames, k: int) -> list[float]:
    return [c.t for c in select_keyframes(frames, k)]


def by_uniform(frames: Frames, k: int) -> list[float]:
    duration = frames[-1][0] - frames[0][0]
    return [frames[0][0] + t for t in uniform_times(duration, k)]


def by_pyscenedetect(frames: Frames, k: int) -> list[float]:
    from scenedetect.detectors import AdaptiveDetector

    detector = AdaptiveDetector()
    starts = [0]
    for i, (_, rgb) in enumerate(frames):
        starts += detector.process_frame(i, np.ascontiguousarray(rgb[..., ::-1]))  # it expects BGR
    times = [frames[int(i)][0] for i in sorted(set(int(s) for s in starts))]
    if len(times) > k:
        times = [times[int(i)] for i in np.linspace(0, len(times) - 1, k).round()]
    elif len(times) < k:
        times = sorted(times + by_uniform(frames, k - len(times)))
    return times


METHODS: dict[str, Callable[[Frames, int], list[float]]] = {
    "selector": by_selector,
    "uniform": by_uniform,
    "pyscenedetect": by_pyscenedetect,
}


def load_events(dataset: Path) -> dict[str, list[float]]:
    """Event times per video path (relative to the dataset folder), from EgoSynth's events.jsonl."""
    events: dict[str, list[float]] = {}
    for line in (dataset / "events.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            events.setdefault(row["video"], []).append(float(row["t"]))
    return events


def run(out: Path, dataset: Path, budgets: Sequence[int] = BUDGETS, max_clips: int | None = None) -> Report:
    events = load_events(dataset)
    videos = sorted(events)[:max_clips]
    totals: dict[tuple[str, int], list[int]] = {(m, k): [0, 0, 0] for m in METHODS for k in budgets}
    for video in videos:
        frames = list(VideoReader(dataset / video).iter_frames())
        for k in budgets:
            for name, method in METHODS.items():
                kept = method(frames, k)
                hit, n = recall(kept, events[video])
                acc = totals[(name, k)]
                acc[0] += hit
                acc[1] += n
                acc[2] += len(kept)
    report = Report(
        "keyframes",
        params={
            "dataset": str(dataset),
            "clips": len(videos),
            "tolerance_s": TOLERANCE_S,
            "budgets": list(budgets),
        },
    )
    for (name, k), (hit, n, kept_total) in totals.items():
        report.rows.append(
            {
                "method": name,
                "K": k,
                "recall": hit / max(n, 1),
                "frames_kept": kept_total / max(len(videos), 1),
            }
        )
    for k in budgets:
        r = {m: totals[(m, k)][0] / max(totals[(m, k)][1], 1) for m in METHODS}
        report.summary.append(
            {
                "K": k,
                "selector_recall": r["selector"],
                "selector_minus_uniform": r["selector"] - r["uniform"],
                "selector_minus_pyscenedetect": r["selector"] - r["pyscenedetect"],
            }
        )
    report.write(out)
    from egovlm.benchmarks.plots import write_plots

    write_plots(report, out)
    return report
