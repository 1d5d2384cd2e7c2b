"""Load a model and its processor: an egovlm-built folder, a local checkpoint, or a hub id.

Weights load from safetensors only (``use_safetensors=True``): a checkpoint that ships only
pickled ``.bin`` weights is refused rather than unpickled. Every weight file's header is opened
before loading, so a truncated or corrupt file (an interrupted copy or download) is named, and
a checkpoint that lacks weights the model needs is refused rather than silently random-filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForImageTextToText, AutoProcessor

# The file checks are torch-free (egovlm.models.files) so the device's doctor and the export's fit
# check use them too; re-exported here for the loaders' callers.
from egovlm.models.files import ModelLoadError, check_model_dir, keyframe_size_of
from egovlm.models.presets import DEFAULT_KEYFRAME_SIZE

__all__ = ["LoadedModel", "ModelLoadError", "check_model_dir", "keyframe_size_of", "load_model"]


@dataclass
class LoadedModel:
    model: Any  # Qwen2_5_VLForConditionalGeneration (or a compatible image-text-to-text model)
    processor: Any
    keyframe_size: tuple[int, int]
    source: str

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer


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
