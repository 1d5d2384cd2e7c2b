"""The ``tensorrt`` backend without TensorRT or a GPU (the real engines await a device):

* construction refuses with everything that is missing and the fix (tensorrt module, CUDA device,
  engines not built -> `egovlm export build-engines DIR`), on a real orin-nano export;
* decoder profile selection and its limits (pure functions), on the profiles export plans;
* the backend's non-TensorRT half (``TrtGraphs``: profile choice per call, KV kept as device-side
  torch tensors, present/past ordering) driven by the shared cached-prefix code, with each engine
  replaced by an ONNX Runtime session over the same export's graph: answers equal the onnx
  backend's token for token;
* engines that do not match their export (another model size, precision or layer count; a
  truncated plan; a plan modified after its manifest was written; a plan the manifest does not
  hash) are refused at load, naming the engine file and the tensor, before any GPU work; a fake
  ``tensorrt`` module stands in for the TensorRT 10 engine-inspection API.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from egovlm.descriptor import describe
from egovlm.edge.backends import BackendError, GenerationParams, create_backend
from egovlm.edge.backends.onnx_backend import OnnxBackend
from egovlm.edge.backends.tensorrt_backend import (
    DECODE,
    PREFILL,
    ProfileRange,
    TensorRTBackend,
    TrtGraphs,
    choose_profile,
    manifest_profile_ranges,
    missing_requirements,
    profile_ranges,
)
from egovlm.edge.buffer import KeyframeBuffer
from egovlm.export.manifest import load_manifest
from egovlm.export.pipeline import ExportOptions, run_export
from egovlm.frames import resize_for_model


@pytest.fixture(scope="module")
def nano_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real TensorRT-target export (fp16 graphs, planned profiles, engines pending a device)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("exports") / "nano"
    result = run_export(
        ExportOptions(
            model=str(tiny_model_dir),
            out=out,
            target="orin-nano",
            precision="fp16",
            parity_prompts=1,
            frames_per_prompt=2,
            max_new_tokens=4,
            threads=1,
        )
    )
    assert result.passed
    return out


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def test_construction_names_everything_missing(nano_dir: Path) -> None:
    if _tensorrt_importable() or torch.cuda.is_available():
        pytest.skip("TensorRT or a GPU is present here")
    with pytest.raises(BackendError) as info:
        create_backend("tensorrt", nano_dir)
    message = str(info.value)
    assert message.startswith("tensorrt backend cannot start here: (1) the tensorrt Python module")
    assert "(2) no CUDA device (torch.cuda.is_available() is False)" in message
    assert "(3) engines not built" in message and "'pending-device'" in message
    assert f"run `egovlm export build-engines {nano_dir}` on the device" in message


def test_requirements_report_only_what_is_missing(
    nano_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = shutil.copytree(nano_dir, tmp_path / "nano")
    manifest = load_manifest(root, verify=False)
    assert len(missing_requirements(manifest, "ImportError: x", "no GPU")) == 3
    # Engines "built" but one file absent: still refused, naming it.
    built = dict(manifest.data["tensorrt"], status="built")
    built["engines"] = {n: f"engines/{n}.plan" for n in ("vision", "embed", "decoder")}
    (root / "engines").mkdir()
    for name in ("vision", "decoder"):
        (root / "engines" / f"{name}.plan").write_bytes(b"plan")
    monkeypatch.setitem(manifest.data, "tensorrt", built)
    [problem] = missing_requirements(manifest, None, None)
    assert "missing: embed" in problem and "build-engines" in problem
    (root / "engines" / "embed.plan").write_bytes(b"plan")
    assert missing_requirements(manifest, None, None) == []


def test_a_tensorrt_module_without_a_gpu_is_not_enough(
    nano_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendError) as info:
        TensorRTBackend.load(nano_dir)
    message = str(info.value)
    assert "tensorrt Python module" not in message
    assert "(1) no CUDA device" in message and "(2) engines not built" in message


def test_cpu_exports_and_model_folders_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendError, match="is a model folder"):
        create_backend("tensorrt", tiny_model_dir)


QWEN_3B = {
    "hidden_size": 2048,
    "num_layers": 36,
    "num_heads": 16,
    "num_kv_heads": 2,
    "head_dim": 128,
    "vocab_size": 151936,
    "tokens_per_keyframe": 192,
    "num_patches": 768,
    "patch_dim": 1176,
}


def test_profile_choice_follows_the_planned_profiles() -> None:
    from egovlm.export import tensorrt_build as tb
    from egovlm.export.targets import resolve

    nano, _ = resolve("orin-nano")
    plan = tb.plan_profiles(nano, QWEN_3B, weights_bytes=int(3.4 * 1024**3))
    ranges = manifest_profile_ranges(tb.decoder_profiles(QWEN_3B, plan))
    assert [(r.name, r.index) for r in ranges] == [(PREFILL, 0), (DECODE, 1)]
    prefix = plan.prefix_tokens
    assert choose_profile(prefix, 0, ranges).name == PREFILL  # [system + frames] at once
    assert choose_profile(40, prefix, ranges).name == PREFILL  # a question on the cached prefix
    assert choose_profile(1, prefix + 40, ranges).name == DECODE  # each answer token
    assert choose_profile(1, 0, ranges).name == DECODE
    with pytest.raises(BackendError, match=r"no decoder profile takes 1 new tokens after .*--keyframes"):
        choose_profile(1, plan.max_context, ranges)
    with pytest.raises(BackendError, match=rf"prefill: seq 1..{plan.max_prefill}"):
        choose_profile(plan.max_prefill + 1, 0, ranges)


def test_profile_ranges_from_engine_shapes() -> None:
    embeds = [[[1, 1, 8], [1, 64, 8], [1, 256, 8]], [[1, 1, 8], [1, 1, 8], [1, 1, 8]]]
    past = [[[1, 2, 0, 4], [1, 2, 0, 4], [1, 2, 768, 4]], [[1, 2, 0, 4], [1, 2, 512, 4], [1, 2, 1023, 4]]]
    ranges = profile_ranges([PREFILL, DECODE], embeds, past)
    assert ranges == [
        ProfileRange(PREFILL, 0, (1, 256), (0, 768)),
        ProfileRange(DECODE, 1, (1, 1), (0, 1023)),
    ]
    assert choose_profile(1, 900, ranges).name == DECODE
    assert choose_profile(2, 0, ranges).name == PREFILL
    with pytest.raises(BackendError, match="2 optimisation profiles, the manifest names 1"):
        profile_ranges([PREFILL], embeds, past)


_TORCH = {"tensor(float16)": torch.float16, "tensor(float)": torch.float32, "tensor(int64)": torch.int64}
_NUMPY = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(int64)": np.int64}


class SessionEngine:
    """Stands in for a TrtEngine: the same graph through ONNX Runtime, inputs taken as numpy or
    torch tensors, outputs returned as torch tensors (device tensors on a real device)."""

    def __init__(self, path: Path, profiles: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        io = [*self.session.get_inputs(), *self.session.get_outputs()]
        self.dtypes = {t.name: _TORCH[t.type] for t in io}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.profiles = profiles or {}
        self.calls: list[tuple[int, int, int]] = []  # (profile, seq, past)
        self.torch_kv_inputs = 0

    def profile_shapes(self, name: str) -> list[Any]:
        return [shapes[name] for shapes in self.profiles.values()]

    def run(self, feeds: dict[str, Any], profile: int = 0) -> dict[str, Any]:
        if "past_key.0" in feeds:
            self.calls.append((profile, feeds["inputs_embeds"].shape[1], feeds["past_key.0"].shape[2]))
            self.torch_kv_inputs += isinstance(feeds["past_key.1"], torch.Tensor)
        arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in feeds.items()}
        # Like TrtEngine._to_device: cast every input to the engine's own dtype.
        arrays = {i.name: arrays[i.name].astype(_NUMPY[i.type]) for i in self.session.get_inputs()}
        out = self.session.run(None, arrays)
        return {name: torch.from_numpy(np.asarray(v)) for name, v in zip(self.outputs, out, strict=True)}


def test_engine_half_answers_like_onnx_runtime(nano_dir: Path) -> None:
    from egovlm.export.ort_runner import VLMRunner

    manifest = load_manifest(nano_dir, verify=True)
    planned = manifest.data["tensorrt"]["profiles"]["decoder"]
    engines = {name: SessionEngine(manifest.graph_path(name)) for name in ("vision", "embed")}
    engines["decoder"] = SessionEngine(manifest.graph_path("decoder"), planned)
    graphs = TrtGraphs(engines, int(manifest.model["num_layers"]), list(planned))  # type: ignore[arg-type]
    assert graphs.kv_dtype == np.float16
    trt_like = TensorRTBackend(VLMRunner.with_backend(manifest, graphs), nano_dir)
    onnx = OnnxBackend.load(nano_dir, threads=1)

    buf = KeyframeBuffer(capacity=3)
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 256, (84, 112, 3), dtype=np.uint8)
        buf.add(1.0 + i, resize_for_model(img, trt_like.keyframe_size), describe(img))
    kfs = buf.snapshot().keyframes
    params = GenerationParams(max_new_tokens=6, return_scores=True)
    answers = []
    for backend in (trt_like, onnx):
        partial = backend.build_prefix(1, kfs[:2], [backend.encode_keyframe(k.id, k.image) for k in kfs[:2]])
        feats = [backend.encode_keyframe(k.id, k.image) for k in kfs]
        state = backend.build_prefix(2, kfs, feats, previous=partial)  # reuse slices device-side KV
        assert 0 < state.reused_tokens < state.n_tokens
        answers.append(backend.generate(state, "What did I pick up first?", None, params))
    mine, ref = answers
    assert mine.token_ids == ref.token_ids and len(mine.token_ids) == 6
    assert mine.scores is not None and ref.scores is not None
    np.testing.assert_allclose(np.stack(mine.scores), np.stack(ref.scores), atol=1e-3)
    decoder = engines["decoder"]
    profiles = [p for p, _, _ in decoder.calls]
    seqs = [s for _, s, _ in decoder.calls]
    # prefix, the two new keyframes, the question: prefill; each answer token after the first: decode
    assert profiles == [0, 0, 0] + [1] * 5 and seqs[3:] == [1] * 5
    assert decoder.torch_kv_inputs >= 6  # KV came back as the engine's own tensors, never via numpy


# --- engines that do not match their export: refused at load, by name ---------------------------------

_TRT_DTYPES = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int64": "INT64", "int32": "INT32"}


class _Member:
    """A pybind11 enum member as TensorRT's bindings expose them: compared by identity, named."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


