"""Export targets: which runtime a device uses, which precisions it supports, how much memory it has.

The facts live in ``configs/export/targets.yaml`` (one entry per device) so a new board is a config
change; this module validates them and answers "can I export precision P for target T?" with a clear
error before any heavy work starts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from egovlm import paths
from egovlm.config import FIELD_WORDING, ConfigError, read_yaml, validate

RUNTIMES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "fp8")


class ExportConfigError(ConfigError):
    """A bad target, precision or config file; the message names which and where."""

    wording = FIELD_WORDING


def config_dir() -> Path:
    """``configs/export`` of the checkout this package is installed from (editable install)."""
    return paths.CONFIGS_DIR / "export"


@dataclass(frozen=True, config=ConfigDict(extra="forbid", coerce_numbers_to_str=True))
class Target:
    """One entry of targets.yaml; ``name`` is its key there (set by :func:`load_targets`)."""

    runtime: str
    precisions: tuple[str, ...]
    default_precision: str
    memory_gb: float
    budget_fraction: float
    compute_capability: str | None = None
    tensorrt_major: int | None = None
    bandwidth_gbps: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precisions {unknown}; known: {PRECISIONS}")
        if self.default_precision not in self.precisions:
            raise ValueError(f"default_precision {self.default_precision!r} not in precisions")
        if not 0 < self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {self.budget_fraction}")

    @property
    def uses_tensorrt(self) -> bool:
        return self.runtime == "tensorrt"

    @property
    def budget_bytes(self) -> int:
        """Bytes the model (weights + KV cache + activations) may use on this device."""
        return int(self.memory_gb * self.budget_fraction * 1024**3)


def load_targets(path: Path | None = None) -> dict[str, Target]:
    """The targets of ``path`` (default ``configs/export/targets.yaml``) by name; errors name the file,
    the target and the field."""
    path = path or config_dir() / "targets.yaml"
    tree = read_yaml(path, ExportConfigError)
    if not tree:
        raise ExportConfigError(f"{path}: expected a mapping of target names")
    targets = {}
    for key, spec in tree.items():
        name = str(key)
        target = validate(spec, Target, f"{path}: target {name!r}", ExportConfigError)
        targets[name] = replace(target, name=name)
    return targets


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
