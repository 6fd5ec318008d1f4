"""Classification metrics with stratified-bootstrap 95% confidence intervals.

Point estimates come from scikit-learn; intervals from the vectorised bootstrap of
:mod:`covidxray.evaluation.bootstrap`.

Predictions are always ``argmax`` of the raw probabilities, never of rounded ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from covidxray.evaluation.bootstrap import (
    auc_from_groups,
    average_precision_from_groups,
    bootstrap_indices,
    percentile_intervals,
    resample_counts,
    tie_group_counts,
)
from covidxray.evaluation.calibration import (
    brier_score,
    confidence_bins,
    expected_calibration_error,
    validate_probs,
)

ECE_BINS = 15
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece", "brier")
PER_CLASS = ("sensitivity", "specificity", "precision", "f1", "auc", "average_precision")


def predict_labels(probs: np.ndarray) -> np.ndarray:
    """Predicted class indices: ``argmax`` of the raw probabilities (never rounded first).

    Args:
        probs: Probabilities or scores, shape ``(n, K)``.

    Returns:
        Integer class indices, shape ``(n,)``.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (n, K), got {probs.shape}")
    return probs.argmax(axis=1)


def rounding_bug_accuracy(y_true: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Accuracy the right way and the student project's way (``argmax(np.round(probs))``).

    Rounding first turns every row whose top probability is at most 0.5 into zeros, whose argmax
    is class 0; that is how a model with 95% accuracy was reported at 78%.

    Returns:
        ``(argmax accuracy, rounded-then-argmax accuracy)``.
    """
    y = np.asarray(y_true)
    return float((predict_labels(probs) == y).mean()), float((np.round(probs).argmax(axis=1) == y).mean())


def encode_labels(y_true: Any, classes: Sequence[str]) -> np.ndarray:
    """Turn class names (or integer indices) into indices into ``classes``.

    Raises:
        ValueError: Listing labels that are not in ``classes``.
    """
    y = np.asarray(y_true)
    if y.dtype.kind in "USO":
        lookup = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in y.tolist()} - set(lookup))
        if unknown:
            raise ValueError(f"y_true has labels {unknown} that are not in classes {list(classes)}")
        return np.array([lookup[v] for v in y.tolist()], dtype=np.int64)
    return y


def bootstrap_distributions(
    y: np.ndarray,
    probs: np.ndarray,
    counts: np.ndarray,
    classes: Sequence[str],
    operating_point: tuple[int, float] | None = None,
    ece_bins: int = ECE_BINS,
) -> dict[str, np.ndarray]:
    """Every metric for every resample, NaN where a resample leaves it undefined.

    Args:
        y: Integer class indices, ``(n,)``.
        probs: Probabilities, ``(n, K)``.
        counts: Resample counts from :func:`resample_counts`, ``(n_boot, n)``.
        classes: Class names (keys ``per_class.<name>.<metric>``).
        operating_point: ``(positive index, threshold)`` to add ``operating_point.sensitivity``
            and ``operating_point.specificity``.
        ece_bins: Equal-width confidence bins of the ECE.

    Returns:
        Metric name -> ``(n_boot,)`` array.
    """
    n, k = probs.shape
    pred = probs.argmax(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cm = (counts @ np.eye(k * k)[y * k + pred]).reshape(-1, k, k)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        support, predicted = cm.sum(axis=2), cm.sum(axis=1)
        per = {
            "sensitivity": tp / support,
            "specificity": (n - support - predicted + tp) / (n - support),
            "precision": tp / predicted,
            "f1": 2 * tp / (support + predicted),
        }
    aucs, aps = [], []
    for c in range(k):
        pos, neg = tie_group_counts(counts, probs[:, c], y == c)
        aucs.append(auc_from_groups(pos, neg))
        aps.append(average_precision_from_groups(pos, neg))
    per["auc"], per["average_precision"] = np.stack(aucs, axis=1), np.stack(aps, axis=1)

    conf = probs.max(axis=1)
    bins = np.eye(ece_bins)[confidence_bins(conf, ece_bins)]
    gap = counts @ (bins * (pred == y)[:, None]) - counts @ (bins * conf[:, None])
    onehot = np.eye(k)[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        out = {
            "accuracy": np.trace(cm, axis1=1, axis2=2) / n,
            "balanced_accuracy": np.nanmean(per["sensitivity"], axis=1),
            "macro_f1": np.nanmean(per["f1"], axis=1),
            "macro_auc": per["auc"][:, np.bincount(y, minlength=k) > 0].mean(axis=1),
            "ece": np.abs(gap).sum(axis=1) / n,
            "brier": counts @ ((probs - onehot) ** 2).sum(axis=1) / n,
        }
    for c, name in enumerate(classes):
        for metric in PER_CLASS:
            out[f"per_class.{name}.{metric}"] = per[metric][:, c]
    if operating_point is not None:
        c, threshold = operating_point
        is_pos, called = y == c, probs[:, c] >= threshold
        with np.errstate(invalid="ignore", divide="ignore"):
            out["operating_point.sensitivity"] = (counts @ (is_pos & called)) / (counts @ is_pos)
            out["operating_point.specificity"] = (counts @ (~is_pos & ~called)) / (counts @ ~is_pos)
    return out


def bootstrap_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    stratified: bool = True,
    operating_point: tuple[int, float] | None = None,
    level: float = 0.95,
    ece_bins: int = ECE_BINS,
) -> dict[str, Any]:
    """Bootstrap percentile intervals for every metric of :func:`bootstrap_distributions`.

    Args:
        y_true: Integer class indices, ``(n,)``.
        probs: Probabilities, ``(n, K)``.
        classes: Class names, one per column.
        n_boot: Number of resamples (1,000 or more for reported numbers).
        seed: Seed of the resampling.
        stratified: Resample within each true class.
        operating_point: ``(positive index, threshold)``, see :func:`bootstrap_distributions`.
        level: Coverage of the intervals.
        ece_bins: Equal-width confidence bins of the ECE.

    Returns:
        ``{"ci": {metric: [low, high] | None}, "n_valid": {metric: int}}``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    y, p = validate_probs(y_true, probs)
    counts = resample_counts(bootstrap_indices(y, n_boot, seed, stratified), y.size)
    ci, n_valid = percentile_intervals(bootstrap_distributions(y, p, counts, classes, operating_point, ece_bins),
                                     level)
    return {"ci": ci, "n_valid": n_valid}


def _number(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _point_estimates(y: np.ndarray, p: np.ndarray, classes: Sequence[str], notes: list[str],
                     ece_bins: int = ECE_BINS) -> dict:
    k = len(classes)
    labels = np.arange(k)
    pred = predict_labels(p)
    support = np.bincount(y, minlength=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined cases are reported as None plus a note
        precision, recall, f1, _ = precision_recall_fscore_support(
            y, pred, labels=labels, zero_division=np.nan
        )
        out = {
            "n": int(y.size),
            "classes": list(classes),
            "accuracy": float(accuracy_score(y, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro")),
        }
    cm = confusion_matrix(y, pred, labels=labels)
    negatives = y.size - support
    per_class, aucs = {}, []
    for c, name in enumerate(classes):
        is_pos = y == c
        auc = roc_auc_score(is_pos, p[:, c]) if 0 < support[c] < y.size else None
        if auc is None:
            notes.append(f"{name}: AUC undefined (needs both {name} and other classes in y_true)")
        else:
            aucs.append(auc)
        if support[c] == 0:
            notes.append(f"{name}: absent from y_true, so sensitivity and average precision are undefined")
        if cm[:, c].sum() == 0:
            notes.append(f"{name}: never predicted, so precision is undefined")
        tn = negatives[c] - (cm[:, c].sum() - cm[c, c])
        per_class[name] = {
            "sensitivity": _number(recall[c]),
            "specificity": _number(tn / negatives[c]) if negatives[c] else None,
            "precision": _number(precision[c]),
            "f1": _number(f1[c]),
            "auc": _number(auc) if auc is not None else None,
            "average_precision": float(average_precision_score(is_pos, p[:, c])) if support[c] else None,
            "support": int(support[c]),
        }
    if len(aucs) < k and aucs:
        notes.append(f"macro_auc averages the {len(aucs)} classes whose AUC is defined")
    out["macro_auc"] = float(np.mean(aucs)) if aucs else None
    out["ece"] = expected_calibration_error(y, p, ece_bins)
    out["brier"] = brier_score(y, p)
    out["confusion_matrix"] = cm.tolist()
    out["per_class"] = per_class
    return out


def compute_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    positive: str = "COVID-19",
    threshold: float | None = None,
    ece_bins: int = ECE_BINS,
) -> dict:
    """All reported metrics with stratified-bootstrap 95% intervals, as a JSON-ready dict.

    Predictions are ``argmax`` of the raw probabilities. ECE is top-label with ``ece_bins``
    equal-width bins (``evaluate.ece_bins``, default 15); Brier is multiclass (mean over samples
    of the sum over classes of squared error, range 0..2). Undefined values are ``None`` and explained in ``notes``.

    Args:
        y_true: True labels: indices into ``classes`` or class names, shape ``(n,)``.
        probs: Probabilities, shape ``(n, K)``, columns in the order of ``classes``.
        classes: Class names.
        n_boot: Number of bootstrap resamples.
        seed: Seed of the resampling.
        positive: Class the operating point refers to.
        threshold: When given, adds ``operating_point`` for the decision
            "positive if p_positive >= threshold".
        ece_bins: Equal-width confidence bins of the ECE.

    Returns:
        Dict with ``n``, ``classes``, the headline metrics, ``confusion_matrix`` (rows true,
        columns predicted), ``per_class``, ``ci95`` (``[low, high]`` per metric, keys like
        ``per_class.COVID-19.sensitivity``), ``bootstrap`` (settings and valid resample
        counts), ``notes`` and, with a threshold, ``operating_point``.
    """
    y, p = validate_probs(encode_labels(y_true, classes), probs)
    if p.shape[1] != len(classes):
        raise ValueError(
            f"probs has {p.shape[1]} columns but {len(classes)} classes were given: {list(classes)}"
        )
    notes: list[str] = []
    out = _point_estimates(y, p, classes, notes, ece_bins)
    op = None
    if threshold is not None:
        if positive not in classes:
            raise ValueError(f"positive class {positive!r} is not in classes {list(classes)}")
        op = (list(classes).index(positive), float(threshold))
    boot = bootstrap_ci(y, p, classes, n_boot=n_boot, seed=seed, stratified=True, operating_point=op,
                        ece_bins=ece_bins)
    ci = boot["ci"]
    if op is not None:
        is_pos, called = y == op[0], p[:, op[0]] >= op[1]
        out["operating_point"] = {
            "class": positive,
            "threshold": op[1],
            "sensitivity": float(called[is_pos].mean()) if is_pos.any() else None,
            "specificity": float((~called[~is_pos]).mean()) if (~is_pos).any() else None,
            "ci95": {m: ci.pop(f"operating_point.{m}") for m in ("sensitivity", "specificity")},
        }
    out["ci95"] = ci
    out["bootstrap"] = {
        "n_boot": n_boot,
        "seed": seed,
        "stratified": True,
        "method": "percentile",
        "n_valid": boot["n_valid"],
    }
    out["notes"] = notes
    return out
