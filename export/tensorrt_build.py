"""TensorRT engines from the exported ONNX graphs: profile sizing (pure Python, tested here) and the
engine build (TensorRT Python API; runs on the device, or any host with TensorRT + CUDA).

Networks are built STRONGLY TYPED: the ONNX tensor types decide every layer's precision (fp16 graphs,
fp32 islands transformers keeps for RMSNorm/softmax, explicit Q/DQ from ModelOpt). TensorRT 11 removed
the FP16/INT8 builder flags and TensorRT 10 (JetPack 6, Orin) already supports strongly-typed networks,
so this one code path serves both; it also avoids the ViT's FP16 overflow that "let the builder pick
precisions" can cause (DESIGN.md section 7).

Profiles: the decoder engine gets two optimisation profiles, ``prefill`` (seq up to the longest prompt
the budget allows, past from 0) and ``decode`` (seq = 1, past up to the context limit); vision and embed
get one each (vision is static). The context limit comes from the target's memory budget
(``targets.yaml``: memory_gb x budget_fraction) minus the weights and a reserve for activations and
workspace, divided by the KV-cache bytes per token. Orin Nano's 8 GB are shared with the OS and the
camera; that is why its budget fraction is the smallest.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from egovlm.atomic import replace_dir
from egovlm.export.targets import ExportConfigError, Target

MiB = 1024**2
RUNTIME_RESERVE = 512 * MiB  # CUDA context, TensorRT runtime, fragmentation
PROFILE_ALIGN = 64  # context limits are rounded down to a multiple of this


@dataclass(frozen=True)
class Workload:
    """What the edge runtime asks of the decoder (DESIGN.md section 5: K keyframes + a question)."""

    keyframes: int = 8
    system_tokens: int = 128  # system prompt + chat scaffolding + per-frame labels
    question_tokens: int = 128
    new_tokens: int = 256
    batch: int = 1


@dataclass(frozen=True)
class EnginePlan:
    max_context: int  # past + seq the decode profile allows
    max_prefill: int  # longest single prefill call
    prefix_tokens: int  # [system + K keyframes] for the workload
    weights_bytes: int
    kv_bytes_per_token: int
    activation_bytes: int
    budget_bytes: int
    workspace_bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def kv_bytes_per_token(model: dict[str, Any], kv_dtype_bytes: int) -> int:
    """K and V for every layer: 2 x layers x kv_heads x head_dim x bytes."""
    return 2 * int(model["num_layers"]) * int(model["num_kv_heads"]) * int(model["head_dim"]) * kv_dtype_bytes


def activation_bytes(model: dict[str, Any], seq: int, dtype_bytes: int) -> int:
    """A generous bound on one prefill's live activations: hidden states, q/k/v, the MLP's widest
    tensor (about 6 x hidden for Qwen2.5), one layer's attention scores, and the fp32 logits."""
    hidden, heads = int(model["hidden_size"]), int(model["num_heads"])
    per_token = dtype_bytes * (4 * hidden + 6 * hidden)
    scores = 4 * heads * seq * seq  # fp32 softmax of one layer
    return seq * per_token + scores + 4 * int(model["vocab_size"])


