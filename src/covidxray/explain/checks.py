"""How far the explanation maps can be trusted: localisation, faithfulness, sanity, cost.

* Localisation: share of attribution energy (sum of the map) inside the lung and the lesion
  masks, and the pointing game (Zhang et al. 2016): a hit when the map's maximum (the first one in
  raster order on ties) lies inside the mask dilated by ``tolerance`` pixels (a disk), so that a
  maximum on a lesion's edge after bilinear upsampling still counts.
* Faithfulness: deletion and insertion curves (Petsiuk et al. 2018, RISE): pixels are removed
  from (inserted into) the image in decreasing order of attribution, and the target-class
  probability is recorded; a faithful map makes deletion fall fast (low AUC) and insertion rise
  fast (high AUC).
* Sanity: cascading model-parameter randomisation (Adebayo et al. 2018): the weights of a clone
  are re-initialised from the top (head, then ``mixed10``, ``mixed9``...) cumulatively, and each
  method's maps are compared with the trained model's (Spearman rank correlation and SSIM). A
  method whose maps survive full randomisation (Spearman above a threshold) explains the image,
  not the model, and is flagged.
* Cost: seconds per image for each method.

SSIM follows Wang et al. 2004 as scikit-image computes it with ``gaussian_weights=True``
(sigma 1.5, window 11, K1 0.01, K2 0.03, population covariance, border of 5 px cropped),
implemented with SciPy so that scikit-image is not needed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata

from covidxray.evaluation.plots import _styled
from covidxray.explain.core import as_batch, class_scores, explain, resolve_targets

MethodFn = Callable[[keras.Model, np.ndarray, np.ndarray], np.ndarray]


def _check_pair(heatmaps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, m = np.asarray(heatmaps, np.float64), np.asarray(masks).astype(bool)
    if h.ndim != 3 or h.shape != m.shape:
        raise ValueError(f"heatmaps {h.shape} and masks {m.shape} must both be (N, H, W)")
    return h, m


def energy_share(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's total attribution inside its mask.

    Args:
        heatmaps: ``(N, H, W)`` non-negative maps.
        masks: ``(N, H, W)`` bool masks.

    Returns:
        ``(N,)`` shares in [0, 1]; NaN where the mask is empty (e.g. a Normal image's lesion mask)
        or the map is all zero.
    """
    h, m = _check_pair(heatmaps, masks)
    total, inside = h.sum(axis=(1, 2)), (h * m).sum(axis=(1, 2))
    ok = (total > 0) & m.any(axis=(1, 2))
    return np.where(ok, inside / np.where(total > 0, total, 1.0), np.nan)


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Whether each map's maximum falls inside its mask dilated by ``tolerance`` pixels.

    Returns:
        ``(N,)`` floats: 1.0 hit, 0.0 miss, NaN where the mask is empty.
    """
    h, m = _check_pair(heatmaps, masks)
    if tolerance > 0:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
        m = np.stack([cv2.dilate(mi.astype(np.uint8), disk) > 0 for mi in m])
    flat = h.reshape(len(h), -1).argmax(axis=1)
    hits = m.reshape(len(m), -1)[np.arange(len(m)), flat].astype(np.float64)
    return np.where(m.any(axis=(1, 2)), hits, np.nan)


def localisation(heatmaps: np.ndarray, lung_masks: np.ndarray | None = None,
                 lesion_masks: np.ndarray | None = None, tolerance: int = 0) -> pd.DataFrame:
    """Per-image localisation table: ``lung_energy``, ``lesion_energy``, ``pointing_lung``, ``pointing_lesion``."""
    out = {}
    for name, masks in (("lung", lung_masks), ("lesion", lesion_masks)):
        if masks is not None:
            out[f"{name}_energy"] = energy_share(heatmaps, masks)
            out[f"pointing_{name}"] = pointing_game(heatmaps, masks, tolerance)
    return pd.DataFrame(out)


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


def _method_fns(methods: Sequence[str] | Mapping[str, MethodFn], batch_size: int,
                options: Mapping[str, dict] | None = None) -> dict[str, MethodFn]:
    if isinstance(methods, Mapping):
        return dict(methods)
    opts = options or {}
    return {m: (lambda mdl, x, t, m=m: explain(mdl, x, m, target=t, batch_size=batch_size, **opts.get(m, {})))
            for m in methods}


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
    fns = _method_fns(methods, batch_size, options)
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


def time_methods(model: keras.Model, images: np.ndarray, methods: Sequence[str], repeats: int = 1,
                 options: Mapping[str, dict] | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Seconds per image of each method on ``images``, after one untimed warm-up call that traces.

    Args:
        model: The classifier.
        images: Raw 0-255 grayscale ``(N, S, S[, 1])``.
        methods: Method names.
        repeats: Timed calls per method (the mean is reported).
        options: Per-method keyword options.
        batch_size: Model inputs per pass.

    Returns:
        DataFrame indexed by method: ``seconds_per_image``, ``first_call_seconds`` (tracing included).
    """
    fns, rows = _method_fns(methods, batch_size, options), []
    for name, fn in fns.items():
        start = time.perf_counter()
        fn(model, images[:1], None)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(repeats):
            fn(model, images, None)
        rows.append({"method": name, "seconds_per_image": (time.perf_counter() - start) / (repeats * len(images)),
                     "first_call_seconds": first})
    return pd.DataFrame(rows).set_index("method")


@_styled
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


@_styled
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
