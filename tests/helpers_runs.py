"""Helpers for tests that use a trained run folder (the session ``smoke_run`` of conftest.py).

A smoke run's ``model.keras`` is about 250 MB, so :func:`copy_run` links it and copies only the
small metadata files: each test gets its own folder to change (or break) without retraining.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

#: Small files of a run folder that evaluate/predict read.
RUN_FILES = ("run.json", "config.yaml", "splits.csv", "history.csv", "ood.json", "ood_stats.npz")


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a run folder: metadata copied, ``model.keras`` symlinked.

    Args:
        src: A finished run folder.
        dst: Folder to create.

    Returns:
        ``dst``.
    """
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    os.symlink((src / "model.keras").resolve(), dst / "model.keras")
    return dst


def edit_run_json(run: Path, **changes) -> dict:
    """Overwrite keys of ``run/run.json`` and return the new metadata."""
    meta = json.loads((run / "run.json").read_text())
    meta.update(changes)
    (run / "run.json").write_text(json.dumps(meta))
    return meta


def write_bad_files(folder: Path, good_png: Path) -> dict[str, Path]:
    """Write one zero-byte, one truncated and one garbage image file into ``folder``.

    Args:
        folder: Where to write (created).
        good_png: A valid PNG whose first bytes make the truncated file.

    Returns:
        Kind (``zero``, ``truncated``, ``garbage``) -> path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {"zero": folder / "empty.png", "truncated": folder / "truncated.png", "garbage": folder / "garbage.jpg"}
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(good_png.read_bytes()[:120])
    files["garbage"].write_bytes(bytes(range(256)) * 3)
    return files
