"""The ``tensorrt`` backend: the engines ``egovlm export build-engines`` writes for Jetson Orin / Thor,
with the same cached visual prefix as the other backends.

The three engines (vision, embed, decoder; named in the manifest's ``tensorrt.engines``) are
wrapped as export's ``GraphBackend`` (:class:`TrtGraphs`), so export's
:class:`egovlm.export.ort_runner.VLMRunner` drives them and
:class:`egovlm.edge.backends.export_backend.ExportBackend` adds the cached-prefix steps: exactly the
code the ``onnx`` backend runs. KV tensors stay on the GPU between calls (the runner passes the
decoder's ``present_*`` outputs back as ``past_*`` without looking at them; reusing the leading
keyframes of a prefix slices them with a device-to-device copy); only embeddings, visual tokens and
the last position's logits cross to the host.

TensorRT's Python runtime API (TensorRT 10.3+ and 11, :mod:`egovlm.trt_support` checks the version):
``trt.Runtime(logger)``, ``deserialize_cuda_engine`` (from an ``IStreamReaderV2`` on 10.9+, from an
``mmap`` of the plan before: never a Python ``bytes`` copy of it), ``create_execution_context``; per
call ``set_optimization_profile_async`` (decoder: profile 0 ``prefill``, 1 ``decode``, the order
egovlm/export/tensorrt_build.py adds them), ``set_input_shape``, ``set_tensor_address`` for every I/O
tensor, ``execute_async_v3(stream)``.

Device memory is NVIDIA's cuda-python (``cuda.bindings.runtime``: cudaMalloc[Async], cudaMemcpyAsync,
cudaMemcpy2DAsync, cudaStreamCreate/Synchronize, cudaFree[Async]), as in TensorRT's own Python samples
(samples/python/common_runtime.py): the device install has no torch. :class:`DeviceArray` is the one
device tensor type; its memory operations go through :class:`CudaStream`, so the same array logic
runs on CPU in the tests over a host-memory stand-in.

It cannot run on the development machines (no TensorRT, no GPU): construction then fails with
what is missing and what to do, and never falls back to anything else.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from egovlm.edge.backends.base import BackendError
from egovlm.edge.backends.export_backend import ExportBackend, load_export_manifest

GRAPHS = ("vision", "embed", "decoder")
PREFILL, DECODE = "prefill", "decode"
JETSON_TARGETS = "orin-nano, orin-nx, agx-orin or thor"
READ_CHUNK = 64 << 20  # host bytes an engine plan is handed to TensorRT in (IStreamReaderV2)


# -- what is missing (pure: tested without TensorRT) -------------------------------------------------


def missing_requirements(manifest: Any, tensorrt_error: str | None, cuda_error: str | None) -> list[str]:
    """Everything that stops the engines from running here, each with its fix; empty when ready.
    ``tensorrt_error`` / ``cuda_error`` describe a failed import, an unsupported TensorRT or an
    unusable CUDA (None: fine)."""
    root = manifest.root
    problems = []
    if tensorrt_error is not None:
        problems.append(tensorrt_error)
    if cuda_error is not None:
        problems.append(
            f"CUDA is not usable here ({cuda_error}); run on the device (JetPack 6.1+ or 7.x) with "
            "cuda-python installed"
        )
    trt_block = manifest.data.get("tensorrt") or {}
    absent = [n for n in GRAPHS if manifest.engine_path(n) is None or not manifest.engine_path(n).is_file()]
    if trt_block.get("status") != "built" or absent:
        problems.append(
            f"engines not built for {root} (tensorrt.status = {trt_block.get('status')!r}, missing: "
            f"{', '.join(absent) or 'none'}): run `egovlm export build-engines {root}` on the device "
            "(TensorRT engines are specific to the GPU and TensorRT version that build them)"
        )
    return problems


def _tensorrt_error() -> str | None:
    from egovlm.trt_support import TensorRTUnavailableError, import_tensorrt

    try:
        import_tensorrt()
    except TensorRTUnavailableError as e:
        return str(e)
    return None


def _cuda_error() -> str | None:
    from egovlm.trt_support import cuda_device_error

    return cuda_device_error()


# -- optimisation profiles (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRange:
    """What one decoder optimisation profile accepts: new tokens (``seq``) and cached ones (``past``)."""

    name: str
    index: int
    seq: tuple[int, int]  # min, max of inputs_embeds' dimension 1
    past: tuple[int, int]  # min, max of past_key.*'s dimension 2

    def fits(self, seq: int, past: int) -> bool:
        return self.seq[0] <= seq <= self.seq[1] and self.past[0] <= past <= self.past[1]


def profile_ranges(
    names: Sequence[str], embeds: Sequence[Sequence[Sequence[int]]], past: Sequence[Sequence[Sequence[int]]]
) -> list[ProfileRange]:
    """Ranges from per-profile (min, opt, max) shapes of ``inputs_embeds`` and ``past_key.0``, as
    ``ICudaEngine.get_tensor_profile_shape`` or the manifest's ``tensorrt.profiles.decoder`` give them."""
    if not len(names) == len(embeds) == len(past):
        raise BackendError(
            f"the decoder engine has {len(embeds)} optimisation profiles, the manifest names {len(names)} "
            f"({', '.join(names)}): rebuild the engines with `egovlm export build-engines`"
        )
    return [
        ProfileRange(name, i, (int(e[0][1]), int(e[2][1])), (int(p[0][2]), int(p[2][2])))
        for i, (name, e, p) in enumerate(zip(names, embeds, past, strict=True))
    ]


