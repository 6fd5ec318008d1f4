"""The notebooks' plumbing: parameters -> config and folders, example images, train or reuse a run.

It lets the notebooks only call and show (``tests/test_notebooks.py`` checks they stay thin). The
parameter contract (``CONFIG``, ``OVERRIDES``, ``SEED``, ``DATA_DIR``, ``RUN_DIR``, ``FIGURES_DIR``)
is documented there and resolved by :func:`notebook_context`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray import atomic, paths
from covidxray.config import Config


def _under_root(path: str | Path | None) -> Path | None:
    """Notebook paths: absolute as given, relative ones against the repository root (not ``notebooks/``)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (paths.ROOT / p).resolve()


def output_data_dir(dataset: Path) -> Path:
    """Where derived tables (index, splits) of a dataset go: inside it only if the project generated it.

    A phantom dataset (``manifest.csv`` with ``source`` all ``phantom``) is ours, so its index and
    splits sit beside it (as ``make demo`` does); any other dataset is read-only and gets
    ``data/derived/<name>/``.
    """
    folder = dataset if dataset.is_dir() else dataset.parent
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        header = pd.read_csv(manifest, nrows=0).columns
        if "source" in header and set(pd.read_csv(manifest, usecols=["source"])["source"]) == {"phantom"}:
            return folder
    return paths.DATA / "derived" / folder.name


@dataclass
class NotebookContext:
    """What a notebook's parameters resolve to.

    Attributes:
        cfg: The resolved config (overlay, overrides and seed applied; cache folder absolute).
        dataset: The dataset folder (phantoms generated there on first use when it is the default).
        derived: Folder for the dataset's index and splits (see :func:`output_data_dir`).
        run_dir: The run folder that notebook 03 trains into and later notebooks read.
        figures: Folder the notebooks' figures are written to.
    """

    cfg: Config
    dataset: Path
    derived: Path
    run_dir: Path
    figures: Path

    @property
    def splits_csv(self) -> Path:
        """The splits written by notebook 01."""
        return self.derived / "splits.csv"

    def figure(self, name: str) -> Path:
        """Path of a figure file in the figures folder."""
        return self.figures / name


def notebook_context(config: str = "demo", overrides: Mapping | None = None, seed: int | None = None,
                     data_dir: str | Path | None = None, run_dir: str | Path | None = None,
                     figures_dir: str | Path | None = None, log=print) -> NotebookContext:
    """Resolve the notebook parameters (CONFIG, OVERRIDES, SEED, DATA_DIR, RUN_DIR, FIGURES_DIR).

    Args:
        config: Config overlay name or YAML path.
        overrides: ``{"dotted.key": value}`` config overrides.
        seed: Overrides ``seed`` when given.
        data_dir: Dataset (default: the phantoms in ``data/phantoms``, generated when missing).
        run_dir: Run folder (default ``models/notebook-<config>``).
        figures_dir: Figures folder (default ``figures/``).
        log: Where progress messages go.

    Returns:
        The :class:`NotebookContext`.
    """
    from covidxray.config import load_config
    from covidxray.data.pipeline import resolve_dataset

    items = {**(overrides or {}), **({"seed": seed} if seed is not None else {})}
    cfg = load_config([config], [f"{k}={json.dumps(v, default=str)}" for k, v in items.items()])
    cfg["data"]["cache_dir"] = str(_under_root(cfg.data.cache_dir))
    dataset = resolve_dataset(cfg, _under_root(data_dir) or paths.PHANTOMS, log=log)
    run = _under_root(run_dir) or paths.MODELS / f"notebook-{Path(config).stem}"
    return NotebookContext(cfg, dataset, output_data_dir(dataset), run, _under_root(figures_dir) or paths.FIGURES)


