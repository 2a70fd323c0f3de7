"""Atomic writes: a reader sees the previous file (or folder) or the complete new one, never a part.

Everything is written to a uniquely named temporary sibling (so concurrent writers, one per rank, never share one),
flushed to disk, given ordinary permissions and renamed over the target (POSIX rename is atomic within a file
system). On any error the temporary is removed and the target is left as it was.

Every writer in the package goes through these helpers. Two options serve the one writer with stricter needs,
training checkpoints (:class:`audiodiff.training.resume.AtomicCheckpointIO`): `temp`, a fixed temporary name, so
that a save killed half-way leaves one stale file that the next save overwrites instead of a new multi-gigabyte
orphan per crash (safe there because one process writes each checkpoint path); and `fsync_dir`, which also syncs
the folder after the rename, so the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o644  # mkstemp makes files owner-only; written files get the usual permissions
FOLDER_MODE = 0o755


def fsync_folder(folder: str | Path) -> None:
    """fsync a folder, so that renames and new entries in it reach the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, temp: str | Path | None = None, fsync_dir: bool = False) -> Iterator[Path]:
    """A fresh temporary path beside `path` for a writer that takes a file name (safetensors, soundfile, torch.save);
    renamed onto `path` when the block ends without an error, removed otherwise.

    The temporary is created empty with O_EXCL under a random name (`mkstemp`), so no two writers ever share one.
    `temp` instead names a fixed temporary beside `path` (a single writer only; see the module docstring);
    `fsync_dir` fsyncs the folder after the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if temp is None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = Path(temp)
        if tmp.parent.resolve() != path.parent.resolve():
            raise ValueError(f"atomic_path: the temporary {tmp} must lie beside {path} (same file system)")
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        if fsync_dir:
            fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8", *, temp: str | Path | None = None,
                fsync_dir: bool = False) -> Iterator[IO[Any]]:
    """An open temporary file beside `path` (`mode` "w" or "wb"); flushed, fsynced and renamed onto `path` when the
    block ends without an error (`temp`, `fsync_dir`: as for :func:`atomic_path`)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, temp=temp, fsync_dir=fsync_dir) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, **options: Any) -> Path:
    """Write `obj` as JSON (`json.dump` options, default indent 2, UTF-8 kept) and a final newline, atomically."""
    options = {"indent": 2, "ensure_ascii": False, **options}
    with atomic_open(path) as handle:
        json.dump(obj, handle, **options)
        handle.write("\n")
    return Path(path)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside `path` to fill; when the block ends without an error it replaces `path` (any
    previous folder is moved aside, the new one renamed in, the old one deleted), otherwise it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(FOLDER_MODE)
        for file in tmp.rglob("*"):
            file.chmod(FOLDER_MODE if file.is_dir() else FILE_MODE)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
