"""Model runtimes behind one interface (:class:`Backend`): ``torch`` runs a model folder;
``onnx`` (ONNX Runtime) and ``tensorrt`` (engines built on the device) run an export/ folder,
loaded through its manifest.

Heavy imports (torch, transformers, onnxruntime, tensorrt) happen in :func:`create_backend`, so
importing the interface stays cheap for the server and the CLI.
"""

from __future__ import annotations

from pathlib import Path

from egovlm.edge.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationParams,
    PrefixState,
    TokenCallback,
    VisionFeatures,
)

BACKENDS = ("torch", "onnx", "tensorrt")
MANIFEST = "manifest.json"  # egovlm.export.manifest.MANIFEST (not imported: keep this module light)


def create_backend(
    kind: str, model: str | Path, device: str = "cpu", dtype: str = "float32", threads: int | None = None
) -> Backend:
    """Load a backend. ``model`` is a model folder or hub id (torch) or an export folder (onnx,
    tensorrt; their precision is the export's, so ``dtype`` applies to torch only). ``device``:
    torch ``cpu|cuda[:N]``; onnx ``cpu|cuda[:N]|tensorrt[:N]`` or provider names; tensorrt ``cuda[:N]``."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
    check_folder_kind(kind, model)
    if kind == "torch":
        from egovlm.edge.backends.torch_backend import TorchBackend

        return TorchBackend.load(model, device=device, dtype=dtype, threads=threads)
    if kind == "onnx":
        from egovlm.edge.backends.onnx_backend import load_onnx_backend

        return load_onnx_backend(model, device=device, threads=threads)
    from egovlm.edge.backends.tensorrt_backend import load_tensorrt_backend

    return load_tensorrt_backend(model, device=device if device.startswith("cuda") else "cuda")


def check_folder_kind(kind: str, model: str | Path) -> None:
    """Refuse an export folder for torch (the other direction is checked when the manifest is
    loaded: a model folder has config.json and no manifest)."""
    import json

    path = Path(model)
    if kind == "torch" and (path / MANIFEST).is_file():
        try:
            source = json.loads((path / MANIFEST).read_text())["model"]["source"]
        except (ValueError, KeyError, TypeError):
            source = "?"
        raise BackendError(
            f"{path} is an export folder ({MANIFEST}): run it with --backend onnx (or tensorrt for a "
            f"TensorRT-target export), or give --backend torch the model folder it was exported from "
            f"({source})"
        )


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "Generation",
    "GenerationParams",
    "PrefixState",
    "TokenCallback",
    "VisionFeatures",
    "check_folder_kind",
    "create_backend",
]
