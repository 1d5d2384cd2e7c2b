"""The ``tensorrt`` backend without TensorRT or a GPU (the real engines await a device):

* construction refuses with everything that is missing and the fix (a supported tensorrt module,
  usable CUDA, engines not built -> `egovlm export build-engines DIR`), on a real orin-nano export;
  TensorRT 8.6 (JetPack 6.0) is refused with the JetPack upgrade;
* decoder profile selection and its limits (pure functions), on the profiles export plans;
* :class:`DeviceArray` (the cuda-python device tensor) over a host-memory stand-in with CUDA's copy
  semantics: uploads, downloads, the 2-D copy that slices the leading KV positions, frees;
* the whole engine half (``TrtEngine`` + ``TrtGraphs`` + ``TensorRTBackend._open``) against a fake
  ``tensorrt`` module whose engines run the export's own graphs through ONNX Runtime, reading and
  writing the addresses bound with ``set_tensor_address`` and checking every input shape against
  the active optimisation profile: answers equal the onnx backend's token for token, the KV of one
  call is bound as the next call's ``past_*`` at the same device address (never via the host), and
  plans are loaded through ``IStreamReaderV2`` (TensorRT 10.9+) or ``mmap`` (10.3), never as bytes;
* engines that do not match their export (another model size, precision or layer count; a
  truncated plan; a plan modified after its manifest was written; a plan the manifest does not
  hash) are refused at load, naming the engine file and the tensor, before any GPU work;
* the CUDA calls the backend makes exist in the installed cuda-python, and a CUDA error (here: no
  driver) becomes a BackendError naming the call and the CUDA error;
* ONNX Runtime's TensorRT provider gets one optimisation profile per input of all three graphs in
  the string format ONNX Runtime parses (parsed back here as its ParseProfileShapes does), spanning
  every planned profile (ONNX Runtime runs only profile 0), engine and timing caches in the user's
  cache folder under the manifest's hash; exports without profiles and int4/fp8 ``trt::`` Q/DQ graphs
  are refused with what to run instead.
"""

from __future__ import annotations

import ast
import json
import mmap
import re
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import egovlm.edge.backends.tensorrt_backend as tb
from egovlm.descriptor import describe
from egovlm.edge.backends import BackendError, GenerationParams, create_backend
from egovlm.edge.backends.onnx_backend import (
    CPU,
    CUDA,
    TENSORRT,
    OnnxBackend,
    merged_profile,
    ort_tensorrt_cache_dir,
    select_providers,
    tensorrt_provider_options,
    wants_tensorrt,
)
from egovlm.edge.backends.tensorrt_backend import (
    DECODE,
    PREFILL,
    DeviceArray,
    ProfileRange,
    TensorRTBackend,
    choose_profile,
    device_index,
    manifest_profile_ranges,
    missing_requirements,
    profile_ranges,
)
from egovlm.edge.buffer import KeyframeBuffer
from egovlm.export.manifest import load_manifest
from egovlm.frames import resize_for_model
from tests.export.dims import QWEN_3B


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def test_construction_names_everything_missing(nano_dir: Path) -> None:
    if _tensorrt_importable():
        pytest.skip("TensorRT is present here")
    with pytest.raises(BackendError) as info:
        create_backend("tensorrt", nano_dir)
    message = str(info.value)
    assert message.startswith("tensorrt backend cannot start here: (1) the tensorrt Python module")
    assert "--system-site-packages" in message  # JetPack's bindings, not a pip stub
    # (2): no cuda-python (device venv) or no driver (here: cuda-python comes with torch)
    assert re.search(
        r"\(2\) CUDA is not usable here \((cuda-python is not installed|CUDA reports \w+)", message
    )
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


def _version_only(version: str) -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__version__ = version  # type: ignore[attr-defined]
    return module


def test_a_tensorrt_module_without_cuda_is_not_enough(
    nano_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _version_only("10.3.0"))
    monkeypatch.setattr(tb, "_cuda_error", lambda: "CUDA reports cudaErrorNoDevice: no CUDA-capable device")
    with pytest.raises(BackendError) as info:
        TensorRTBackend.load(nano_dir)
    message = str(info.value)
    assert "tensorrt Python module" not in message and "TensorRT 10.3.0" not in message
    assert "(1) CUDA is not usable here (CUDA reports cudaErrorNoDevice" in message
    assert "(2) engines not built" in message


