"""The ``onnx`` backend: an export/ directory run by ONNX Runtime (CPU, CUDA or TensorRT execution
provider), with the same cached visual prefix as the torch backend.

Loading goes through the export's manifest (every file re-hashed, the prompt contract version
checked) and export's own :class:`egovlm.export.ort_runner.VLMRunner`; the cached-prefix steps
are :class:`egovlm.edge.backends.export_backend.ExportBackend`'s, shared with ``tensorrt``.

Execution providers: ``device`` is ``cpu``, ``cuda`` / ``cuda:N``, ``tensorrt`` / ``tensorrt:N``
(ONNX Runtime's TensorRT provider, CUDA and CPU as fallbacks for unsupported nodes), or an explicit
comma-separated list of provider names. CUDA and TensorRT need the ``onnxruntime-gpu`` package
(the ``gpu`` extra), which replaces ``onnxruntime``: never install both.

The TensorRT provider is configured from the export (:func:`tensorrt_provider_options`): one
optimisation profile per input spanning the manifest's ``tensorrt.profiles`` (ONNX Runtime parses
several profiles but runs only profile 0; microsoft/onnxruntime PR 31624, which would switch between
them, is still open; so the prefill and decode ranges are merged into one), an engine and timing
cache under the user's cache folder keyed by the manifest's hash (without both, the provider rebuilds
an engine whenever the KV cache grows, and again at every start), fp16 for the fp16 graphs with
RMSNorm's Pow/ReduceMean kept in fp32, INT8 for ModelOpt's standard Q/DQ. Exports without profiles
(the ``cpu`` target) and graphs only TensorRT itself loads (ModelOpt int4/fp8: ``trt::``
custom-domain Q/DQ) are refused with what to run instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from egovlm.edge.backends.base import BackendError
from egovlm.edge.backends.export_backend import ExportBackend, load_export_manifest

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
Provider = str | tuple[str, dict[str, Any]]

GPU_HINT = (
    "install onnxruntime-gpu in place of onnxruntime on a machine with CUDA "
    "(pip uninstall onnxruntime && pip install onnxruntime-gpu, as the `gpu` extra does; never both in "
    "one environment), "
    "or run with --device cpu"
)


def select_providers(
    device: str, available: Sequence[str], tensorrt: Mapping[str, Any] | None = None
) -> list[Provider]:
    """ONNX Runtime providers for ``device``, in priority order; refuses, naming what is missing
    and how to get it, when a requested provider is not in ``available``
    (``onnxruntime.get_available_providers()``). ``tensorrt``: the TensorRT provider's options
    (:func:`tensorrt_provider_options`), added wherever that provider is selected."""
    kind, _, index = device.strip().partition(":")
    kind = kind.lower()
    if "," in device or device.endswith("ExecutionProvider"):
        wanted = [p.strip() for p in device.split(",") if p.strip()]
        _require(wanted, available)
        return [(p, dict(tensorrt)) if p == TENSORRT and tensorrt else p for p in wanted]
    if index and not index.isdigit():
        raise BackendError(f"onnx backend: device {device!r}: expected {kind}:N with N a GPU index")
    options = {"device_id": int(index or 0)}
    if kind == "cpu":
        return [CPU]
    if kind in {"cuda", "gpu"}:
        _require([CUDA], available)
        return [(CUDA, options), CPU]
    if kind in {"tensorrt", "trt"}:
        _require([TENSORRT, CUDA], available)
        return [(TENSORRT, {**(tensorrt or {}), **options}), (CUDA, options), CPU]
    raise BackendError(
        f"onnx backend: unknown device {device!r}; use cpu, cuda[:N], tensorrt[:N] or a comma-separated "
        "list of ONNX Runtime provider names"
    )


def wants_tensorrt(device: str) -> bool:
    """Whether ``device`` selects ONNX Runtime's TensorRT provider."""
    kind = device.strip().partition(":")[0].lower()
    return kind in {"tensorrt", "trt"} or TENSORRT in [p.strip() for p in device.split(",")]


