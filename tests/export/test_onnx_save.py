"""``save_onnx`` and the byte count of saved graphs, the pieces every graph past 2 GB goes through.

The 2 GB threshold is lowered for the test so a few-KB graph takes the external-data path; the slow
``test_export_large.py`` runs the same code on real 2.5 GB graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from egovlm.export import onnx_graphs as og


def tiny_graph(ir_version: int = 9, weight: np.ndarray | None = None) -> onnx.ModelProto:
    w = np.arange(1024, dtype=np.float32).reshape(32, 32) if weight is None else weight
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", og.OPSET)], ir_version=ir_version)


def test_large_graph_goes_to_one_external_file_and_resaving_does_not_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(og, "EXTERNAL_DATA_BYTES", 1000)  # the 4 KB weight counts as "past 2 GB"
    path = tmp_path / "decoder.onnx"
    assert og.save_onnx(tiny_graph(), path) == ["decoder.onnx.data"]
    assert og.external_data_files(path) == ["decoder.onnx.data"]
    first = og.graph_file_bytes(path)
    assert first == path.stat().st_size + (tmp_path / "decoder.onnx.data").stat().st_size
    assert (tmp_path / "decoder.onnx.data").stat().st_size == 32 * 32 * 4

    # A second save of the same graph (ModelOpt's post-processing rewrites decoder.onnx in place): onnx
    # appends to an existing data file, so without the clean-up the file would double.
    loaded = onnx.load(str(path))
    assert og.save_onnx(loaded, path) == ["decoder.onnx.data"]
    assert og.graph_file_bytes(path) == first
    np.testing.assert_array_equal(
        numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0]), np.arange(1024).reshape(32, 32)
    )


def test_small_graph_is_one_file_and_a_stale_data_file_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "decoder.onnx"
    (tmp_path / "decoder.onnx.data").write_bytes(b"left over from a larger save")
    assert og.save_onnx(tiny_graph(), path) == []
    assert not (tmp_path / "decoder.onnx.data").exists()
    assert og.external_data_files(path) == []
    assert og.graph_file_bytes(path) == path.stat().st_size


def test_protobuf_refusing_to_size_a_message_means_external_data() -> None:
    from google.protobuf.message import EncodeError

    class Past2GB:
        def ByteSize(self) -> int:  # noqa: N802 (protobuf's name); what it does past 2 GB
            raise EncodeError("Failed to serialize proto")

    assert og._fits_protobuf(Past2GB()) is False
    assert og._fits_protobuf(tiny_graph()) is True


def test_ir_version_is_capped_for_the_device_runtimes_and_raised_for_int4(tmp_path: Path) -> None:
    path = tmp_path / "g.onnx"
    og.save_onnx(tiny_graph(ir_version=onnx.IR_VERSION), path)  # what onnx 1.23's helpers would write
    assert onnx.load(str(path)).ir_version == og.MAX_IR_VERSION

    int4 = tiny_graph(ir_version=9)
    packed = helper.make_tensor("w4", TensorProto.INT4, [4], [1, -2, 3, -4])
    int4.graph.initializer.append(packed)
    og.save_onnx(int4, path)
    assert onnx.load(str(path)).ir_version == og.INT4_IR_VERSION


def test_per_tensor_files_of_the_tracer_are_gathered_into_one(tmp_path: Path) -> None:
    """Past 2 GB the TorchScript exporter writes one file per tensor; they are moved one tensor at a
    time into ``<name>.data`` (the trace folder is deleted afterwards)."""
    trace = tmp_path / "trace"
    trace.mkdir()
    weight = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    model = tiny_graph(weight=weight)
    # ModelOpt's quantizer constants are Constant nodes whose value the tracer also writes out.
    value = numpy_helper.from_array(np.ones(300, np.float32), "b")
    model.graph.node.append(helper.make_node("Constant", [], ["b"], value=value))
    onnx.save_model(
        model,
        str(trace / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
        convert_attribute=True,
    )
    assert len(og.external_data_files(trace / "m.onnx")) == 2

    out = tmp_path / "decoder.onnx"
    proto = onnx.load(str(trace / "m.onnx"), load_external_data=False)
    assert og._gather_external_data(proto, trace, out) == ["decoder.onnx.data"]
    for f in list(trace.iterdir()):
        f.unlink()
    assert og.external_data_files(out) == ["decoder.onnx.data"]
    gathered = onnx.load(str(out))
    np.testing.assert_array_equal(numpy_helper.to_array(gathered.graph.initializer[0]), weight)
    np.testing.assert_array_equal(numpy_helper.to_array(gathered.graph.node[-1].attribute[0].t), np.ones(300))
