"""How far an external set is from a run's own data, in the model's features and in plain image statistics.

* :func:`feature_probe`: a cross-validated logistic regression on the model's pooled features that
  tells the run's test images from the external ones (AUC with a bootstrap interval over its
  out-of-fold scores, overall and per group). Near 0.5 the model sees the two alike; near 1 it can
  tell where an image comes from, the failure DeGrave et al. (Nature Machine Intelligence 2021)
  describe.
* :func:`image_statistics`: the simple statistics a shortcut could use (intensity, a dark frame,
  burned-in text, sharpness), per group.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from covidxray.evaluation.bootstrap import bootstrap_indices, percentile_intervals, resample_counts
from covidxray.evaluation.metrics import bootstrap_distributions

#: Share of the image side that counts as the border band (where burned-in markers sit).
BORDER = 0.12


def feature_probe(feat_int: np.ndarray, feat_ext: np.ndarray, groups_ext: Sequence | None = None,
                  folds: int = 5, n_boot: int = 1000, seed: int = 0) -> dict:
    """Cross-validated AUC of a linear probe that tells internal from external images.

    A standardised L2 logistic regression on the features, out-of-fold scores from stratified
    ``folds``-fold cross-validation; the interval is a stratified bootstrap of those scores.

    Args:
        feat_int: Internal (run's test split) features, ``(n, D)``.
        feat_ext: External features, ``(m, D)``.
        groups_ext: Group of each external image, for a per-group AUC (internal vs that group).
        folds: Cross-validation folds (reduced to the smaller class size when needed).
        n_boot: Bootstrap resamples of the out-of-fold scores.
        seed: Seed of the folds and the bootstrap.

    Returns:
        ``{"auc", "auc_ci", "n_internal", "n_external", "per_group": {g: {"auc", "auc_ci", "n"}}}``.
    """
    x = np.concatenate([feat_int, feat_ext]).astype(np.float64)
    y = np.r_[np.zeros(len(feat_int), int), np.ones(len(feat_ext), int)]
    k = max(2, min(folds, len(feat_int), len(feat_ext)))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    score = cross_val_predict(clf, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                              method="decision_function")
    out = {"auc": float(roc_auc_score(y, score)), "auc_ci": _auc_ci(y, score, n_boot, seed),
           "n_internal": int(len(feat_int)), "n_external": int(len(feat_ext)), "folds": k, "per_group": {}}
    if groups_ext is not None:
        g = np.asarray([str(v) for v in groups_ext])
        for name in sorted(set(g)):
            keep = np.r_[np.ones(len(feat_int), bool), g == name]
            out["per_group"][name] = {"auc": float(roc_auc_score(y[keep], score[keep])),
                                      "auc_ci": _auc_ci(y[keep], score[keep], n_boot, seed),
                                      "n": int((g == name).sum())}
    return out


def _auc_ci(y: np.ndarray, score: np.ndarray, n_boot: int, seed: int) -> list[float] | None:
    probs = np.stack([1 - _sigmoid(score), _sigmoid(score)], axis=1)
    counts = resample_counts(bootstrap_indices(y, n_boot, seed, stratified=True), y.size)
    dist = bootstrap_distributions(y, probs, counts, ["internal", "external"])
    ci, _ = percentile_intervals({"auc": dist["per_class.external.auc"]})
    return ci["auc"]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(v, -50, 50)))


def image_statistics(images: np.ndarray, groups: Sequence, bins: int = 16) -> pd.DataFrame:
    """Simple image statistics per group, the cues a shortcut could use.

    Args:
        images: ``(N, H, W)`` uint8 images at model size.
        groups: Group of each image.
        bins: Intensity histogram bins (columns ``hist_00`` ... of the mean histogram).

    Returns:
        One row per group: ``n``, ``mean``, ``std``, ``p01``, ``p99`` (intensity), ``border_ratio``
        (mean of the outer :data:`BORDER` band over the mean of the centre; a dark frame < 1),
        ``border_bright`` (share of border-band pixels >= 235: burned-in text and markers),
        ``edge_density`` (share of Canny edge pixels: sharpness / processing), and the histogram.
    """
    imgs = np.asarray(images)
    n, h, w = imgs.shape
    b = max(1, int(round(BORDER * min(h, w))))
    band = np.ones((h, w), bool)
    band[b:-b, b:-b] = False
    per = pd.DataFrame({
        "group": [str(g) for g in groups],
        "mean": imgs.reshape(n, -1).mean(axis=1),
        "std": imgs.reshape(n, -1).std(axis=1),
        "p01": np.percentile(imgs.reshape(n, -1), 1, axis=1),
        "p99": np.percentile(imgs.reshape(n, -1), 99, axis=1),
        "border_ratio": imgs[:, band].mean(axis=1) / np.maximum(imgs[:, ~band].mean(axis=1), 1.0),
        "border_bright": (imgs[:, band] >= 235).mean(axis=1),
        "edge_density": [float((cv2.Canny(im, 50, 150) > 0).mean()) for im in imgs],
    })
    hist = np.stack([np.bincount(im.ravel().astype(np.int64) * bins // 256, minlength=bins) / im.size for im in imgs])
    for i in range(bins):
        per[f"hist_{i:02d}"] = hist[:, i]
    out = per.groupby("group").mean()
    out.insert(0, "n", per.groupby("group").size())
    return out.reset_index()