# -- the TensorRT provider's options (pure: tested on CPU) --------------------------------------------

GRAPH_ORDER = ("vision", "embed", "decoder")


def merged_profile(
    profiles: Mapping[str, Mapping[str, Sequence[Sequence[int]]]],
) -> dict[str, list[list[int]]]:
    """One (min, opt, max) per input covering every named profile of a graph: the element-wise
    minimum of the minima and maximum of the maxima; opt from ``decode`` when there is one (most
    calls are single-token steps), else the first profile's."""
    names = list(profiles)
    if not names:
        return {}
    opt_from = profiles["decode"] if "decode" in profiles else profiles[names[0]]
    merged: dict[str, list[list[int]]] = {}
    for tensor in profiles[names[0]]:
        shapes = [profiles[n][tensor] for n in names]
        ranks = {len(s[0]) for s in shapes} | {len(s[2]) for s in shapes}
        if len(ranks) != 1:
            raise BackendError(f"onnx backend: profiles give input {tensor} different ranks: {shapes}")
        lo = [min(s[0][d] for s in shapes) for d in range(len(shapes[0][0]))]
        hi = [max(s[2][d] for s in shapes) for d in range(len(shapes[0][2]))]
        merged[tensor] = [lo, [int(v) for v in opt_from[tensor][1]], hi]
    return merged


def _shape_list(profiles: Mapping[str, Sequence[Sequence[int]]], which: int) -> str:
    """``name:d0xd1x...`` per input, comma-separated: ONNX Runtime's trt_profile_*_shapes format."""
    return ",".join(
        f"{name}:{'x'.join(str(int(d)) for d in shapes[which])}" for name, shapes in profiles.items()
    )


