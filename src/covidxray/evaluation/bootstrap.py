"""The vectorised stratified bootstrap behind every confidence interval.

Point estimates come from scikit-learn. Intervals come from a vectorised bootstrap: every
resample is represented by how often it draws each original sample (a ``(n_boot, n)`` count
matrix), so confusion matrices, ECE, Brier and operating-point rates for all resamples are one
matrix product each. ROC AUC (Mann-Whitney U with mid-ranks for ties) and average precision
need an order of the scores, but a resample only repeats original samples, so one sort of the
original scores serves every resample: per distinct score, the drawn positives and negatives
are summed, and cumulative sums give U and the precision-recall steps. The result equals
ranking each resample (``scipy.stats.rankdata(axis=1)``) without sorting ``n_boot`` rows
(measured 0.17 s against 0.76 s per class for 5,000 samples and 1,000 resamples).
"""

from __future__ import annotations

import numpy as np


def bootstrap_indices(y_true: np.ndarray, n_boot: int, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """Draw all bootstrap resamples at once.

    Args:
        y_true: Integer class indices, shape ``(n,)``.
        n_boot: Number of resamples.
        seed: Seed of the numpy generator.
        stratified: Resample within each true class, so every resample keeps the class counts.

    Returns:
        Index matrix of shape ``(n_boot, n)``; row ``b`` is resample ``b``.
    """
    y = np.asarray(y_true)
    rng = np.random.default_rng(seed)
    if not stratified:
        return rng.integers(0, y.size, size=(n_boot, y.size))
    idx = np.empty((n_boot, y.size), dtype=np.int64)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return idx


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the ``n`` samples is drawn in each resample: ``(n_boot, n)`` floats."""
    n_boot = idx.shape[0]
    flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def tie_group_counts(
    counts: np.ndarray, score: np.ndarray, positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drawn positives and negatives per distinct score (descending) in every resample.

    Args:
        counts: Resample counts, ``(n_boot, n)``.
        score: Score of each original sample, ``(n,)``.
        positive: Boolean positive flag of each original sample, ``(n,)``.

    Returns:
        ``(pos, neg)``, each ``(n_boot, n_distinct_scores)``, highest score first.
    """
    order = np.argsort(-score, kind="stable")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    drawn = counts[:, order]
    pos = np.add.reduceat(drawn * positive[order], starts, axis=1)
    neg = np.add.reduceat(drawn, starts, axis=1) - pos
    return pos, neg


def auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC per resample from :func:`tie_group_counts` (ties count one half); NaN if undefined."""
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    neg_below = n_neg[:, None] - np.cumsum(neg, axis=1)
    u = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def average_precision_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision per resample (scikit-learn's step definition); NaN without positives."""
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        n_pos = pos.sum(axis=1)
        return np.where(n_pos > 0, (pos * precision).sum(axis=1) / n_pos, np.nan)


def percentile_intervals(samples: dict[str, np.ndarray], level: float = 0.95) -> tuple[dict, dict]:
    """Percentile intervals over the finite values of each metric.

    Returns:
        ``(ci, n_valid)``: metric -> ``[low, high]`` (None without any valid resample), and
        metric -> number of resamples where the metric was defined.
    """
    tails = [50 * (1 - level), 100 - 50 * (1 - level)]
    ci, n_valid = {}, {}
    for key, values in samples.items():
        valid = values[np.isfinite(values)]
        n_valid[key] = int(valid.size)
        ci[key] = np.percentile(valid, tails).tolist() if valid.size else None
    return ci, n_valid