def plan_profiles(
    target: Target,
    model: dict[str, Any],
    weights_bytes: int,
    kv_dtype_bytes: int = 2,
    workload: Workload | None = None,
    max_positions: int = 32768,
) -> EnginePlan:
    """Size the decoder's profiles for ``target``; raise if the model cannot serve the workload there."""
    work = workload or Workload()
    prefix = work.system_tokens + work.keyframes * int(model["tokens_per_keyframe"])
    needed_context = prefix + work.question_tokens + work.new_tokens
    max_prefill = prefix + work.question_tokens
    act = activation_bytes(model, max_prefill, kv_dtype_bytes)
    workspace = min(1024 * MiB, max(256 * MiB, act))
    budget = target.budget_bytes
    free = budget - weights_bytes - act - workspace - RUNTIME_RESERVE
    per_token = kv_bytes_per_token(model, kv_dtype_bytes) * work.batch
    context = min(max_positions, free // per_token if free > 0 else 0)
    context -= context % PROFILE_ALIGN
    if context < needed_context:
        gib = 1024**3
        raise ExportConfigError(
            f"{target.name}: the model does not fit: budget {budget / gib:.2f} GiB "
            f"({target.memory_gb} GB x {target.budget_fraction}) - weights {weights_bytes / gib:.2f} GiB "
            f"- activations/workspace/runtime {(act + workspace + RUNTIME_RESERVE) / gib:.2f} GiB leaves KV "
            f"room for {max(context, 0)} tokens, but {work.keyframes} keyframes + question + answer need "
            f"{needed_context}; use a smaller precision (int4), fewer keyframes or a smaller keyframe size"
        )
    return EnginePlan(
        max_context=int(context),
        max_prefill=int(min(max_prefill, context)),
        prefix_tokens=prefix,
        weights_bytes=weights_bytes,
        kv_bytes_per_token=per_token,
        activation_bytes=act,
        budget_bytes=budget,
        workspace_bytes=workspace,
    )


Shape = list[int]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


def decoder_profiles(model: dict[str, Any], plan: EnginePlan, batch: int = 1) -> dict[str, Profile]:
    """min/opt/max shapes per decoder input for the prefill and decode profiles."""
    hidden, kvh, hd, layers = (
        int(model[k]) for k in ("hidden_size", "num_kv_heads", "head_dim", "num_layers")
    )

    def profile(seq: tuple[int, int, int], past: tuple[int, int, int]) -> Profile:
        shapes: Profile = {
            "inputs_embeds": ([batch, seq[0], hidden], [batch, seq[1], hidden], [batch, seq[2], hidden]),
            "position_ids": ([3, batch, seq[0]], [3, batch, seq[1]], [3, batch, seq[2]]),
            "attention_mask": (
                [batch, seq[0] + past[0]],
                [batch, seq[1] + past[1]],
                [batch, seq[2] + past[2]],
            ),
        }
        for i in range(layers):
            for kind in ("key", "value"):
                shapes[f"past_{kind}.{i}"] = tuple([batch, kvh, p, hd] for p in past)  # type: ignore[assignment]
        return shapes

    prefill_past_max = plan.max_context - plan.max_prefill
    return {
        "prefill": profile((1, plan.prefix_tokens, plan.max_prefill), (0, 0, prefill_past_max)),
        "decode": profile((1, 1, 1), (0, plan.max_context // 2, plan.max_context - 1)),
    }


def embed_profile(plan: EnginePlan, batch: int = 1) -> dict[str, Profile]:
    return {"any": {"input_ids": ([batch, 1], [batch, plan.prefix_tokens], [batch, plan.max_prefill])}}


def vision_profile(model: dict[str, Any]) -> dict[str, Profile]:
    shape = [int(model["num_patches"]), int(model["patch_dim"])]
    return {"static": {"pixel_values": (shape, shape, shape)}}


def all_profiles(model: dict[str, Any], plan: EnginePlan) -> dict[str, dict[str, Profile]]:
    return {
        "vision": vision_profile(model),
        "embed": embed_profile(plan),
        "decoder": decoder_profiles(model, plan),
    }


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): TensorRT importable AND a CUDA device present. Never pretends."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "the tensorrt Python package is not installed (JetPack ships it on the device)"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, f"TensorRT {trt.__version__} is installed but no CUDA device is visible"
    except ImportError:
        pass
    return True, f"TensorRT {trt.__version__}"


def build_command(export_dir: Path) -> str:
    return f"egovlm export build-engines {export_dir}"


def build_engine(
    onnx_path: Path, engine_path: Path, profiles: dict[str, Profile], workspace_bytes: int
) -> None:
    """Parse ``onnx_path`` into a strongly-typed network, add ``profiles``, build, write atomically."""
    import tensorrt as trt

    from egovlm.atomic import atomic_write_bytes

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for shapes in profiles.values():
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    atomic_write_bytes(engine_path, bytes(serialized))


def build_engines(export_dir: Path) -> dict[str, str]:
    """Build every graph's engine of a finished TensorRT-target export and re-publish its manifest."""
    from egovlm.export.manifest import load_manifest, write_manifest

    manifest = load_manifest(export_dir, verify=True)
    if manifest.runtime != "tensorrt":
        raise ExportConfigError(
            f"{export_dir} was exported for {manifest.target} (ONNX Runtime); no engines to build"
        )
    usable, reason = tensorrt_status()
    if not usable:
        raise RuntimeError(
            f"cannot build engines here: {reason}. Run `{build_command(export_dir)}` on the device."
        )
    trt_block = dict(manifest.data["tensorrt"])
    engines: dict[str, str] = {}
    # Engines are built into a staging folder beside the export (builds take minutes; a crash, a
    # full disk or Ctrl-C there must leave the previous engines and manifest as they were), then
    # swapped in as a whole just before the manifest that hashes them is re-written.
    staging = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.engines-", dir=export_dir.parent))
    try:
        for name, profiles in trt_block["profiles"].items():
            profiles_t = {k: {n: tuple(s) for n, s in v.items()} for k, v in profiles.items()}
            build_engine(
                manifest.graph_path(name),
                staging / f"{name}.plan",
                profiles_t,
                int(trt_block["plan"]["workspace_bytes"]),
            )
            engines[name] = f"engines/{name}.plan"
        staging.chmod(0o755)
        replace_dir(staging, export_dir / "engines")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    body = {
        k: v
        for k, v in manifest.data.items()
        if k not in {"format", "format_version", "created_utc", "files"}
    }
    body["tensorrt"] = {**trt_block, "status": "built", "engines": engines, "built_with": reason}
    write_manifest(export_dir, body)
    return engines
