"""Device profiles (configs/edge/*.yaml) and the memory-budget check.

A profile says how the runtime runs on one device class: backend, precision, how many
keyframes (K) at what size and over which horizon, the selector's thresholds, generation limits
and the memory the runtime may use. :func:`load_profile` validates it (a bad field is an error
naming the file and the field). :func:`check_memory` refuses a K/precision that cannot fit:

    weights   = text params x bytes(precision) (+ embeddings at 16 bit when quantised)
                + vision params x bytes(vision precision)
    kv        = 2 x layers x kv_heads x head_dim x bytes(kv) per token
                x (prefix + question + answer tokens) x KV_COPIES
    features  = K x tokens per keyframe x hidden x bytes (the per-keyframe vision cache)
    work      = one prefill's live activations (largest layer) + runtime overhead

KV_COPIES = 3: the warm prefix, the one being rebuilt in the background, and a question's
working cache (transformers' DynamicCache grows by concatenation, so a question holds its own
copy of the prefix while it decodes). The estimate is deliberately conservative; Orin Nano's
8 GB is the case it exists for (DESIGN.md §8: out-of-memory is the users' first complaint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from egovlm.keyframes import SelectorParams

PROFILE_DIR = Path(__file__).resolve().parents[1] / "configs" / "edge"
Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
GROUP_SCALE_OVERHEAD = {"int8": 2.0 / 128, "int4": 2.0 / 64}  # fp16 scale per group of 128 / 64
KV_COPIES = 3
SYSTEM_TOKENS = 80  # system prompt + chat scaffolding (the real tokenizer: about 60)
LABEL_TOKENS = 16  # "Frame 12 (t=123.4 s): " + vision start/end + newline
PATCH_UNIT = 28  # Qwen2.5-VL: 14 px patches merged 2x2


class ProfileError(ValueError):
    """An invalid profile: the message names the file and the field."""


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


class GenerationSettings(BaseModel):
    model_config = _STRICT
    max_new_tokens: int = Field(default=256, ge=1)
    max_question_tokens: int = Field(default=128, ge=1)  # budgeted in the KV estimate
    do_sample: bool = False
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=0.9, gt=0, le=1)


class EngineSettings(BaseModel):
    model_config = _STRICT
    debounce_s: float = Field(default=0.05, ge=0)
    max_debounce_s: float = Field(default=0.5, ge=0)


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
    memory_budget_gb: float = Field(gt=0)
    overhead_gb: float = Field(default=1.0, ge=0)  # CUDA context, Python, camera, allocator slack
    threads: int | None = Field(default=None, ge=1)  # torch intra-op threads (None: library default)
    model_family: str = "qwen2.5-vl-3b"  # for checking the profile without the weights (KNOWN_MODELS)
    keyframes: KeyframeSettings
    selector: SelectorParams = Field(default_factory=SelectorParams)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    source: str = ""  # the file it was loaded from (set by load_profile)


def load_profile(name_or_path: str | Path) -> EdgeProfile:
    """Load ``configs/edge/<name>.yaml`` or a YAML path; errors name the file and field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))) or "none"
        raise ProfileError(f"{path}: no such profile (known profiles: {known})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of fields")
    try:
        return EdgeProfile.model_validate({**data, "source": str(path)})
    except ValidationError as e:
        raise ProfileError(f"{path}: {_describe(e)}") from None


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"field {field!r}: {msg}")
    return "; ".join(parts)


# -- model sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDims:
    """The sizes of a Qwen2.5-VL that memory depends on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    patch: int = 14
    merge: int = 2
    temporal_patch: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_config(cls, config: Any) -> ModelDims:
        """From a transformers Qwen2.5-VL config object, or a config.json mapping."""

        def field(obj: Any, key: str, default: Any = None) -> Any:
            value = obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)
            if value is None:
                raise ProfileError(f"model config has no {key!r}: not a Qwen2.5-VL config?")
            return value

        text, vision = field(config, "text_config"), field(config, "vision_config")
        tied = field(config, "tie_word_embeddings", field(text, "tie_word_embeddings", False))
        return cls(
            layers=int(field(text, "num_hidden_layers")),
            hidden=int(field(text, "hidden_size")),
            heads=int(field(text, "num_attention_heads")),
            kv_heads=int(field(text, "num_key_value_heads")),
            intermediate=int(field(text, "intermediate_size")),
            vocab=int(field(text, "vocab_size")),
            tied=bool(tied),
            vision_depth=int(field(vision, "depth")),
            vision_hidden=int(field(vision, "hidden_size")),
            vision_intermediate=int(field(vision, "intermediate_size")),
            patch=int(field(vision, "patch_size", 14)),
            merge=int(field(vision, "spatial_merge_size", 2)),
            temporal_patch=int(field(vision, "temporal_patch_size", 2)),
        )

    @classmethod
    def from_model_dir(cls, path: str | Path) -> ModelDims:
        return cls.from_config(json.loads((Path(path) / "config.json").read_text()))

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def text_params(self) -> int:
        """Decoder parameters, embeddings included (Qwen2: q/k/v biases, no o bias, SwiGLU)."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        attn = (h * h + h) + 2 * (h * kv + kv) + h * h
        layer = attn + 3 * h * self.intermediate + 2 * h
        return self.layers * layer + self.embedding_params() + h

    def vision_params(self) -> int:
        """Vision tower: patch embedding, blocks (biased qkv/proj/SwiGLU), 2x2 patch merger."""
        vh, vi = self.vision_hidden, self.vision_intermediate
        patch = 3 * self.temporal_patch * self.patch * self.patch * vh
        block = (3 * vh * vh + 3 * vh) + (vh * vh + vh) + (3 * vh * vi + 2 * vi + vh) + 2 * vh
        m = vh * self.merge**2
        merger = vh + (m * m + m) + (m * self.hidden + self.hidden)
        return patch + self.vision_depth * block + merger

    def kv_bytes_per_token(self, precision: str) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * BYTES[precision]


