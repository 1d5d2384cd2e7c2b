"""Device profiles (configs/edge/*.yaml) and the memory-budget check.

A profile says how the runtime runs on one device class: backend, precision, how many
keyframes (K) at what size and over which horizon, the selector's thresholds, generation limits
and the memory the runtime may use. :func:`load_profile` validates it (a bad field is an error
naming the file and the field). :func:`check_memory` refuses a K/precision that cannot fit, with
the SAME accounting the export's fit check uses (:func:`egovlm.export.fit.memory_plan`): weights as
the backend holds them (tied LM head twice in exported graphs, quantisation scales), the KV cache the
runtime keeps live at most, activations at the TensorRT profiles' largest shapes, the vision cache and
the runtime's overhead. The budget is ``memory_budget_gb`` when the profile sets it, else the export
target's of the same name (configs/export/targets.yaml: memory_gb x budget_fraction), so a Jetson's
budget is written once. Orin Nano's 8 GB is the case it exists for: out-of-memory is the users' first
complaint (docs/architecture.md#the-memory-plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from egovlm import paths
from egovlm.config import FIELD_WORDING, ConfigError, read_yaml, validate
from egovlm.contract import MAX_QUESTION_TOKENS
from egovlm.edge.backends.base import GenerationParams
from egovlm.export.fit import (
    KNOWN_MODELS,
    TENSORRT_MAX_CHUNK,
    Budget,
    MemoryPlan,
    ModelDims,
    Workload,
    largest_fitting_keyframes,
    memory_plan,
    weight_bytes,
)
from egovlm.export.targets import ExportConfigError, load_targets
from egovlm.export.tensorrt_build import target_budget
from egovlm.keyframes import SelectorParams

__all__ = ["KNOWN_MODELS", "ModelDims"]  # re-exported: the engine and the latency benchmark size models here

PROFILE_DIR = paths.CONFIGS_DIR / "edge"
Precision = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]
GB = 1e9  # profiles state budgets in GB
GiB = 1024**3  # the accounting reports GiB
PATCH_UNIT = 28  # Qwen2.5-VL: 14 px patches merged 2x2


class ProfileError(ConfigError):
    """An invalid profile: the message names the file and the field."""

    wording = FIELD_WORDING


class MemoryBudgetError(RuntimeError):
    """The profile's K/precision cannot fit its memory budget; the message says why."""


_STRICT = ConfigDict(extra="forbid", frozen=True)


