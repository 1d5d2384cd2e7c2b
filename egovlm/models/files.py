"""A checkpoint's files, read without torch or transformers: completeness checks, the safetensors
headers (names, shapes and dtypes, no weight data) and the egovlm metadata.

Shared by the workstation's model loading (:mod:`egovlm.models.loading`), the export's fit check
(:mod:`egovlm.export.fit`, which must refuse an oversized export before anything heavy is loaded),
the slice tooling (:mod:`egovlm.models.presets`) and ``egovlm doctor --model`` on a torch-free device.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from egovlm.models.presets import DEFAULT_KEYFRAME_SIZE

EGOVLM_META = "egovlm.json"  # written beside offline-built models: keyframe size, preset
# egovlm.json's name for the extra corpus an offline model's tokenizer was trained with ("egosynth");
# absent when the tokenizer is the default one
TOKENIZER_CORPUS = "tokenizer_corpus"
SAFETENSORS_INDEX = "model.safetensors.index.json"

# Each entry is satisfied by any one of its names (transformers 5 writes processor_config.json;
# older checkpoints, like the published Qwen2.5-VL ones, have preprocessor_config.json).
REQUIRED_FILES = (
    ("config.json",),
    ("tokenizer_config.json",),
    ("processor_config.json", "preprocessor_config.json"),
)

# Bytes per element of the safetensors dtypes a checkpoint may hold.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class ModelLoadError(RuntimeError):
    """A model folder that is missing, incomplete or unsafe; the message names what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint as its safetensors header describes it."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name: F32, BF16, ...
    file: Path

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        if self.dtype not in DTYPE_BYTES:
            raise ModelLoadError(
                f"{self.file}: tensor {self.name!r} has dtype {self.dtype}, unknown to egovlm"
            )
        return self.numel * DTYPE_BYTES[self.dtype]


def weight_files(path: Path) -> list[Path]:
    """The safetensors files holding a checkpoint's weights: the shards its index names, else every
    ``*.safetensors`` in the folder."""
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(
                f"weight index {index} is corrupt ({type(e).__name__}: {e}); expected JSON with a "
                "'weight_map' of tensor name → shard file"
            ) from None
        return sorted(path / str(shard) for shard in shards)
    return sorted(path.glob("*.safetensors"))


def read_safetensors_headers(path: str | Path) -> list[TensorInfo]:
    """Every tensor of the checkpoint in folder ``path``, from the safetensors headers only (no weight
    is read). A missing, truncated or corrupt file raises :class:`ModelLoadError` naming it."""
    from safetensors import SafetensorError, safe_open

    root = Path(path)
    files = weight_files(root)
    if not files:
        raise ModelLoadError(f"{root}: no *.safetensors weights (nor {SAFETENSORS_INDEX})")
    out: list[TensorInfo] = []
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    info = f.get_slice(name)
                    shape = tuple(int(d) for d in info.get_shape())
                    out.append(TensorInfo(name, shape, str(info.get_dtype()), file))
        except (SafetensorError, OSError) as e:
            raise _corrupt(file, e) from e
    return out


def check_model_dir(path: Path) -> None:
    """Raise :class:`ModelLoadError` naming the first missing or unreadable file of a local checkpoint.
    Every weight file's header is opened (the library checks that its tensors exactly cover the file)."""
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
    for shard in weight_files(path):
        if not shard.is_file():
            raise ModelLoadError(f"model folder {path} is incomplete: missing weight shard {shard.name}")
    read_safetensors_headers(path)


def check_safetensors(path: Path) -> None:
    """Open one safetensors file's header (a torn training checkpoint's weights): a file cut short, a
    corrupt header or a non-safetensors file raises :class:`ModelLoadError` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise _corrupt(path, e) from e


def _corrupt(path: Path, e: Exception) -> ModelLoadError:
    size = path.stat().st_size if path.exists() else 0
    return ModelLoadError(
        f"weights file {path} ({size} bytes) is truncated or corrupt: {e}; copy or download it "
        "again (or rebuild the model)"
    )


def keyframe_size_of(path: str | Path) -> tuple[int, int]:
    """The keyframe size (width, height) a model was built or trained for: its ``egovlm.json``, else
    the deployment default (448x336, 192 visual tokens)."""
    meta = Path(path) / EGOVLM_META
    if meta.is_file():
        w, h = json.loads(meta.read_text())["keyframe_size"]
        return (int(w), int(h))
    return DEFAULT_KEYFRAME_SIZE