def test_jetpack_6_0s_tensorrt_is_refused_with_the_upgrade(
    nano_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _version_only("8.6.2"))
    monkeypatch.setattr(tb, "_cuda_error", lambda: None)
    with pytest.raises(BackendError) as info:
        TensorRTBackend.load(nano_dir)
    message = str(info.value)
    assert "(1) TensorRT 8.6.2 is older than the supported 10.3 (JetPack 6.0 ships 8.6)" in message
    assert "flash JetPack 6.1 or newer" in message


def test_cpu_exports_and_model_folders_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendError, match="is a model folder"):
        create_backend("tensorrt", tiny_model_dir)


def test_device_names() -> None:
    assert device_index("cuda") == 0 and device_index("cuda:1") == 1
    for bad in ("cpu", "cuda:x", "tensorrt:0"):
        with pytest.raises(BackendError, match="expected cuda or cuda:N"):
            device_index(bad)


def test_profile_choice_follows_the_planned_profiles() -> None:
    from egovlm.export import fit
    from egovlm.export import tensorrt_build as tb
    from egovlm.export.targets import resolve

    nano, precision = resolve("orin-nano")
    dims = fit.KNOWN_MODELS["qwen2.5-vl-3b"]
    work = tb.export_workload(nano, dims, (448, 336))
    weights = fit.weight_bytes(dims.tensors(), "tensorrt", precision)
    plan = tb.plan_profiles(nano, dims, weights, work, (448, 336))
    ranges = manifest_profile_ranges(tb.decoder_profiles(QWEN_3B, plan))
    assert [(r.name, r.index) for r in ranges] == [(PREFILL, 0), (DECODE, 1)]
    prefix, chunk = plan.prefix_tokens, plan.max_chunk
    assert chunk < prefix  # [system + frames] is prefilled in several chunks
    assert choose_profile(chunk, 0, ranges).name == PREFILL  # the first chunk of a prefix
    assert choose_profile(chunk, prefix - chunk, ranges).name == PREFILL  # its last
    assert choose_profile(40, prefix, ranges).name == PREFILL  # a question on the cached prefix
    assert choose_profile(1, prefix + 40, ranges).name == DECODE  # each answer token
    assert choose_profile(1, 0, ranges).name == DECODE
    with pytest.raises(BackendError, match=r"no decoder profile takes 1 new tokens after .*--keyframes"):
        choose_profile(1, plan.max_context, ranges)
    with pytest.raises(BackendError, match=rf"prefill: seq 1..{chunk}"):
        choose_profile(chunk + 1, 0, ranges)


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


# --- device memory: a host stand-in with CUDA's semantics ---------------------------------------------


class HostMemory:
    """``DeviceMemory`` over host bytearrays. A "pointer" is (block id << 32) + byte offset, so the
    pointer arithmetic of a 2-D copy (row r at base + r x pitch) is checked against block bounds,
    like device memory would fault on it."""

    handle = 1234

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.next_block = 1
        self.copies_2d = 0
        self.uploads = 0

    def activate(self) -> None:
        pass

    def alloc(self, nbytes: int) -> int:
        assert nbytes > 0, "CUDA allocations here are never empty (empty arrays use a placeholder)"
        block, self.next_block = self.next_block, self.next_block + 1
        self.blocks[block] = bytearray(nbytes)
        return block << 32

    def free(self, ptr: int) -> None:
        assert ptr & 0xFFFFFFFF == 0, "free takes the pointer alloc returned"
        del self.blocks[ptr >> 32]

    def view(self, ptr: int, nbytes: int) -> memoryview:
        block, offset = self.blocks[ptr >> 32], ptr & 0xFFFFFFFF
        assert offset + nbytes <= len(block), "access past the end of an allocation"
        return memoryview(block)[offset : offset + nbytes]

    def upload(self, ptr: int, host: np.ndarray) -> None:
        self.uploads += 1
        self.view(ptr, host.nbytes)[:] = np.ascontiguousarray(host).tobytes()

    def download(self, host: np.ndarray, ptr: int) -> None:
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(self.view(ptr, host.nbytes), np.uint8)

    def copy_rows(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, rows: int) -> None:
        assert width <= dst_pitch and width <= src_pitch  # cudaMemcpy2D's own precondition
        self.copies_2d += 1
        for r in range(rows):
            self.view(dst + r * dst_pitch, width)[:] = self.view(src + r * src_pitch, width)

    def synchronize(self) -> None:
        pass

    def device_name(self) -> str:
        return "host stand-in"


