"""The workstation half of the device tests: a sharpened tiny model and its ONNX exports.

Run by the main venv (it has torch and transformers), before ``tests/device`` runs in the torch-free
device venvs (``make test-device``)::

    .venv/bin/python -m tests.device.fixture build/device-fixture

writes ``model/`` (the checkpoint, for reference answers) and ``fp32/`` and ``int8/`` (exports for the
``onnx`` backend), plus ``reference.json``: the torch backend's greedy answers on fixed keyframes, which
the device venv must reproduce token for token from the fp32 export.

A random-init model with tied embeddings echoes the prompt's last token forever, which would make token
equality vacuous; the decoder's weight matrices are scaled so its greedy answers vary token to token.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.exports import quick_export, sharpened_tiny

N_NEW = 12
QUESTIONS: list[tuple[str, dict[str, str] | None]] = [
    ("What did I pick up first?", {"A": "a red cup", "B": "a blue book", "C": "the phone"}),
    ("Where did I leave my keys? ¿Dónde están?", None),
]


def keyframe_images(n: int, seed: int) -> list[np.ndarray]:
    """Deterministic test keyframes (HxWx3 uint8), identical in every venv (numpy's PCG64 stream)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(84, 112, 3), dtype=np.uint8) for _ in range(n)]


def reference_answers(model: Path) -> list[dict[str, Any]]:
    """The torch backend's greedy answers on ``keyframe_images(4, seed=3)``: what the device must say."""
    from egovlm.edge.backends import GenerationParams, create_backend
    from egovlm.edge.buffer import KeyframeBuffer
    from egovlm.edge.engine import Engine, EngineParams

    backend = create_backend("torch", model, device="cpu", threads=1)
    engine = Engine(backend, KeyframeBuffer(capacity=4), EngineParams(GenerationParams(max_new_tokens=N_NEW)))
    for i, img in enumerate(keyframe_images(4, seed=3)):
        engine.add_keyframe(2.0 * i, img)
    out = []
    for question, options in QUESTIONS:
        answer = engine.ask(question, options, use_cache=False)
        out.append({"question": question, "options": options, "token_ids": list(answer.token_ids)})
    return out


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    model = sharpened_tiny(root / "model")
    quick_export(model, root / "fp32", precision="fp32")
    quick_export(model, root / "int8", precision="int8")
    (root / "reference.json").write_text(json.dumps(reference_answers(model), indent=1))
    print(f"device fixture written to {root}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/device-fixture"))
