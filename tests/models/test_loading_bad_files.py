"""Damaged model folders fail with an error that names the damaged file, before (or instead of)
a model that is silently wrong: a weights file cut short by an interrupted copy, a corrupt
header, a weight index that is not JSON, and a checkpoint that lacks a tensor or has one of the
wrong shape (transformers would random-fill those and carry on). Pickled weights beside the
safetensors ones are never unpickled, not even when the safetensors file is damaged."""

from __future__ import annotations

import pathlib
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from egovlm.models.loading import ModelLoadError, check_model_dir, load_model

WEIGHTS = "model.safetensors"


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny model (the shared one must stay intact)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


def _header_len(raw: bytes) -> int:
    return int(struct.unpack("<Q", raw[:8])[0])


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "cut in half": lambda raw: raw[: len(raw) // 2],
    "last bytes missing": lambda raw: raw[:-16],
    "cut inside the header": lambda raw: raw[: 8 + _header_len(raw) // 2],
    "header not JSON": lambda raw: raw[:8] + b"{\x00garbage" + raw[17:],
    "header length past the end": lambda raw: struct.pack("<Q", len(raw) * 4) + raw[8:],
    "empty file": lambda raw: b"",
    "not safetensors at all": lambda raw: b"PK\x03\x04 a zip, or a pickle" * 10,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_weights_are_named(model_copy: Path, damage: str) -> None:
    weights = model_copy / WEIGHTS
    weights.write_bytes(DAMAGE[damage](weights.read_bytes()))
    with pytest.raises(ModelLoadError) as info:
        check_model_dir(model_copy)
    message = str(info.value)
    assert str(weights) in message and "truncated or corrupt" in message, message


def test_load_model_names_a_truncated_file_before_transformers_sees_it(model_copy: Path) -> None:
    weights = model_copy / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(
        ModelLoadError, match=rf"weights file {weights} \(\d+ bytes\) is truncated or corrupt"
    ):
        load_model(model_copy)


def test_corrupt_weight_index_is_named(model_copy: Path) -> None:
    index = model_copy / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"a": "model.safe')  # cut mid-write
    with pytest.raises(ModelLoadError, match=rf"weight index {index} is corrupt"):
        check_model_dir(model_copy)
    index.write_text('["not", "an", "index"]')
    with pytest.raises(ModelLoadError, match=rf"weight index {index} is corrupt"):
        check_model_dir(model_copy)


def test_a_missing_tensor_is_refused_not_random_filled(model_copy: Path) -> None:
    weights = model_copy / WEIGHTS
    tensors = load_file(str(weights))
    dropped = sorted(tensors)[-1]
    del tensors[dropped]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    check_model_dir(model_copy)  # a well-formed file: only loading can tell it is incomplete
    with pytest.raises(ModelLoadError) as info:
        load_model(model_copy)
    message = str(info.value)
    assert "missing keys: " in message and dropped in message, message
    assert WEIGHTS in message and str(model_copy) in message


def test_a_wrong_shape_tensor_is_named(model_copy: Path) -> None:
    weights = model_copy / WEIGHTS
    tensors = load_file(str(weights))
    name = "model.embed_tokens.weight"
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as info:
        load_model(model_copy)
    message = str(info.value)
    assert str(model_copy) in message and WEIGHTS in message, message
    assert "wrong shapes: " in message and "embed_tokens.weight (checkpoint [" in message, message


def test_an_intact_copy_still_loads(model_copy: Path) -> None:
    check_model_dir(model_copy)
    assert load_model(model_copy).model is not None


class _Tripwire:
    """Unpickling this creates ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_pickled_weights_beside_safetensors_are_never_unpickled(model_copy: Path, tmp_path: Path) -> None:
    pickle.loads(pickle.dumps(_Tripwire(tmp_path / "armed")))  # the tripwire works...
    assert (tmp_path / "armed").exists()
    tripwire = tmp_path / "unpickled"  # ...and the loader never trips it
    for name in ("pytorch_model.bin", "model.pt"):
        (model_copy / name).write_bytes(pickle.dumps(_Tripwire(tripwire)))
    assert load_model(model_copy).model is not None
    weights = model_copy / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1])  # damaged: still no fallback to the pickle
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(model_copy)
    assert not tripwire.exists()
