"""Shortcut probes on real data: attribution outside the lung field, per-source metrics, and
leave-one-source-out training.

* Outside the lungs: the share of attribution energy (``robustness.cam_method`` on
  ``robustness.cam_layer``, for the predicted class) outside the lung mask, for images whose
  manifest gives one. Without a mask, the lungs predicted by the shipped lung segmenter
  (:mod:`covidxray.lungs.segment`; the report names it and its held-out Dice). Only when no
  segmenter is installed is the share measured in an approximation of where burned-in text markers
  and labels sit: the border band of ``robustness.border`` (12%) of each side. A uniform map would
  put ``1 - (1 - 2 * 0.12) ** 2`` = 42% of its energy there (``uniform_baseline``); a model that
  reads markers puts more.
* Per source: metrics of each ``source`` (``source_repo`` in cxr-dev) separately, and whether
  source and class are confounded, i.e. some source holds a single class. Then the source alone
  predicts that class, and a per-source score may measure recognition of the source (scanner,
  processing, markers) rather than of the disease. In cxr-dev, Viral Pneumonia comes from one
  repository and COVID-19 and Normal from another, so they are.
* Leave one source out: train without a source and score on it. Each fold is a full training
  run, so :func:`leave_one_source_out` can be limited to chosen sources. A fold whose remaining
  sources lack a class is skipped with the reason (in cxr-dev, every fold).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covidxray import atomic
from covidxray.config import Config
from covidxray.data.imageio import read_mask
from covidxray.data.pipeline import DataError
from covidxray.evaluation.evaluate import evaluation_set
from covidxray.evaluation.scoring import open_run, score_set
from covidxray.explain.localisation import energy_share
from covidxray.lungs.segment import installed_segmenter
from covidxray.robustness.shortcut import attribution, train_or_reuse
from covidxray.robustness.sweep import point_metrics
from covidxray.style import class_color
from covidxray.style import styled as _styled


def border_mask(size: int, frac: float) -> np.ndarray:
    """``(size, size)`` bool mask of the outer band of ``frac`` of the side on every edge."""
    k = int(round(frac * size))
    mask = np.ones((size, size), bool)
    mask[k:size - k, k:size - k] = False
    return mask


def outside_regions(table: pd.DataFrame, size: int, border: float, images: np.ndarray | None = None,
                    segmenter=None) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the region counted as outside the lungs, and where its lung field came from.

    Args:
        table: Rows of the images (``lung_mask`` column optional).
        size: Model input size.
        border: Border-band fraction (the fallback without any lung field).
        images: ``(N, size, size[, 1])`` 0-255 images, for the segmenter.
        segmenter: A :class:`covidxray.lungs.segment.Segmenter` for the images without a mask, or None.

    Returns:
        ``(regions, kind)``: ``(N, size, size)`` bool (outside the lung mask where the table's
        ``lung_mask`` names a readable file, else outside the predicted lungs, else :func:`border_mask`)
        and ``(N,)`` str: ``"mask"``, ``"predicted"`` or ``"band"``.
    """
    from covidxray.data.cache import resize_mask

    band = border_mask(size, border)
    files = table["lung_mask"] if "lung_mask" in table else pd.Series([""] * len(table))
    read = [resize_mask(read_mask(f), size) if f and Path(f).is_file() else None for f in files.fillna("")]
    kind = np.array(["mask" if m is not None else "band" for m in read], dtype=object)
    lungs = np.stack([np.zeros((size, size), bool) if m is None else m for m in read]) if read else \
        np.zeros((0, size, size), bool)
    if (kind == "band").any() and segmenter is not None and images is not None:
        lungs, predicted = segmenter.fill_missing(lungs, images)
        kind[predicted] = "predicted"
    regions = np.where((kind == "band")[:, None, None], band[None], ~lungs)
    return regions, kind


def source_confounding(labels: pd.Series, sources: pd.Series) -> dict:
    """Counts per source and class, and whether the source alone gives the class for some images.

    Returns:
        ``{"counts": {source: {class: n}}, "confounded": bool, "note": str}``.
    """
    counts = pd.crosstab(sources.astype(str), labels)
    single = {s: row[row > 0].index[0] for s, row in counts.iterrows() if (row > 0).sum() == 1}
    confounded = len(counts) > 1 and bool(single)
    note = "no source holds a single class: source and class are not confounded"
    if confounded:
        parts = [f"'{s}' holds only {c}" for s, c in single.items()]
        note = ("source and class are CONFOUNDED: " + "; ".join(parts) + ". The source alone predicts these "
                "classes, so per-source metrics (and accuracy on these classes) may reflect recognition of the "
                "source (scanner, processing, burned-in markers) rather than of the disease.")
    return {"counts": {s: {c: int(n) for c, n in row.items() if n} for s, row in counts.iterrows()},
            "confounded": confounded, "note": note}