def manifest_profile_ranges(
    decoder_profiles: Mapping[str, Mapping[str, Sequence[Sequence[int]]]],
) -> list[ProfileRange]:
    """The decoder's profiles as the manifest plans them (``tensorrt.profiles.decoder``), in order."""
    names = list(decoder_profiles)
    return profile_ranges(
        names,
        [decoder_profiles[n]["inputs_embeds"] for n in names],
        [decoder_profiles[n]["past_key.0"] for n in names],
    )


def choose_profile(seq: int, past: int, ranges: Sequence[ProfileRange]) -> ProfileRange:
    """The profile for one decoder call: of those that admit (seq, past), the one with the fewest new
    tokens at its maximum (ties: the fewest cached), so each call runs on the kernels tuned closest to
    it: ``decode`` for one token, ``prefill`` for each chunk of a prefill (the runner splits every
    prefill into chunks of the plan's ``max_chunk``; egovlm.export.fit.decoder_boxes plans the profiles
    to cover every call; engines built before chunked prefill had more, chosen the same way).
    A call no profile covers is refused with the limits, since TensorRT would reject the shapes."""
    fitting = [r for r in ranges if r.fits(seq, past)]
    if fitting:
        return min(fitting, key=lambda r: (r.seq[1], r.past[1], r.index))
    limits = "; ".join(f"{r.name}: seq {r.seq[0]}..{r.seq[1]}, past {r.past[0]}..{r.past[1]}" for r in ranges)
    raise BackendError(
        f"tensorrt backend: no decoder profile takes {seq} new tokens after {past} cached ones ({limits}); "
        "the engines were sized for fewer keyframes, a shorter question or a shorter answer: re-export "
        "with --keyframes at least the device profile's keyframes.capacity (and its max_new_tokens)"
    )


# -- engine I/O against the manifest (pure: tested with a stand-in engine) ---------------------------

# The manifest's dtype names (egovlm/export/onnx_graphs.py) → TensorRT DataType member names.
_TRT_DTYPE_NAMES = {
    "float32": "FLOAT",
    "float16": "HALF",
    "bfloat16": "BF16",
    "int64": "INT64",
    "int32": "INT32",
    "int8": "INT8",
    "bool": "BOOL",
}


