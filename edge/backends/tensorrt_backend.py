"""The ``tensorrt`` backend: the engines ``egovlm export build-engines`` writes for Jetson Orin / Thor,
with the same cached visual prefix as the other backends.

The three engines (vision, embed, decoder; named in the manifest's ``tensorrt.engines``) are
wrapped as export's ``GraphBackend`` (:class:`TrtGraphs`), so export's
:class:`egovlm.export.ort_runner.VLMRunner` drives them and
:class:`egovlm.edge.backends.export_backend.ExportBackend` adds the cached-prefix steps: exactly the
code the ``onnx`` backend runs. KV tensors stay on the GPU between calls (the runner passes the
decoder's ``present_*`` outputs back as ``past_*`` without looking at them); only embeddings,
visual tokens and the last position's logits cross to the host.

TensorRT's Python runtime API (TensorRT 10 and 11): ``trt.Runtime(logger)``,
``deserialize_cuda_engine``, ``create_execution_context``; per call
``set_optimization_profile_async`` (decoder: profile 0 ``prefill``, 1 ``decode``, the order
export/tensorrt_build.py adds them), ``set_input_shape``, ``set_tensor_address`` for every I/O
tensor, ``execute_async_v3(stream)``. Device memory is torch CUDA tensors (the device image
ships NVIDIA's torch for JetPack; export's own TensorRT status check uses torch.cuda too).

It cannot run on the development machines (no TensorRT, no GPU): construction then fails with
what is missing and what to do, and never falls back to anything else.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.edge.backends.base import BackendError
from egovlm.edge.backends.export_backend import ExportBackend, load_export_manifest

GRAPHS = ("vision", "embed", "decoder")
PREFILL, DECODE = "prefill", "decode"
JETSON_TARGETS = "orin-nano, orin-nx, agx-orin or thor"


# -- what is missing (pure: tested without TensorRT) -------------------------------------------------


def missing_requirements(manifest: Any, tensorrt_error: str | None, cuda_error: str | None) -> list[str]:
    """Everything that stops the engines from running here, each with its fix; empty when ready.
    ``tensorrt_error`` / ``cuda_error`` describe a failed import or an absent device (None: fine)."""
    root = manifest.root
    problems = []
    if tensorrt_error is not None:
        problems.append(
            f"the tensorrt Python module is not importable ({tensorrt_error}); on Jetson it comes with "
            "JetPack (python3-libnvinfer: create the venv with --system-site-packages), elsewhere "
            "install TensorRT 10 or newer for your CUDA"
        )
    if cuda_error is not None:
        problems.append(
            f"no CUDA device ({cuda_error}); run on the device, with NVIDIA's torch build for your "
            "JetPack (edge/docker/Dockerfile.jetpack6)"
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
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # the PyPI stub raises on import when the real wheel is absent
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'import failed'}"
    return None


def _cuda_error() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed; this backend allocates device memory with torch CUDA tensors"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


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
    """The profile for one decoder call: ``decode`` for a single new token when it fits (its
    kernels are tuned for seq = 1), else ``prefill``, else the first that fits; a call no profile
    covers is refused with the limits, since TensorRT would reject the shapes anyway."""
    by_name = {r.name: r for r in ranges}
    preferred = [DECODE, PREFILL] if seq == 1 else [PREFILL, DECODE]
    for r in [*(by_name[n] for n in preferred if n in by_name), *ranges]:
        if r.fits(seq, past):
            return r
    limits = "; ".join(f"{r.name}: seq {r.seq[0]}..{r.seq[1]}, past {r.past[0]}..{r.past[1]}" for r in ranges)
    raise BackendError(
        f"tensorrt backend: no decoder profile takes {seq} new tokens after {past} cached ones ({limits}); "
        "the engines were sized for fewer keyframes or a shorter answer: re-export with a smaller "
        "--keyframes / keyframe size, or for a device with more memory"
    )


# -- engine I/O against the manifest (pure: tested with a stand-in engine) ---------------------------

# The manifest's dtype names (export/onnx_graphs.py) → TensorRT DataType member names.
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


# -- engines (need TensorRT and a GPU) ---------------------------------------------------------------


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
        trt.DataType.INT8: torch.int8,
    }
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise BackendError(f"tensorrt backend: engine I/O dtype {dtype} is not supported")
    return table[dtype]


def _numpy_dtype(torch_dtype: Any) -> Any:
    import torch

    return {torch.float16: np.float16, torch.float32: np.float32}.get(torch_dtype, np.float32)


class TrtEngine:
    """One deserialised engine with one execution context on its own CUDA stream.

    A context is not thread-safe and the edge engine runs the prefix rebuild (worker thread) and
    questions (question thread) concurrently, so calls are serialised on a lock."""

    def __init__(
        self, trt: Any, runtime: Any, path: Path, device: Any, graph: Mapping[str, Any] | None = None
    ) -> None:
        import torch

        self.trt, self.path, self.device = trt, path, device
        try:
            self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        except OSError as e:
            raise BackendError(f"tensorrt backend: cannot read engine {path}: {e}") from e
        if self.engine is None:
            raise BackendError(
                f"tensorrt backend: TensorRT could not deserialise {path} (truncated, built by another "
                "TensorRT version or for another GPU?); rebuild with `egovlm export build-engines` on "
                "this device"
            )
        if graph is not None:  # before any device memory is taken
            check_engine_io(trt, self.engine, path, graph)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream(device=device)
        self.active_profile = 0  # a new context starts on profile 0
        self._placeholder = torch.empty(256, dtype=torch.uint8, device=device)  # for empty tensors
        self._lock = threading.Lock()

    def profile_shapes(self, name: str) -> list[Any]:
        """(min, opt, max) shapes of input ``name`` for every optimisation profile."""
        return [
            [list(s) for s in self.engine.get_tensor_profile_shape(name, i)]
            for i in range(self.engine.num_optimization_profiles)
        ]

    def run(self, feeds: Mapping[str, Any], profile: int = 0) -> dict[str, Any]:
        """Bind ``feeds`` (numpy arrays or torch tensors), run, return the outputs as device tensors."""
        import torch

        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise BackendError(f"tensorrt backend: {self.path.name} needs inputs {', '.join(missing)}")
        with self._lock, torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            handle = self.stream.cuda_stream
            if profile != self.active_profile:
                if not self.context.set_optimization_profile_async(profile, handle):
                    raise BackendError(f"tensorrt backend: {self.path.name}: cannot select profile {profile}")
                self.active_profile = profile
            bound = {n: self._to_device(feeds[n], self.dtypes[n]) for n in self.inputs}
            for name, tensor in bound.items():
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise BackendError(
                        f"tensorrt backend: {self.path.name}: input {name} shape {tuple(tensor.shape)} is "
                        f"outside optimisation profile {profile}"
                    )
                self.context.set_tensor_address(name, self._address(tensor))
            outputs = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, self._address(outputs[name]))
            if not self.context.execute_async_v3(handle):
                raise BackendError(f"tensorrt backend: {self.path.name}: execute_async_v3 failed (see log)")
            self.stream.synchronize()  # inputs must outlive the launch; callers read outputs next
        return outputs

    def _to_device(self, value: Any, dtype: Any) -> Any:
        import torch

        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        return tensor.to(device=self.device, dtype=dtype).contiguous()

    def _address(self, tensor: Any) -> int:
        return int(tensor.data_ptr()) if tensor.numel() else int(self._placeholder.data_ptr())


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
        self.kv_dtype = _numpy_dtype(decoder.dtypes["past_key.0"])
        self.embed_dtype = _numpy_dtype(decoder.dtypes["inputs_embeds"])

    def vision(self, pixel_values: np.ndarray) -> np.ndarray:
        out = self.engines["vision"].run({"pixel_values": pixel_values})
        return np.asarray(out["visual_tokens"].float().cpu().numpy())

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        out = self.engines["embed"].run({"input_ids": input_ids})
        return np.asarray(out["inputs_embeds"].float().cpu().numpy())

    def decoder(self, feeds: dict[str, Any]) -> tuple[np.ndarray, list[Any]]:
        seq, past = int(feeds["inputs_embeds"].shape[1]), int(feeds["past_key.0"].shape[2])
        profile = choose_profile(seq, past, self.ranges)
        out = self.engines["decoder"].run(feeds, profile.index)
        presents = [
            out[f"present_{kind}.{i // 2}"] for i, kind in enumerate(("key", "value") * self.num_layers)
        ]
        return np.asarray(out["logits"].float().cpu().numpy()), presents


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
        return cls._open(manifest, device)

    @classmethod
    def _open(cls, manifest: Any, device: str) -> TensorRTBackend:
        import tensorrt as trt
        import torch

        from egovlm.export.ort_runner import VLMRunner

        dev = torch.device(device if device.startswith("cuda") else "cuda")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engines = {
            name: TrtEngine(trt, runtime, manifest.engine_path(name), dev, manifest.graph(name))
            for name in GRAPHS
        }
        names = list(manifest.data["tensorrt"]["profiles"]["decoder"])
        graphs = TrtGraphs(engines, int(manifest.model["num_layers"]), names)
        runner = VLMRunner.with_backend(manifest, graphs)
        info = {
            "runtime": f"tensorrt {trt.__version__}",
            "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev),
            "precision": manifest.precision,
            "target": manifest.target,
            "profiles": [r.__dict__ for r in graphs.ranges],
        }
        return cls(runner, Path(manifest.root), info, manifest.processor_dir / "config.json")


def load_tensorrt_backend(export_dir: str | Path, device: str = "cuda") -> TensorRTBackend:
    return TensorRTBackend.load(export_dir, device=device)
