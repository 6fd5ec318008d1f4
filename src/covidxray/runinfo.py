"""Run folders: what was trained, on what, how; and the checks that stop a model from being used
with the wrong class order or input scaling."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covidxray import paths
from covidxray.errors import CovidxrayError

PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "opencv-python-headless",
            "pillow", "pydicom", "imagehash", "tf-keras-vis", "matplotlib")


class RunError(CovidxrayError, ValueError):
    """A run folder is incomplete or does not match what is asked of it."""


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
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (no half-written run.json after a kill)."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(p)


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