def _trt_dtype_name(trt: Any, dtype: Any) -> str:
    """``trt.DataType.HALF`` → "HALF" (its ``name``, else the member it equals)."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    for member in dir(trt.DataType):
        if not member.startswith("_") and getattr(trt.DataType, member) == dtype:
            return member
    return str(dtype)


def check_engine_io(trt: Any, engine: Any, path: Path, graph: Mapping[str, Any]) -> None:
    """The engine's I/O tensors against the manifest's graph spec (``graphs.<name>.inputs`` /
    ``outputs``: name, shape, dtype): same names in the same roles, same dtypes, same rank, and
    every fixed dimension equal (-1, TensorRT's dynamic dimension, matches the manifest's named
    ones, and a fixed one too: the optimisation profiles bound it). A mismatch is an engine
    built from another export (a stale engines/ folder, a copied plan) and raises
    :class:`BackendError` naming the engine file, the tensor, and expected against found."""
    expected: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for role in ("inputs", "outputs"):
        for spec in graph.get(role) or []:
            expected[str(spec["name"])] = (role[:-1], spec)
    found: dict[str, str] = {}
    for i in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(i)
        found[name] = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
    where = f"tensorrt backend: engine {path}"
    fix = f"rebuild the engines for this export: `egovlm export build-engines {path.parent.parent}`"
    missing = [n for n in expected if n not in found]
    extra = [n for n in found if n not in expected]
    if missing or extra:
        raise BackendError(
            f"{where} does not match the manifest's {graph.get('file', 'graph')}: "
            f"tensors expected but missing: {', '.join(missing) or 'none'}; "
            f"unexpected tensors: {', '.join(extra) or 'none'}; {fix}"
        )
    for name, (role, spec) in expected.items():
        if found[name] != role:
            raise BackendError(f"{where}: tensor {name} is an {found[name]}, the manifest says {role}; {fix}")
        want_dtype = str(spec["dtype"])
        got_dtype = _trt_dtype_name(trt, engine.get_tensor_dtype(name))
        if _TRT_DTYPE_NAMES.get(want_dtype, want_dtype.upper()) != got_dtype:
            raise BackendError(
                f"{where}: {role} {name} has dtype {got_dtype}, expected {want_dtype} "
                f"({_TRT_DTYPE_NAMES.get(want_dtype, '?')}); {fix}"
            )
        want_shape = list(spec["shape"])
        got_shape = [int(d) for d in engine.get_tensor_shape(name)]
        same = len(got_shape) == len(want_shape) and all(
            isinstance(w, str) or g == -1 or g == int(w) for w, g in zip(want_shape, got_shape, strict=True)
        )
        if not same:
            raise BackendError(
                f"{where}: {role} {name} has shape {got_shape}, expected {want_shape} "
                f"(-1 and names are dynamic dimensions); {fix}"
            )


# -- device memory (cuda-python on the device; a host stand-in in the tests) ---------------------------

# TensorRT DataType member name -> the host dtype its buffers hold.
_NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


class DeviceMemory(Protocol):
    """The memory operations a :class:`DeviceArray` needs, all ordered on one stream."""

    handle: int  # the stream handle TensorRT's *_async calls take

    def activate(self) -> None: ...

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def upload(self, ptr: int, host: np.ndarray) -> None: ...

    def download(self, host: np.ndarray, ptr: int) -> None: ...

    def copy_rows(
        self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, rows: int
    ) -> None: ...

    def synchronize(self) -> None: ...

    def device_name(self) -> str: ...


class DeviceArray:
    """A dense tensor in device memory, owned (freed when collected) and tied to one stream.

    Only what the runner does with KV tensors is supported: ``shape``, ``dtype``, the leading
    positions ``a[:, :, :n, :]`` (a new contiguous array, copied on the device), ``contiguous()``
    and ``to_host()``."""

    def __init__(self, memory: DeviceMemory, shape: Sequence[int], dtype: Any) -> None:
        self.memory = memory
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        self.ptr = 0  # set before allocating: __del__ runs even when the allocation fails
        if self.nbytes:
            self.ptr = memory.alloc(self.nbytes)

    @classmethod
    def from_host(cls, memory: DeviceMemory, host: np.ndarray, dtype: Any) -> DeviceArray:
        data = np.ascontiguousarray(host, dtype=dtype)
        array = cls(memory, data.shape, data.dtype)
        if array.nbytes:
            memory.upload(array.ptr, data)
        return array

    def to_host(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.dtype)
        if self.nbytes:
            self.memory.download(out, self.ptr)
        return out

    def contiguous(self) -> DeviceArray:
        return self  # always dense

    def __getitem__(self, key: Any) -> DeviceArray:
        """``a[:, :, :n, :]`` of a 4-D array: the first ``n`` positions of dimension 2, as one 2-D
        copy (rows = dims 0 x 1; each row the leading ``n x dim3`` elements of a ``dim2 x dim3`` row)."""
        full = slice(None)
        if not (
            len(self.shape) == 4
            and isinstance(key, tuple)
            and len(key) == 4
            and key[0] == key[1] == key[3] == full
            and isinstance(key[2], slice)
            and key[2].start in (None, 0)
            and key[2].step in (None, 1)
        ):
            raise BackendError(f"tensorrt backend: a device tensor supports only [:, :, :n, :], not {key!r}")
        n = min(self.shape[2] if key[2].stop is None else int(key[2].stop), self.shape[2])
        b, h, length, d = self.shape
        out = DeviceArray(self.memory, (b, h, n, d), self.dtype)
        if out.nbytes:
            row = d * self.dtype.itemsize
            self.memory.copy_rows(out.ptr, n * row, self.ptr, length * row, n * row, b * h)
            self.memory.synchronize()
        return out

    def __del__(self) -> None:
        if self.ptr:
            with contextlib.suppress(Exception):  # at interpreter exit the CUDA bindings may be gone
                self.memory.free(self.ptr)
            self.ptr = 0


class CudaStream:
    """One CUDA stream on one GPU through cuda-python's runtime API.

    Allocation is stream-ordered (cudaMallocAsync / cudaFreeAsync, CUDA's pooled allocator) where
    the device supports memory pools, else cudaMalloc / cudaFree: each decoder step allocates its
    ``present_*`` outputs, and plain cudaMalloc per tensor per token would cost milliseconds."""

    def __init__(self, rt: Any, device: int) -> None:
        self.rt, self.device = rt, device
        self._check(rt.cudaSetDevice(device), f"cudaSetDevice({device})")
        self.stream = self._check(rt.cudaStreamCreate(), "cudaStreamCreate")
        self.handle = _native_handle(self.stream)
        pools = self._check(
            rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrMemoryPoolsSupported, device),
            "cudaDeviceGetAttribute(MemoryPoolsSupported)",
        )
        self.pooled = bool(pools)

    def _check(self, result: tuple[Any, ...], what: str) -> Any:
        err, *values = result
        if int(err) != 0:
            _, text = self.rt.cudaGetErrorString(err)
            raise BackendError(
                f"tensorrt backend: {what} failed on cuda:{self.device}: {getattr(err, 'name', err)} "
                f"({bytes(text).decode(errors='replace')})"
            )
        return values[0] if len(values) == 1 else None

    def activate(self) -> None:
        """Make this stream's GPU current for the calling thread (the runtime's device is per thread)."""
        self._check(self.rt.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")

    def alloc(self, nbytes: int) -> int:
        self.activate()  # KV slices are allocated from whichever thread rebuilds the prefix
        if self.pooled:
            return int(
                self._check(self.rt.cudaMallocAsync(nbytes, self.stream), f"cudaMallocAsync({nbytes})")
            )
        return int(self._check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        if self.pooled:
            self._check(self.rt.cudaFreeAsync(ptr, self.stream), "cudaFreeAsync")
        else:
            self._check(self.rt.cudaFree(ptr), "cudaFree")

    def upload(self, ptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self.stream), "cudaMemcpyAsync"
        )

    def download(self, host: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self.stream), "cudaMemcpyAsync"
        )
        self.synchronize()

    def copy_rows(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, rows: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._check(
            self.rt.cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, kind, self.stream),
            "cudaMemcpy2DAsync",
        )

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def device_name(self) -> str:
        props = self._check(self.rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = props.name
        return (
            bytes(name).split(b"\0")[0].decode(errors="replace") if not isinstance(name, str) else name
        ) or "?"


def _native_handle(stream: Any) -> int:
    """The stream's address for TensorRT (cuda-python 13 deprecates ``int(stream)`` for this)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-python 12.x
        return int(stream)
    return int(get_cuda_native_handle(stream))


