"""The ``onnx`` backend (ONNX Runtime: CPU, CUDA or TensorRT execution provider): not built yet.

It will load the vision encoder and the language model exported by ``export/`` from that stage's
manifest, and implement the same three steps as the torch backend (vision once per keyframe,
prefix KV rebuilt off the question path, question-only prefill with host-computed M-RoPE
positions). export/ was being built in parallel (its manifest, egovlm.export.manifest, landed
during this work), so this backend is not wired to it yet and refuses clearly instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

NOT_BUILT = (
    "the {name} backend is not implemented yet (edge runtime, issue 6): loading the engines named in "
    "export/'s manifest.json into the cached-state runtime is still to do. Use --backend torch for now."
)


def load_onnx_backend(manifest: str | Path, **options: object) -> NoReturn:
    raise NotImplementedError(NOT_BUILT.format(name="onnx") + f" (manifest: {manifest})")
