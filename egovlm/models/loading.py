"""Load a model and its processor: an egovlm-built folder, a local checkpoint, or a hub id.

Weights load from safetensors only (``use_safetensors=True``): a checkpoint that ships only
pickled ``.bin`` weights is refused rather than unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from egovlm.models.build import EGOVLM_META
from egovlm.models.presets import DEFAULT_KEYFRAME_SIZE

# Each entry is satisfied by any one of its names (transformers 5 writes processor_config.json;
# older checkpoints, like the published Qwen2.5-VL ones, have preprocessor_config.json).
REQUIRED_FILES = (
    ("config.json",),
    ("tokenizer_config.json",),
    ("processor_config.json", "preprocessor_config.json"),
)


class ModelLoadError(RuntimeError):
    """A model folder that is missing, incomplete or unsafe; the message names what is wrong."""


@dataclass
class LoadedModel:
    model: Any  # Qwen2_5_VLForConditionalGeneration (or a compatible image-text-to-text model)
    processor: Any
    keyframe_size: tuple[int, int]
    source: str

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer


def check_model_dir(path: Path) -> None:
    """Raise :class:`ModelLoadError` naming the first missing file of a local checkpoint."""
    if not path.is_dir():
        raise ModelLoadError(f"model folder not found: {path}")
    for names in REQUIRED_FILES:
        if not any((path / name).is_file() for name in names):
            raise ModelLoadError(f"model folder {path} is incomplete: missing {' or '.join(names)}")
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.safetensors.index.json"))
    if not weights:
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found only pickled weights {pickled}; convert them to safetensors)" if pickled else ""
        raise ModelLoadError(f"model folder {path} is incomplete: no *.safetensors weights{hint}")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        for shard in sorted(shards):
            if not (path / shard).is_file():
                raise ModelLoadError(f"model folder {path} is incomplete: missing weight shard {shard}")


def keyframe_size_of(path: Path) -> tuple[int, int]:
    meta = path / EGOVLM_META
    if meta.is_file():
        w, h = json.loads(meta.read_text())["keyframe_size"]
        return (int(w), int(h))
    return DEFAULT_KEYFRAME_SIZE


def load_model(
    name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu", local_only: bool = True
) -> LoadedModel:
    """Load model + processor. A local path is checked file by file first; anything else is
    treated as a hub id (resolved from the local cache when ``local_only``)."""
    path = Path(name_or_path)
    is_local = path.exists() or str(name_or_path).startswith((".", "/", "~"))
    if is_local:
        path = path.expanduser()
        check_model_dir(path)
    try:
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=local_only)
        model = AutoModelForImageTextToText.from_pretrained(
            str(path), dtype=dtype, local_files_only=local_only, use_safetensors=True
        )
    except OSError as e:
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {e}") from e
    model = model.to(device).eval()
    size = keyframe_size_of(path) if is_local else DEFAULT_KEYFRAME_SIZE
    return LoadedModel(model=model, processor=processor, keyframe_size=size, source=str(name_or_path))
