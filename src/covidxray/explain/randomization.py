"""Randomisation: do the maps depend on what the model learned?

Cascading model-parameter randomisation (Adebayo et al. 2018): the weights of a clone are
re-initialised from the top (head, then ``mixed10``, ``mixed9``...) cumulatively, and each
method's maps are compared with the trained model's (Spearman rank correlation and SSIM). A method
whose maps survive full randomisation (Spearman above a threshold) explains the image, not the
model, and is flagged.

SSIM follows Wang et al. 2004 as scikit-image computes it with ``gaussian_weights=True``
(sigma 1.5, window 11, K1 0.01, K2 0.03, population covariance, border of 5 px cropped),
implemented with SciPy so that scikit-image is not needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata

from covidxray.explain.core import as_batch, resolve_targets
from covidxray.explain.registry import MethodFn, method_fns
from covidxray.style import styled


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    """Mean SSIM of each pair of ``(N, H, W)`` maps (Wang et al. 2004, Gaussian window)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def blur(v):
        return gaussian_filter(v, (0, sigma, sigma), truncate=3.5)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = int(3.5 * sigma + 0.5)
    if min(a.shape[1:]) > 2 * pad:
        s = s[:, pad:-pad, pad:-pad]
    return s.mean(axis=(1, 2))


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps.

    A constant map (e.g. a Grad-CAM that the ReLU zeroed) has no ranking: against a non-constant
    map the correlation counts as 0, against an identical constant map as 1, otherwise 0.
    """
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    same = (a == b).all(axis=1).astype(np.float64)
    return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), same)


def randomization_blocks(model: keras.Model) -> list[tuple[str, list[str]]]:
    """Weighted layers grouped into blocks, top first: ``head``, ``mixed10``..``mixed0`` (the stem
    goes with ``mixed0``); a model without ``mixedN`` blocks gives one block per weighted layer."""
    names = [layer.name for layer in model.layers]
    top = names.index("gap") if "gap" in names else len(names)
    weighted = [i for i, layer in enumerate(model.layers) if layer.weights]
    bounds = [i for i, n in enumerate(names[:top]) if re.fullmatch(r"mixed\d+", n)]
    if not bounds:
        return [(names[i], [names[i]]) for i in reversed(weighted)]
    blocks = [("head", [names[i] for i in weighted if i > top])]
    edges = [-1, *bounds[:-1], top]
    for lo, hi, name in reversed(list(zip(edges[:-1], edges[1:], (names[b] for b in bounds), strict=True))):
        blocks.append((name, [names[i] for i in weighted if lo < i <= hi]))
    return [b for b in blocks if b[1]]


def reinitialize(layer: keras.layers.Layer, seed: int) -> None:
    """Re-draw a layer's weights from its own initialisers (Glorot/zeros when it has none), seeded."""
    for k, var in enumerate(layer.weights):
        init = getattr(layer, f"{var.name.split('/')[-1]}_initializer", None)
        if init is None:
            init = keras.initializers.GlorotUniform() if len(var.shape) >= 2 else keras.initializers.Zeros()
        cfg = init.get_config()
        if "seed" in cfg:
            init = type(init).from_config({**cfg, "seed": seed + k})
        var.assign(init(var.shape, dtype=var.dtype))


@dataclass
class Randomization:
    """``table``: one row per (step, block, method) with mean ``spearman`` and ``ssim``;
    ``summary``: per method after full randomisation, with ``flagged``."""

    table: pd.DataFrame
    summary: pd.DataFrame

    @property
    def flagged(self) -> list[str]:
        """Methods whose maps survived full randomisation."""
        return self.summary.index[self.summary["flagged"]].tolist()


def cascading_randomization(model: keras.Model, images: np.ndarray,
                            methods: Sequence[str] | Mapping[str, MethodFn], target=None,
                            blocks: list[tuple[str, list[str]]] | None = None, seed: int = 0,
                            threshold: float = 0.5, batch_size: int = 32,
                            options: Mapping[str, dict] | None = None) -> Randomization:
    """Cascading randomisation of a CLONE of the model, top block first, cumulatively.

    Args:
        model: The trained classifier (left untouched).
        images: Raw 0-255 grayscale ``(N, S, S[, 1])``.
        methods: Method names of :func:`covidxray.explain.explain`, or ``{name: fn(model, x, target)}``.
        target: Classes explained at every step; ``None`` fixes the trained model's predictions.
        blocks: ``[(block, [layer names])]`` top first; default :func:`randomization_blocks`.
        seed: Seed of the re-initialisation.
        threshold: A method is flagged when its mean Spearman after full randomisation exceeds it.
        batch_size: Model inputs per pass.
        options: Per-method keyword options for named methods, e.g. ``{"smoothgrad": {"n_samples": 10}}``.

    Returns:
        :class:`Randomization`.
    """
    x = as_batch(model, images)
    t = resolve_targets(model, x, target, batch_size)
    fns = method_fns(methods, batch_size, options)
    ref = {name: fn(model, x, t) for name, fn in fns.items()}
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    rows = []
    for step, (block, layers) in enumerate(blocks or randomization_blocks(model), start=1):
        for j, name in enumerate(layers):
            reinitialize(clone.get_layer(name), seed + 10_000 * step + 100 * j)
        for name, fn in fns.items():
            maps = fn(clone, x, t)
            rows.append({"step": step, "block": block, "method": name,
                         "spearman": float(spearman(ref[name], maps).mean()),
                         "ssim": float(ssim(ref[name], maps).mean())})
    table = pd.DataFrame(rows)
    final = table[table["step"] == table["step"].max()].set_index("method")[["spearman", "ssim"]]
    final["flagged"] = final["spearman"] > threshold
    return Randomization(table, final)


@styled
def plot_randomization(result: Randomization, threshold: float = 0.5) -> Figure:
    """Spearman and SSIM to the trained model's maps as blocks are randomised, per method."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    blocks = result.table.drop_duplicates("step")["block"].tolist()
    for ax, col in zip(fig.subplots(1, 2), ("spearman", "ssim"), strict=True):
        for name, g in result.table.groupby("method", sort=False):
            flag = " (flagged)" if result.summary.loc[name, "flagged"] else ""
            ax.plot(g["step"], g[col], marker="o", label=name + flag)
        if col == "spearman":
            ax.axhline(threshold, color="grey", ls="--", lw=1)
        ax.set_xticks(range(1, len(blocks) + 1), labels=blocks, rotation=60, ha="right", fontsize=8)
        ax.set(ylabel="Spearman rank correlation" if col == "spearman" else "SSIM", ylim=(-0.2, 1.05),
               xlabel="randomised up to (cumulative, from the top)")
        ax.legend(fontsize=8)
    return fig