def device_index(device: str) -> int:
    """``cuda`` / ``cuda:N`` -> N (0 by default); anything else is refused with the accepted forms."""
    kind, _, index = device.strip().partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise BackendError(f"tensorrt backend: device {device!r}: expected cuda or cuda:N (N a GPU index)")
    return int(index or 0)


# -- engines (need TensorRT and a GPU) ---------------------------------------------------------------


def _numpy_dtype(trt: Any, dtype: Any, path: Path, name: str) -> Any:
    member = _trt_dtype_name(trt, dtype)
    if member not in _NUMPY_DTYPES:
        raise BackendError(
            f"tensorrt backend: engine {path}: tensor {name} has dtype {member}, which has no host "
            "counterpart here (numpy); re-export with fp16 graphs"
        )
    return _NUMPY_DTYPES[member]


def deserialize(trt: Any, runtime: Any, path: Path) -> Any:
    """The engine in ``path``, never held as a Python ``bytes`` copy: handed over in
    ``READ_CHUNK`` pieces through an ``IStreamReaderV2`` where TensorRT reads plans that way well
    (10.9+, :func:`egovlm.trt_support.streams_load`), else ``mmap``-ed (file pages, which the kernel
    can drop, rather than a second anonymous copy). None when TensorRT rejects the plan."""
    from egovlm.trt_support import streams_load

    try:
        with path.open("rb") as f:
            if streams_load(trt):
                return runtime.deserialize_cuda_engine(_plan_reader(trt, f))
            if path.stat().st_size == 0:
                return None  # mmap refuses empty files; TensorRT would reject the plan anyway
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as plan:
                return runtime.deserialize_cuda_engine(plan)
    except OSError as e:
        raise BackendError(f"tensorrt backend: cannot read engine {path}: {e}") from e


