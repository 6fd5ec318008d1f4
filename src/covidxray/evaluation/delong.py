"""DeLong's test for two correlated ROC AUCs (two models scored on the same images).

DeLong, DeLong & Clarke-Pearson (Biometrics 44:837-845, 1988) estimate the covariance of two
empirical AUCs measured on the same cases from the structural components of the Mann-Whitney
statistic: for each positive, the share of negatives it outranks (``V10``), and for each negative,
the share of positives that outrank it (``V01``), ties counting one half. The AUC is the mean of
either, and ``S = S10 / m + S01 / n`` (``S10``, ``S01``: the sample covariance matrices of the
components over the ``m`` positives and ``n`` negatives) is the covariance of the AUC estimates.
Sun & Xu (IEEE Signal Processing Letters 21:1389-1393, 2014) compute the components from mid-ranks
(one sort per score, O(N log N)) instead of comparing every positive with every negative (O(m n)),
which is what :func:`delong_components` does.

scipy, statsmodels and scikit-learn have no DeLong test; :func:`delong_test` is the test of
``AUC_a == AUC_b`` (z statistic, two-sided normal p-value, the difference's 95% interval), the
same as R pROC ``roc.test(roc_a, roc_b, method = "delong", paired = TRUE)``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata


def delong_components(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and the Mann-Whitney structural components of one or more score columns.

    Args:
        positive: ``(N,)`` bool, True for the positive cases.
        scores: ``(N,)`` or ``(N, k)`` scores, higher = more likely positive (one column per model).

    Returns:
        ``(auc, v10, v01)``: ``(k,)`` AUCs, ``(k, m)`` components of the ``m`` positives and
        ``(k, n)`` of the ``n`` negatives (Sun & Xu 2014, eqs. 6-8).

    Raises:
        ValueError: Without a positive or without a negative case.
    """
    pos = np.asarray(positive, bool)
    s = np.asarray(scores, np.float64).reshape(pos.size, -1).T  # (k, N)
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong's test needs positive and negative cases, got {m} and {n}")
    x, y = s[:, pos], s[:, ~pos]
    tz = rankdata(s, axis=1)  # mid-ranks over all cases
    tx, ty = rankdata(x, axis=1), rankdata(y, axis=1)  # ... within positives, within negatives
    v10 = (tz[:, pos] - tx) / n  # share of negatives each positive outranks
    v01 = 1.0 - (tz[:, ~pos] - ty) / m  # share of positives that outrank each negative
    auc = v10.mean(axis=1)
    return auc, v10, v01


def delong_covariance(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix ``S10 / m + S01 / n``.

    Args:
        positive: ``(N,)`` bool.
        scores: ``(N, k)`` scores.

    Returns:
        ``(auc, cov)``: ``(k,)`` and ``(k, k)``.
    """
    auc, v10, v01 = delong_components(positive, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(auc), len(auc)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(auc), len(auc)))
    return auc, s10 / m + s01 / n


def delong_test(positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, level: float = 0.95) -> dict:
    """DeLong's test of two correlated AUCs: the same cases scored by two models.

    Args:
        positive: ``(N,)`` bool, the positive cases (e.g. COVID-19 vs the rest).
        score_a: ``(N,)`` scores of model A.
        score_b: ``(N,)`` scores of model B.
        level: Coverage of the difference's normal interval.

    Returns:
        ``{"auc_a", "auc_b", "difference" (b - a), "se", "z", "p_value", "ci"}``. When both
        models rank every pair alike the variance is 0: ``z`` is None and ``p_value`` is 1.0 for
        equal AUCs (0.0 otherwise).
    """
    auc, cov = delong_covariance(positive, np.column_stack([score_a, score_b]))
    diff = float(auc[1] - auc[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    out = {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": diff, "se": se}
    if se <= 1e-15:
        return out | {"z": None, "p_value": 1.0 if abs(diff) < 1e-12 else 0.0, "ci": [diff, diff]}
    z = diff / se
    half = float(norm.ppf(0.5 + level / 2)) * se
    return out | {"z": float(z), "p_value": float(2 * norm.sf(abs(z))), "ci": [diff - half, diff + half]}
