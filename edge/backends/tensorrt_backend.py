"""The ``tensorrt`` backend (engines built by ``export/`` for Jetson Orin / Thor): not built yet.

TensorRT cannot be installed on the development machines (DESIGN.md §7); this backend will load
the engines named in export/'s manifest and run the same three cached-state steps as the torch
backend. Until that is wired it refuses clearly.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from egovlm.edge.backends.onnx_backend import NOT_BUILT


def load_tensorrt_backend(manifest: str | Path, **options: object) -> NoReturn:
    raise NotImplementedError(NOT_BUILT.format(name="tensorrt") + f" (manifest: {manifest})")