def _plan_reader(trt: Any, f: BinaryIO) -> Any:
    """An ``IStreamReaderV2`` over an open plan file (TensorRT asks for N bytes and calls again
    when given fewer, so each answer is at most ``READ_CHUNK``)."""
    whence = {trt.SeekPosition.SET: 0, trt.SeekPosition.CUR: 1}

    class PlanReader(trt.IStreamReaderV2):
        def __init__(self) -> None:
            trt.IStreamReaderV2.__init__(self)  # pybind11 trampolines need the explicit base call

        def read(self, num_bytes: int, stream: int) -> bytes:
            return f.read(min(int(num_bytes), READ_CHUNK))

        def seek(self, offset: int, where: Any) -> bool:
            try:
                if where in whence:
                    f.seek(int(offset), whence[where])
                else:  # END: TensorRT documents the offset as "backward from the end"; C's SEEK_END
                    f.seek(-abs(int(offset)), 2)  # counts a negative one: both mean the same here
            except (OSError, ValueError):
                return False
            return True

    return PlanReader()


class TrtEngine:
    """One deserialised engine with one execution context on its own CUDA stream.

    A context is not thread-safe and the edge engine runs the prefix rebuild (worker thread) and
    questions (question thread) concurrently, so calls are serialised on a lock."""

    def __init__(
        self,
        trt: Any,
        runtime: Any,
        path: Path,
        memory: DeviceMemory,
        graph: Mapping[str, Any] | None = None,
    ) -> None:
        self.trt, self.path, self.memory = trt, path, memory
        self.engine = deserialize(trt, runtime, path)
        if self.engine is None:
            raise BackendError(
                f"tensorrt backend: TensorRT could not deserialise {path} (truncated, built by another "
                "TensorRT version or for another GPU?); rebuild with `egovlm export build-engines` on "
                "this device"
            )
        if graph is not None:  # before any device memory is taken
            check_engine_io(trt, self.engine, path, graph)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: _numpy_dtype(trt, self.engine.get_tensor_dtype(n), path, n) for n in names}
        self.context = self.engine.create_execution_context()
        self.active_profile = 0  # a new context starts on profile 0
        self._placeholder = DeviceArray(memory, (256,), np.uint8)  # TensorRT wants non-null addresses
        self._lock = threading.Lock()

    def profile_shapes(self, name: str) -> list[Any]:
        """(min, opt, max) shapes of input ``name`` for every optimisation profile."""
        return [
            [list(s) for s in self.engine.get_tensor_profile_shape(name, i)]
            for i in range(self.engine.num_optimization_profiles)
        ]

    def run(self, feeds: Mapping[str, Any], profile: int = 0) -> dict[str, DeviceArray]:
        """Bind ``feeds`` (numpy arrays or this engine's :class:`DeviceArray`), run, return the
        outputs as device arrays (the caller downloads what it needs)."""
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise BackendError(f"tensorrt backend: {self.path.name} needs inputs {', '.join(missing)}")
        with self._lock:
            self.memory.activate()
            if profile != self.active_profile:
                if not self.context.set_optimization_profile_async(profile, self.memory.handle):
                    raise BackendError(f"tensorrt backend: {self.path.name}: cannot select profile {profile}")
                self.active_profile = profile
            bound = {n: self._to_device(n, feeds[n]) for n in self.inputs}  # referenced until synchronised
            for name, array in bound.items():
                if not self.context.set_input_shape(name, array.shape):
                    raise BackendError(
                        f"tensorrt backend: {self.path.name}: input {name} shape {array.shape} is "
                        f"outside optimisation profile {profile}"
                    )
                self.context.set_tensor_address(name, self._address(array))
            outputs = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = DeviceArray(self.memory, shape, self.dtypes[name])
                self.context.set_tensor_address(name, self._address(outputs[name]))
            if not self.context.execute_async_v3(self.memory.handle):
                raise BackendError(f"tensorrt backend: {self.path.name}: execute_async_v3 failed (see log)")
            self.memory.synchronize()  # inputs must outlive the launch; callers read outputs next
        return outputs

    def _to_device(self, name: str, value: Any) -> DeviceArray:
        dtype = self.dtypes[name]
        if isinstance(value, DeviceArray):
            if value.memory is not self.memory or value.dtype != np.dtype(dtype):
                raise BackendError(
                    f"tensorrt backend: {self.path.name}: input {name} is a device tensor of another "
                    f"engine or dtype ({value.dtype}, expected {np.dtype(dtype)})"
                )
            return value
        return DeviceArray.from_host(self.memory, np.asarray(value), dtype)

    def _address(self, array: DeviceArray) -> int:
        return array.ptr if array.nbytes else self._placeholder.ptr


