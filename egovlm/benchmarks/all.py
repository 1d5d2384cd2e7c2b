"""``egovlm bench all``: every part in turn, one summary, and no part's failure hides the others.

Each part writes its own ``DIR/<part>.{json,md,png}``; this module adds ``DIR/summary.md`` with
the machine, the load average around the run, each part's status and wall time, and each part's
tables. A part that raises is recorded (error and the last traceback lines) and the run goes on;
the caller exits non-zero when any part failed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egovlm.atomic import atomic_write_text
from egovlm.benchmarks.report import Report, machine_info

QUICK_CLIPS = 4
QUICK_CLIP_S = 30.0


@dataclass
class Outcome:
    part: str
    seconds: float
    report: Report | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def synth_data(out: Path, clips: int = QUICK_CLIPS, duration_s: float = QUICK_CLIP_S) -> Path:
    """An EgoSynth test split in ``out`` (generated once; reused when events.jsonl exists).

    Rendered by ``egovlm data synth`` in a fresh process: its worker pool forks, and forking this
    process after torch / OpenCV / PyAV started their thread pools deadlocks the workers."""
    if (out / "events.jsonl").is_file():
        return out
    cmd = [
        sys.executable,
        "-c",
        "from egovlm.cli import app; app()",
        "data",
        "synth",
        "--out",
        str(out),
        "--clips",
        str(clips),
        "--split",
        "test",
        "--duration",
        str(duration_s),
        "--workers",
        "2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"egovlm data synth failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return out


def _ingest(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import ingest

    return ingest.run(out, quick=quick)


def _keyframes(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import keyframes

    return keyframes.run(out, synth_data(out / "data"))


def _latency(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import latency

    repeats, scratch = (5, 2) if quick else (11, 5)
    return latency.run(out, None, (1, 4, 8, 16, 32), repeats=repeats, scratch_repeats=scratch, threads=1)


SLICE_LAYERS = 2  # decoder layers (and vision blocks) of the 3B-shaped slice of the full suite


def slice_model(out: Path, layers: int = SLICE_LAYERS) -> Path:
    """A ``egovlm model slice3b`` of ``layers`` layers in ``out`` (built once, then reused)."""
    from egovlm.models.build import build_slice3b

    if (out / "slice.json").is_file():
        return out
    return build_slice3b(out, layers)


def _latency_slice(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import latency

    model = slice_model(out / "models" / f"slice3b-{SLICE_LAYERS}")
    return latency.run(
        out,
        model,
        (1, 8, 16, 32),
        repeats=5,
        scratch_repeats=2,
        fresh_repeats=2,
        warmup=1,
        threads=1,
        compare_attention=True,
        part="latency_slice",
    )


def _roofline(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import roofline

    model = slice_model(out / "models" / f"slice3b-{SLICE_LAYERS}")
    return roofline.run(out, model, k=8, repeats=3, exports=out / "models" / "exports", keep_exports=True)


def _projection(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import projection

    return projection.run(out)


def _export(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import export

    return export.run(out, quick=quick)


def _voice(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import voice

    return voice.run(out, None, repeats=2 if quick else 5, live=not quick)


def _train(out: Path, quick: bool) -> Report:
    from egovlm.benchmarks import train

    return train.run(out, quick=quick)


Part = Callable[[Path, bool], Report]


def default_parts(quick: bool = False) -> dict[str, Part]:
    """The parts in run order; voice only where its module exists (it is optional); the 3B-shaped
    slice parts (latency_slice, roofline: about 25 minutes on 2 cores) only in the full suite."""
    parts: dict[str, Part] = {
        "ingest": _ingest,
        "keyframes": _keyframes,
        "latency": _latency,
    }
    if not quick:
        parts |= {"latency_slice": _latency_slice, "roofline": _roofline}
    parts |= {"projection": _projection, "export": _export}
    if importlib.util.find_spec("egovlm.benchmarks.voice") is not None:
        parts["voice"] = _voice
    parts["train"] = _train
    return parts


def run_all(
    out: Path,
    quick: bool = False,
    parts: dict[str, Part] | None = None,
    only: Sequence[str] | None = None,
    echo: Callable[[str], Any] = print,
) -> list[Outcome]:
    """Run the parts (all, or ``only`` these), write ``out/summary.md``, return the outcomes."""
    parts = parts if parts is not None else default_parts(quick)
    if only:
        unknown = sorted(set(only) - set(parts))
        if unknown:
            raise ValueError(f"unknown part(s) {unknown}; choose from {list(parts)}")
        parts = {k: v for k, v in parts.items() if k in only}
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t_all = time.perf_counter()
    outcomes = []
    for name, part in parts.items():
        echo(f"== bench {name} ...")
        t0 = time.perf_counter()
        try:
            outcome = Outcome(name, 0.0, report=part(out, quick))
        except Exception as e:  # record any failure and go on with the next part
            tail = traceback.format_exc().strip().splitlines()[-6:]
            outcome = Outcome(name, 0.0, error=f"{type(e).__name__}: {e}\n" + "\n".join(tail))
        outcome.seconds = time.perf_counter() - t0
        echo(f"== bench {name}: {'ok' if outcome.ok else 'FAILED'} in {outcome.seconds:.1f} s")
        outcomes.append(outcome)
    total = time.perf_counter() - t_all
    atomic_write_text(
        out / "summary.md", summary_markdown(outcomes, quick, total, load_before, os.getloadavg())
    )
    return outcomes


def summary_markdown(
    outcomes: Sequence[Outcome],
    quick: bool,
    total_s: float,
    load_before: Sequence[float],
    load_after: Sequence[float],
) -> str:
    m = machine_info()
    lines = [
        f"# egovlm bench all{' --quick' if quick else ''}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; GPU: {m['gpu'] or 'none'}.",
        f"Wall time {total_s:.0f} s; load average (1 min) {load_before[0]:.1f} before,"
        f" {load_after[0]:.1f} after.",
        "",
        "| part | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {o.part} | {'ok' if o.ok else 'FAILED'} | {o.seconds:.1f} |" for o in outcomes]
    for o in outcomes:
        lines += ["", f"## {o.part}", ""]
        if o.report is None:
            lines += ["FAILED:", "", "```", str(o.error), "```"]
            continue
        body = o.report.markdown().splitlines()[4:]  # without its title and machine lines
        lines += body
    return "\n".join(lines).rstrip() + "\n"