def _load(run: Path, log: Callable = print) -> dict:
    """A run's config, classes, model and calibration."""
    return vars(open_run(run, log))


def _score(r: dict, data=None, split: str = "test", log: Callable = print) -> dict:
    """Calibrated probabilities of a loaded run (:func:`_load`) on an evaluation set."""
    cfg, classes, cal = r["cfg"], r["classes"], r["cal"]
    chosen = evaluation_set(r["run"], classes, cfg, data, split, log)
    s = score_set(r["model"], r["meta"], cal, cfg, chosen, classes)
    return {"chosen": chosen, "table": s.table, "images": s.images, "probs": s.probs, "y": s.y,
            "metric_args": (classes, s.positive, s.threshold, int(cfg.robustness.n_boot), int(cfg.seed))}


def probe_run(run_dir: str | Path, data: str | Path | None = None, split: str = "test",
              out: str | Path | None = None, log: Callable = print) -> dict:
    """Attribution outside the lungs, per-source metrics and source-class confounding of a run.

    Args:
        run_dir: Run folder.
        data: Dataset folder, manifest CSV or splits CSV; None for the run's own splits.
        split: Split to use when the data has splits.
        out: Output folder (default ``<run>/shortcut``): ``probe.json`` and ``probe.png``.
        log: Where progress messages go.

    Returns:
        The content of ``probe.json``: ``run``, ``dataset``, ``split``, ``n``, ``cam``,
        ``outside_lung`` (``mean``, ``by_class``, ``uniform_baseline``, ``n_lung_masks``,
        ``n_border_band``, ``definition``), ``sources`` (:func:`source_confounding`, or None
        without a ``source`` column) and ``per_source`` (metrics per source, or None).
    """
    run = Path(run_dir)
    loaded = _load(run, log)
    s = _score(loaded, data, split, log)
    cfg, classes, table = loaded["cfg"], loaded["classes"], s["table"]
    rc = cfg.robustness
    maps = attribution(loaded["model"], s["images"], rc, cfg.train.batch_size)
    missing = "lung_mask" not in table or table["lung_mask"].fillna("").astype(str).eq("").any()
    seg = installed_segmenter(log) if missing else None
    regions, kind = outside_regions(table, s["images"].shape[1], rc.border, s["images"], seg)
    share = energy_share(maps, regions)
    has_source = "source" in table and table["source"].astype(str).str.strip().ne("").all()
    per_source = None
    if has_source:
        per_source = {}
        for src, idx in table.groupby(table["source"].astype(str)).groups.items():
            i = np.asarray(idx)
            per_source[src] = {"n": int(len(i)), **point_metrics(s["y"][i], s["probs"][i], *s["metric_args"])}
    report = {
        "run": str(run.resolve()), "dataset": s["chosen"]["dataset"], "split": s["chosen"]["split"], "n": len(table),
        "cam": {"method": rc.cam_method, "layer": rc.cam_layer, "target": "predicted class"},
        "outside_lung": {
            "mean": _nanmean(share), "by_class": {c: _nanmean(share[s["y"] == k]) for k, c in enumerate(classes)},
            "uniform_baseline": float(regions.mean()), "n_lung_masks": int((kind == "mask").sum()),
            "n_predicted_lungs": int((kind == "predicted").sum()), "n_border_band": int((kind == "band").sum()),
            "lung_segmenter": seg.record() if (kind == "predicted").any() else None,
            "definition": "outside the lung mask where one exists, else outside the lungs the segmenter "
                          f"predicted, else the outer {rc.border:.0%} of each side"},
        "sources": source_confounding(table["label"], table["source"]) if has_source else None,
        "per_source": per_source,
    }
    out = Path(out) if out else run / "shortcut"
    out.mkdir(parents=True, exist_ok=True)
    plot_probe(report, save_to=out / "probe.png")
    atomic.write_text(out / "probe.json", json.dumps(report, indent=2) + "\n")
    return report


def format_probe(report: dict) -> str:
    """Text summary of :func:`probe_run`'s report."""
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    o = report["outside_lung"]
    lines = [f"{report['dataset']} (split {report['split']}), n={report['n']}: attribution energy outside the lungs "
             f"{f(o['mean'])} (uniform map {o['uniform_baseline']:.3f}; {o['n_lung_masks']} lung masks, "
             f"{o.get('n_predicted_lungs', 0)} predicted lungs, {o['n_border_band']} border-band approximations)"]
    seg = o.get("lung_segmenter")
    if seg:
        lines.append(f"  predicted lungs: {seg['path']} (held-out Dice {f(seg['heldout_dice'])} on "
                     f"{seg['heldout_images']} real films of unseen patients)")
    lines += [f"  {c}: {f(v)}" for c, v in o["by_class"].items()]
    for src, m in (report["per_source"] or {}).items():
        lines.append(f"source {src} (n={m['n']}): accuracy {f(m['accuracy'])}, macro-AUC {f(m['macro_auc'])}")
    if report["sources"]:
        lines.append(report["sources"]["note"])
    return "\n".join(lines)


