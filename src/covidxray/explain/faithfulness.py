"""Faithfulness: do the pixels a map ranks first matter to the model?

Deletion and insertion curves (Petsiuk et al. 2018, RISE): pixels are removed from (inserted
into) the image in decreasing order of attribution, and the target-class probability is
recorded; a faithful map makes deletion fall fast (low AUC) and insertion rise fast (high AUC).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import keras
import numpy as np
from matplotlib.figure import Figure

from covidxray.explain.core import as_batch, class_scores, resolve_targets
from covidxray.style import styled


@dataclass
class Faithfulness:
    """Deletion/insertion curves of N images (``(N, steps + 1)``) over ``fractions`` and their AUCs."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        """Area under each deletion curve (trapezoid rule over ``fractions``)."""
        return np.trapezoid(self.deletion, self.fractions, axis=1)

    @property
    def insertion_auc(self) -> np.ndarray:
        """Area under each insertion curve."""
        return np.trapezoid(self.insertion, self.fractions, axis=1)


def _baseline(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "black":
        return np.zeros_like(x)
    if kind == "blur":  # RISE: a strongly blurred copy (sigma = S / 16)
        sigma = x.shape[1] / 16
        return np.stack([cv2.GaussianBlur(xi[..., 0], (0, 0), sigma)[..., None] for xi in x])
    raise ValueError(f"baseline must be 'black' or 'blur', got {kind!r}")


def deletion_insertion(model: keras.Model | Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                       heatmaps: np.ndarray, target=None, steps: int = 20, deletion_baseline: str = "black",
                       insertion_baseline: str = "blur", batch_size: int = 32) -> Faithfulness:
    """Deletion and insertion curves of the target-class probability.

    Args:
        model: The classifier, or any function mapping ``(B, S, S, 1)`` float32 images to ``(B, C)``
            scores (used as given).
        images: Raw 0-255 grayscale ``(N, S, S[, 1])``.
        heatmaps: ``(N, S, S)`` attribution maps; ties are broken in raster order.
        target: ``None`` (predicted class), a class index or ``N`` indices.
        steps: Curve points after the start; step ``j`` changes ``round(j / steps * S * S)`` pixels.
        deletion_baseline: What deleted pixels become: ``black`` (RISE default) or ``blur``.
        insertion_baseline: The image insertion starts from: ``blur`` (RISE default) or ``black``.
        batch_size: Images per model pass; all ``N * (steps + 1)`` variants go through in chunks.

    Returns:
        :class:`Faithfulness`.
    """
    if isinstance(model, keras.Model):
        x = as_batch(model, images)
        t = resolve_targets(model, x, target, batch_size)

        def score(batch):
            return class_scores(model, batch, "prob", batch_size)
    else:
        x = np.asarray(images, np.float32).reshape(len(images), *np.shape(images)[1:3], 1)
        score = model
        t = np.asarray(score(x)).argmax(axis=1) if target is None else np.broadcast_to(target, (len(x),))
    h = np.asarray(heatmaps, np.float64).reshape(len(x), -1)
    if h.shape[1] != x.shape[1] * x.shape[2]:
        raise ValueError(f"heatmaps {np.shape(heatmaps)} do not match images {x.shape[:3]}")
    rank = np.empty_like(h, dtype=np.int64)
    rank[np.arange(len(h))[:, None], np.argsort(-h, axis=1, kind="stable")] = np.arange(h.shape[1])
    rank = rank.reshape(x.shape)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * h.shape[1]).astype(np.int64)
    curves = {}
    for name, base, keep_top in (("deletion", _baseline(x, deletion_baseline), False),
                                 ("insertion", _baseline(x, insertion_baseline), True)):
        owner, step = np.repeat(np.arange(len(x)), steps + 1), np.tile(np.arange(steps + 1), len(x))
        vals = np.empty(len(owner))
        for start in range(0, len(owner), batch_size):
            i, j = owner[start:start + batch_size], step[start:start + batch_size]
            top = rank[i] < counts[j][:, None, None, None]
            batch = np.where(top == keep_top, x[i], base[i]).astype(np.float32)
            vals[start:start + len(i)] = np.asarray(score(batch))[np.arange(len(i)), t[i]]
        curves[name] = vals.reshape(len(x), steps + 1)
    return Faithfulness(fractions, curves["deletion"], curves["insertion"])



@styled
def plot_faithfulness(results: Mapping[str, Faithfulness]) -> Figure:
    """Mean deletion and insertion curves per method, AUCs in the legend."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, kind in zip(fig.subplots(1, 2), ("deletion", "insertion"), strict=True):
        for name, r in results.items():
            auc = getattr(r, f"{kind}_auc").mean()
            ax.plot(r.fractions, getattr(r, kind).mean(axis=0), label=f"{name} (AUC {auc:.3f})")
        ax.set(xlabel=f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}",
               ylabel="target-class probability", title=kind.capitalize() + (" (lower is better)" if kind ==
                                                                              "deletion" else " (higher is better)"))
        ax.legend(fontsize=8)
    return fig
