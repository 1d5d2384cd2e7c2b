"""What every benchmark writes: rows of measurements stamped with the machine they ran on.

``DIR/<part>.json`` (machine, git commit, package versions, parameters, rows), ``DIR/<part>.md``
(a table a person reads) and PNG plots, each written atomically. Timings are summarised as
median and p95 over repeats after warm-up: these machines are noisy, and a mean hides it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from egovlm import paths
from egovlm.atomic import atomic_write_text

PACKAGES = ("egovlm", "torch", "transformers", "trl", "onnxruntime", "opencv-python-headless", "av", "numpy")


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """(median, p95) of the samples."""
    arr = np.asarray(samples, dtype=np.float64)
    return float(np.median(arr)), float(np.percentile(arr, 95))


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Seconds per call of ``fn``, ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, GPU, and on Jetson the module, L4T/JetPack release, power mode and clocks."""
    mem_kb = next(
        (
            int(line.split()[1])
            for line in (_read("/proc/meminfo") or "").splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024**2, 1),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "gpu": _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]),
    }
    l4t = _read("/etc/nv_tegra_release")
    if l4t is not None:  # a Jetson
        info["jetson"] = {
            "module": _read("/proc/device-tree/model"),
            "l4t": l4t.splitlines()[0],
            "power_mode": _run(["nvpmodel", "-q"]),
            "clocks": _run(["jetson_clocks", "--show"]),
        }
    return info


def git_commit() -> str | None:
    root = paths.REPO_ROOT
    return _run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class Report:
    """One benchmark part's results: rows of flat dicts plus the context needed to trust them."""

    part: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)  # ratios and targets derived from rows
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "machine": machine_info(),
            "git_commit": git_commit(),
            "packages": package_versions(),
            "params": self.params,
            "rows": self.rows,
            "summary": self.summary,
            "notes": self.notes,
        }

    def markdown(self) -> str:
        lines = [f"# {self.part}", ""]
        m = machine_info()
        lines.append(
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; GPU: {m['gpu'] or 'none'}"
        )
        lines += ["", markdown_table(self.rows), ""]
        if self.summary:
            lines += [
                "Summary (ratios measured side by side in this run):",
                "",
                markdown_table(self.summary),
                "",
            ]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / f"{self.part}.json", json.dumps(self.to_json(), indent=2) + "\n")
        atomic_write_text(out / f"{self.part}.md", self.markdown())
        return out / f"{self.part}.json"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    body = ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join([head, *body])


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG atomically (temp file + rename) and close it."""
    import io

    import matplotlib.pyplot as plt

    from egovlm.atomic import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