class KeyframeSettings(BaseModel):
    model_config = _STRICT
    capacity: int = Field(ge=1, le=256)  # K
    horizon_s: float | None = Field(default=300.0, gt=0)
    size: tuple[int, int] = (448, 336)  # (width, height), multiples of 28

    @field_validator("size")
    @classmethod
    def _multiple_of_28(cls, v: tuple[int, int]) -> tuple[int, int]:
        if any(x < PATCH_UNIT or x % PATCH_UNIT for x in v):
            raise ValueError(
                f"keyframe size {list(v)} must be multiples of {PATCH_UNIT} px (patch 14 x merge 2)"
            )
        return v

    @property
    def tokens_per_keyframe(self) -> int:
        return (self.size[0] // PATCH_UNIT) * (self.size[1] // PATCH_UNIT)


class EngineSettings(BaseModel):
    model_config = _STRICT
    debounce_s: float = Field(default=0.05, ge=0)
    max_debounce_s: float = Field(default=0.5, ge=0)


class PrivacySettings(BaseModel):
    """What the device keeps, and how it shows that it is recording (README "Privacy").
    ``retention_s``: the wall-clock age after which every keyframe, thumbnail and transcript is
    dropped, whether or not the camera still runs (default 10 min); ``capture_hook``: a command
    run with ``on``, ``paused`` or ``off`` appended whenever capture changes (a recording LED, e.g.
    ``gpioset`` of libgpiod on a Jetson header pin); ``log_transcripts``: log what was heard at INFO
    (off: transcripts are never logged)."""

    model_config = _STRICT
    retention_s: float = Field(default=600.0, gt=0, le=86400)
    capture_hook: str | None = None
    log_transcripts: bool = False


class FaceSettings(BaseModel):
    """Bystander protection (egovlm.edge.faces): ``blur_served`` pixelates faces in every image the
    server hands out (thumbnails, the page); ``blur_model_input`` also in each keyframe before the
    model sees it (costs one face detection per keyframe; the model then cannot describe faces)."""

    model_config = _STRICT
    blur_served: bool = True
    blur_model_input: bool = False


class EdgeProfile(BaseModel):
    """One device class. ``memory_budget_gb`` is what the runtime may use, not the board's RAM."""

    model_config = _STRICT
    device: str
    description: str = ""
    backend: Literal["torch", "onnx", "tensorrt"] = "torch"
    device_map: str = "cpu"  # torch device: cpu | cuda | cuda:0
    precision: Precision = "fp16"  # language-model weights
    vision_precision: Precision = "fp16"
    kv_precision: Precision = "fp16"
    # What the runtime may use (GB) and the share of it for CUDA context, Python, camera, allocator slack;
    # unset: the export target's budget of the same name (configs/export/targets.yaml).
    memory_budget_gb: float | None = Field(default=None, gt=0)
    overhead_gb: float | None = Field(default=None, ge=0)
    threads: int | None = Field(default=None, ge=1)  # torch intra-op threads (None: library default)
    model_family: str = "qwen2.5-vl-3b"  # for checking the profile without the weights (KNOWN_MODELS)
    keyframes: KeyframeSettings
    selector: SelectorParams = Field(default_factory=SelectorParams)
    # the engine's decoding defaults (egovlm.edge.backends.base.GenerationParams, validated here)
    generation: GenerationParams = Field(default_factory=GenerationParams)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    faces: FaceSettings = Field(default_factory=FaceSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    source: str = ""  # the file it was loaded from (set by load_profile)

    @field_validator("generation", mode="before")
    @classmethod
    def _no_test_switches(cls, v: object) -> object:
        # GenerationParams is shared with tests, whose return_scores keeps every step's logits
        # (a 3B model: ~150 MB per answer): never a device setting.
        if isinstance(v, dict) and "return_scores" in v:
            raise ValueError("return_scores is a test switch, not a profile setting")
        return v


def load_profile(name_or_path: str | Path) -> EdgeProfile:
    """Load ``configs/edge/<name>.yaml`` or a YAML path; errors name the file and field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))) or "none"
        raise ProfileError(f"{path}: no such profile (known profiles: {known})")
    tree = read_yaml(path, ProfileError)
    return validate({**tree, "source": str(path)}, EdgeProfile, str(path), ProfileError)


# -- the memory check (one accounting with the export's: egovlm.export.fit) ---------------------------

# The runtime each backend runs the weights with, for the accounting of bytes as exported.
RUNTIME_OF_BACKEND = {"torch": "torch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class MemoryEstimate:
    """A profile's :class:`~egovlm.export.fit.MemoryPlan` and the largest K that fits."""

    plan: MemoryPlan
    max_capacity: int  # the largest K that would fit with everything else unchanged

    @property
    def fits(self) -> bool:
        return self.plan.fits

    @property
    def total_gb(self) -> float:
        return self.plan.total / GB

    @property
    def budget_gb(self) -> float:
        return self.plan.budget.total / GB

    @property
    def weights_gb(self) -> float:
        return self.plan.weights.device / GB

    @property
    def kv_gb(self) -> float:
        return self.plan.kv_bytes / GB

    @property
    def context_tokens(self) -> int:
        return self.plan.workload.context

    def summary(self) -> str:
        return self.plan.summary()


def profile_budget(profile: EdgeProfile) -> Budget:
    """``memory_budget_gb`` (GB, with ``overhead_gb`` of it for the runtime) when the profile sets it;
    else the budget of the export target of the same name (configs/export/targets.yaml), so a Jetson's
    budget is written once."""
    where = profile.source or profile.device
    if profile.memory_budget_gb is not None:
        overhead = 1.0 if profile.overhead_gb is None else profile.overhead_gb
        return Budget(int(profile.memory_budget_gb * GB), int(overhead * GB), f"{where}: memory_budget_gb")
    try:
        target = load_targets()[profile.device]
    except (KeyError, ExportConfigError):
        raise ProfileError(
            f"{where}: field 'memory_budget_gb': not set, and device {profile.device!r} is no export target "
            "in configs/export/targets.yaml to take the budget from; set memory_budget_gb"
        ) from None
    return target_budget(target)


def profile_workload(profile: EdgeProfile, dims: ModelDims, capacity: int | None = None) -> Workload:
    k = profile.keyframes.capacity if capacity is None else capacity
    return Workload(
        keyframes=k,
        tokens_per_keyframe=dims.tokens_per_keyframe(profile.keyframes.size),
        question_tokens=MAX_QUESTION_TOKENS,
        new_tokens=profile.generation.max_new_tokens,
        max_chunk=TENSORRT_MAX_CHUNK if profile.backend == "tensorrt" else None,  # as the export plans
    )


def estimate_memory(profile: EdgeProfile, dims: ModelDims, capacity: int | None = None) -> MemoryEstimate:
    """The profile's memory plan at K = ``capacity`` (default: the profile's) and the largest K that fits."""
    runtime = RUNTIME_OF_BACKEND[profile.backend]
    weights = weight_bytes(dims.tensors(), runtime, profile.precision)
    work = profile_workload(profile, dims, capacity)
    budget = profile_budget(profile)
    size = profile.keyframes.size
    plan = memory_plan(dims, weights, work, size, budget, kv_precision=profile.kv_precision)
    best = largest_fitting_keyframes(dims, weights, work, size, budget, kv_precision=profile.kv_precision)
    return MemoryEstimate(plan, best)


def check_memory(profile: EdgeProfile, dims: ModelDims | None = None) -> MemoryEstimate:
    """Raise :class:`MemoryBudgetError` when the profile cannot fit its budget; else the estimate.
    ``dims`` default to the profile's ``model_family``."""
    if dims is None:
        if profile.model_family not in KNOWN_MODELS:
            where = profile.source or profile.device
            raise ProfileError(
                f"{where}: field 'model_family': unknown {profile.model_family!r}; "
                f"known: {', '.join(KNOWN_MODELS)} (or pass the model's own dimensions)"
            )
        dims = KNOWN_MODELS[profile.model_family]
    est = estimate_memory(profile, dims)
    if not est.fits:
        where = profile.source or profile.device
        if est.max_capacity >= 1:
            hint = f"at most {est.max_capacity} keyframes fit at {profile.precision}"
        else:
            hint = f"even one keyframe does not fit at {profile.precision}: use a lower precision"
        raise MemoryBudgetError(
            f"{where}: K={profile.keyframes.capacity} at {profile.precision} needs "
            f"{est.plan.total / GiB:.2f} GiB but the budget is {est.budget_gb:.2f} GB = "
            f"{est.plan.budget.total / GiB:.2f} GiB "
            f"({est.summary()}); {hint}"
        )
    return est