# Published configs, so profiles can be checked without the weights (config.json of
# Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct).
KNOWN_MODELS: dict[str, ModelDims] = {
    "qwen2.5-vl-3b": ModelDims(36, 2048, 16, 2, 11008, 151936, True, 32, 1280, 3420),
    "qwen2.5-vl-7b": ModelDims(28, 3584, 28, 4, 18944, 152064, False, 32, 1280, 3420),
}


# -- the estimate --------------------------------------------------------------------------------

GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gb: float
    kv_gb: float
    features_gb: float
    work_gb: float
    overhead_gb: float
    budget_gb: float
    context_tokens: int
    max_capacity: int  # the largest K that would fit with everything else unchanged

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.kv_gb + self.features_gb + self.work_gb + self.overhead_gb

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.budget_gb

    def summary(self) -> str:
        return (
            f"weights {self.weights_gb:.2f} + KV {self.kv_gb:.2f} "
            f"({self.context_tokens} tokens x {KV_COPIES}) + vision cache {self.features_gb:.2f} "
            f"+ work {self.work_gb:.2f} + overhead {self.overhead_gb:.2f} "
            f"= {self.total_gb:.2f} GB of {self.budget_gb:.2f} GB"
        )


def context_tokens(profile: EdgeProfile, capacity: int | None = None) -> int:
    k = profile.keyframes.capacity if capacity is None else capacity
    prefix = SYSTEM_TOKENS + k * (profile.keyframes.tokens_per_keyframe + LABEL_TOKENS)
    return prefix + profile.generation.max_question_tokens + profile.generation.max_new_tokens


def weights_bytes(dims: ModelDims, precision: str, vision_precision: str) -> float:
    text, emb = dims.text_params(), dims.embedding_params()
    if precision in GROUP_SCALE_OVERHEAD:  # weight-only quantisation keeps embeddings at 16 bit
        body = (text - emb) * (BYTES[precision] + GROUP_SCALE_OVERHEAD[precision])
        lm = body + emb * 2.0
    else:
        lm = text * BYTES[precision]
    return lm + dims.vision_params() * BYTES[vision_precision]


def estimate_memory(profile: EdgeProfile, dims: ModelDims, capacity: int | None = None) -> MemoryEstimate:
    k = profile.keyframes.capacity if capacity is None else capacity
    act = BYTES["fp32"] if profile.precision == "fp32" else 2.0
    ctx = context_tokens(profile, k)
    tpk = profile.keyframes.tokens_per_keyframe
    kv = dims.kv_bytes_per_token(profile.kv_precision) * ctx * KV_COPIES
    features = k * tpk * dims.hidden * act
    prefix = ctx - profile.generation.max_new_tokens
    # One prefill's live activations: the MLP's widest tensors and the residual stream.
    work = prefix * (3 * dims.intermediate + 4 * dims.hidden) * act + dims.vocab * 4.0
    est = MemoryEstimate(
        weights_gb=weights_bytes(dims, profile.precision, profile.vision_precision) / GB,
        kv_gb=kv / GB,
        features_gb=features / GB,
        work_gb=work / GB,
        overhead_gb=profile.overhead_gb,
        budget_gb=profile.memory_budget_gb,
        context_tokens=ctx,
        max_capacity=0,
    )
    if capacity is not None:
        return est
    best = 0
    for kk in range(1, 257):
        if estimate_memory(profile, dims, kk).fits:
            best = kk
        else:
            break
    return MemoryEstimate(**{**est.__dict__, "max_capacity": best})


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
            f"{where}: K={profile.keyframes.capacity} at {profile.precision} needs {est.total_gb:.2f} GB "
            f"but the budget is {profile.memory_budget_gb:.2f} GB ({est.summary()}); {hint}"
        )
    return est