def _nanmean(x: np.ndarray) -> float | None:
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "source"


def leave_one_source_out(cfg: Config, dataset: str | Path | None = None, out: str | Path = "models/loso",
                         sources: Sequence[str] | None = None, log: Callable = print) -> dict:
    """Train without each source and score the model on the held-out source.

    Args:
        cfg: Training config (a fold trains like ``covidxray train`` on the other sources).
        dataset: Dataset with a ``source`` column (folder or manifest; default ``data.dataset``).
        out: Folder for the folds (``without-<source>/``) and ``loso.json``.
        sources: Held-out sources to run (default: every source).
        log: Where progress messages go.

    Returns:
        The content of ``loso.json``: ``sources`` (:func:`source_confounding`) and ``folds``: per
        held-out source ``n_train_pool``, ``n_held_out``, ``held_out`` (metrics on it) and
        ``in_source_test`` (on the fold's own test split), or ``skipped`` with the reason.

    Raises:
        DataError: The dataset has fewer than two sources, or an unknown source is asked for.
    """
    from covidxray.data.discover import discover
    from covidxray.data.pipeline import resolve_dataset

    root = resolve_dataset(cfg, dataset, log)
    manifest = discover(root, classes=cfg.classes, min_size=cfg.data.min_size, workers=cfg.data.workers).manifest
    src = manifest["source"].astype(str)
    known = sorted(set(src) - {""})
    if len(known) < 2:
        raise DataError(f"{root}: leave-one-source-out needs a 'source' column with >= 2 sources, found {known}")
    unknown = sorted(set(sources or []) - set(known))
    if unknown:
        raise DataError(f"{root}: unknown source(s) {unknown}; known: {known}")
    out = Path(out)
    report = {"dataset": str(root), "sources": source_confounding(manifest["label"], src), "folds": {}}
    for held in sources or known:
        rest, test = manifest[src != held], manifest[src == held]
        missing = [c for c in cfg.classes if not (rest["label"] == c).any()]
        if missing:
            report["folds"][held] = {"skipped": f"without '{held}' no training images of {missing} remain"}
            continue
        fold = out / f"without-{_slug(held)}"
        fold.mkdir(parents=True, exist_ok=True)
        atomic.write_csv(rest, fold / "train_manifest.csv")
        atomic.write_csv(test, fold / "held_out.csv")
        run = train_or_reuse(copy.deepcopy(cfg), fold / "train_manifest.csv", fold / "run", log)
        loaded = _load(run, log)
        scored = {name: _score(loaded, d, "test", log) for name, d in
                  (("held_out", fold / "held_out.csv"), ("in_source_test", None))}
        report["folds"][held] = {"run": str(run), "n_train_pool": int(len(rest)), "n_held_out": int(len(test)),
                                 **{k: point_metrics(v["y"], v["probs"], *v["metric_args"]) for k, v in scored.items()}}
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "loso.json", json.dumps(report, indent=2) + "\n")
    return report


@_styled
def plot_probe(report: dict) -> Figure:
    """Attribution energy outside the lungs per class (uniform baseline dashed) and accuracy per source."""
    per_source = report["per_source"] or {}
    fig = Figure(figsize=(10 if per_source else 5, 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 2 if per_source else 1))
    by_class = report["outside_lung"]["by_class"]
    axes[0].bar(list(by_class), [v or 0.0 for v in by_class.values()], color=[class_color(c) for c in by_class])
    axes[0].axhline(report["outside_lung"]["uniform_baseline"], color="grey", ls="--", lw=1, label="uniform map")
    axes[0].set(ylim=(0, 1), ylabel="share of attribution energy", title="Outside the lung field")
    axes[0].legend(fontsize=8)
    if per_source:
        names = list(per_source)
        axes[1].bar(range(len(names)), [per_source[n]["accuracy"] for n in names], color="#0072B2")
        axes[1].set_xticks(range(len(names)), [f"{n[:28]}\n(n={per_source[n]['n']})" for n in names], fontsize=7)
        title = "Accuracy per source" + (" (source and class confounded)" if report["sources"]["confounded"] else "")
        axes[1].set(ylim=(0, 1), ylabel="accuracy", title=title)
    return fig