def ort_tensorrt_cache_dir(manifest_path: Path) -> Path:
    """Where the provider keeps engines and timing data for one export: the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``; hand-written because the device install has no
    platformdirs), under the manifest's sha256, so a re-export never meets stale engines and the
    export folder (hash-verified, maybe read-only) is never written."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(manifest_path.read_bytes()).hexdigest()[:16]
    return base / "egovlm" / "ort-tensorrt" / digest


def tensorrt_provider_options(data: Mapping[str, Any], root: Path, cache_dir: Path) -> dict[str, Any]:
    """The TensorRT provider's options for the export whose manifest body is ``data`` (see the
    module docstring); raises :class:`BackendError` for exports the provider cannot run well."""
    quant_ops = [str(k) for k in ((data.get("quantization") or {}).get("ops") or {})]
    custom = sorted(k for k in quant_ops if k.startswith("trt::"))
    if custom or data.get("precision") in {"int4", "fp8"}:
        raise BackendError(
            f"onnx backend: {root} is a {data.get('precision')} export whose decoder uses TensorRT's own "
            f"quantisation ops ({', '.join(custom) or 'trt:: Q/DQ'}), which ONNX Runtime cannot load: run it "
            f"with --backend tensorrt after `egovlm export build-engines {root}` on the device"
        )
    planned = (data.get("tensorrt") or {}).get("profiles") or {}
    if not all(planned.get(g) for g in GRAPH_ORDER):
        raise BackendError(
            f"onnx backend: {root} (target {data.get('target')}) has no TensorRT optimisation profiles in "
            "its manifest, so ONNX Runtime's TensorRT provider would build a new engine whenever the KV "
            "cache grows: export for a Jetson target (orin-nano, orin-nx, agx-orin, thor), or run this "
            "export with --device cuda"
        )
    merged: dict[str, list[list[int]]] = {}
    for graph in GRAPH_ORDER:
        merged.update(merged_profile(planned[graph]))
    int8 = any(k in {"QuantizeLinear", "DequantizeLinear"} for k in quant_ops)  # ONNX-domain Q/DQ
    workspace = int(((data.get("tensorrt") or {}).get("plan") or {}).get("workspace_bytes") or 0)
    options: dict[str, Any] = {
        "trt_profile_min_shapes": _shape_list(merged, 0),
        "trt_profile_opt_shapes": _shape_list(merged, 1),
        "trt_profile_max_shapes": _shape_list(merged, 2),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir / "engines"),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir / "timing"),
        "trt_fp16_enable": True,  # TensorRT-target graphs are fp16 (vision, embed, fp16/Q-DQ decoder)
        "trt_layer_norm_fp32_fallback": True,  # RMSNorm's Pow + ReduceMean in fp32: no fp16 overflow
        "trt_int8_enable": int8,  # explicit Q/DQ (ModelOpt int8): no calibration table needed
    }
    if workspace:
        options["trt_max_workspace_size"] = workspace
    return options


def _require(wanted: Sequence[str], available: Sequence[str]) -> None:
    missing = [p for p in wanted if p not in available]
    if missing:
        hint = GPU_HINT if any(p in {CUDA, TENSORRT} for p in missing) else "check the provider name"
        if TENSORRT in missing:
            hint += "; the TensorRT provider also needs TensorRT's libraries (JetPack ships them)"
        raise BackendError(
            f"onnx backend: {', '.join(missing)} not available in this onnxruntime "
            f"(available: {', '.join(available) or 'none'}): {hint}"
        )


def provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


class OnnxBackend(ExportBackend):
    """An export directory on ONNX Runtime; see the module docstring."""

    name = "onnx"

    @classmethod
    def load(
        cls,
        export_dir: str | Path,
        device: str = "cpu",
        threads: int | None = None,
        providers: Sequence[Provider] | None = None,
    ) -> OnnxBackend:
        """Verify the manifest, pick providers, open the three graphs. ``threads`` sets ONNX
        Runtime's intra-op threads (on a small shared CPU, fewer than the cores avoids spinning)."""
        import onnxruntime as ort

        from egovlm.export.ort_runner import OrtBackend, VLMRunner

        manifest = load_export_manifest(export_dir, cls.name)
        trt_options = None
        if not providers and wants_tensorrt(device):
            cache = ort_tensorrt_cache_dir(manifest.root / "manifest.json")
            trt_options = tensorrt_provider_options(manifest.data, manifest.root, cache)
            for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
                Path(trt_options[key]).mkdir(parents=True, exist_ok=True)
        chosen = (
            list(providers)
            if providers
            else select_providers(device, ort.get_available_providers(), trt_options)
        )
        paths = {name: manifest.graph_path(name) for name in ("vision", "embed", "decoder")}
        try:
            # ONNX Runtime takes (name, options) pairs too; OrtBackend's annotation says names only.
            graphs = OrtBackend(paths, providers=chosen, threads=threads)
            runner = VLMRunner.with_backend(manifest, graphs)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise BackendError(f"onnx backend: ONNX Runtime cannot load {manifest.root}: {e}") from e
        active = graphs.sessions["decoder"].get_providers()
        primary = provider_name(chosen[0])
        if primary not in active:  # ORT falls back to CPU with only a log line when a provider fails
            raise BackendError(
                f"onnx backend: ONNX Runtime did not enable {primary} for {manifest.root} "
                f"(active: {', '.join(active)}); see its log above for why ({GPU_HINT})"
            )
        info = {
            "runtime": "onnxruntime " + ort.__version__,
            "providers": active,
            "threads": threads,
            "precision": manifest.precision,
            "target": manifest.target,
        }
        return cls(runner, Path(export_dir), info, manifest.processor_dir / "config.json")


def load_onnx_backend(
    export_dir: str | Path,
    device: str = "cpu",
    threads: int | None = None,
    providers: Sequence[Provider] | None = None,
) -> OnnxBackend:
    return OnnxBackend.load(export_dir, device=device, threads=threads, providers=providers)