class TrtGraphs:
    """The three engines as export's ``GraphBackend``: numpy in, numpy out, except the decoder's
    KV (``present_*``), which stays on the device for the next call."""

    def __init__(
        self, engines: Mapping[str, TrtEngine], num_layers: int, profile_names: Sequence[str]
    ) -> None:
        self.engines = dict(engines)
        self.num_layers = num_layers
        decoder = self.engines["decoder"]
        self.ranges = profile_ranges(
            profile_names, decoder.profile_shapes("inputs_embeds"), decoder.profile_shapes("past_key.0")
        )
        self.kv_dtype = decoder.dtypes["past_key.0"]
        self.embed_dtype = decoder.dtypes["inputs_embeds"]

    def vision(self, pixel_values: np.ndarray) -> np.ndarray:
        out = self.engines["vision"].run({"pixel_values": pixel_values})
        return out["visual_tokens"].to_host().astype(np.float32)

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        out = self.engines["embed"].run({"input_ids": input_ids})
        return out["inputs_embeds"].to_host().astype(np.float32)

    def decoder(self, feeds: dict[str, Any]) -> tuple[np.ndarray, list[Any]]:
        seq, past = int(feeds["inputs_embeds"].shape[1]), int(feeds["past_key.0"].shape[2])
        profile = choose_profile(seq, past, self.ranges)
        out = self.engines["decoder"].run(feeds, profile.index)
        presents = [
            out[f"present_{kind}.{i // 2}"] for i, kind in enumerate(("key", "value") * self.num_layers)
        ]
        return out["logits"].to_host().astype(np.float32), presents


