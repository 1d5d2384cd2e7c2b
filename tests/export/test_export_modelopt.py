"""ModelOpt on CPU: fake-quantise the tiny decoder (int8 SmoothQuant, int4 AWQ, fp8), check the error
it introduces is bounded, export it, and check the graph carries real Q/DQ for TensorRT (INT4 weights
packed behind trt::DequantizeLinear, FP8 Q/DQ, standard INT8 Q/DQ that ONNX Runtime can even run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from egovlm.export import onnx_graphs as og


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, og.ModelDims]:
    from egovlm.models import load_model

    torch.set_num_threads(1)
    loaded = load_model(tiny_model_dir)
    og.prepare_for_export(loaded.model)
    return loaded, og.model_dims(loaded)


def _calibration(dims: og.ModelDims) -> list[tuple[torch.Tensor, ...]]:
    return [og.example_decoder_args(dims, torch.float32, seq=24, past=0) for _ in range(2)]


@pytest.mark.parametrize(
    ("precision", "ops", "initializer_type"),
    [
        ("int8", {"QuantizeLinear", "DequantizeLinear"}, None),
        ("int4", {"trt::DequantizeLinear"}, 22),  # onnx.TensorProto.INT4
        (
            "fp8",
            {"trt::TRT_FP8QuantizeLinear", "trt::TRT_FP8DequantizeLinear", "trt::DequantizeLinear"},
            None,
        ),
    ],
)
def test_fake_quant_then_qdq_export(
    tiny: tuple[Any, og.ModelDims],
    tmp_path: Path,
    precision: str,
    ops: set[str],
    initializer_type: int | None,
) -> None:
    import onnx

    from egovlm.export.quantize import export_in_half, modelopt_postprocess, modelopt_quantize, qdq_summary

    loaded, dims = tiny
    reference = og.DecoderGraph(loaded.model).eval()
    quantized = modelopt_quantize(
        og.DecoderGraph(copy.deepcopy(loaded.model)).eval(), precision, _calibration(dims)
    )
    args = og.example_decoder_args(dims, torch.float32, seq=7, past=5)
    with torch.no_grad():
        ref, fq = reference(*args)[0], quantized(*args)[0]
    cosine = torch.nn.functional.cosine_similarity(ref, fq).min().item()
    assert 0.95 < cosine < 1.0 and not torch.equal(ref, fq)  # changed, but bounded

    path = tmp_path / "decoder.onnx"
    og.export_decoder(export_in_half(quantized, precision), dims, path, torch.float16, precision)
    modelopt_postprocess(precision, path)
    found = set(qdq_summary(path))
    assert found & ops, found
    model = onnx.load(str(path))
    if initializer_type is not None:
        assert any(i.data_type == initializer_type for i in model.graph.initializer)
    kinds = {i.name: i.type.tensor_type.elem_type for i in model.graph.output}
    assert kinds["logits"] == onnx.TensorProto.FLOAT and kinds["present_key.0"] == onnx.TensorProto.FLOAT16
    if precision == "int8":  # standard Q/DQ: ONNX Runtime runs it, close to the fake-quant module
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feeds = {
            n: (a.half() if a.is_floating_point() else a).numpy() for n, a in zip(names, args, strict=True)
        }
        logits = session.run(["logits"], feeds)[0]
        assert np.allclose(logits, fq.numpy(), atol=0.05)
