"""``egovlm export``: checkpoint -> graphs -> quantisation -> parity -> (engines) -> manifest.

Everything is built in a hidden staging folder beside ``--out``. Only when parity passes is the
manifest written (last, atomically) and the staging folder renamed to ``--out``. A failed parity check
publishes only report.json/report.md in ``--out`` (no graphs, no manifest); an interrupted or crashed
export removes its staging folder, leaving ``--out`` untouched. So a folder with a manifest is always
a finished, checked export.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from egovlm.export import onnx_graphs as og
from egovlm.export.manifest import library_versions, write_manifest
from egovlm.export.ort_runner import OrtBackend, RunnerDims, VLMRunner
from egovlm.export.parity import (
    TorchGraphs,
    calibration_feeds,
    decoder_args,
    load_thresholds,
    measure,
    summary,
)
from egovlm.export.prompts import Prompt, dataset_prompts, generated_prompts
from egovlm.export.report import write_report
from egovlm.export.targets import ExportConfigError, Target, resolve

if TYPE_CHECKING:
    from egovlm.export.tensorrt_build import ExportFit

WORK = ".work"  # intermediates inside staging; removed before publishing


@dataclass
class ExportOptions:
    model: str
    out: Path
    target: str = "cpu"
    precision: str | None = None
    backend: str = "onnx"  # or "edgellm"
    parity_prompts: int = 4
    frames_per_prompt: int = 2
    max_new_tokens: int = 24
    calib_prompts: int = 8
    data: Path | None = None  # QA JSONL for calibration + parity prompts (else generated frames)
    eval_set: Path | None = None  # QA JSONL with answers: accuracy delta
    eval_max_new_tokens: int = 256  # answers think first: give them room
    thresholds: Path | None = None
    targets: Path | None = None
    edgellm_bin: Path | None = None
    seed: int = 0
    threads: int | None = None  # torch + ONNX Runtime intra-op threads (None: their defaults)
    # Keyframes the device keeps in its prompt and the longest answer: size the TensorRT profiles and the
    # fit check (default: the device profile configs/edge/<target>.yaml, else 8 keyframes, 256 tokens).
    keyframes: int | None = None
    answer_tokens: int | None = None


@dataclass
class ExportResult:
    out: Path
    passed: bool
    report: dict[str, Any]
    manifest: Path | None = None
    notes: list[str] = field(default_factory=list)


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new --out")


def run_export(opts: ExportOptions) -> ExportResult:
    """The whole export; see the module docstring for what ends up where."""
    target, precision = resolve(opts.target, opts.precision, opts.targets)
    thresholds = load_thresholds(precision, opts.thresholds)
    check_out(opts.out)
    if opts.threads:
        # On a shared or small machine, OpenMP's spinning threads fight over cores: 1-2 threads are
        # often much faster than the default there.
        torch.set_num_threads(opts.threads)
    if opts.backend not in {"onnx", "edgellm"}:
        raise ExportConfigError(f"unknown backend {opts.backend!r}; choose onnx or edgellm")
    fit = check_fit(opts, target, precision)  # from the checkpoint's headers: before any heavy work
    edgellm_steps = _edgellm_preflight(opts, target, precision)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{opts.out.name}.staging-", dir=opts.out.parent))
    try:
        return _export_in(staging, opts, target, precision, thresholds, edgellm_steps, fit)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_fit(opts: ExportOptions, target: Target, precision: str) -> ExportFit | None:
    """TensorRT targets: :func:`egovlm.export.tensorrt_build.check_export_fit` on the checkpoint's
    safetensors headers and config.json (weights as exported at ``precision``, KV and activations at
    the profiles' maximum, runtime reserve), raising :class:`ExportConfigError` with the numbers and
    the ``--keyframes`` that fit. None for ONNX Runtime targets (no device budget to plan)."""
    if not target.uses_tensorrt:
        return None
    from egovlm.export.tensorrt_build import check_export_fit

    return check_export_fit(target, _model_dir(opts.model), precision, opts.keyframes, opts.answer_tokens)


def _model_dir(model: str) -> Path:
    """A local model folder, or a hub id's snapshot in the local Hugging Face cache (never downloads)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as e:  # not a repo id, or not in the cache: the same refusal load_model would give
        raise ExportConfigError(
            f"model {model!r}: not a local folder and not in the local Hugging Face cache "
            f"({type(e).__name__})"
        ) from None


def _edgellm_preflight(opts: ExportOptions, target: Target, precision: str) -> list[Any]:
    if opts.backend != "edgellm":
        return []
    from egovlm.export import edgellm

    if not target.uses_tensorrt:
        raise ExportConfigError(
            "--backend edgellm needs a TensorRT target (orin-nano, orin-nx, agx-orin, thor)"
        )
    steps = edgellm.host_steps(
        Path(opts.model).expanduser().resolve(), opts.out / "edgellm", precision, opts.edgellm_bin
    )
    edgellm.check_tools(steps, opts.edgellm_bin)  # fail fast, before the long export
    return steps


def _prompts(opts: ExportOptions, size: tuple[int, int], n: int, seed: int) -> list[Prompt]:
    if opts.data is not None:
        return dataset_prompts(opts.data, n, size, opts.frames_per_prompt)
    return generated_prompts(n, size, opts.frames_per_prompt, seed=seed)


def _export_in(
    staging: Path,
    opts: ExportOptions,
    target: Target,
    precision: str,
    thresholds: dict[str, float],
    edgellm_steps: list[Any],
    fit: ExportFit | None = None,
) -> ExportResult:
    from egovlm.contract import CONTRACT_VERSION
    from egovlm.models import load_model

    start = time.perf_counter()
    loaded = load_model(opts.model)
    og.prepare_for_export(loaded.model)
    dims = og.model_dims(loaded)
    reference = VLMRunner(
        _torch_graphs(loaded.model, dims, torch.float32),
        RunnerDims.from_model_block(dims.to_json()),
        loaded.processor,
    )
    work = staging / WORK
    work.mkdir()
    graphs, candidate, methods, quant_info, fp32_decoder_bytes = _build_graphs(
        staging, work, opts, target, precision, loaded, dims, reference
    )
    prompts = _prompts(opts, loaded.keyframe_size, opts.parity_prompts, seed=opts.seed)
    eval_prompts = _prompts_eval(opts, loaded.keyframe_size)
    result = measure(
        loaded.model,
        reference,
        candidate,
        prompts,
        opts.max_new_tokens,
        eval_prompts,
        opts.eval_max_new_tokens,
    )
    parity = summary(result, thresholds, methods)
    report: dict[str, Any] = {
        "target": target.name,
        "runtime": target.runtime,
        "precision": precision,
        "model_source": str(opts.model),
        "contract_version": CONTRACT_VERSION,
        "graphs": {name: {**g.to_json(), "bytes": _graph_bytes(staging, g)} for name, g in graphs.items()},
        "sizes": {
            "decoder_bytes": _graph_bytes(staging, graphs["decoder"]),
            "decoder_fp32_bytes": fp32_decoder_bytes,
        },
        "quantization": quant_info,
        "parity": parity,
        "model": dims.to_json(),
    }
    shutil.rmtree(work)
    notes: list[str] = []
    if target.uses_tensorrt:
        report["tensorrt"] = _tensorrt_block(staging, opts, target, dims, graphs, notes, fit)
    if edgellm_steps:
        report["edgellm"] = _run_edgellm(staging, opts, edgellm_steps, report.get("tensorrt"), dims, notes)
    report["seconds"] = time.perf_counter() - start
    write_report(staging, report)
    if not parity["passed"]:
        _publish_report_only(staging, opts.out)
        return ExportResult(opts.out, False, report, None, notes)
    loaded.processor.save_pretrained(str(staging / "processor"))
    loaded.model.config.save_pretrained(str(staging / "processor"))
    manifest = write_manifest(staging, _manifest_body(report, dims, graphs, loaded, opts))
    _publish(staging, opts.out)
    return ExportResult(opts.out, True, report, opts.out / manifest.name, notes)


def _prompts_eval(opts: ExportOptions, size: tuple[int, int]) -> list[Prompt]:
    if opts.eval_set is None:
        return []
    return dataset_prompts(opts.eval_set, 10**9, size, opts.frames_per_prompt)


def _torch_graphs(model: Any, dims: og.ModelDims, dtype: torch.dtype, decoder: Any = None) -> TorchGraphs:
    return TorchGraphs(
        og.VisionGraph(model, dims.image_grid_thw).eval(),
        og.EmbedGraph(model).eval(),
        decoder if decoder is not None else og.DecoderGraph(model).eval(),
        dtype,
    )


def _graph_bytes(root: Path, graph: og.GraphSpec) -> int:
    return sum((root / f).stat().st_size for f in [graph.file, *graph.external_data])


def _build_graphs(
    staging: Path,
    work: Path,
    opts: ExportOptions,
    target: Target,
    precision: str,
    loaded: Any,
    dims: og.ModelDims,
    reference: VLMRunner,
) -> tuple[dict[str, og.GraphSpec], VLMRunner, dict[str, str], dict[str, Any], int | None]:
    if target.uses_tensorrt:
        return _build_tensorrt_graphs(staging, work, opts, precision, loaded, dims, reference)
    return _build_ort_graphs(staging, work, precision, loaded, dims, reference, opts.threads)


def _build_ort_graphs(
    staging: Path,
    work: Path,
    precision: str,
    loaded: Any,
    dims: og.ModelDims,
    reference: VLMRunner,
    threads: int | None = None,
) -> tuple[dict[str, og.GraphSpec], VLMRunner, dict[str, str], dict[str, Any], int | None]:
    from egovlm.export.quantize import ORT_INT4_BLOCK, ort_quantize, qdq_summary

    model, f32 = loaded.model, torch.float32
    graphs = {
        og.VISION: og.export_vision(model, dims, staging / "vision.onnx", f32, "fp32"),
        og.EMBED: og.export_embed(model, dims, staging / "embed.onnx", f32, "fp32"),
    }
    quant: dict[str, Any] = {}
    fp32_bytes = None
    if precision == "fp32":
        graphs[og.DECODER] = og.export_decoder(
            og.DecoderGraph(model).eval(), dims, staging / "decoder.onnx", f32, "fp32"
        )
    else:
        plain = og.export_decoder(og.DecoderGraph(model).eval(), dims, work / "decoder.onnx", f32, "fp32")
        fp32_bytes = _graph_bytes(work, plain)
        t0 = time.perf_counter()
        ort_quantize(precision, work / "decoder.onnx", staging / "decoder.onnx")
        seconds = plain.export_seconds + time.perf_counter() - t0
        graphs[og.DECODER] = og.GraphSpec(
            og.DECODER,
            "decoder.onnx",
            plain.inputs,
            plain.outputs,
            precision,
            og.external_data_files(staging / "decoder.onnx"),
            seconds,
        )
        method = (
            "quantize_dynamic (MatMul, const weights, per-channel int8)"
            if precision == "int8"
            else (f"MatMulNBits 4-bit symmetric, block {ORT_INT4_BLOCK}")
        )
        quant = {
            "tool": "onnxruntime.quantization",
            "method": method,
            "ops": qdq_summary(staging / "decoder.onnx"),
        }
    backend = OrtBackend({name: staging / g.file for name, g in graphs.items()}, threads=threads)
    methods = {name: "onnxruntime CPU (the exported graph)" for name in graphs}
    return graphs, VLMRunner(backend, reference.dims, reference.processor), methods, quant, fp32_bytes


def _build_tensorrt_graphs(
    staging: Path,
    work: Path,
    opts: ExportOptions,
    precision: str,
    loaded: Any,
    dims: og.ModelDims,
    reference: VLMRunner,
) -> tuple[dict[str, og.GraphSpec], VLMRunner, dict[str, str], dict[str, Any], int | None]:
    """FP16 vision + embed; decoder FP16 or ModelOpt Q/DQ (calibrated on prompts' real activations)."""
    f16 = torch.float16
    model16 = copy.deepcopy(loaded.model).half().eval()
    graphs = {
        og.VISION: og.export_vision(model16, dims, staging / "vision.onnx", f16, "fp16"),
        og.EMBED: og.export_embed(model16, dims, staging / "embed.onnx", f16, "fp16"),
    }
    quant: dict[str, Any] = {}
    fp32_bytes = None
    decoder: torch.nn.Module
    if precision == "fp16":
        decoder = og.DecoderGraph(model16).eval()
        graphs[og.DECODER] = og.export_decoder(decoder, dims, staging / "decoder.onnx", f16, "fp16")
    else:
        del model16  # the quantised decoder is made from the fp32 model; the fp16 copy is 7 GB at 3B
        decoder, quant, fp32_bytes, spec = _modelopt_decoder(
            staging, opts, precision, loaded, dims, reference
        )
        graphs[og.DECODER] = spec
    methods = {og.VISION: "onnxruntime CPU (fp16 graph)", og.EMBED: "onnxruntime CPU (fp16 graph)"}
    backend, methods[og.DECODER] = _tensorrt_candidate(staging, graphs, decoder, opts.threads)
    return graphs, VLMRunner(backend, reference.dims, reference.processor), methods, quant, fp32_bytes


def _modelopt_decoder(
    staging: Path,
    opts: ExportOptions,
    precision: str,
    loaded: Any,
    dims: og.ModelDims,
    reference: VLMRunner,
) -> tuple[torch.nn.Module, dict[str, Any], int, og.GraphSpec]:
    from egovlm.export.quantize import (
        MODELOPT_CONFIGS,
        export_in_half,
        modelopt_postprocess,
        modelopt_quantize,
        qdq_summary,
    )

    calib_prompts = _prompts(opts, loaded.keyframe_size, opts.calib_prompts, seed=opts.seed + 1000)
    # AWQ searches scales over every batch several times: prefill activations suffice for it; the
    # static-activation recipes (int8 SmoothQuant, fp8) also see a few single-token decode steps.
    feeds = calibration_feeds(reference, calib_prompts, decode_steps=0 if precision == "int4" else 2)
    calibration = [decoder_args(f, torch.float32) for f in feeds]
    # The fp32 decoder's bytes (the report's compression ratio) from the parameters' shapes, as the fit
    # check counts them: tracing a whole fp32 decoder only to measure it cost ~12 GB of disk and the
    # tracer's memory at 3B size.
    from egovlm.export import fit

    shapes = [fit.TensorShape(n, tuple(t.shape)) for n, t in loaded.model.state_dict().items()]
    fp32_bytes = fit.weight_bytes(shapes, "onnxruntime", "fp32").graphs["decoder"].file
    t0 = time.perf_counter()
    decoder = og.DecoderGraph(copy.deepcopy(loaded.model)).eval()
    decoder = modelopt_quantize(decoder, precision, calibration)
    calib_seconds = time.perf_counter() - t0
    decoder = export_in_half(decoder, precision)
    spec = og.export_decoder(decoder, dims, staging / "decoder.onnx", torch.float16, precision)
    traced_bytes = _graph_bytes(staging, spec)  # what ModelOpt's ONNX post-processing reads (fp16 + Q/DQ)
    spec.external_data = modelopt_postprocess(precision, staging / "decoder.onnx")
    spec.export_seconds += calib_seconds
    quant = {
        "tool": "nvidia-modelopt",
        "recipe": MODELOPT_CONFIGS[precision],
        "calibration": {
            "prompts": len(calib_prompts),
            "decoder_calls": len(calibration),
            "source": str(opts.data) if opts.data else "generated frames (egovlm.export.prompts)",
        },
        "ops": qdq_summary(staging / "decoder.onnx"),
        "traced_bytes": traced_bytes,
    }
    return decoder, quant, fp32_bytes, spec


def _tensorrt_candidate(
    staging: Path, graphs: dict[str, og.GraphSpec], decoder: torch.nn.Module, threads: int | None = None
) -> tuple[Any, str]:
    """ORT over the exported graphs if it can load the decoder; else the exported fake-quant module."""
    paths = {name: staging / g.file for name, g in graphs.items()}
    try:
        return OrtBackend(paths, threads=threads), "onnxruntime CPU (the exported graph)"
    except Exception as e:  # ORT raises its own Fail/InvalidGraph types for trt:: custom ops
        reason = str(e).splitlines()[0][:160]
        backend = _SplitBackend(paths, decoder)
        return backend, (
            f"PyTorch ModelOpt fake-quant module that was exported (ONNX Runtime cannot run "
            f"this graph: {reason}); engine parity awaits a device"
        )


class _SplitBackend:
    """Vision and embed through ONNX Runtime (the exported fp16 graphs), decoder through PyTorch."""

    def __init__(self, paths: dict[str, Path], decoder: torch.nn.Module) -> None:
        import onnxruntime as ort

        self.vision_session = ort.InferenceSession(str(paths[og.VISION]), providers=["CPUExecutionProvider"])
        self.embed_session = ort.InferenceSession(str(paths[og.EMBED]), providers=["CPUExecutionProvider"])
        self.torch = TorchGraphs(torch.nn.Identity(), torch.nn.Identity(), decoder, torch.float16)
        self.kv_dtype = self.torch.kv_dtype
        self.embed_dtype = self.torch.embed_dtype

    def vision(self, pixel_values: Any) -> Any:
        import numpy as np

        return self.vision_session.run(None, {"pixel_values": pixel_values.astype(np.float16)})[0]

    def embed(self, input_ids: Any) -> Any:
        return self.embed_session.run(None, {"input_ids": input_ids})[0]

    def decoder(self, feeds: dict[str, Any]) -> Any:
        return self.torch.decoder(feeds)


def _tensorrt_block(
    staging: Path,
    opts: ExportOptions,
    target: Target,
    dims: og.ModelDims,
    graphs: dict[str, og.GraphSpec],
    notes: list[str],
    fit: ExportFit | None,
) -> dict[str, Any]:
    from egovlm.export import tensorrt_build as tb

    model = dims.to_json()
    # The fit check again, on the exported files' real bytes (same workload, budget and accounting).
    real = {name: _graph_bytes(staging, g) for name, g in graphs.items()}
    assert fit is not None, "run_export checks the fit of every TensorRT target before exporting"
    plan = fit.with_file_bytes(real, dims.tokens_per_keyframe)
    usable, reason = tb.tensorrt_status()
    block: dict[str, Any] = {
        "status": "pending-device",
        "reason": reason,
        "build_command": tb.build_command(opts.out),
        "tensorrt_major": target.tensorrt_major,
        "compute_capability": target.compute_capability,
        "strongly_typed": True,
        "plan": plan.to_json(),
        "profiles": tb.all_profiles(model, plan),
        "engines": {},
    }
    if usable:
        notes.append(f"{reason}: engines are built by `{block['build_command']}` after publishing")
    else:
        notes.append(f"TensorRT engines NOT built ({reason}); on the device run: {block['build_command']}")
    return block


def _run_edgellm(
    staging: Path,
    opts: ExportOptions,
    steps: list[Any],
    trt: dict[str, Any] | None,
    dims: og.ModelDims,
    notes: list[str],
) -> dict[str, Any]:
    from egovlm.export import edgellm

    plan = (trt or {}).get("plan", {})
    device = edgellm.device_steps(
        opts.out / "edgellm",
        int(plan.get("max_prefill", 1024)),
        int(plan.get("max_context", 4096)),
        dims.tokens_per_keyframe,
    )
    # Run in staging; the steps name paths under --out, so point them at staging's copy of that layout.
    local = [edgellm.Step(s.name, [a.replace(str(opts.out), str(staging)) for a in s.argv]) for s in steps]
    edgellm.run_steps(local, staging / "edgellm" / "logs")
    notes.append("Edge-LLM ONNX written to edgellm/onnx; build its engines on the device (see report.md)")
    return {"host_commands": [s.shell() for s in steps], "device_commands": [s.shell() for s in device]}


def _manifest_body(
    report: dict[str, Any],
    dims: og.ModelDims,
    graphs: dict[str, og.GraphSpec],
    loaded: Any,
    opts: ExportOptions,
) -> dict[str, Any]:
    return {
        "target": report["target"],
        "runtime": report["runtime"],
        "precision": report["precision"],
        "contract_version": report["contract_version"],
        "keyframe_size": list(dims.keyframe_size),
        "model": {**dims.to_json(), "source": str(opts.model)},
        "versions": library_versions(),
        "graphs": {name: g.to_json() for name, g in graphs.items()},
        "processor_dir": "processor",
        "parity": {
            "report": "report.json",
            "passed": report["parity"]["passed"],
            "metrics": report["parity"]["metrics"],
            "methods": report["parity"]["methods"],
        },
        "tensorrt": report.get("tensorrt"),
        "edgellm": report.get("edgellm"),
    }


def _publish(staging: Path, out: Path) -> None:
    # mkdtemp/mkstemp create owner-only modes; an export is meant to be shared and copied to devices.
    for path in [staging, *staging.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if out.exists():
        out.rmdir()  # check_out guaranteed it is empty
    staging.rename(out)


def _publish_report_only(staging: Path, out: Path) -> None:
    from egovlm.export.report import REPORT_JSON, REPORT_MD

    out.mkdir(parents=True, exist_ok=True)
    for name in (REPORT_JSON, REPORT_MD):
        shutil.copyfile(staging / name, out / name)
