"""Run folders: what was trained, on what, how; and the checks that stop a model from being used
with the wrong class order or input scaling."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from covidxray import atomic, paths
from covidxray.errors import RunError, RunLockedError

PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "opencv-python-headless",
            "pillow", "pydicom", "imagehash", "tf-keras-vis", "matplotlib")




def git_sha() -> str:
    """``git rev-parse HEAD`` of the repository (``+dirty`` when there are uncommitted changes)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a model computes."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (the one file hash of the package)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (no half-written run.json after a kill)."""
    atomic.write_json(path, data)


@contextlib.contextmanager
def lock_run(run_dir: str | Path) -> Iterator[Path]:
    """Hold a run folder for one trainer: a second ``train`` / ``--resume`` on it fails at once.

    The lock is an ``flock`` on ``<run>/.lock`` (the ``filelock`` package), which the kernel releases
    when the holder exits however it dies, so a killed run never blocks its own ``--resume``. Who
    holds it (pid, host, start time, command) is written to ``<run>/.lock.owner`` for the message.

    Raises:
        RunLockedError: The folder is held, naming the holder.
    """
    from filelock import FileLock, Timeout

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    owner_file = run / ".lock.owner"
    lock = FileLock(str(run / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            o = json.loads(owner_file.read_text())
            who = f"pid {o.get('pid')} on {o.get('host')} since {o.get('started')} ({o.get('command')})"
        except (OSError, ValueError):
            who = "another process (owner unknown)"
        raise RunLockedError(f"{run} is in use by {who}; wait for it to finish or stop it") from None
    try:
        atomic.write_json(owner_file, {"pid": os.getpid(), "host": socket.gethostname(),
                                       "started": datetime.now(UTC).isoformat(timespec="seconds"),
                                       "command": " ".join(sys.argv)[:300]})
        yield run
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()


def finished_meta(run_dir: str | Path) -> dict[str, Any] | None:
    """``run.json`` of a run whose training finished (``status: finished``), else None."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    return meta if meta.get("status") == "finished" else None


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``run.json`` of a run folder.

    Args:
        run_dir: The run folder.

    Returns:
        The run metadata.

    Raises:
        RunError: Missing folder, model or metadata, or metadata without class order / input size.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"{run}: no such run folder")
    meta_path = run / "run.json"
    if not meta_path.is_file():
        raise RunError(f"{run}: run.json is missing; without it the class order and input scaling of "
                       "the model are unknown, so the run cannot be used")
    meta = json.loads(meta_path.read_text())
    for key in ("classes", "image_size", "preprocessing"):
        if key not in meta:
            raise RunError(f"{meta_path}: key '{key}' is missing")
    if not (run / "model.keras").is_file():
        raise RunError(f"{run}: model.keras is missing (training did not finish?)")
    meta["run_dir"] = str(run.resolve())  # not stored: where the run's own files (lungs.keras) are
    return meta


def load_run(run_dir: str | Path, classes: list[str] | None = None):
    """Load a run's model and metadata, refusing any mismatch.

    Args:
        run_dir: The run folder.
        classes: When given, the class order the caller expects; it must equal the run's.

    Returns:
        ``(model, meta)``.

    Raises:
        RunError: Incomplete run, class order mismatch, or a model whose shape contradicts run.json.
    """
    import keras

    from covidxray.data.cache import PREPROCESSING

    meta = read_run(run_dir)
    if classes is not None and list(classes) != list(meta["classes"]):
        raise RunError(f"{run_dir}: class order {meta['classes']} does not match the expected {list(classes)}")
    if meta["preprocessing"].get("version") != PREPROCESSING["version"]:
        raise RunError(f"{run_dir}: trained with preprocessing version {meta['preprocessing'].get('version')}, "
                       f"this code has version {PREPROCESSING['version']}")
    model = keras.models.load_model(Path(run_dir) / "model.keras", compile=False)
    n_out = model.output_shape[-1]
    in_shape = tuple(model.input_shape[1:])
    size = meta["image_size"]
    if n_out != len(meta["classes"]) or in_shape != (size, size, 1):
        raise RunError(f"{run_dir}: model has input {in_shape} and {n_out} outputs, but run.json says "
                       f"{size}x{size}x1 and classes {meta['classes']}")
    return model, meta


def run_config(run_dir: str | Path, overrides: Sequence[str] = ()):
    """The resolved config a run was trained with (``config.yaml`` over the defaults; the defaults
    alone when it is absent), with ``dotted.key=value`` overrides applied."""
    from covidxray.config import load_config

    cfg_path = Path(run_dir) / "config.yaml"
    return load_config([cfg_path] if cfg_path.is_file() else [], overrides)
