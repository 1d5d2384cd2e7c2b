"""Quantisation of the decoder graph, one function per (runtime, precision).

ONNX Runtime targets (ONNX -> ONNX, weights only, no calibration needed):
- int8: ``quantize_dynamic`` on MatMul with constant weights (``MatMulConstBOnly``): int8 weights per
  output channel, activations quantised on the fly per call. Attention's activation x activation
  MatMuls stay float.
- int4: ``MatMulNBitsQuantizer``: symmetric 4-bit blocks of 32 along K (ORT's ``MatMulNBits`` kernel),
  fp32 compute.

TensorRT targets (PyTorch -> ONNX with explicit Q/DQ, calibrated): NVIDIA ModelOpt fake-quantises the
:class:`~egovlm.export.onnx_graphs.DecoderGraph`'s Linear layers (``mtq.quantize`` with a calibration
loop over real prefill/decode inputs), the quantised module is traced in FP16 by the same exporter as
every other graph, and ModelOpt's ONNX exporters turn the result into what a strongly-typed TensorRT
network consumes: int8 -> QuantizeLinear/DequantizeLinear (W8A8 SmoothQuant), int4 -> packed INT4
weights behind ``trt::DequantizeLinear`` (W4A16 AWQ, block 128), fp8 -> ``trt`` FP8 Q/DQ (Thor). The
fake-quant module runs on CPU, which is how parity is measured here for graphs ONNX Runtime cannot run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ORT_INT4_BLOCK = 32
# ModelOpt recipes per precision (names in modelopt.torch.quantization).
MODELOPT_CONFIGS = {"int8": "INT8_SMOOTHQUANT_CFG", "int4": "INT4_AWQ_CFG", "fp8": "FP8_DEFAULT_CFG"}


class QuantizationError(RuntimeError):
    """A quantiser failed or produced an unusable graph; the message names the graph and step."""


def ort_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 weight quantisation of the MatMuls with constant weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
        use_external_data_format=_needs_external(src),
    )


def ort_int4(src: Path, dst: Path, block_size: int = ORT_INT4_BLOCK) -> None:
    """4-bit weight-only quantisation (MatMulNBits), symmetric blocks of ``block_size``. The quantiser
    works on the in-memory proto (loaded with its external data) and never serialises it whole; the
    result is written with external data when the source needed it."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src), load_external_data=True)
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=_needs_external(src))


def _needs_external(path: Path) -> bool:
    """Is the graph at ``path`` (with its ``<name>.data``, if any) past the external-data threshold?"""
    from egovlm.export.onnx_graphs import EXTERNAL_DATA_BYTES, graph_file_bytes

    return graph_file_bytes(path) >= EXTERNAL_DATA_BYTES


def ort_quantize(precision: str, src: Path, dst: Path) -> None:
    if precision == "int8":
        ort_int8(src, dst)
    elif precision == "int4":
        ort_int4(src, dst)
    else:
        raise QuantizationError(f"no ONNX Runtime quantiser for precision {precision!r}")
    if not dst.is_file():
        raise QuantizationError(f"{precision} quantiser wrote no {dst}")


def modelopt_config(precision: str) -> dict[str, Any]:
    """A deep copy of ModelOpt's recipe for ``precision`` (so callers may tweak it safely)."""
    if precision not in MODELOPT_CONFIGS:
        raise QuantizationError(
            f"no ModelOpt recipe for precision {precision!r}; have {sorted(MODELOPT_CONFIGS)}"
        )
    import modelopt.torch.quantization as mtq

    return copy.deepcopy(getattr(mtq, MODELOPT_CONFIGS[precision]))


def modelopt_quantize(
    module: torch.nn.Module, precision: str, calibration: Sequence[tuple[torch.Tensor, ...]]
) -> torch.nn.Module:
    """Fake-quantise ``module`` in place with ModelOpt, calibrating on ``calibration`` (positional
    argument tuples for the module's forward). Runs on CPU."""
    import modelopt.torch.quantization as mtq

    if not calibration:
        raise QuantizationError("ModelOpt calibration needs at least one input batch")

    def forward_loop(model: torch.nn.Module) -> None:
        with torch.no_grad():
            for args in calibration:
                model(*args)

    return mtq.quantize(module, modelopt_config(precision), forward_loop)


def export_in_half(module: torch.nn.Module, precision: str) -> torch.nn.Module:
    """fp16 weights and, for int8/fp8, fp16 Q/DQ: ModelOpt's quantizers default to fp32 Q/DQ ("Float"),
    which a strongly-typed TensorRT network would honour with fp32 islands around every Linear. int4
    keeps the default: ModelOpt's INT4 exporter rewrites exactly that fp32 pattern into fp16 DQ itself."""
    module = module.half().eval()
    if precision == "int4":
        return module
    for sub in module.modules():
        if hasattr(sub, "_trt_high_precision_dtype"):
            sub.trt_high_precision_dtype = "Half"
    return module


def modelopt_postprocess(precision: str, path: Path) -> list[str]:
    """Turn the traced fake-quant graph into deployable Q/DQ (packed INT4 weights, FP8/INT8 Q/DQ).
    Returns the external-data files written beside ``path`` (usually none)."""
    import onnx
    from modelopt.onnx.export import FP8QuantExporter, INT4QuantExporter, INT8QuantExporter

    exporters: dict[str, Callable[[Any], Any]] = {
        "int8": INT8QuantExporter.process_model,
        "int4": INT4QuantExporter.process_model,
        "fp8": FP8QuantExporter.process_model,
    }
    # The exporters locate weight shapes through value_info, which the tracer does not write. Shape
    # inference by path: a 3B decoder in fp16 (~6 GB) is past protobuf's 2 GB limit, where the
    # in-memory ``infer_shapes`` fails. The inferred copy sits beside the graph so its external-data
    # references resolve; the exporters then need the weights in memory (they rewrite them).
    inferred = path.with_name(f".{path.stem}.inferred.onnx")
    try:
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
        model = onnx.load(str(inferred), load_external_data=True)
    finally:
        inferred.unlink(missing_ok=True)
    try:
        model = exporters[precision](model)
    except Exception as e:  # ModelOpt raises bare asserts/ValueErrors on unexpected patterns
        raise QuantizationError(
            f"ModelOpt {precision} ONNX post-processing of {path.name} failed: {e}"
        ) from e
    from egovlm.export.onnx_graphs import save_onnx

    return save_onnx(model, path)


def qdq_summary(path: Path) -> dict[str, int]:
    """Counts of quantisation ops in a graph (for the report: proves the Q/DQ nodes are there)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if "quant" in node.op_type.lower() or node.op_type in {"MatMulNBits", "MatMulInteger"}:
            key = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            counts[key] = counts.get(key, 0) + 1
    return counts
