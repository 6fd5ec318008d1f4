"""Evaluation figures: confusion matrix, ROC, PR, reliability, learning curves, error gallery.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state), so they work
with any backend, headless included, and are never left open. Every function returns the
Figure and, given ``save_to``, also writes it (150 dpi, white background). Class colours come
from one palette, :data:`CLASS_COLORS` (Okabe-Ito, colour-blind safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from covidxray.evaluation.bootstrap import (
    auc_from_groups,
    bootstrap_indices,
    resample_counts,
    tie_group_counts,
)
from covidxray.evaluation.calibration import expected_calibration_error, reliability_curve, validate_probs
from covidxray.evaluation.metrics import encode_labels
from covidxray.style import CLASS_COLORS, class_color  # noqa: F401 (re-exported)
from covidxray.style import NEUTRAL as _NEUTRAL
from covidxray.style import styled as _styled

_GRID = np.linspace(0.0, 1.0, 201)


@_styled
def plot_confusion(cm: Any, classes: Sequence[str], normalize: bool = True) -> Figure:
    """Confusion matrix heat map (rows true, columns predicted).

    Args:
        cm: Square count matrix in the order of ``classes``.
        classes: Class names.
        normalize: Colour and label by row percentage (recall per true class), counts below.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (heat map axes and colour bar).
    """
    counts = np.asarray(cm, dtype=np.float64)
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(f"cm has shape {counts.shape}, expected {(len(classes), len(classes))}")
    rows = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
    vmax = 1.0 if normalize else max(counts.max(), 1.0)
    fig = Figure(figsize=(1.6 * len(classes) + 2.4, 1.4 * len(classes) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax)
    ax.grid(False)
    for i, j in np.ndindex(*counts.shape):
        text = f"{shown[i, j]:.1%}\n({int(counts[i, j])})" if normalize else f"{int(counts[i, j])}"
        color = "white" if shown[i, j] > 0.55 * vmax else "black"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=10)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=20, ha="right")
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else " (counts)"))
    fig.colorbar(image, ax=ax, label="fraction of true class" if normalize else "images", shrink=0.85)
    return fig


def _roc_on_grid(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """TPR at the FPR grid for each resample, from tie-group counts."""
    tpr = np.cumsum(pos, axis=1) / pos.sum(axis=1, keepdims=True)
    fpr = np.cumsum(neg, axis=1) / neg.sum(axis=1, keepdims=True)
    zeros = np.zeros((pos.shape[0], 1))
    tpr, fpr = np.hstack([zeros, tpr]), np.hstack([zeros, fpr])
    return np.stack([np.interp(_GRID, f, t) for f, t in zip(fpr, tpr, strict=True)])


@_styled
def plot_roc(y_true: Any, probs: Any, classes: Sequence[str], n_boot: int = 200, seed: int = 0) -> Figure:
    """One-vs-rest ROC per class plus the macro average, each with a 95% bootstrap band.

    The macro curve averages the per-class TPR on a common FPR grid; its AUC in the legend is
    the macro AUC (mean of per-class AUCs). Bands: stratified bootstrap, pointwise 2.5-97.5%.
    Classes absent from ``y_true`` (AUC undefined) are left out.

    Args:
        y_true: Class indices or names, ``(n,)``.
        probs: Probabilities, ``(n, K)``.
        classes: Class names.
        n_boot: Bootstrap resamples for the bands.
        seed: Seed of the resampling.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (one axes; one line per drawn class, macro and chance).
    """
    y, p = validate_probs(encode_labels(y_true, classes), probs)
    counts = resample_counts(bootstrap_indices(y, n_boot, seed), y.size)
    fig = Figure(figsize=(6.4, 5.8), layout="constrained")
    ax = fig.add_subplot()
    curves, boot_curves, aucs, boot_aucs = [], [], [], []
    for c, name in enumerate(classes):
        if not 0 < np.sum(y == c) < y.size:
            continue
        fpr, tpr, _ = roc_curve(y == c, p[:, c])
        pos, neg = tie_group_counts(counts, p[:, c], y == c)
        grid_tpr = _roc_on_grid(pos, neg)
        auc, b_auc = roc_auc_score(y == c, p[:, c]), auc_from_groups(pos, neg)
        lo, hi = np.percentile(b_auc, [2.5, 97.5])
        color = class_color(name)
        ax.fill_between(_GRID, *np.percentile(grid_tpr, [2.5, 97.5], axis=0), color=color, alpha=0.15, lw=0)
        ax.plot(fpr, tpr, color=color, lw=2, label=f"{name}  AUC {auc:.3f} [{lo:.3f}, {hi:.3f}]")
        curves.append(np.interp(_GRID, fpr, tpr))
        boot_curves.append(grid_tpr)
        aucs.append(auc)
        boot_aucs.append(b_auc)
    if curves:
        macro_band = np.percentile(np.mean(boot_curves, axis=0), [2.5, 97.5], axis=0)
        lo, hi = np.percentile(np.mean(boot_aucs, axis=0), [2.5, 97.5])
        ax.fill_between(_GRID, *macro_band, color=_NEUTRAL, alpha=0.12, lw=0)
        label = f"macro average  AUC {np.mean(aucs):.3f} [{lo:.3f}, {hi:.3f}]"
        ax.plot(_GRID, np.mean(curves, axis=0), color=_NEUTRAL, lw=2, ls="--", label=label)
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls=":", label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(f"ROC, one-vs-rest (n={y.size}; bands: 95% bootstrap)")
    ax.legend(loc="lower right", fontsize=9, title="one-vs-rest AUC [95% CI]", title_fontsize=9)
    return fig


@_styled
def plot_pr(y_true: Any, probs: Any, classes: Sequence[str]) -> Figure:
    """One-vs-rest precision-recall curve per class, with its prevalence (chance level) dotted.

    Args:
        y_true: Class indices or names, ``(n,)``.
        probs: Probabilities, ``(n, K)``.
        classes: Class names.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (one axes; a curve and a prevalence line per class present in ``y_true``).
    """
    y, p = validate_probs(encode_labels(y_true, classes), probs)
    fig = Figure(figsize=(6.4, 5.8), layout="constrained")
    ax = fig.add_subplot()
    for c, name in enumerate(classes):
        prevalence = np.mean(y == c)
        if prevalence == 0:
            continue
        precision, recall, _ = precision_recall_curve(y == c, p[:, c])
        ap = average_precision_score(y == c, p[:, c])
        color = class_color(name)
        ax.plot(
            recall,
            precision,
            color=color,
            lw=2,
            drawstyle="steps-post",
            label=f"{name}  AP {ap:.3f} (prevalence {prevalence:.2f})",
        )
        ax.axhline(prevalence, color=color, lw=1, ls=":")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.03))
    ax.set_xlabel("Recall (sensitivity)")
    ax.set_ylabel("Precision (PPV)")
    ax.set_title(f"Precision-recall, one-vs-rest (n={y.size}; dotted: prevalence)")
    ax.legend(loc="lower left", fontsize=9)
    return fig


@_styled
def plot_reliability(y_true: Any, probs_before: Any, probs_after: Any = None, n_bins: int = 15) -> Figure:
    """Top-label reliability diagram with ECE in the legend, and the confidence histogram.

    Args:
        y_true: Class indices, ``(n,)``.
        probs_before: Probabilities before calibration, ``(n, K)``.
        probs_after: Optional probabilities after temperature scaling.
        n_bins: Equal-width confidence bins.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (reliability axes on top, histogram below).
    """
    fig = Figure(figsize=(6.0, 7.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="#999999", lw=1, ls=":", label="perfect calibration")
    series = [("before", probs_before, "#CC79A7", "o")]
    if probs_after is not None:
        series.append(("after temperature scaling", probs_after, "#0072B2", "s"))
    for label, probs, color, marker in series:
        curve = reliability_curve(y_true, probs, n_bins)
        ece = expected_calibration_error(y_true, probs, n_bins)
        filled = curve["counts"] > 0
        conf, acc, counts = curve["confidence"][filled], curve["accuracy"][filled], curve["counts"][filled]
        top.plot(conf, acc, color=color, lw=1.5, alpha=0.8, label=f"{label}  (ECE {ece:.3f})")
        top.scatter(
            conf, acc, s=12 + 200 * counts / counts.max(), marker=marker, color=color, zorder=3, clip_on=False
        )
        bottom.stairs(curve["counts"], curve["bin_edges"], color=color, lw=1.8)
    top.set(xlim=(0, 1), ylim=(0, 1.01))
    top.set_ylabel("Accuracy in bin")
    top.set_title(f"Reliability (top-label, {n_bins} bins; marker area ∝ images)")
    top.legend(loc="upper left", fontsize=9)
    bottom.set_xlabel("Confidence (max probability)")
    bottom.set_ylabel("Images")
    return fig


def _column(history: pd.DataFrame, *names: str) -> str | None:
    return next((name for name in names if name in history.columns), None)


@_styled
def plot_learning_curves(history: pd.DataFrame, stage_boundary: int | None = None) -> Figure:
    """Training and validation loss and accuracy per epoch, with the stage boundary marked.

    Args:
        history: One row per epoch; columns among ``epoch``, ``loss``, ``val_loss``,
            ``accuracy``/``acc``, ``val_accuracy``/``val_acc``, ``stage``. Without an increasing
            ``epoch`` column the x axis counts rows from 1.
        stage_boundary: First epoch (x value) of the second stage; the line is drawn half an
            epoch before it. When None and ``stage`` changes, taken from the first change.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (one axes per metric present: loss, accuracy).
    """
    epoch = history["epoch"].to_numpy() if "epoch" in history.columns else None
    x = epoch if epoch is not None and np.all(np.diff(epoch) > 0) else np.arange(1, len(history) + 1)
    boundary_label = "fine-tuning starts"
    if stage_boundary is None and "stage" in history.columns:
        changed = np.flatnonzero(history["stage"].to_numpy() != history["stage"].iloc[0])
        if changed.size:
            stage_boundary = int(x[changed[0]])
            boundary_label = f"stage {history['stage'].iloc[changed[0]]!r} starts"
    panels = [
        (title, _column(history, *train), _column(history, *val))
        for title, train, val in (
            ("Loss", ("loss",), ("val_loss",)),
            ("Accuracy", ("accuracy", "acc"), ("val_accuracy", "val_acc")),
        )
    ]
    panels = [panel for panel in panels if panel[1] or panel[2]]
    if not panels:
        raise ValueError(f"history has no loss or accuracy columns (columns: {list(history.columns)})")
    fig = Figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
    marker = "o" if len(x) <= 40 else None
    for ax, (title, train, val) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels, strict=True):
        for column, color, label in ((train, "#0072B2", "training"), (val, "#D55E00", "validation")):
            if column:
                ax.plot(x, history[column], color=color, lw=1.8, marker=marker, ms=3, label=label)
        if title == "Loss" and val:
            best = int(np.nanargmin(history[val].to_numpy()))
            ax.plot(
                x[best],
                history[val].iloc[best],
                "*",
                color="black",
                ms=12,
                label=f"lowest val_loss (epoch {x[best]})",
            )
        if stage_boundary is not None:
            ax.axvline(stage_boundary - 0.5, color=_NEUTRAL, ls="--", lw=1, label=boundary_label)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.legend(fontsize=9)
    return fig


@_styled
def plot_error_gallery(
    images: Sequence[np.ndarray],
    true: Any,
    pred: Any,
    conf: Any,
    classes: Sequence[str],
    max_images: int = 12,
    ncols: int = 4,
) -> Figure:
    """The most confident errors, each titled "true → pred (p)" and framed in the predicted colour.

    Args:
        images: Images (grey ``(H, W)``/``(H, W, 1)`` or RGB ``(H, W, 3)``), one per sample.
        true: True class indices or names.
        pred: Predicted class indices or names.
        conf: Probability of the predicted class.
        classes: Class names.
        max_images: Most errors shown.
        ncols: Images per row.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (one axes per error shown, or a single note when there is none).
    """
    t, p = encode_labels(true, classes), encode_labels(pred, classes)
    conf = np.asarray(conf, dtype=np.float64)
    if not len(images) == t.size == p.size == conf.size:
        raise ValueError(
            f"images, true, pred, conf differ in length: {len(images)}, {t.size}, {p.size}, {conf.size}"
        )
    errors = np.flatnonzero(t != p)
    errors = errors[np.argsort(-conf[errors], kind="stable")][:max_images]
    if errors.size == 0:
        fig = Figure(figsize=(4, 1.5), layout="constrained")
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "No misclassified images", ha="center", va="center", fontsize=12)
        ax.set_axis_off()
        return fig
    cols = min(ncols, errors.size)
    rows = int(np.ceil(errors.size / cols))
    fig = Figure(figsize=(2.7 * cols, 2.9 * rows + 0.4), layout="constrained")
    fig.suptitle(
        f"Most confident errors ({errors.size} of {np.sum(t != p)}): true → predicted (probability); "
        "frame colour = predicted class",
        fontsize=11,
    )
    for n, i in enumerate(errors):
        ax = fig.add_subplot(rows, cols, n + 1)
        image = np.squeeze(np.asarray(images[i]))
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set(xticks=[], yticks=[])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set(visible=True, color=class_color(classes[p[i]]), linewidth=3)
        ax.set_title(f"{classes[t[i]]} → {classes[p[i]]} ({conf[i]:.2f})", fontsize=9)
    return fig
