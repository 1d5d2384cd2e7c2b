"""Torn checkpoints (crash, SIGKILL or a full disk during a save) are never resumed from, and a
failed final save keeps the previous final model."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from egovlm.train.trainer import checkpoint_problem, last_checkpoint, save_final


def _checkpoint(run: Path, step: int, *, state: bool = True, weights: bool = True) -> Path:
    ckpt = run / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    if weights:
        save_file({"w": torch.zeros(4)}, str(ckpt / "model.safetensors"))
    if state:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def test_complete_checkpoint_has_no_problem(tmp_path: Path) -> None:
    assert checkpoint_problem(_checkpoint(tmp_path, 2)) is None


def test_newest_torn_checkpoint_is_set_aside(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 10)
    no_state = _checkpoint(tmp_path, 12, state=False)  # killed before trainer_state.json
    torn = _checkpoint(tmp_path, 14)
    (torn / "trainer_state.json").write_text('{"global_st')  # disk full mid-write
    weights = _checkpoint(tmp_path, 16)
    data = (weights / "model.safetensors").read_bytes()
    (weights / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated weights
    assert "trainer_state.json" in (checkpoint_problem(no_state) or "")
    assert "model.safetensors" in (checkpoint_problem(weights) or "")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        ".torn-checkpoint-12",
        ".torn-checkpoint-14",
        ".torn-checkpoint-16",
        "checkpoint-10",
        "checkpoint-2",
    ]


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 4, weights=False)
    assert last_checkpoint(tmp_path) is None
    assert last_checkpoint(tmp_path / "missing") is None


class _Trainer:
    """Just what save_final touches; save_model fails half-way like a full disk."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
        self.processing_class = SimpleNamespace(save_pretrained=self._save_processor)
        self.model = SimpleNamespace(config=SimpleNamespace(_name_or_path=""))
        self.state = SimpleNamespace(global_step=3)

    def save_model(self, out: str) -> None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "model.safetensors").write_text("new")
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")

    def _save_processor(self, out: str) -> Any:
        (Path(out) / "tokenizer.json").write_text("{}")


def test_failed_final_save_keeps_the_previous_final(tmp_path: Path) -> None:
    final = tmp_path / "final"
    final.mkdir()
    (final / "model.safetensors").write_text("good")
    with pytest.raises(OSError, match="No space left"):
        save_final(_Trainer(fail=True), tmp_path)
    assert (final / "model.safetensors").read_text() == "good"
    save_final(_Trainer(fail=False), tmp_path)
    assert (final / "model.safetensors").read_text() == "new"
    assert json.loads((final / "egovlm.json").read_text())["steps"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
