"""Calibration: top-label ECE, reliability curves, Brier score, temperature scaling, thresholds.

Conventions used throughout:

* ``y_true`` holds integer class indices ``0..K-1`` (column order of ``probs``).
* ``probs`` is an ``(n, K)`` array of probabilities whose rows sum to 1 (softmax outputs).
* ECE is the standard top-label ECE (Guo et al., 2017): the confidence of a sample is its
  largest probability, it is correct when the arg-max class equals the label, and bins are
  equal-width half-open intervals ``(lo, hi]`` over ``[0, 1]`` (a confidence of exactly 0
  falls into the first bin).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import brier_score_loss

from covidxray import atomic

_PROB_TOL = 1e-3
_LOG_EPS = 1e-12
_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def validate_probs(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check labels and probabilities and return them as numpy arrays.

    Args:
        y_true: Integer class indices, shape ``(n,)``.
        probs: Probabilities, shape ``(n, K)``; rows must sum to 1 within 1e-3.

    Returns:
        ``(y_true, probs)`` as ``int64`` and ``float64`` arrays.

    Raises:
        ValueError: Naming the problem (shape mismatch, labels out of range, logits passed
            where probabilities are expected, NaN values).
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (n>0, K>=2), got {probs.shape}")
    if y.shape != (probs.shape[0],):
        raise ValueError(f"y_true must have shape ({probs.shape[0]},) to match probs, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    k = probs.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true must lie in 0..{k - 1} (one per probs column), got {y.min()}..{y.max()}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contains NaN or infinite values")
    deviation = np.abs(probs.sum(axis=1) - 1.0).max()
    if probs.min() < 0 or probs.max() > 1 or deviation > _PROB_TOL:
        raise ValueError(
            f"probs rows must be probabilities summing to 1 (max deviation {deviation:.3g}, "
            f"range [{probs.min():.3g}, {probs.max():.3g}]); pass softmax outputs, not logits"
        )
    return y, probs


def reliability_curve(y_true: Any, probs: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label reliability curve over equal-width confidence bins.

    Args:
        y_true: Integer class indices, shape ``(n,)``.
        probs: Probabilities, shape ``(n, K)``.
        n_bins: Number of equal-width bins on ``[0, 1]``.

    Returns:
        Dict with ``bin_edges`` (``n_bins + 1``), and per bin ``confidence`` (mean max
        probability), ``accuracy`` (fraction correct; both NaN for empty bins) and ``counts``.
    """
    y, p = validate_probs(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = confidence_bins(conf, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(bins, weights=conf, minlength=n_bins) / counts
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / counts
    return {
        "bin_edges": np.linspace(0.0, 1.0, n_bins + 1),
        "confidence": confidence,
        "accuracy": accuracy,
        "counts": counts,
    }


def confidence_bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the ``(lo, hi]`` equal-width bin of each confidence (0 goes to bin 0)."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error: ``sum_b n_b / n * |acc_b - conf_b|``.

    Args:
        y_true: Integer class indices, shape ``(n,)``.
        probs: Probabilities, shape ``(n, K)``.
        n_bins: Number of equal-width confidence bins.

    Returns:
        ECE in ``[0, 1]``.
    """
    curve = reliability_curve(y_true, probs, n_bins)
    counts = curve["counts"]
    gap = np.abs(np.nan_to_num(curve["accuracy"] - curve["confidence"]))
    return float((counts * gap).sum() / counts.sum())


def brier_score(y_true: Any, probs: Any) -> float:
    """Multiclass Brier score: mean over samples of ``sum_k (p_k - onehot_k)^2``.

    The range is ``[0, 2]`` (not halved, also for two classes); it equals scikit-learn's
    ``brier_score_loss(y, probs, labels=range(K), scale_by_half=False)``.

    Args:
        y_true: Integer class indices, shape ``(n,)``.
        probs: Probabilities, shape ``(n, K)``.

    Returns:
        The Brier score.
    """
    y, p = validate_probs(y_true, probs)
    return float(brier_score_loss(y, p, labels=np.arange(p.shape[1]), scale_by_half=False))


def _as_logits(logits_or_probs: Any, from_probs: bool) -> np.ndarray:
    x = np.asarray(logits_or_probs, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, K) array, got shape {x.shape}")
    if from_probs:
        return np.log(np.clip(x, _LOG_EPS, 1.0))
    if not np.all(np.isfinite(x)):
        raise ValueError("logits contain NaN or infinite values; use from_probs=True for probabilities")
    return x


def fit_temperature(logits: Any, y_true: Any, from_probs: bool = False) -> float:
    """Fit the temperature ``T > 0`` that minimises the NLL of ``softmax(logits / T)``.

    The search is over ``log T`` in ``[log 0.05, log 20]`` (bounded Brent). Passing
    ``log(probs)`` as logits is equivalent to the true logits (softmax is shift-invariant);
    ``from_probs=True`` takes the log itself, clipping at 1e-12.

    Args:
        logits: Logits (or probabilities with ``from_probs=True``), shape ``(n, K)``.
        y_true: Integer class indices, shape ``(n,)``.
        from_probs: Whether ``logits`` holds probabilities.

    Returns:
        The fitted temperature (``> 1`` softens over-confident predictions).
    """
    z = _as_logits(logits, from_probs)
    y, _ = validate_probs(y_true, softmax(z, axis=1))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, y].mean())

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def apply_temperature(logits_or_probs: Any, T: float, from_probs: bool) -> np.ndarray:
    """Return ``softmax(logits / T)``.

    Args:
        logits_or_probs: Logits, or probabilities when ``from_probs`` is True, shape ``(n, K)``.
        T: Temperature, ``> 0``.
        from_probs: Whether the input holds probabilities (their log is used as logits).

    Returns:
        Calibrated probabilities, shape ``(n, K)``.
    """
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    return softmax(_as_logits(logits_or_probs, from_probs) / T, axis=1)


def choose_threshold(y_true_binary: Any, p_positive: Any, target_sensitivity: float = 0.95) -> float:
    """Largest threshold whose sensitivity on this set is at least ``target_sensitivity``.

    The decision is "positive if ``p >= threshold``". The threshold returned is the m-th
    largest positive score, with ``m = ceil(target * n_pos)``. Ties: every sample whose score
    equals the threshold is called positive, so with tied scores the achieved sensitivity can
    exceed the target (never fall below it); any larger threshold misses the target.

    Args:
        y_true_binary: 1/True for the positive class, 0/False otherwise, shape ``(n,)``.
        p_positive: Probability of the positive class, shape ``(n,)``.
        target_sensitivity: Required sensitivity, in ``(0, 1]``.

    Returns:
        The threshold.
    """
    y = np.asarray(y_true_binary).astype(bool)
    p = np.asarray(p_positive, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(
            f"y_true_binary and p_positive must be 1-D of equal length, got {y.shape}, {p.shape}"
        )
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    positives = np.sort(p[y])[::-1]
    if positives.size == 0:
        raise ValueError("choose_threshold needs at least one positive sample")
    needed = int(np.ceil(round(target_sensitivity * positives.size, 9)))
    return float(positives[needed - 1])


@dataclass
class Calibration:
    """Post-hoc calibration fitted on one split, stored as JSON next to a model.

    Attributes:
        temperature: Softmax temperature (1.0 = unchanged).
        threshold: Decision threshold on the positive-class probability (after scaling).
        positive_class: Class name the threshold applies to.
        target_sensitivity: Sensitivity the threshold was chosen for.
        ece_before: Top-label ECE on the fitting split before temperature scaling.
        ece_after: Same, after.
        fitted_on: Name of the split used for fitting (never the test split).
        n: Number of samples in that split.
    """

    temperature: float
    threshold: float | None
    positive_class: str
    target_sensitivity: float | None
    ece_before: float
    ece_after: float
    fitted_on: str
    n: int

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (parents created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save`.

        Raises:
            FileNotFoundError: When the file does not exist.
            ValueError: Naming the file when it is not valid JSON or lacks fields.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data] if isinstance(data, dict) else names
        if missing:
            raise ValueError(f"{path}: calibration JSON lacks fields {missing}")
        return cls(**{name: data[name] for name in names})
