"""TensorRT engines from the exported ONNX graphs: profile sizing (pure Python, tested here) and the
engine build (TensorRT Python API; runs on the device, or any host with TensorRT + CUDA).

Networks are built STRONGLY TYPED: the ONNX tensor types decide every layer's precision (fp16 graphs,
fp32 islands transformers keeps for RMSNorm/softmax, explicit Q/DQ from ModelOpt). TensorRT 11 removed
the FP16/INT8 builder flags and TensorRT 10 (JetPack 6, Orin) already supports strongly-typed networks,
so this one code path serves both; it also avoids the ViT's FP16 overflow that "let the builder pick
precisions" can cause (docs/architecture.md#dependency-facts).

Versions: TensorRT 10.3+ (JetPack 6.1/6.2 and 7.x); 8.6 (JetPack 6.0) is refused at import with the
upgrade (:mod:`egovlm.trt_support`). Plans are written without a second host copy: streamed to the
file on TensorRT 10.13+ (``build_serialized_network_to_stream``), from the ``IHostMemory`` buffer on
10.3-10.12.

Profiles (:mod:`egovlm.export.fit` does the accounting): the runtime prefills in chunks of at most
``plan.max_chunk`` new tokens (:data:`egovlm.export.fit.TENSORRT_MAX_CHUNK`, as TensorRT-LLM's chunked
context), so no decoder call is longer than a chunk whatever the prompt, and activations follow the
chunk, not the prefix. The decoder engine gets two optimisation profiles, in this order: ``prefill``
(any chunk of any prefill: a prefix build, a rebuild, a question after a full buffer, a question from
scratch) and ``decode`` (one token after up to the longest conversation). Together they admit every
call the edge runtime issues for the export's ``--keyframes`` (:func:`egovlm.export.fit.runtime_calls`);
vision and embed get one each (vision is static; embed takes a whole prompt). :func:`plan_profiles`
refuses a workload whose weights, KV cache at the runtime's maximum, activations and runtime reserve
exceed the target's budget (``targets.yaml``: memory_gb x budget_fraction), naming the numbers and the
``--keyframes`` that would fit.
Orin Nano's 8 GB are shared with the OS and the camera; that is why its budget fraction is the smallest.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from egovlm.atomic import replace_dir
from egovlm.export.fit import (
    PROFILE_ALIGN,
    RUNTIME_RESERVE,
    TENSORRT_MAX_CHUNK,
    Box,
    Budget,
    GraphBytes,
    MemoryPlan,
    ModelDims,
    WeightBytes,
    Workload,
    largest_fitting_keyframes,
    memory_plan,
)
from egovlm.export.targets import ExportConfigError, Target

__all__ = ["PROFILE_ALIGN", "RUNTIME_RESERVE", "Workload"]  # re-exported: callers size profiles here

MiB = 1024**2


@dataclass(frozen=True)
class EnginePlan:
    max_context: int  # past + seq the decode profile allows
    max_prefill: int  # longest prompt prefilled (full prefix + longest question), in chunks of max_chunk
    max_chunk: int  # most new tokens of one decoder call (egovlm.export.ort_runner.VLMRunner.extend)
    prefix_tokens: int  # [system + K keyframes] for the workload
    question_tokens: int  # the longest question turn the profiles admit after a full prefix
    new_tokens: int  # the longest answer
    keyframes: int
    weights_bytes: int  # as the device holds them
    kv_bytes_per_token: int
    activation_bytes: int  # decoder (largest profile corner) + vision
    budget_bytes: int
    workspace_bytes: int
    boxes: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # name -> seq/past (min, opt, max)
    memory: dict[str, Any] = field(default_factory=dict)  # egovlm.export.fit.MemoryPlan.to_json()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def box(self, name: str) -> Box:
        b = self.boxes[name]
        seq, past = b["seq"], b["past"]
        return Box((seq[0], seq[1], seq[2]), (past[0], past[1], past[2]))


def target_budget(target: Target) -> Budget:
    where = f"{target.name}: {target.memory_gb} GB x {target.budget_fraction}"
    return Budget(target.budget_bytes, RUNTIME_RESERVE, where)


def plan_profiles(
    target: Target,
    dims: ModelDims,
    weights: WeightBytes,
    workload: Workload,
    keyframe_size: tuple[int, int],
) -> EnginePlan:
    """Size the decoder's profiles for ``workload`` on ``target``; raise :class:`ExportConfigError`
    with the numbers and the largest ``--keyframes`` that fits when it does not fit. The workload
    must be chunked (``max_chunk``): a TensorRT profile admitting a whole prompt after a cached prefix
    would be sized for both at once."""
    if workload.max_chunk is None:
        raise ValueError(
            "plan_profiles: the workload has no max_chunk; TensorRT runtimes prefill in chunks "
            f"(egovlm.export.tensorrt_build.export_workload plans {TENSORRT_MAX_CHUNK})"
        )
    budget = target_budget(target)
    plan = memory_plan(dims, weights, workload, keyframe_size, budget)
    if not plan.fits:
        raise ExportConfigError(_refusal(target, plan, dims, weights, keyframe_size))
    return engine_plan(plan)


def engine_plan(plan: MemoryPlan) -> EnginePlan:
    work = plan.workload
    act = plan.decoder_activation
    return EnginePlan(
        max_context=plan.max_context,
        max_prefill=work.prefix_tokens() + work.question_tokens,
        max_chunk=work.longest_call,
        prefix_tokens=work.prefix_tokens(),
        question_tokens=work.question_tokens,
        new_tokens=work.new_tokens,
        keyframes=work.keyframes,
        weights_bytes=plan.weights.device,
        kv_bytes_per_token=plan.kv_bytes_per_token,
        activation_bytes=act + plan.vision_activation,
        budget_bytes=plan.budget.total,
        workspace_bytes=min(1024 * MiB, max(256 * MiB, act)),
        boxes={n: {"seq": list(b.seq), "past": list(b.past)} for n, b in plan.boxes.items()},
        memory=plan.to_json(),
    )


@dataclass(frozen=True)
class ExportFit:
    """The fit check of one TensorRT export, made from the checkpoint's shapes BEFORE any export work
    (:func:`check_export_fit`) and re-made on the exported files' real bytes at the end
    (:meth:`with_file_bytes`), with the same workload, budget and accounting."""

    target: Target
    dims: ModelDims
    keyframe_size: tuple[int, int]
    plan: MemoryPlan

    @property
    def engine(self) -> EnginePlan:
        return engine_plan(self.plan)

    def with_file_bytes(self, file_bytes: dict[str, int], tokens_per_keyframe: int) -> EnginePlan:
        """The plan again with each graph's weights taken from its exported files. Device bytes keep
        the predicted device/file ratio (1 except int8, whose fp16 weights + Q/DQ TensorRT folds to
        int8). Refuses like the first check, and refuses a keyframe grid that differs from the one the
        profiles were planned for."""
        if tokens_per_keyframe != self.plan.workload.tokens_per_keyframe:
            raise ExportConfigError(
                f"{self.target.name}: the exported graphs take {tokens_per_keyframe} tokens per keyframe, "
                f"the profiles were planned for {self.plan.workload.tokens_per_keyframe} (keyframe size "
                f"{self.keyframe_size}): a bug in the fit check; please report it"
            )
        graphs = {}
        for name, predicted in self.plan.weights.graphs.items():
            real = int(file_bytes.get(name, predicted.file))
            ratio = predicted.device / predicted.file if predicted.file else 1.0
            graphs[name] = GraphBytes(real, int(real * ratio))
        old = self.plan.weights
        weights = WeightBytes(old.runtime, old.precision, graphs, old.tied)
        return plan_profiles(self.target, self.dims, weights, self.plan.workload, self.keyframe_size)


def check_export_fit(
    target: Target,
    model_dir: Path,
    precision: str,
    keyframes: int | None = None,
    new_tokens: int | None = None,
) -> ExportFit:
    """Does ``model_dir`` exported at ``precision`` fit ``target`` with ``keyframes`` in the prompt?
    From the safetensors headers and config.json only (no weights loaded, no torch): raises
    :class:`ExportConfigError` with the numbers and the ``--keyframes`` that fit. ``keyframes`` and
    ``new_tokens`` default to the device profile of the same name (configs/edge/<target>.yaml), so an
    export admits every call its device's runtime makes; else 8 keyframes and 256 tokens. Prefill is
    planned in chunks of :data:`egovlm.export.fit.TENSORRT_MAX_CHUNK` tokens (the manifest's
    ``tensorrt.plan.max_chunk``, which the runtime reads)."""
    from egovlm.export import fit
    from egovlm.models.files import keyframe_size_of

    dims = fit.ModelDims.from_model_dir(model_dir)
    weights = fit.weight_bytes(fit.read_tensors(model_dir), "tensorrt", precision)
    size = keyframe_size_of(model_dir)
    work = export_workload(target, dims, size, keyframes, new_tokens)
    plan = memory_plan(dims, weights, work, size, target_budget(target))
    if not plan.fits:
        raise ExportConfigError(_refusal(target, plan, dims, weights, size))
    return ExportFit(target, dims, size, plan)


def export_workload(
    target: Target,
    dims: ModelDims,
    size: tuple[int, int],
    keyframes: int | None = None,
    new_tokens: int | None = None,
) -> Workload:
    """The workload a TensorRT export of ``dims`` at keyframe ``size`` is planned for: ``keyframes``
    and ``new_tokens`` (default: the device profile's), prefill in chunks of
    :data:`egovlm.export.fit.TENSORRT_MAX_CHUNK`."""
    k_default, n_default = device_defaults(target.name)
    return Workload(
        keyframes=keyframes or k_default,
        tokens_per_keyframe=dims.tokens_per_keyframe(size),
        new_tokens=new_tokens or n_default,
        max_chunk=TENSORRT_MAX_CHUNK,
    )


def device_defaults(device: str) -> tuple[int, int]:
    """(keyframes, answer tokens) of configs/edge/<device>.yaml, else (8, 256)."""
    from egovlm.edge.profile import PROFILE_DIR, load_profile

    if not (PROFILE_DIR / f"{device}.yaml").is_file():
        return 8, 256
    profile = load_profile(device)
    return profile.keyframes.capacity, profile.generation.max_new_tokens


def _refusal(
    target: Target, plan: MemoryPlan, dims: ModelDims, weights: WeightBytes, size: tuple[int, int]
) -> str:
    work = plan.workload
    k = largest_fitting_keyframes(dims, weights, work, size, plan.budget)
    hint = (
        f"--keyframes {k} would fit at {weights.precision}"
        if k >= 1
        else f"not even one keyframe fits at {weights.precision}"
    )
    lower = [p for p in target.precisions if p in ("int4", "int8") and p != weights.precision]
    return (
        f"{target.name}: the model does not fit at {weights.precision} with --keyframes {work.keyframes} "
        f"(questions up to {work.question_tokens} tokens, answers up to {work.new_tokens}): "
        f"{plan.summary()}; {hint}"
        + (f"; or use a lower precision ({', '.join(lower)})" if lower else "")
        + " or a smaller keyframe size"
    )


Shape = list[int]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


def decoder_profiles(model: dict[str, Any], plan: EnginePlan, batch: int = 1) -> dict[str, Profile]:
    """min/opt/max shapes per decoder input for every planned profile (plan.boxes, in order)."""
    hidden, kvh, hd, layers = (
        int(model[k]) for k in ("hidden_size", "num_kv_heads", "head_dim", "num_layers")
    )

    def profile(box: Box) -> Profile:
        seq, past = box.seq, box.past
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

    return {name: profile(plan.box(name)) for name in plan.boxes}


def embed_profile(plan: EnginePlan, batch: int = 1) -> dict[str, Profile]:
    """Token ids of any call: one answer token up to a whole prompt answered from scratch."""
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
    """(usable, reason): a TensorRT in the support window importable AND a CUDA device visible (through
    cuda-python: the device install has no torch). Never pretends."""
    from egovlm.trt_support import TensorRTUnavailableError, cuda_device_error, import_tensorrt

    try:
        trt = import_tensorrt()
    except TensorRTUnavailableError as e:
        return False, str(e)
    cuda = cuda_device_error()
    if cuda is not None:
        return False, f"TensorRT {trt.__version__} is installed but no CUDA device is usable: {cuda}"
    return True, f"TensorRT {trt.__version__}"


def build_command(export_dir: Path) -> str:
    return f"egovlm export build-engines {export_dir}"


def build_engine(
    onnx_path: Path, engine_path: Path, profiles: dict[str, Profile], workspace_bytes: int
) -> None:
    """Parse ``onnx_path`` into a strongly-typed network, add ``profiles``, build, write atomically.

    The plan never exists twice in host memory: TensorRT 10.13+ streams it into the file through an
    ``IStreamWriter``; older releases return it as ``IHostMemory``, written through a memoryview
    (``bytes(serialized)`` would copy it). Nothing here outlives the call (builder, network, parser,
    config are locals), so their memory is free before anything loads the engine (on Jetson the CPU
    and GPU share the RAM)."""
    from egovlm.atomic import atomic_path
    from egovlm.trt_support import import_tensorrt, streams_build

    trt = import_tensorrt()  # refuses TensorRT < 10.3 with the JetPack upgrade, before any work
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
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
    failed = f"TensorRT failed to build an engine from {onnx_path} (see the log above)"
    with atomic_path(engine_path) as tmp, tmp.open("wb") as out:
        if streams_build(trt):
            writer = _stream_writer(trt, out)
            if not builder.build_serialized_network_to_stream(network, config, writer) or writer.error:
                raise writer.error or RuntimeError(failed)
        else:
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise RuntimeError(failed)
            out.write(memoryview(serialized))
            del serialized  # IHostMemory, the plan's only host copy: freed before the file is published


def _stream_writer(trt: Any, out: Any) -> Any:
    """An ``IStreamWriter`` appending each chunk TensorRT hands over to ``out``. A failed write (a
    full disk) is kept and reported as a short write, not raised inside TensorRT's callback."""

    class FileWriter(trt.IStreamWriter):
        def __init__(self) -> None:
            trt.IStreamWriter.__init__(self)  # pybind11 trampolines need the explicit base call
            self.error: OSError | None = None

        def write(self, data: bytes) -> int:
            try:
                return int(out.write(data))
            except OSError as e:
                self.error = self.error or e
                return 0

    return FileWriter()


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