def test_device_array_round_trip_slice_and_free() -> None:
    mem = HostMemory()
    kv = np.arange(2 * 3 * 5 * 4, dtype=np.float16).reshape(2, 3, 5, 4)
    array = DeviceArray.from_host(mem, kv, np.float16)
    assert array.shape == (2, 3, 5, 4) and array.nbytes == kv.nbytes
    np.testing.assert_array_equal(array.to_host(), kv)
    for n in (0, 1, 3, 5, 9):  # 9: clipped to the length, as numpy slicing does
        lead = array[:, :, :n, :].contiguous()
        np.testing.assert_array_equal(lead.to_host(), kv[:, :, :n, :])
    for bad in (np.s_[0], np.s_[:, :, 1:3, :], np.s_[:, 1:, :2, :], np.s_[:, :, ::2, :]):
        with pytest.raises(BackendError, match=r"supports only \[:, :, :n, :\]"):
            array[bad]
    live = len(mem.blocks)
    del array, lead
    assert len(mem.blocks) == live - 2  # freed when collected
    empty = DeviceArray.from_host(mem, np.zeros((1, 2, 0, 4), np.float32), np.float16)
    assert empty.ptr == 0 and empty.to_host().shape == (1, 2, 0, 4) and len(mem.blocks) == live - 2
    # host values are converted to the engine's dtype on the way in
    np.testing.assert_array_equal(
        DeviceArray.from_host(mem, np.array([1.5, 2.0]), np.float16).to_host(), [1.5, 2]
    )


# --- a fake tensorrt whose engines run the export's graphs through ONNX Runtime -----------------------

_TRT_DTYPES = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int64": "INT64", "int32": "INT32"}
_ORT_TO_TRT = {"tensor(float16)": "HALF", "tensor(float)": "FLOAT", "tensor(int64)": "INT64"}
_TRT_TO_NUMPY = {"HALF": np.float16, "FLOAT": np.float32, "INT64": np.int64, "INT32": np.int32}


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


class OrtEngine(FakeEngine):
    """An engine "plan" naming an ONNX graph and its optimisation profiles: I/O as TensorRT would
    report it, profiles as ``get_tensor_profile_shape`` returns them, contexts that run the graph."""

    def __init__(self, trt: Any, onnx: str, profiles: list[dict[str, Any]]) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        io = [
            {
                "name": t.name,
                "mode": mode,
                "shape": [d if isinstance(d, int) else -1 for d in t.shape],
                "dtype": _ORT_TO_TRT[t.type],
            }
            for mode, tensors in (
                ("INPUT", self.session.get_inputs()),
                ("OUTPUT", self.session.get_outputs()),
            )
            for t in tensors
        ]
        super().__init__(trt, io)
        self.profiles = profiles
        self.num_optimization_profiles = len(profiles)
        self.contexts: list[OrtContext] = []

    def get_tensor_profile_shape(self, name: str, index: int) -> list[list[int]]:
        return [list(s) for s in self.profiles[index][name]]

    def create_execution_context(self) -> Any:
        self.contexts.append(OrtContext(self))
        return self.contexts[-1]


