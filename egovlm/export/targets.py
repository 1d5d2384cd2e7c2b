"""Export targets: which runtime a device uses, which precisions it supports, how much memory it has.

The facts live in ``configs/export/targets.yaml`` (one entry per device) so a new board is a config
change; this module validates them and answers "can I export precision P for target T?" with a clear
error before any heavy work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from egovlm import paths

RUNTIMES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "fp8")


class ExportConfigError(ValueError):
    """A bad target, precision or config file; the message names which and where."""


def config_dir() -> Path:
    """``configs/export`` of the checkout this package is installed from (editable install)."""
    return paths.CONFIGS_DIR / "export"


@dataclass(frozen=True)
class Target:
    name: str
    runtime: str
    precisions: tuple[str, ...]
    default_precision: str
    memory_gb: float
    budget_fraction: float
    compute_capability: str | None = None
    tensorrt_major: int | None = None
    bandwidth_gbps: float | None = None

    @property
    def uses_tensorrt(self) -> bool:
        return self.runtime == "tensorrt"

    @property
    def budget_bytes(self) -> int:
        """Bytes the model (weights + KV cache + activations) may use on this device."""
        return int(self.memory_gb * self.budget_fraction * 1024**3)


def _target_from(name: str, raw: Any, source: Path) -> Target:
    where = f"{source}: target {name!r}"
    if not isinstance(raw, dict):
        raise ExportConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    try:
        target = Target(
            name=name,
            runtime=str(raw["runtime"]),
            precisions=tuple(str(p) for p in raw["precisions"]),
            default_precision=str(raw["default_precision"]),
            memory_gb=float(raw["memory_gb"]),
            budget_fraction=float(raw["budget_fraction"]),
            compute_capability=str(raw["compute_capability"]) if "compute_capability" in raw else None,
            tensorrt_major=int(raw["tensorrt_major"]) if "tensorrt_major" in raw else None,
            bandwidth_gbps=float(raw["bandwidth_gbps"]) if "bandwidth_gbps" in raw else None,
        )
    except KeyError as e:
        raise ExportConfigError(f"{where}: missing field {e.args[0]!r}") from None
    if target.runtime not in RUNTIMES:
        raise ExportConfigError(f"{where}: runtime must be one of {RUNTIMES}, got {target.runtime!r}")
    unknown = [p for p in target.precisions if p not in PRECISIONS]
    if unknown:
        raise ExportConfigError(f"{where}: unknown precisions {unknown}; known: {PRECISIONS}")
    if target.default_precision not in target.precisions:
        raise ExportConfigError(f"{where}: default_precision {target.default_precision!r} not in precisions")
    if not 0 < target.budget_fraction <= 1:
        raise ExportConfigError(f"{where}: budget_fraction must be in (0, 1], got {target.budget_fraction}")
    return target


def load_targets(path: Path | None = None) -> dict[str, Target]:
    path = path or config_dir() / "targets.yaml"
    if not path.is_file():
        raise ExportConfigError(f"targets config not found: {path}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not raw:
        raise ExportConfigError(f"{path}: expected a mapping of target names")
    return {str(name): _target_from(str(name), spec, path) for name, spec in raw.items()}


def resolve(target: str, precision: str | None = None, path: Path | None = None) -> tuple[Target, str]:
    """The target and the precision to use; a clear error for an unknown or unsupported pair."""
    targets = load_targets(path)
    if target not in targets:
        raise ExportConfigError(f"unsupported target {target!r}; choose one of {', '.join(targets)}")
    t = targets[target]
    chosen = precision or t.default_precision
    if chosen not in t.precisions:
        hint = " (FP8 needs Hopper/Blackwell-class tensor cores: Thor)" if chosen == "fp8" else ""
        raise ExportConfigError(
            f"precision {chosen!r} is not supported on {target}{hint}; "
            f"choose one of {', '.join(t.precisions)}"
        )
    return t, chosen
