"""Atomic writes and folder swaps: a failed or interrupted write never replaces a good artifact."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from egovlm import atomic
from egovlm.atomic import atomic_write_text, recover_dir, replace_dir, staged_dir


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_a_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "good")
    monkeypatch.setattr(atomic.os, "fsync", _disk_full)  # the data could not be flushed
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "half")
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def _folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "model.safetensors").write_text(text)
    return path


def test_replace_dir_swaps_a_folder_in(tmp_path: Path) -> None:
    final = _folder(tmp_path / "final", "old")
    replace_dir(_folder(tmp_path / ".final.partial", "new"), final)
    assert (final / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_a_crash_between_the_renames_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = _folder(tmp_path / "final", "old")
    new = _folder(tmp_path / ".final.partial", "new")
    real_rename = Path.rename

    def crash_on_second(self: Path, target: Path) -> Path:
        if self == new:
            raise KeyboardInterrupt  # killed after the old folder was moved aside
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(new, final)
    monkeypatch.undo()
    assert not final.exists()  # the moment of the crash: the good folder is aside, not gone
    assert recover_dir(final)
    assert (final / "model.safetensors").read_text() == "old"
    replace_dir(new, final)  # the next save goes through
    assert (final / "model.safetensors").read_text() == "new"


def test_staged_dir_swaps_in_a_filled_folder_and_drops_a_failed_one(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "w").write_text("good")
    (tmp_path / ".model.partial").mkdir()  # left over from an interrupted attempt
    (tmp_path / ".model.partial" / "junk").write_text("x")
    with pytest.raises(SystemExit), atomic.staged_dir(dest) as tmp:
        assert list(tmp.iterdir()) == []  # the leftover is cleared first
        (tmp / "w").write_text("half")
        raise SystemExit("too big")
    assert (dest / "w").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with staged_dir(dest) as tmp:
        (tmp / "w").write_text("new")
    assert (dest / "w").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
