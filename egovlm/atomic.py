"""Atomic file writes: a partially written artifact never replaces a good one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result should read like any other file
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _aside(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.old"


def recover_dir(dest: Path) -> bool:
    """Put back a folder that :func:`replace_dir` had moved aside when it was interrupted between
    its two renames (``dest`` missing, ``.dest.old`` present). Returns whether it did."""
    old = _aside(dest)
    if not dest.exists() and old.is_dir():
        old.rename(dest)
        return True
    return False


def replace_dir(new: Path, dest: Path) -> Path:
    """Swap a completely written folder ``new`` in as ``dest`` (same file system).

    POSIX has no atomic exchange of two non-empty folders, so the old ``dest`` is first renamed
    aside (``.dest.old``), ``new`` renamed in, and only then is the old one deleted: at every
    instant a complete folder exists, under ``dest`` or under the aside name, and
    :func:`recover_dir` (run here first) puts the aside one back after a crash between the renames.
    """
    recover_dir(dest)
    old = _aside(dest)
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


@contextlib.contextmanager
def staged_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty folder beside ``dest`` (``.dest.partial``, cleared of any earlier attempt) to
    fill; when the block ends normally it is swapped in as ``dest`` (:func:`replace_dir`), and on any
    exception (``SystemExit`` too) it is removed and ``dest`` is left as it was."""
    tmp = dest.parent / f".{dest.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest)