class FakeEngine:
    """The ICudaEngine calls the I/O check makes (TensorRT 10: num_io_tensors, get_tensor_name,
    get_tensor_mode, get_tensor_shape with -1 for dynamic dimensions, get_tensor_dtype)."""

    def __init__(self, trt: Any, io: list[dict[str, Any]]) -> None:
        self.trt, self.io = trt, {t["name"]: t for t in io}
        self.num_io_tensors = len(io)
        self.names = [t["name"] for t in io]

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> Any:
        return getattr(self.trt.TensorIOMode, self.io[name]["mode"])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.io[name]["shape"])

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self.trt.DataType, self.io[name]["dtype"])

    def create_execution_context(self) -> Any:
        raise AssertionError("a mismatched engine must be refused before a context is made")


def fake_tensorrt() -> Any:
    """A ``tensorrt`` module whose "plans" are JSON lists of I/O tensors (anything else does not
    deserialise: ``deserialize_cuda_engine`` returns None, as TensorRT does for a bad plan)."""
    trt: Any = types.ModuleType("tensorrt")
    trt.__version__ = "10.0-fake"
    trt.DataType = types.SimpleNamespace(**{n: _Member(n) for n in (*_TRT_DTYPES.values(), "INT8", "BOOL")})
    trt.TensorIOMode = types.SimpleNamespace(INPUT=_Member("INPUT"), OUTPUT=_Member("OUTPUT"))
    trt.deserialized = []

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            trt.deserialized.append(data)
            try:
                return FakeEngine(trt, json.loads(data))
            except ValueError:
                return None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def plan_for(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """The I/O an engine built from ``graph`` reports: its names and roles, -1 for named dims."""
    return [
        {
            "name": t["name"],
            "mode": "INPUT" if role == "inputs" else "OUTPUT",
            "shape": [-1 if isinstance(d, str) else int(d) for d in t["shape"]],
            "dtype": _TRT_DTYPES[t["dtype"]],
        }
        for role in ("inputs", "outputs")
        for t in graph[role]
    ]


def _tensor(io: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(t for t in io if t["name"] == name)


def _wider_visual_tokens(io: list[dict[str, Any]]) -> None:
    _tensor(io, "visual_tokens")["shape"][-1] += 8  # built for another model size


def _flat_embeds(io: list[dict[str, Any]]) -> None:
    _tensor(io, "inputs_embeds")["shape"] = [-1, -1]


def _fp32_kv(io: list[dict[str, Any]]) -> None:
    _tensor(io, "past_key.0")["dtype"] = "FLOAT"  # built from the fp32 graphs


def _renamed_input(io: list[dict[str, Any]]) -> None:
    _tensor(io, "input_ids")["name"] = "ids"


def _output_as_input(io: list[dict[str, Any]]) -> None:
    _tensor(io, "logits")["mode"] = "INPUT"


def _one_layer_less(io: list[dict[str, Any]]) -> None:
    io[:] = [t for t in io if not t["name"].endswith(".1")]


WRONG_ENGINES = {
    "vision output wider": (
        "vision",
        _wider_visual_tokens,
        r"output visual_tokens has shape \[\d+, \d+\], expected \[\d+, \d+\]",
    ),
    "decoder input rank": (
        "decoder",
        _flat_embeds,
        r"input inputs_embeds has shape \[-1, -1\], expected \['batch', 'seq', \d+\]",
    ),
    "decoder kv dtype": ("decoder", _fp32_kv, r"input past_key.0 has dtype FLOAT, expected float16 \(HALF\)"),
    "embed input renamed": ("embed", _renamed_input, r"missing: input_ids; unexpected tensors: ids"),
    "decoder output as input": (
        "decoder",
        _output_as_input,
        r"tensor logits is an input, the manifest says output",
    ),
    "decoder layer missing": (
        "decoder",
        _one_layer_less,
        r"missing: past_key.1, past_value.1, present_key.1, present_value.1; unexpected tensors: none",
    ),
}


def test_engines_matching_the_export_pass_the_io_check(nano_dir: Path) -> None:
    from egovlm.edge.backends.tensorrt_backend import check_engine_io

    trt = fake_tensorrt()
    manifest = load_manifest(nano_dir, verify=False)
    for name in ("vision", "embed", "decoder"):
        graph = manifest.graph(name)
        check_engine_io(trt, FakeEngine(trt, plan_for(graph)), nano_dir / f"engines/{name}.plan", graph)


@pytest.mark.parametrize("case", list(WRONG_ENGINES))
def test_a_wrong_engine_is_named_with_the_tensor_and_both_sides(nano_dir: Path, case: str) -> None:
    from egovlm.edge.backends.tensorrt_backend import check_engine_io

    graph_name, damage, expected = WRONG_ENGINES[case]
    trt = fake_tensorrt()
    graph = load_manifest(nano_dir, verify=False).graph(graph_name)
    io = plan_for(graph)
    damage(io)
    path = nano_dir / "engines" / f"{graph_name}.plan"
    with pytest.raises(BackendError) as info:
        check_engine_io(trt, FakeEngine(trt, io), path, graph)
    message = str(info.value)
    assert message.startswith(f"tensorrt backend: engine {path}"), message
    assert re.search(expected, message), message
    assert f"egovlm export build-engines {nano_dir}" in message


def _built_export(nano_dir: Path, root: Path, plans: dict[str, bytes], listed: bool = True) -> Path:
    """A copy of the export as `build-engines` leaves it: engines/ written, manifest re-published."""
    from egovlm.export.manifest import MANIFEST, write_manifest

    shutil.copytree(nano_dir, root)
    (root / "engines").mkdir()
    for name, data in plans.items():
        (root / "engines" / f"{name}.plan").write_bytes(data)
    data = load_manifest(root, verify=False).data
    body = {k: v for k, v in data.items() if k not in {"format", "format_version", "created_utc", "files"}}
    body["tensorrt"] = {
        **data["tensorrt"],
        "status": "built",
        "engines": {n: f"engines/{n}.plan" for n in plans},
    }
    write_manifest(root, body)
    if not listed:
        published = json.loads((root / MANIFEST).read_text())
        published["files"] = {k: v for k, v in published["files"].items() if not k.startswith("engines/")}
        (root / MANIFEST).write_text(json.dumps(published))
    return root


@pytest.fixture
def on_a_device(monkeypatch: pytest.MonkeyPatch) -> Any:
    """TensorRT importable (the fake) and a CUDA device reported present."""
    import egovlm.edge.backends.tensorrt_backend as tb

    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tb, "_cuda_error", lambda: None)
    return trt


def _good_plans(nano_dir: Path) -> dict[str, bytes]:
    manifest = load_manifest(nano_dir, verify=False)
    return {n: json.dumps(plan_for(manifest.graph(n))).encode() for n in ("vision", "embed", "decoder")}


def test_backend_refuses_a_wrong_shape_engine_before_touching_the_gpu(
    nano_dir: Path, tmp_path: Path, on_a_device: Any
) -> None:
    plans = _good_plans(nano_dir)
    io = json.loads(plans["vision"])
    _wider_visual_tokens(io)
    plans["vision"] = json.dumps(io).encode()
    root = _built_export(nano_dir, tmp_path / "nano", plans)
    with pytest.raises(BackendError) as info:
        TensorRTBackend.load(root)  # FakeEngine.create_execution_context would fail the test
    message = str(info.value)
    assert f"engine {root / 'engines' / 'vision.plan'}: output visual_tokens has shape" in message, message


def test_a_truncated_engine_is_named(nano_dir: Path, tmp_path: Path, on_a_device: Any) -> None:
    plans = _good_plans(nano_dir)
    plans["vision"] = plans["vision"][: len(plans["vision"]) // 2]  # hashed as written: a cut-short build
    root = _built_export(nano_dir, tmp_path / "nano", plans)
    with pytest.raises(
        BackendError, match=rf"could not deserialise {root / 'engines' / 'vision.plan'} \(truncated"
    ):
        TensorRTBackend.load(root)


def test_a_modified_engine_fails_its_hash_before_it_is_deserialised(
    nano_dir: Path, tmp_path: Path, on_a_device: Any
) -> None:
    root = _built_export(nano_dir, tmp_path / "nano", _good_plans(nano_dir))
    plan = root / "engines" / "decoder.plan"
    plan.write_bytes(plan.read_bytes()[:-1] + b" ")  # same size, other bytes
    with pytest.raises(BackendError, match=rf"{plan}: sha256 differs from the manifest"):
        TensorRTBackend.load(root)
    assert on_a_device.deserialized == []


def test_engines_missing_from_the_manifests_file_table_are_refused(
    nano_dir: Path, tmp_path: Path, on_a_device: Any
) -> None:
    root = _built_export(nano_dir, tmp_path / "nano", _good_plans(nano_dir), listed=False)
    with pytest.raises(BackendError, match=r"does not list them under 'files' \(no sha256 to verify\)"):
        TensorRTBackend.load(root)
    assert on_a_device.deserialized == []