class OrtContext:
    """IExecutionContext over ONNX Runtime: inputs are read from, outputs written to, the addresses
    bound with ``set_tensor_address`` in the test's :class:`HostMemory`."""

    def __init__(self, engine: OrtEngine) -> None:
        self.engine, self.memory = engine, engine.trt.memory
        self.profile = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.results: dict[str, np.ndarray] | None = None
        self.calls: list[tuple[int, dict[str, tuple[int, ...]]]] = []
        self.outputs_written: set[int] = set()  # addresses this context's outputs were written to
        self.past_from_outputs = 0  # past_* inputs bound at an address a previous output was written to

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        assert stream == self.memory.handle
        self.profile = index
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.engine.profiles[self.profile][name]
        self.shapes[name] = tuple(shape)
        self.results = None
        return all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        assert ptr != 0, "TensorRT needs a non-null address, also for empty tensors"
        self.addresses[name] = ptr
        return True

    def _run(self) -> dict[str, np.ndarray]:
        if self.results is None:
            feeds = {}
            for name, shape in self.shapes.items():
                dtype = _TRT_TO_NUMPY[self.engine.io[name]["dtype"]]
                host = np.empty(shape, dtype)
                if host.size:
                    self.memory.download(host, self.addresses[name])
                feeds[name] = host
            outs = self.engine.session.run(None, feeds)
            self.results = {
                o.name: np.asarray(v) for o, v in zip(self.engine.session.get_outputs(), outs, strict=True)
            }
        return self.results

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._run()[name].shape)

    def execute_async_v3(self, stream: int) -> bool:
        assert stream == self.memory.handle
        self.calls.append((self.profile, dict(self.shapes)))
        self.past_from_outputs += sum(
            self.addresses[n] in self.outputs_written for n in self.shapes if n.startswith("past_")
        )
        for name, value in self._run().items():
            if value.size:
                self.memory.upload(self.addresses[name], value)
                self.outputs_written.add(self.addresses[name])
        self.results = None
        return True


def fake_tensorrt(version: str = "10.9.0", memory: HostMemory | None = None) -> Any:
    """A ``tensorrt`` module whose plans are JSON: a list of I/O tensors (an engine for the I/O
    check only) or ``{"onnx": path, "profiles": [...]}`` (an engine that runs). Anything else does
    not deserialise (``deserialize_cuda_engine`` returns None, as TensorRT does for a bad plan).
    Plans arrive as TensorRT's bindings take them: a buffer, or an ``IStreamReaderV2``."""
    trt: Any = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.memory = memory or HostMemory()
    trt.DataType = types.SimpleNamespace(**{n: _Member(n) for n in (*_TRT_DTYPES.values(), "INT8", "BOOL")})
    trt.TensorIOMode = types.SimpleNamespace(INPUT=_Member("INPUT"), OUTPUT=_Member("OUTPUT"))
    trt.SeekPosition = types.SimpleNamespace(SET=_Member("SET"), CUR=_Member("CUR"), END=_Member("END"))
    trt.deserialized = []  # how each plan arrived: "reader" or "mmap"
    trt.engines = []

    class IStreamReaderV2:
        def __init__(self) -> None:
            self.base_initialised = True

        def read(self, num_bytes: int, stream: int) -> bytes:  # pure virtual in TensorRT
            raise NotImplementedError

        def seek(self, offset: int, where: Any) -> bool:
            raise NotImplementedError

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: Any) -> Any:
            if isinstance(plan, IStreamReaderV2):
                assert plan.base_initialised, "the reader must call IStreamReaderV2.__init__"
                assert plan.seek(0, trt.SeekPosition.SET)
                chunks = []
                while chunk := plan.read(1 << 40, 0):  # asks for "everything"; gets chunks
                    assert len(chunk) <= tb.READ_CHUNK
                    chunks.append(chunk)
                data, how = b"".join(chunks), "reader"
            else:
                assert isinstance(plan, mmap.mmap), (
                    f"plans are handed over without a bytes copy, got {type(plan)}"
                )
                data, how = bytes(plan), "mmap"
            trt.deserialized.append(how)
            try:
                spec = json.loads(data)
            except ValueError:
                return None
            engine = OrtEngine(trt, **spec) if isinstance(spec, dict) else FakeEngine(trt, spec)
            trt.engines.append(engine)
            return engine

    trt.IStreamReaderV2, trt.Logger, trt.Runtime = IStreamReaderV2, Logger, Runtime
    return trt


def _runnable_plans(nano_dir: Path) -> dict[str, bytes]:
    manifest = load_manifest(nano_dir, verify=False)
    planned = manifest.data["tensorrt"]["profiles"]
    return {
        name: json.dumps(
            {"onnx": str(manifest.graph_path(name)), "profiles": list(planned[name].values())}
        ).encode()
        for name in ("vision", "embed", "decoder")
    }


