"""The ``onnx`` backend: an export/ directory run by ONNX Runtime (CPU, CUDA or TensorRT execution
provider), with the same cached visual prefix as the torch backend.

Loading goes through the export's manifest (every file re-hashed, the prompt contract version
checked) and export's own :class:`egovlm.export.ort_runner.VLMRunner`; the cached-prefix steps
are :class:`egovlm.edge.backends.export_backend.ExportBackend`'s, shared with ``tensorrt``.

Execution providers: ``device`` is ``cpu``, ``cuda`` / ``cuda:N``, ``tensorrt`` / ``tensorrt:N``
(ONNX Runtime's TensorRT provider, CUDA and CPU as fallbacks for unsupported nodes), or an explicit
comma-separated list of provider names. CUDA and TensorRT need the ``onnxruntime-gpu`` package
(the ``gpu`` extra), which replaces ``onnxruntime``: never install both.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def select_providers(device: str, available: Sequence[str]) -> list[Provider]:
    """ONNX Runtime providers for ``device``, in priority order; refuses, naming what is missing
    and how to get it, when a requested provider is not in ``available``
    (``onnxruntime.get_available_providers()``)."""
    kind, _, index = device.strip().partition(":")
    kind = kind.lower()
    if "," in device or device.endswith("ExecutionProvider"):
        wanted = [p.strip() for p in device.split(",") if p.strip()]
        _require(wanted, available)
        return list(wanted)
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
        return [(TENSORRT, options), (CUDA, options), CPU]
    raise BackendError(
        f"onnx backend: unknown device {device!r}; use cpu, cuda[:N], tensorrt[:N] or a comma-separated "
        "list of ONNX Runtime provider names"
    )


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

        from egovlm.export.ort_runner import VLMRunner

        manifest = load_export_manifest(export_dir, cls.name)
        chosen = list(providers) if providers else select_providers(device, ort.get_available_providers())
        try:
            runner = VLMRunner.from_manifest(manifest, providers=chosen, threads=threads)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise BackendError(f"onnx backend: ONNX Runtime cannot load {manifest.root}: {e}") from e
        active = runner.backend.sessions["decoder"].get_providers()
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
