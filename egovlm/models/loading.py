"""Load a model and its processor: an egovlm-built folder, a local checkpoint, or a hub id.

Weights load from safetensors only (``use_safetensors=True``): a checkpoint that ships only
pickled ``.bin`` weights is refused rather than unpickled. Every weight file's header is opened
before loading, so a truncated or corrupt file (an interrupted copy or download) is named, and
a checkpoint that lacks weights the model needs is refused rather than silently random-filled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
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
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(
                f"weight index {index} is corrupt ({type(e).__name__}: {e}); expected JSON with a "
                "'weight_map' of tensor name → shard file"
            ) from None
        for shard in sorted(shards):
            if not (path / shard).is_file():
                raise ModelLoadError(f"model folder {path} is incomplete: missing weight shard {shard}")
    for weights_file in sorted(path.glob("*.safetensors")):
        check_safetensors(weights_file)


def check_safetensors(path: Path) -> None:
    """Open a safetensors file's header (no tensor data is read): a file cut short, a corrupt
    header or a non-safetensors file raises :class:`ModelLoadError` naming it. The library
    checks that the header is valid JSON and that its tensors exactly cover the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        size = path.stat().st_size if path.exists() else 0
        raise ModelLoadError(
            f"weights file {path} ({size} bytes) is truncated or corrupt: {e}; copy or download it "
            "again (or rebuild the model)"
        ) from e


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
        # Mismatched shapes are reported below (named, with both shapes) instead of raised unnamed.
        model, info = AutoModelForImageTextToText.from_pretrained(
            str(path),
            dtype=dtype,
            local_files_only=local_only,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise ModelLoadError(f"cannot load model {str(name_or_path)!r}: {type(e).__name__}: {e}") from e
    problems = _weight_problems(info)
    if problems:  # transformers filled these with random values and carried on
        files = ", ".join(sorted(p.name for p in path.glob("*.safetensors"))) if is_local else ""
        raise ModelLoadError(
            f"model {str(name_or_path)!r}: the weights{f' in {files}' if files else ''} do not fit the "
            f"model ({'; '.join(problems)}); the checkpoint is incomplete or for another architecture"
        )
    model = model.to(device).eval()
    size = keyframe_size_of(path) if is_local else DEFAULT_KEYFRAME_SIZE
    return LoadedModel(model=model, processor=processor, keyframe_size=size, source=str(name_or_path))


def _weight_problems(info: dict[str, Any], limit: int = 5) -> list[str]:
    """What transformers' loading info says the checkpoint lacks or has in the wrong shape."""

    def listed(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f" … ({len(items)} in all)" if len(items) > limit else "")

    problems = []
    missing = sorted(map(str, info.get("missing_keys") or []))
    if missing:
        problems.append(f"missing keys: {listed(missing)}")
    mismatched = sorted(
        f"{key} (checkpoint {list(ckpt)}, model {list(model)})"
        for key, ckpt, model in info.get("mismatched_keys") or []
    )
    if mismatched:
        problems.append(f"wrong shapes: {listed(mismatched)}")
    return problems
