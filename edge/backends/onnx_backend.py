"""The ``onnx`` backend (ONNX Runtime: CPU, CUDA or TensorRT execution provider): not built yet.

It will load the vision encoder and the language model exported by ``export/`` from that stage's
manifest, and implement the same three steps as the torch backend (vision once per keyframe,
prefix KV rebuilt off the question path, question-only prefill with host-computed M-RoPE
positions). The manifest format belongs to the export work, which is still in progress, so
this backend refuses clearly instead of guessing a format.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

NOT_BUILT = (
    "the {name} backend is not implemented yet (edge runtime, issue 6): it loads engines from the "
    "manifest written by export/, whose format is still being defined. Use --backend torch for now."
)


def load_onnx_backend(manifest: str | Path, **options: object) -> NoReturn:
    raise NotImplementedError(NOT_BUILT.format(name="onnx") + f" (manifest: {manifest})")
