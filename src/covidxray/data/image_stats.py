"""Image statistics per class and the shortcut screen: can one grey-level statistic tell the classes apart?

A label-free statistic (mean grey level, contrast, size...) that separates a class well is a
warning sign that its images come from another source, which a CNN can learn instead of the disease.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from covidxray.data.figures import class_order, pick_examples, rooted
from covidxray.data.imageio import read_image
from covidxray.style import class_color, styled

INTENSITY_FEATURES = {"mean": "mean grey level", "std": "contrast (std)", "p05": "5th percentile",
                      "p95": "95th percentile", "dark_frac": "fraction of pixels <= 10"}
SHORTCUT_AUC = 0.75  # one-vs-rest AUC of a single image statistic above which we warn


def image_size_stats(manifest: pd.DataFrame, root: str | Path | None = None) -> pd.DataFrame:
    """Image sizes per class: count, distinct sizes, most common size, min/median/max side, share square.

    Uses the manifest's ``height``/``width`` (from :func:`covidxray.data.discover.discover`) when present,
    else decodes each image.

    Returns:
        DataFrame indexed by class.
    """
    if {"height", "width"} <= set(manifest.columns):
        hw = manifest[["height", "width"]].astype(int)
    else:
        shapes = [read_image(rooted(p, root)).shape for p in manifest["path"]]
        hw = pd.DataFrame(shapes, columns=["height", "width"], index=manifest.index)
    df = hw.assign(label=manifest["label"], size=hw["width"].astype(str) + "×" + hw["height"].astype(str))
    side = df[["height", "width"]].min(axis=1)
    rows = {c: {"images": len(g), "distinct_sizes": g["size"].nunique(), "most_common": g["size"].mode().iloc[0],
                "min_side": int(side[g.index].min()), "median_side": float(side[g.index].median()),
                "max_side": int(df.loc[g.index, ["height", "width"]].max(axis=1).max()),
                "square_share": float((g["height"] == g["width"]).mean())}
            for c, g in df.groupby("label")}
    return pd.DataFrame.from_dict(rows, orient="index").loc[class_order(df["label"])]


def intensity_stats(manifest: pd.DataFrame, max_per_class: int = 300, seed: int = 0,
                    root: str | Path | None = None) -> pd.DataFrame:
    """Per-image grey-level statistics of up to ``max_per_class`` random images of each class.

    Args:
        manifest: Table with ``path`` and ``label``.
        max_per_class: Images decoded per class (the rest are not read).
        seed: Which images are drawn.
        root: Folder of relative paths.

    Returns:
        One row per image: ``path, label, height, width`` and :data:`INTENSITY_FEATURES`.
    """
    rows = []
    for _, rec in pick_examples(manifest, max_per_class, seed).iterrows():
        img = read_image(rooted(rec["path"], root))
        p05, p95 = np.percentile(img, [5, 95])
        rows.append({"path": rec["path"], "label": rec["label"], "height": img.shape[0], "width": img.shape[1],
                     "mean": float(img.mean()), "std": float(img.std()), "p05": float(p05), "p95": float(p95),
                     "dark_frac": float(np.mean(img <= 10))})
    return pd.DataFrame(rows)


def shortcut_table(stats: pd.DataFrame, features: Sequence[str] | None = None) -> pd.DataFrame:
    """How well one image statistic alone tells each class from the rest (one-vs-rest AUC).

    The AUC is folded (``max(auc, 1 - auc)``), so 0.5 means no information and 1.0 a perfect
    separation in either direction. A label-free statistic that separates a class well is a warning
    sign: the images of that class probably come from another source, which a CNN can learn instead
    of the disease. ``flag`` marks features whose best AUC is at least :data:`SHORTCUT_AUC` and at
    least 3 null standard errors (Mann-Whitney, ``sqrt((n1 + n2 + 1) / (12 n1 n2))``) above 0.5, so
    that a handful of images cannot raise the alarm by chance.

    Args:
        stats: Output of :func:`intensity_stats`.
        features: Columns to test (default: :data:`INTENSITY_FEATURES` plus height and width).

    Returns:
        DataFrame indexed by feature: one column per class, ``max``, ``class`` (the best separated)
        and ``flag``.
    """
    features = list(features or [*INTENSITY_FEATURES, "height", "width"])
    classes = class_order(stats["label"])
    table = pd.DataFrame(index=features, columns=classes, dtype=float)
    for feature in features:
        for c in classes:
            target = stats["label"] == c
            auc = roc_auc_score(target, stats[feature]) if 0 < target.sum() < len(stats) else 0.5
            table.loc[feature, c] = max(auc, 1 - auc)
    best = table.idxmax(axis=1)
    n1 = best.map(stats["label"].value_counts()).astype(float)
    se = np.sqrt((len(stats) + 1) / (12 * n1 * (len(stats) - n1)))
    table = table.round(3).assign(max=table.max(axis=1).round(3), **{"class": best})
    return table.assign(flag=(table["max"] >= SHORTCUT_AUC) & (table["max"] - 0.5 >= 3 * se))


@styled
def plot_intensity_stats(stats: pd.DataFrame, features: Sequence[str] | None = None) -> Figure:
    """Box plots of per-image statistics by class, titled with the best one-vs-rest AUC (red: shortcut risk).

    Args:
        stats: Output of :func:`intensity_stats`.
        features: Columns to plot (default :data:`INTENSITY_FEATURES`).
        save_to: Optional output path (keyword).

    Returns:
        The Figure (one axes per feature).
    """
    features = list(features or INTENSITY_FEATURES)
    classes, aucs = class_order(stats["label"]), shortcut_table(stats, features)
    fig = Figure(figsize=(2.6 * len(features) + 0.4, 3.9), layout="constrained")
    rng = np.random.default_rng(0)
    for ax, feature in zip(np.atleast_1d(fig.subplots(1, len(features))), features, strict=True):
        values = [stats.loc[stats["label"] == c, feature].to_numpy() for c in classes]
        boxes = ax.boxplot(values, patch_artist=True, widths=0.6, showfliers=False,
                           medianprops=dict(color="black"))
        for i, (box, c, v) in enumerate(zip(boxes["boxes"], classes, values, strict=True)):
            box.set(facecolor=class_color(c), alpha=0.35, edgecolor=class_color(c))
            ax.scatter(i + 1 + rng.uniform(-0.18, 0.18, v.size), v, s=5, color=class_color(c), alpha=0.5, lw=0)
        ax.set_xticks(range(1, len(classes) + 1), labels=classes, rotation=25, ha="right")
        best = aucs.loc[feature]
        name = INTENSITY_FEATURES.get(feature, feature)
        ax.set_title(f"{name}\nAUC {best['max']:.2f} ({best['class']} vs rest)", fontsize=10, color="#C00000" if best["flag"] else "black")
    fig.suptitle(f"Grey-level statistics per image ({len(stats)} images). Red title: this statistic alone "
                 f"separates a class (AUC >= {SHORTCUT_AUC}, 3 SE above chance)", fontsize=11)
    return fig
