"""Model runtimes behind one interface (:class:`Backend`): ``torch`` now; ``onnx`` and
``tensorrt`` load export/'s manifest once it exists and raise NotImplementedError until then.

Heavy imports (torch, transformers) happen in :func:`create_backend`, so importing the interface
stays cheap for the server and the CLI.
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


def create_backend(
    kind: str, model: str | Path, device: str = "cpu", dtype: str = "float32", threads: int | None = None
) -> Backend:
    """Load a backend. ``model`` is a model folder or hub id (torch) or an export manifest (others)."""
    if kind == "torch":
        from egovlm.edge.backends.torch_backend import TorchBackend

        return TorchBackend.load(model, device=device, dtype=dtype, threads=threads)
    if kind == "onnx":
        from egovlm.edge.backends.onnx_backend import load_onnx_backend

        load_onnx_backend(model, device=device, dtype=dtype)
    elif kind == "tensorrt":
        from egovlm.edge.backends.tensorrt_backend import load_tensorrt_backend

        load_tensorrt_backend(model, device=device, dtype=dtype)
    raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "Generation",
    "GenerationParams",
    "PrefixState",
    "TokenCallback",
    "VisionFeatures",
    "create_backend",
]
