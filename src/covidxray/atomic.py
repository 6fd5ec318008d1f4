"""Atomic file writes: a kill at any moment leaves either the old file or the new one, never half.

Every file the package writes goes through :func:`atomic_path` (or a helper built on it): the data
is written to a temporary file in the same folder, flushed and fsynced, then moved over the target
with ``os.replace`` (atomic on POSIX and Windows within one file system), and the folder entry is
fsynced so the rename itself survives a power cut. On any error the temporary file is removed.
The temporary name keeps the target's suffix, so writers that choose a format by suffix
(``savefig``, Keras' ``.weights.h5`` / ``.keras``) still work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from covidxray.errors import DiskSpaceError

#: Marker in every temporary name, so stale ones from a killed process can be found and removed.
TMP_TAG = ".tmp-covidxray"


def _tmp_name(target: Path) -> Path:
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".weights.h5") else target.suffix
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    return target.with_name(f".{stem}.{os.getpid()}{TMP_TAG}{suffix}")


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder so a rename inside it is durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """fsync a file's data to disk."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    Args:
        target: The file to write. Its folder is created when missing.

    Yields:
        The temporary path to write to (same folder, same suffix).

    Raises:
        IsADirectoryError: ``target`` is an existing folder.
    """
    target = Path(target)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target)
    try:
        yield tmp
        if tmp.is_file():
            fsync_file(tmp)
            os.replace(tmp, target)
            fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it takes ``target``'s place.

    For writers that produce a folder (``model.export``). The swap is two renames: a kill between
    them leaves the old folder under a temporary name (removed by :func:`remove_stale_tmp`) and no
    ``target``, never a half-written ``target``.

    Raises:
        NotADirectoryError: ``target`` is an existing file.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file; give a folder name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TMP_TAG}")
    old = target.with_name(f".{target.name}.{os.getpid()}{TMP_TAG}.old")
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    try:
        yield tmp
        if tmp.is_dir():
            for f in tmp.rglob("*"):
                if f.is_file():
                    fsync_file(f)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            fsync_dir(target.parent)
    finally:
        for p in (tmp, old):
            shutil.rmtree(p, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write JSON atomically (``default=str`` for paths and numpy scalars); returns the path."""
    return write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def write_csv(df, path: str | Path, **kwargs) -> Path:
    """Write a pandas DataFrame as CSV atomically (``index=False`` unless given); returns the path.

    File names that are not valid UTF-8 (kept by Python as surrogate escapes) are written back as
    the same bytes, so a manifest never fails on, or silently renames, such a file.
    """
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", errors="surrogateescape",
                                        newline="") as fh:
        df.to_csv(fh, **kwargs)
    return Path(path)


def check_free_space(folder: str | Path, needed_bytes: int, what: str, margin: float = 1.05) -> None:
    """Refuse a large write that the disk cannot hold, before anything is written.

    Args:
        folder: Where the data will go (the nearest existing parent is measured).
        needed_bytes: Bytes the write needs.
        what: What is being written, for the message.
        margin: Safety factor on ``needed_bytes``.

    Raises:
        DiskSpaceError: Naming the folder, what was needed and what is free.
    """
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free
    if free < needed_bytes * margin:
        raise DiskSpaceError(f"{folder}: not enough free disk space for {what}: needs "
                             f"{needed_bytes / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free")


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete temporary files (and folders) that killed processes of this package left in ``folder``.

    Only entries whose writer process no longer exists are removed.

    Returns:
        The removed paths.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for f in folder.glob(f"*{TMP_TAG}*"):
        try:
            pid = int(f.name.split(TMP_TAG)[0].rsplit(".", 1)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