class TensorRTBackend(ExportBackend):
    """Engines from a TensorRT-target export; see the module docstring."""

    name = "tensorrt"

    @classmethod
    def load(cls, export_dir: str | Path, device: str = "cuda") -> TensorRTBackend:
        manifest = load_export_manifest(export_dir, cls.name)
        if manifest.runtime != "tensorrt":
            raise BackendError(
                f"{manifest.root} was exported for target {manifest.target} (ONNX Runtime): run it with "
                f"--backend onnx, or export for a TensorRT target ({JETSON_TARGETS}) for this backend"
            )
        index = device_index(device)
        problems = missing_requirements(manifest, _tensorrt_error(), _cuda_error())
        if problems:
            listed = " ".join(f"({i}) {p};" for i, p in enumerate(problems, 1))
            raise BackendError(f"tensorrt backend cannot start here: {listed.rstrip(';')}")
        unhashed = [
            rel for rel in manifest.data["tensorrt"]["engines"].values() if rel not in manifest.data["files"]
        ]
        if unhashed:  # load_export_manifest verified every listed file: only listed ones may load
            raise BackendError(
                f"tensorrt backend: {manifest.root}/manifest.json names engines {', '.join(unhashed)} but "
                f"does not list them under 'files' (no sha256 to verify); rebuild them with "
                f"`egovlm export build-engines {manifest.root}`, which re-publishes the manifest"
            )
        return cls._open(manifest, index)

    @classmethod
    def _open(cls, manifest: Any, index: int) -> TensorRTBackend:
        from egovlm.export.ort_runner import VLMRunner
        from egovlm.trt_support import cuda_runtime, import_tensorrt

        trt, rt = import_tensorrt(), cuda_runtime()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engines = {
            name: TrtEngine(
                trt, runtime, manifest.engine_path(name), CudaStream(rt, index), manifest.graph(name)
            )
            for name in GRAPHS
        }
        names = list(manifest.data["tensorrt"]["profiles"]["decoder"])
        graphs = TrtGraphs(engines, int(manifest.model["num_layers"]), names)
        runner = VLMRunner.with_backend(manifest, graphs)
        info = {
            "runtime": f"tensorrt {trt.__version__}",
            "device": f"cuda:{index}",
            "gpu": engines["decoder"].memory.device_name(),
            "precision": manifest.precision,
            "target": manifest.target,
            "profiles": [r.__dict__ for r in graphs.ranges],
        }
        return cls(runner, Path(manifest.root), info, manifest.processor_dir / "config.json")


def load_tensorrt_backend(export_dir: str | Path, device: str = "cuda") -> TensorRTBackend:
    return TensorRTBackend.load(export_dir, device=device)