def load_manifest(ctx: NotebookContext) -> pd.DataFrame:
    """The splits of notebook 01 when they exist, else the discovered manifest of the dataset."""
    from covidxray.data.discover import discover
    from covidxray.data.pipeline import read_splits

    if ctx.splits_csv.is_file():
        return read_splits(ctx.splits_csv, ctx.cfg.classes)
    return discover(ctx.dataset, ctx.cfg.classes, ctx.cfg.data.min_size, workers=ctx.cfg.data.workers).manifest


def write_data_tables(ctx: NotebookContext, found, splits: pd.DataFrame) -> dict[str, Path]:
    """Write the index (``index.csv``), the quarantine report and ``splits.csv`` to ``ctx.derived``.

    Args:
        ctx: The notebook context.
        found: The :class:`covidxray.data.discover.Discovery` of the dataset.
        splits: Output of :func:`covidxray.data.split.make_splits`.

    Returns:
        Name -> path of each file written.
    """
    ctx.derived.mkdir(parents=True, exist_ok=True)
    tables = {"index": found.manifest, "quarantine": found.quarantine, "splits": splits}
    written = {name: ctx.derived / f"{name}.csv" for name, t in tables.items() if name != "quarantine" or len(t)}
    for name, path in written.items():
        atomic.write_csv(tables[name], path)
    return written


def training_examples(ctx: NotebookContext, n_per_class: int = 1,
                      seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Random training images of each class (all images when there is no split yet) at model resolution.

    Returns:
        The chosen rows and their ``(N, S, S)`` uint8 model inputs.
    """
    from covidxray.data.figures import pick_examples
    from covidxray.data.files import model_inputs

    table = load_manifest(ctx)
    table = table[table["split"] == "train"] if "split" in table else table
    rows = pick_examples(table, n_per_class, seed)
    return rows, model_inputs(rows["path"], ctx.cfg.model.image_size)


def train_or_reuse(ctx: NotebookContext, log=print) -> Path:
    """Train into ``ctx.run_dir`` (on notebook 01's splits when present), resume it, or reuse it
    (:func:`covidxray.training.reuse.train_or_reuse`: a finished run trained under the same config
    is reused; delete the folder or change RUN_DIR to retrain).

    Raises:
        ValueError: ``ctx.run_dir`` holds a run trained under another config (the keys are named).
    """
    from covidxray.training.reuse import train_or_reuse as reuse

    return reuse(ctx.cfg, ctx.splits_csv if ctx.splits_csv.is_file() else ctx.dataset, ctx.run_dir, log)


def run_essentials(run_dir: str | Path) -> pd.Series:
    """The essentials of a run folder: what was trained, on how many images, how long, how well (val)."""
    run = Path(run_dir)
    meta = json.loads((run / "run.json").read_text())
    hist = pd.read_csv(run / "history.csv")
    best = hist.loc[hist["val_loss"].idxmin()] if "val_loss" in hist and len(hist) else None
    counts = pd.DataFrame(meta["counts"]).fillna(0).sum(axis=1).astype(int).to_dict()
    keys = ("status", "backbone", "image_size", "weights_source", "classes", "stages", "epochs_run", "wall_s",
            "global_batch_size", "seed", "git_sha")
    out = {k: meta.get(k) for k in keys} | {"images per split": counts,
                                             "tensorflow": meta["packages"].get("tensorflow")}
    if best is not None:
        out |= {"best val_loss": round(float(best["val_loss"]), 4),
                "val accuracy there": round(float(best.get("val_accuracy", np.nan)), 4)}
    return pd.Series(out, name=run.name)


def publish(figures: Mapping[str, str | Path], figures_dir: str | Path, prefix: str) -> dict[str, Path]:
    """Copy a report's figures (``{name: path}``) to the notebook's figures folder as ``<prefix><name>.png``.

    Returns:
        ``{name: copied path}``, for the notebook to display.
    """
    import shutil

    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {name: Path(shutil.copy2(src, out / f"{prefix}{name}{Path(src).suffix}")) for name, src in figures.items()}
