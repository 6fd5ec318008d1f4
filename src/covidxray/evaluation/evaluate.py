"""Evaluate a run: calibrated predictions, metrics with bootstrap CIs, figures.

``evaluate(run)`` scores the run's own test split; ``evaluate(run, data=...)`` scores any other
dataset: a folder in any layout :func:`covidxray.data.discover.discover` understands (a folder of class
subfolders needs no split file), a manifest CSV, or a splits CSV (with ``split``). Results go to
``<run>/eval/<name>/``: ``predictions.csv``, ``metrics.json``, the figures of :data:`FIGURES`
and, for an external dataset with refused files, ``quarantine.csv``.

Probabilities are temperature-scaled with the run's ``calibration.json`` (fitted on validation,
see :mod:`covidxray.predict`); ``metrics.json`` reports the ECE before (``ece_uncalibrated``)
and after (``ece``) scaling, and the operating point uses the threshold chosen on validation.
``metrics.json`` ``ood`` gives the share of images the run's out-of-distribution score flags
(:mod:`covidxray.evaluation.ood`); ``predictions.csv`` has their ``ood_score`` and ``ood`` columns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covidxray import atomic, paths, runinfo
from covidxray.config import Config
from covidxray.data.pipeline import SPLITS, DataError, is_splits_file, read_splits
from covidxray.evaluation import ood, plots
from covidxray.evaluation.calibration import expected_calibration_error
from covidxray.evaluation.metrics import ECE_BINS, compute_metrics, predict_labels
from covidxray.evaluation.predict import (
    decision_column,
    ensure_calibration,
)
from covidxray.evaluation.scoring import score_set
from covidxray.runinfo import run_config

FIGURES = {
    "confusion_counts": "confusion_counts.png",
    "confusion_normalized": "confusion_normalized.png",
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "learning_curves": "learning_curves.png",
    "errors": "errors.png",
}
_GENERIC_CSV_NAMES = {"manifest", "splits"}


def publish_figures(eval_dir: str | Path, figures_dir: str | Path, prefix: str = "") -> list[Path]:
    """Copy an evaluation's figures to a figures folder (``prefix`` + name), in :data:`FIGURES` order.

    Returns:
        The copied files (figures that were not written, e.g. learning curves without a history, are skipped).
    """
    import shutil

    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in FIGURES.values():
        src = Path(eval_dir) / name
        if src.is_file():
            copied.append(Path(shutil.copy2(src, out / f"{prefix}{name}")))
    return copied


def _dataset_name(path: Path) -> str:
    """Folder name, or the CSV's stem (its folder's name for manifest.csv / splits.csv)."""
    if path.is_file() and path.stem in _GENERIC_CSV_NAMES:
        return path.parent.name
    return path.stem if path.is_file() else path.name


def _split_rows(splits_csv: Path, classes: list[str], split: str) -> pd.DataFrame:
    if split not in SPLITS:
        raise DataError(f"--split must be one of {list(SPLITS)}, got '{split}'")
    df = read_splits(splits_csv, classes)
    rows = df[df["split"] == split]
    if rows.empty:
        raise DataError(f"{splits_csv}: no images in split '{split}'")
    return rows


def evaluation_set(run: Path, classes: list[str], cfg: Config, data_path: str | Path | None = None,
                   split: str = "test", log: Callable = print) -> dict[str, Any]:
    """The images and labels to evaluate on.

    Args:
        run: Run folder (its ``splits.csv`` is used when ``data_path`` is None).
        classes: The run's classes; images of other classes are quarantined.
        cfg: The run's config (``data.min_size``, ``data.workers``).
        data_path: Dataset folder, manifest CSV or splits CSV; None for the run's own splits.
        split: Split to use from a splits CSV.
        log: Where progress messages go.

    Returns:
        Dict with ``table`` (``path``, ``label``), ``dataset`` (what was read), ``split``
        (``"all"`` for a dataset without splits), ``name`` (default result folder name) and
        ``quarantine`` (``path``, ``reason``).
    """
    from covidxray.data.discover import discover, summarize

    empty = pd.DataFrame(columns=["path", "reason"])
    if data_path is None:
        splits_csv = run / "splits.csv"
        if not splits_csv.is_file():
            raise runinfo.RunError(f"{run}: splits.csv is missing; pass --data to evaluate on a dataset")
        rows = _split_rows(splits_csv, classes, split)
        return dict(table=rows, dataset=str(splits_csv), split=split, name=split, quarantine=empty)
    source = paths.resolve(data_path)
    if is_splits_file(source):
        rows = _split_rows(source, classes, split)
        return dict(table=rows, dataset=str(source), split=split, name=f"{_dataset_name(source)}-{split}",
                    quarantine=empty)
    if not source.exists():
        raise DataError(f"dataset '{source}' does not exist")
    try:
        found = discover(source, classes=classes, min_size=cfg.data.min_size, workers=cfg.data.workers)
    except ValueError as err:  # unreadable manifest, or one without path/label columns
        raise DataError(str(err)) from None
    log(summarize(found))
    table = drop_in_dev(found.manifest, log)
    if table.empty:
        raise DataError(f"{source}: no usable images of the classes {classes}")
    return dict(table=table, dataset=str(source), split="all", name=_dataset_name(source),
                quarantine=found.quarantine)


def drop_in_dev(table: pd.DataFrame, log: Callable = print) -> pd.DataFrame:
    """Leave out rows flagged ``in_dev`` (their patient is in the training database), saying how many.

    A dataset's manifest marks with ``in_dev=1`` the images whose patient also has an image in the
    training database (cxr-annotated does); scoring them would flatter a model trained there.
    """
    if "in_dev" not in table:
        return table
    shared = table["in_dev"].astype(str).isin(["1", "True", "true"])
    if shared.any():
        log(f"{int(shared.sum())} image(s) with in_dev=1 left out (their patients are in the training database)")
    return table[~shared].reset_index(drop=True)


def _training_overlap(run: Path, files: pd.Series) -> int:
    """How many of ``files`` the run trained or early-stopped on (by path)."""
    splits_csv = run / "splits.csv"
    if not splits_csv.is_file():
        return 0
    used = pd.read_csv(splits_csv, usecols=["path", "split"], keep_default_na=False)
    return int(files.isin(set(used.loc[used["split"] != "test", "path"])).sum())


def _figures(out: Path, run: Path, y: np.ndarray, raw: np.ndarray, probs: np.ndarray, images: np.ndarray,
             classes: list[str], cm: list, n_boot: int, seed: int, log: Callable, ece_bins: int = ECE_BINS) -> None:
    f = {key: out / name for key, name in FIGURES.items()}
    plots.plot_confusion(cm, classes, normalize=False, save_to=f["confusion_counts"])
    plots.plot_confusion(cm, classes, normalize=True, save_to=f["confusion_normalized"])
    plots.plot_roc(y, probs, classes, n_boot=n_boot, seed=seed, save_to=f["roc"])
    plots.plot_pr(y, probs, classes, save_to=f["pr"])
    plots.plot_reliability(y, raw, probs, n_bins=ece_bins, save_to=f["reliability"])
    history_csv = run / "history.csv"
    history = pd.read_csv(history_csv) if history_csv.is_file() else pd.DataFrame()
    if history.empty:
        log(f"no {history_csv}: learning curves skipped")
    else:
        if "global_epoch" in history:
            history = history.assign(epoch=history["global_epoch"] + 1)
        plots.plot_learning_curves(history, save_to=f["learning_curves"])
    pred = predict_labels(probs)
    plots.plot_error_gallery(images, y, pred, probs.max(axis=1), classes, save_to=f["errors"])


def evaluate(run_dir: str | Path, data: str | Path | None = None, split: str = "test", name: str | None = None,
             n_boot: int | None = None, log: Callable = print) -> Path:
    """Evaluate a run and write ``<run>/eval/<name>/``.

    Args:
        run_dir: Run folder.
        data: Dataset folder, manifest CSV or splits CSV; None for the run's own splits.
        split: Split to evaluate when the data has splits.
        name: Result folder name (default: the split name, or the dataset's name).
        n_boot: Bootstrap resamples (default ``evaluate.n_boot`` of the run's config).
        log: Where progress messages go.

    Returns:
        The result folder.

    Raises:
        RunError: Incomplete run or class-order mismatch.
        DataError: No usable images, unknown split, or images that no longer exist.
    """
    run = Path(run_dir)
    cfg = run_config(run)
    classes = list(runinfo.read_run(run)["classes"])
    chosen = evaluation_set(run, classes, cfg, data, split, log)  # data errors before the slow model load
    name = name or chosen["name"]
    if not name or Path(name).name != name or name in {".", ".."}:
        raise DataError(f"--name must be a plain folder name, got '{name}'")
    model, meta = runinfo.load_run(run)
    seed, n_boot = int(meta.get("seed", cfg.seed)), int(n_boot or cfg.evaluate.n_boot)
    cal = ensure_calibration(run, model, meta, cfg, log)
    out = run / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    quarantine = chosen["quarantine"]
    if len(quarantine):
        atomic.write_csv(quarantine, out / "quarantine.csv")
        log(f"{len(quarantine)} file(s) quarantined and not evaluated: see {out / 'quarantine.csv'}")
    else:
        (out / "quarantine.csv").unlink(missing_ok=True)  # from an earlier evaluation of this name
    table = chosen["table"].reset_index(drop=True)
    log(f"evaluating {len(table)} images of {chosen['dataset']} (split: {chosen['split']})")
    s = score_set(model, meta, cal, cfg, chosen, classes)
    images, raw, probs, y, positive, threshold = s.images, s.raw, s.probs, s.y, s.positive, s.threshold
    bins = int(cfg.evaluate.ece_bins)
    metrics = compute_metrics(y, probs, classes, n_boot=n_boot, seed=seed, positive=positive, threshold=threshold,
                              ece_bins=bins)
    overlap = _training_overlap(run, table["path"])
    if overlap:
        log(f"warning: {overlap} of these images were in the run's train/val splits; the metrics are optimistic")
    metrics.update(
        ece_uncalibrated=expected_calibration_error(y, raw, bins), ece_bins=bins,
        temperature=cal.temperature, threshold=threshold, run=str(run.resolve()), dataset=chosen["dataset"],
        split=chosen["split"], quarantined=int(len(quarantine)), overlap_with_training=overlap,
        calibration={"fitted_on": cal.fitted_on, "n": cal.n, "target_sensitivity": cal.target_sensitivity,
                     "ece_before": cal.ece_before, "ece_after": cal.ece_after},
    )
    detector = ood.ensure_ood(run, model, log)
    if detector is not None:
        ood_scores = detector.score(model, images, cfg.train.batch_size)
        flagged = detector.flag(ood_scores)
        metrics["ood"] = {"method": detector.method, "threshold": detector.threshold, "flagged": int(flagged.sum()),
                          "flagged_share": float(flagged.mean()), "n": int(flagged.size),
                          "val_pass_rate": detector.val_pass_rate}
        if flagged.any():
            log(ood.warning_line(int(flagged.sum()), int(flagged.size)))
    pred = predict_labels(probs)
    table_out = pd.DataFrame({"path": table["path"], "label": table["label"]})
    for c, cls in enumerate(classes):
        table_out[f"p_{cls}"] = probs[:, c]
    table_out["prediction"] = [classes[i] for i in pred]
    table_out["correct"] = pred == y
    if threshold is not None:
        table_out[decision_column(positive)] = probs[:, classes.index(positive)] >= threshold
    if detector is not None:
        table_out["ood_score"], table_out["ood"] = ood_scores, flagged
    atomic.write_csv(table_out, out / "predictions.csv")
    atomic.write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    _figures(out, run, y, raw, probs, images, classes, metrics["confusion_matrix"], n_boot, seed, log, bins)
    from covidxray.training.hparams import write_eval_metrics  # the run's TensorBoard HParams session

    op = metrics.get("operating_point") or {}
    write_eval_metrics(run, name, {"accuracy": metrics["accuracy"], "macro_auc": metrics["macro_auc"], "ece": metrics["ece"],
                                   "sensitivity_op": op.get("sensitivity"), "specificity_op": op.get("specificity")})
    return out


def _ci(metrics: dict, key: str) -> str:
    ci = metrics.get("ci95", {}).get(key)
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_summary(metrics: dict) -> str:
    """A compact text table of the headline results of a ``metrics.json``.

    Args:
        metrics: Content of ``metrics.json`` written by :func:`evaluate`.

    Returns:
        Multi-line text: accuracy, balanced accuracy, macro-F1, macro-AUC (with 95% CIs), the
        positive class's sensitivity and specificity at the operating point (with CIs), ECE
        before and after temperature scaling, and the share flagged out-of-distribution.
    """
    rows = [(label, _value(metrics.get(key)), _ci(metrics, key)) for label, key in (
        ("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
        ("macro-F1", "macro_f1"), ("macro-AUC", "macro_auc"))]
    op = metrics.get("operating_point")
    if op:
        for m in ("sensitivity", "specificity"):
            ci = op["ci95"].get(m)
            rows.append((f"{op['class']} {m} @ p>={op['threshold']:.3f}", _value(op[m]),
                         f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    rows.append(("ECE before -> after scaling",
                 f"{_value(metrics.get('ece_uncalibrated'))} -> {_value(metrics.get('ece'))}", _ci(metrics, "ece")))
    width = max(len(r[0]) for r in rows)
    lines = [f"{metrics.get('dataset')} (split: {metrics.get('split')}), n={metrics.get('n')}, "
             f"temperature {metrics.get('temperature', 1.0):.3f}",
             f"{'metric':<{width}}  {'value':>14}  95% CI"]
    lines += [f"{label:<{width}}  {value:>14}  {ci}" for label, value, ci in rows]
    flag = metrics.get("ood")
    if flag:
        lines.append(f"flagged out-of-distribution: {flag['flagged_share']:.1%} ({flag['flagged']} of {flag['n']}; "
                     f"{flag['method']}, threshold passes {flag['val_pass_rate']:.0%} of validation)")
    return "\n".join(lines)
