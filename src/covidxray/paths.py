"""Every path the project uses, in one place.

The repository root is found from this file (editable install) or from ``COVIDXRAY_HOME``.
Relative paths inside config files are relative to the repository root (:func:`from_config`), so
``make`` targets and notebooks (which run in ``notebooks/``) see the same files. Paths given on
the command line are resolved against the current directory first (:func:`resolve`).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("COVIDXRAY_HOME", Path(__file__).resolve().parents[2])).resolve()
CONFIGS = ROOT / "configs"
DATA = ROOT / "data"
MODELS = ROOT / "models"
FIGURES = ROOT / "figures"
NOTEBOOKS = ROOT / "notebooks"
BENCHMARK_RESULTS = ROOT / "benchmarks" / "results"

DEFAULT_CONFIG = CONFIGS / "default.yaml"
PHANTOMS = DATA / "phantoms"
CACHE = DATA / "cache"
KERAS_HOME = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def config_file(name: str | Path) -> Path:
    """Resolve a config name (``smoke``) or path (``configs/smoke.yaml``) to an existing file.

    Args:
        name: A path to a YAML file, or the stem of a file in ``configs/``.

    Returns:
        The resolved path.

    Raises:
        FileNotFoundError: Naming what was looked for and the configs that exist.
    """
    candidates = [Path(name), ROOT / name, CONFIGS / f"{name}.yaml", CONFIGS / str(name)]
    for cand in candidates:
        if cand.is_file():
            return cand.resolve()
    known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
    raise FileNotFoundError(f"config '{name}' not found (known configs: {known})")


def resolve(path: str | Path) -> Path:
    """Resolve a user path against the current directory, then the repository root.

    Args:
        path: Absolute or relative path.

    Returns:
        An absolute path (which may not exist yet, e.g. an output folder).
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if p.exists() or not (ROOT / p).exists():
        return p.resolve()
    return (ROOT / p).resolve()


def from_config(path: str | Path) -> Path:
    """Resolve a path written in a config file: relative paths are relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (ROOT / p).resolve()


def shared_cxr_dev() -> Path | None:
    """Locate the real-CXR sample (``../shared/data/cxr-dev`` beside the checkout).

    ``COVIDXRAY_CXR_DEV`` overrides the location.

    Returns:
        The folder when it holds a ``manifest.csv``, else ``None``.
    """
    env = os.environ.get("COVIDXRAY_CXR_DEV")
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / "shared" / "data" / "cxr-dev", ROOT / "shared" / "data" / "cxr-dev"]
    for cand in candidates:
        if (cand / "manifest.csv").is_file():
            return cand.resolve()
    return None