def _answers_with_reuse(backend: Any) -> Any:
    buf = KeyframeBuffer(capacity=3)
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 256, (84, 112, 3), dtype=np.uint8)
        buf.add(1.0 + i, resize_for_model(img, backend.keyframe_size), describe(img))
    kfs = buf.snapshot().keyframes
    partial = backend.build_prefix(1, kfs[:2], [backend.encode_keyframe(k.id, k.image) for k in kfs[:2]])
    kept = [kfs[0], kfs[2]]  # the second keyframe left the buffer: only the first one's KV is reused,
    feats = [backend.encode_keyframe(k.id, k.image) for k in kept]  # sliced from the old state
    state = backend.build_prefix(2, kept, feats, previous=partial)
    assert 0 < state.reused_tokens < state.n_tokens
    return backend.generate(
        state, "What did I pick up first?", None, GenerationParams(max_new_tokens=6, return_scores=True)
    )


@pytest.mark.parametrize(("version", "loaded_by"), [("10.3.0", "mmap"), ("10.13.0", "reader")])
def test_the_engine_half_answers_like_onnx_runtime(
    nano_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, loaded_by: str
) -> None:
    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tb, "_cuda_error", lambda: None)
    monkeypatch.setattr("egovlm.trt_support.cuda_runtime", lambda: "cuda-python")
    monkeypatch.setattr(
        tb, "CudaStream", lambda rt, index: trt.memory if (rt, index) == ("cuda-python", 0) else None
    )
    root = _built_export(nano_dir, tmp_path / "nano", _runnable_plans(nano_dir))
    mine = TensorRTBackend.load(root, device="cuda:0")
    assert trt.deserialized == [loaded_by] * 3
    assert mine.describe()["runtime"] == f"tensorrt {version}" and mine.describe()["gpu"] == "host stand-in"
    answer = _answers_with_reuse(mine)
    ref = _answers_with_reuse(OnnxBackend.load(nano_dir, threads=1))
    assert answer.token_ids == ref.token_ids and len(answer.token_ids) == 6
    assert answer.scores is not None and ref.scores is not None
    np.testing.assert_allclose(np.stack(answer.scores), np.stack(ref.scores), atol=1e-3)

    [decoder_context] = trt.engines[2].contexts
    manifest = load_manifest(root, verify=False)
    names = list(manifest.data["tensorrt"]["profiles"]["decoder"])  # engine profile i = names[i]
    chosen = [names[p] for p, _ in decoder_context.calls]
    seqs = [shapes["inputs_embeds"][1] for _, shapes in decoder_context.calls]
    # prefix, the two new keyframes, the question: a prefill profile (every shape inside it, or the
    # fake context would have refused it); each answer token after the first: decode
    assert seqs[3:] == [1] * 5 and DECODE not in chosen[:3] and chosen[3:] == [DECODE] * 5
    layers = int(manifest.model["num_layers"])
    # every decode step binds the previous step's present_* buffers as its past_*: no host round trip
    assert decoder_context.past_from_outputs >= 5 * 2 * layers
    assert trt.memory.copies_2d == 2 * layers  # the reused keyframes' KV: one 2-D device copy per tensor


def test_the_engines_run_chunked_prefill_on_the_profile_of_each_call(
    nano_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner reads the plan's chunk from the manifest; with chunks shorter than the prompts every
    prefill becomes several engine calls, each on a profile admitting it (the fake context refuses
    shapes outside the selected profile), and the answer stays ONNX Runtime's unchunked one."""
    from egovlm.export import fit

    trt = fake_tensorrt("10.13.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tb, "_cuda_error", lambda: None)
    monkeypatch.setattr("egovlm.trt_support.cuda_runtime", lambda: "cuda-python")
    monkeypatch.setattr(tb, "CudaStream", lambda rt, index: trt.memory)
    root = _built_export(nano_dir, tmp_path / "nano", _runnable_plans(nano_dir))
    mine = TensorRTBackend.load(root, device="cuda:0")
    plan = load_manifest(root, verify=False).data["tensorrt"]["plan"]
    assert mine.runner.max_chunk == plan["max_chunk"] == fit.TENSORRT_MAX_CHUNK
    mine.runner.max_chunk = 5  # the tiny model's prompts are shorter than 256 tokens
    answer = _answers_with_reuse(mine)
    ref = _answers_with_reuse(OnnxBackend.load(nano_dir, threads=1))
    assert answer.token_ids == ref.token_ids
    assert answer.scores is not None and ref.scores is not None
    np.testing.assert_allclose(np.stack(answer.scores), np.stack(ref.scores), atol=1e-3)
    [decoder_context] = trt.engines[2].contexts
    seqs = [shapes["inputs_embeds"][1] for _, shapes in decoder_context.calls]
    assert max(seqs) == 5 and seqs.count(5) > 3  # prefills of 3, 2 keyframes and a question, chunked
    names = list(load_manifest(root, verify=False).data["tensorrt"]["profiles"]["decoder"])
    assert {names[p] for p, shapes in decoder_context.calls if shapes["inputs_embeds"][1] > 1} == {PREFILL}
    assert trt.memory.copies_2d == 2 * int(load_manifest(root).model["num_layers"])  # reused KV: once


# --- engines that do not match their export: refused at load, by name ---------------------------------


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
    for name, plan in plans.items():
        (root / "engines" / f"{name}.plan").write_bytes(plan)
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


@pytest.fixture(params=["10.3.0", "10.9.0"])
def on_a_device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A supported TensorRT importable (the fake; mmap and stream-reader loading) and CUDA usable."""
    trt = fake_tensorrt(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tb, "_cuda_error", lambda: None)
    monkeypatch.setattr("egovlm.trt_support.cuda_runtime", lambda: "cuda-python")
    monkeypatch.setattr(tb, "CudaStream", lambda rt, index: trt.memory)
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
    assert on_a_device.memory.blocks == {}  # no device memory taken


@pytest.mark.parametrize("cut", ["half", "empty"])
def test_a_truncated_engine_is_named(nano_dir: Path, tmp_path: Path, on_a_device: Any, cut: str) -> None:
    plans = _good_plans(nano_dir)
    plans["vision"] = plans["vision"][: len(plans["vision"]) // 2] if cut == "half" else b""
    root = _built_export(nano_dir, tmp_path / "nano", plans)  # hashed as written: a cut-short build
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


# --- the real cuda-python: every call exists, and errors are named ------------------------------------


def _runtime_calls(path: Path) -> set[str]:
    """Names used as ``rt.X`` / ``self.rt.X`` (the cuda.bindings.runtime module) in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "rt") or (
                isinstance(owner, ast.Attribute) and owner.attr == "rt"
            ):
                names.add(node.attr)
    return names


def test_cuda_calls_exist_in_cuda_python_and_fail_with_a_named_error() -> None:
    rt = pytest.importorskip(
        "cuda.bindings.runtime", reason="cuda-python (torch's dependency in the main venv)"
    )
    import egovlm.trt_support as support

    calls = _runtime_calls(Path(tb.__file__)) | _runtime_calls(Path(support.__file__))
    assert {"cudaMallocAsync", "cudaMemcpy2DAsync", "cudaStreamCreate", "cudaFree"} <= calls
    assert sorted(c for c in calls if not hasattr(rt, c)) == []
    assert hasattr(rt.cudaDeviceAttr, "cudaDevAttrMemoryPoolsSupported")
    for kind in ("cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost", "cudaMemcpyDeviceToDevice"):
        assert hasattr(rt.cudaMemcpyKind, kind)
    if support.cuda_device_error() is None:
        pytest.skip("a usable GPU is present: no CUDA error to name")
    with pytest.raises(BackendError, match=r"cudaSetDevice\(0\) failed on cuda:0: cudaError\w+ \(.+\)"):
        tb.CudaStream(rt, 0)


class _RecordingRuntime:
    """cuda.bindings.runtime's calling convention: every call returns (error, *values)."""

    class cudaError_t(int):  # noqa: N801 (cuda-python's name)
        @property
        def name(self) -> str:
            return {0: "cudaSuccess", 2: "cudaErrorMemoryAllocation"}[int(self)]

    cudaDeviceAttr = types.SimpleNamespace(cudaDevAttrMemoryPoolsSupported="pools?")  # noqa: N815
    cudaMemcpyKind = types.SimpleNamespace(  # noqa: N815
        cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h", cudaMemcpyDeviceToDevice="d2d"
    )

    def __init__(self, pools: int, fail: str = "") -> None:
        self.pools, self.fail, self.calls = pools, fail, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> tuple[Any, ...]:
            self.calls.append(name)
            ok = self.cudaError_t(2 if name == self.fail else 0)
            values = {
                "cudaStreamCreate": ("stream",),
                "cudaDeviceGetAttribute": (self.pools,),
                "cudaMalloc": (4096,),
                "cudaMallocAsync": (8192,),
                "cudaGetErrorString": (b"out of memory",),
            }.get(name, ())
            return (ok, *values)

        return call


@pytest.mark.parametrize(
    ("pools", "alloc", "free"), [(1, "cudaMallocAsync", "cudaFreeAsync"), (0, "cudaMalloc", "cudaFree")]
)
def test_cuda_stream_uses_the_pooled_allocator_where_the_device_has_one(
    pools: int, alloc: str, free: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tb, "_native_handle", lambda stream: 77)
    rt = _RecordingRuntime(pools)
    stream = tb.CudaStream(rt, 0)
    assert stream.handle == 77 and rt.calls[:3] == [
        "cudaSetDevice",
        "cudaStreamCreate",
        "cudaDeviceGetAttribute",
    ]
    array = DeviceArray(stream, (2, 3), np.float16)
    assert array.ptr == (8192 if pools else 4096) and alloc in rt.calls
    del array
    assert rt.calls[-1] == free
    failing = tb.CudaStream(_RecordingRuntime(pools, fail=alloc), 1)
    with pytest.raises(
        BackendError, match=rf"{alloc}\(12\) failed on cuda:1: cudaErrorMemoryAllocation \(out of memory\)"
    ):
        DeviceArray(failing, (2, 3), np.float16)


# --- ONNX Runtime's TensorRT execution provider, configured from the same export -----------------------
# (no GPU needed for the options; whether TensorRT then builds one engine and reuses it awaits a device)


def parse_profile_shapes(text: str) -> dict[str, list[list[int]]]:
    """ONNX Runtime's ParseProfileShapes (tensorrt_execution_provider_utils.h), in Python: entries
    split on ',', name and shape on ':', dims on 'x'; a repeated name adds a profile for it."""
    shapes: dict[str, list[list[int]]] = {}
    for entry in text.split(","):
        name, _, dims = entry.partition(":")
        assert name and dims, f"malformed entry {entry!r}"
        shapes.setdefault(name, []).append([int(d) for d in dims.split("x")])
    return shapes


def test_options_cover_every_input_of_every_graph_in_one_profile(nano_dir: Path, tmp_path: Path) -> None:
    nano = load_manifest(nano_dir)
    options = tensorrt_provider_options(nano.data, nano.root, tmp_path / "cache")
    lo, opt, hi = (parse_profile_shapes(options[f"trt_profile_{k}_shapes"]) for k in ("min", "opt", "max"))
    inputs = {str(t["name"]): t for g in ("vision", "embed", "decoder") for t in nano.graph(g)["inputs"]}
    assert set(lo) == set(opt) == set(hi) == set(inputs)
    planned = nano.data["tensorrt"]["profiles"]
    for name, spec in inputs.items():
        assert len(lo[name]) == len(opt[name]) == len(hi[name]) == 1  # profile 0 only: ORT runs no other
        low, best, high = lo[name][0], opt[name][0], hi[name][0]
        assert len(low) == len(spec["shape"])
        assert all(a <= b <= c for a, b, c in zip(low, best, high, strict=True))
        for graph in planned.values():  # every planned profile's range lies inside the merged one
            for profile in graph.values():
                if name in profile:
                    p_lo, _, p_hi = profile[name]
                    assert all(a <= b for a, b in zip(low, p_lo, strict=True))
                    assert all(a >= b for a, b in zip(high, p_hi, strict=True))
    decoder = planned["decoder"]
    assert opt["past_key.0"][0] == decoder["decode"]["past_key.0"][1]  # tuned for single-token steps
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"]
    assert options["trt_engine_cache_path"] == str(tmp_path / "cache" / "engines")
    assert options["trt_timing_cache_path"] == str(tmp_path / "cache" / "timing")
    assert (
        options["trt_fp16_enable"]
        and options["trt_layer_norm_fp32_fallback"]
        and not options["trt_int8_enable"]
    )
    assert options["trt_max_workspace_size"] == nano.data["tensorrt"]["plan"]["workspace_bytes"]


def test_merged_profile_spans_prefill_and_decode() -> None:
    profiles = {
        "prefill": {
            "x": [[1, 1, 8], [1, 64, 8], [1, 256, 8]],
            "past": [[1, 2, 0, 4], [1, 2, 0, 4], [1, 2, 700, 4]],
        },
        "decode": {
            "x": [[1, 1, 8], [1, 1, 8], [1, 1, 8]],
            "past": [[1, 2, 0, 4], [1, 2, 480, 4], [1, 2, 959, 4]],
        },
    }
    assert merged_profile(profiles) == {
        "x": [[1, 1, 8], [1, 1, 8], [1, 256, 8]],
        "past": [[1, 2, 0, 4], [1, 2, 480, 4], [1, 2, 959, 4]],
    }
    assert merged_profile({"static": {"p": [[4, 6], [4, 6], [4, 6]]}}) == {"p": [[4, 6], [4, 6], [4, 6]]}
    with pytest.raises(BackendError, match="different ranks"):
        merged_profile({"a": {"x": [[1], [1], [2]]}, "b": {"x": [[1, 1], [1, 1], [1, 1]]}})


def test_trt_only_quantisation_and_exports_without_profiles_are_refused(
    nano_dir: Path, tmp_path: Path
) -> None:
    nano = load_manifest(nano_dir)
    int4 = {**nano.data, "precision": "int4", "quantization": {"ops": {"trt::DequantizeLinear": 12}}}
    with pytest.raises(BackendError) as info:
        tensorrt_provider_options(int4, nano.root, tmp_path)
    assert "trt::DequantizeLinear" in str(info.value) and "--backend tensorrt" in str(info.value)
    assert f"egovlm export build-engines {nano.root}" in str(info.value)
    cpu = {k: v for k, v in nano.data.items() if k != "tensorrt"} | {"target": "cpu"}
    with pytest.raises(
        BackendError, match=r"target cpu\) has no TensorRT optimisation profiles.*--device cuda"
    ):
        tensorrt_provider_options(cpu, nano.root, tmp_path)
    int8 = {
        **nano.data,
        "precision": "int8",
        "quantization": {"ops": {"QuantizeLinear": 4, "DequantizeLinear": 8}},
    }
    assert tensorrt_provider_options(int8, nano.root, tmp_path)["trt_int8_enable"] is True


def test_providers_carry_the_options() -> None:
    gpu = [TENSORRT, CUDA, CPU]
    options = {"trt_engine_cache_enable": True}
    assert select_providers("tensorrt:1", gpu, options) == [
        (TENSORRT, {"trt_engine_cache_enable": True, "device_id": 1}),
        (CUDA, {"device_id": 1}),
        CPU,
    ]
    assert select_providers(f"{TENSORRT},{CPU}", gpu, options) == [(TENSORRT, options), CPU]
    assert select_providers("cuda", gpu, options) == [(CUDA, {"device_id": 0}), CPU]
    assert [wants_tensorrt(d) for d in ("trt", "tensorrt:0", f"{TENSORRT},{CPU}", "cuda", "cpu")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_cache_folder_follows_the_export(
    nano_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nano = load_manifest(nano_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    manifest = nano.root / "manifest.json"
    first = ort_tensorrt_cache_dir(manifest)
    assert first.parent == tmp_path / "xdg" / "egovlm" / "ort-tensorrt"
    assert ort_tensorrt_cache_dir(manifest) == first
    other = tmp_path / "manifest.json"
    other.write_text(json.dumps({**json.loads(manifest.read_text()), "created_utc": "another export"}))
    assert ort_tensorrt_cache_dir(other) != first


def test_loading_with_the_tensorrt_provider_here_refuses_clearly(
    nano_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nano = load_manifest(nano_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(BackendError, match=r"TensorrtExecutionProvider.* not available in this onnxruntime"):
        OnnxBackend.load(nano.root, device="tensorrt")
