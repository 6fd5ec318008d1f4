"""Figures and tables for the notebooks: the data, the augmentation, the architecture.

Like :mod:`covidxray.plots`, every figure is a :class:`matplotlib.figure.Figure` (no pyplot
state) in the shared style and class palette, and is written to ``save_to=`` when given. The last
section holds the notebooks' plumbing (parameters -> config and folders, train or reuse a run),
so that the notebooks themselves only call and show.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch
from sklearn.metrics import roc_auc_score

from covidxray import paths
from covidxray.config import Config
from covidxray.data.imageio import read_image, read_mask
from covidxray.data.phantoms import KNOWN_CLASSES
from covidxray.style import NEUTRAL as _NEUTRAL
from covidxray.style import class_color
from covidxray.style import styled as _styled

SPLIT_ALPHA = {"train": 1.0, "val": 0.6, "test": 0.3}
INTENSITY_FEATURES = {"mean": "mean grey level", "std": "contrast (std)", "p05": "5th percentile",
                      "p95": "95th percentile", "dark_frac": "fraction of pixels <= 10"}
AUG_FORMATS = {"rotation": "±{:g}°", "translation": "±{:.0%}", "zoom": "±{:.0%}", "shear": "±{:g}",
               "contrast": "±{:.0%}", "brightness": "±{:.0%}"}
SHORTCUT_AUC = 0.75  # one-vs-rest AUC of a single image statistic above which we warn


def class_order(labels: Sequence[str]) -> list[str]:
    """Classes present in ``labels``: the canonical ones in canonical order, then others sorted."""
    rank = {c: i for i, c in enumerate(KNOWN_CLASSES)}
    return sorted(set(labels), key=lambda c: (rank.get(c, len(rank)), c))


def _file(path: str, root: str | Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or root is None else Path(root) / p


def _blank(ax) -> None:
    ax.set(xticks=[], yticks=[])
    ax.grid(False)


def pick_examples(manifest: pd.DataFrame, n_per_class: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``n_per_class`` rows of each class, drawn at random (seeded), classes in canonical order."""
    shuffled = manifest.sample(frac=1.0, random_state=seed)
    parts = [shuffled[shuffled["label"] == c].head(n_per_class) for c in class_order(manifest["label"])]
    return pd.concat(parts)


def _contours(ax, rec, shape: tuple[int, int], root, color: str) -> bool:
    """Lung (dashed yellow) and lesion (solid, class colour) outlines, masks resized to the image."""
    drawn = False
    styles = {"lung_mask": dict(colors="#F0E442", linestyles="--"), "lesion_mask": dict(colors=color)}
    for col, style in styles.items():
        value = str(rec.get(col, "") or "")
        if value and value != "nan":
            mask = read_mask(_file(value, root)).astype(np.uint8)
            mask = cv2.resize(mask, shape[::-1], interpolation=cv2.INTER_NEAREST) if mask.shape != shape else mask
            if mask.any():
                ax.contour(mask, levels=[0.5], linewidths=1.1, **style)
                drawn = True
    return drawn


@_styled
def sample_grid(manifest: pd.DataFrame, n_per_class: int = 4, seed: int = 0, root: str | Path | None = None,
                contours: bool = True) -> Figure:
    """Random images of each class (one row per class), with lung and lesion outlines when known.

    Args:
        manifest: Table with ``path``, ``label`` and optionally ``lung_mask``/``lesion_mask``.
        n_per_class: Images per row.
        seed: Which images are drawn.
        root: Folder of relative paths (default: as given).
        contours: Draw the mask outlines.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (classes x n_per_class axes).
    """
    picked, classes = pick_examples(manifest, n_per_class, seed), class_order(manifest["label"])
    fig = Figure(figsize=(2.2 * n_per_class + 0.6, 2.4 * len(classes) + 0.4), layout="constrained")
    axes = fig.subplots(len(classes), n_per_class, squeeze=False)
    drawn = False
    for row, cls in zip(axes, classes, strict=True):
        recs = picked[picked["label"] == cls]
        for ax, (_, rec) in zip(row, recs.iterrows(), strict=False):
            img = read_image(_file(rec["path"], root))
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            if contours:
                drawn |= _contours(ax, rec, img.shape, root, class_color(cls))
            ax.set_title(f"{Path(rec['path']).name}  ({img.shape[1]}×{img.shape[0]})", fontsize=7)
        for ax in row:
            _blank(ax)
        for ax in row[len(recs):]:
            ax.set_axis_off()
        row[0].set_ylabel(cls, color=class_color(cls), fontsize=12, fontweight="bold")
    if drawn:
        handles = [Line2D([], [], color="#F0E442", ls="--", label="lung mask"),
                   Line2D([], [], color=_NEUTRAL, label="lesion mask (class colour)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
    fig.suptitle(f"{n_per_class} random images per class (seed {seed})", fontsize=12)
    return fig


def image_size_stats(manifest: pd.DataFrame, root: str | Path | None = None) -> pd.DataFrame:
    """Image sizes per class: count, distinct sizes, most common size, min/median/max side, share square.

    Uses the manifest's ``height``/``width`` (from :func:`covidxray.discover.discover`) when present,
    else decodes each image.

    Returns:
        DataFrame indexed by class.
    """
    if {"height", "width"} <= set(manifest.columns):
        hw = manifest[["height", "width"]].astype(int)
    else:
        shapes = [read_image(_file(p, root)).shape for p in manifest["path"]]
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
        img = read_image(_file(rec["path"], root))
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


@_styled
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


@_styled
def plot_class_balance(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Images per class; stacked by split (train solid, val and test lighter) when ``split`` is a column.

    Args:
        table: Manifest or splits table with ``label`` (and optionally ``split``).
        title: Figure title (default says what is counted).
        save_to: Optional output path (keyword).

    Returns:
        The Figure (one axes; one bar container per split, or one in all).
    """
    classes = class_order(table["label"])
    fig = Figure(figsize=(1.5 * len(classes) + 2.8, 3.8), layout="constrained")
    ax = fig.add_subplot()
    colors = [class_color(c) for c in classes]
    groups = [s for s in SPLIT_ALPHA if s in set(table["split"])] if "split" in table else [None]
    bottom = np.zeros(len(classes))
    for s in groups:
        part = table if s is None else table[table["split"] == s]
        counts = part["label"].value_counts().reindex(classes, fill_value=0).to_numpy()
        ax.bar(classes, counts, bottom=bottom, color=colors, alpha=SPLIT_ALPHA.get(s, 1.0), edgecolor="white",
               label=s)
        bottom += counts
    for i, n in enumerate(bottom):
        ax.text(i, n, f"{int(n)}\n({n / bottom.sum():.0%})", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, bottom.max() * 1.2)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("Images")
    ax.grid(axis="x", visible=False)
    if groups != [None]:
        ax.legend(handles=[Patch(color=_NEUTRAL, alpha=SPLIT_ALPHA[s], label=s) for s in groups], title="split",
                  loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"Images per class (n={len(table)})")
    return fig


@_styled
def plot_split_summary(splits: pd.DataFrame, leakage=None) -> Figure:
    """Images per split and class (left) and each split's class mix (right), with the leakage verdict.

    Args:
        splits: Table with ``label`` and ``split`` (``group``/``patient_id`` optional).
        leakage: Optional :class:`covidxray.split.LeakageReport`.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (two axes).
    """
    from covidxray.data.split import split_summary

    summary = split_summary(splits).drop(index="total")
    classes = [c for c in class_order(splits["label"]) if c in summary.columns]
    fig = Figure(figsize=(11, 3.9), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    x, width = np.arange(len(summary)), 0.8 / len(classes)
    for k, c in enumerate(classes):
        bars = left.bar(x + (k - (len(classes) - 1) / 2) * width, summary[c], width, color=class_color(c), label=c)
        left.bar_label(bars, fontsize=8)
    extra = [f"\n{summary.at[s, 'groups']} groups" if "groups" in summary else "" for s in summary.index]
    left.set_xticks(x, labels=[f"{s} ({summary.at[s, 'images']}){e}" for s, e in zip(summary.index, extra,
                                                                                       strict=True)])
    left.set(ylabel="Images", title="Images per split and class")
    left.yaxis.get_major_locator().set_params(integer=True)
    left.grid(axis="x", visible=False)
    left.legend(fontsize=9)
    share = summary[classes].div(summary[classes].sum(axis=1), axis=0)
    start = np.zeros(len(share))
    for c in classes:
        right.barh(share.index, share[c], left=start, color=class_color(c), edgecolor="white")
        for y, (s0, w) in enumerate(zip(start, share[c], strict=True)):
            right.text(s0 + w / 2, y, f"{w:.0%}", ha="center", va="center", color="white", fontsize=9)
        start += share[c].to_numpy()
    right.invert_yaxis()
    right.set(xlim=(0, 1), xlabel="Share of the split", title="Class mix per split (stratified: rows alike)")
    right.grid(False)
    if leakage is not None:
        verdict = ("no patient or duplicate shared between splits" if leakage.ok else
                   f"LEAKAGE: {leakage.n_groups_shared} groups, {leakage.n_patients_shared} patients, "
                   f"{leakage.n_exact_dups_shared} exact and {leakage.n_near_dups_shared} near duplicates shared")
        fig.suptitle(f"Leakage check: {verdict}", color="black" if leakage.ok else "#C00000", fontsize=12)
    return fig


def duplicate_table(manifest: pd.DataFrame, near_dup_threshold: int = 16,
                    root: str | Path | None = None) -> pd.DataFrame:
    """Images that belong to an exact or near duplicate group (see :func:`covidxray.split.duplicate_groups`).

    Returns:
        One row per image in a group of two or more: ``dup_group, kind`` (``exact``: one pixel content;
        ``near``: several within the pHash threshold), ``labels`` (``mixed`` when the group holds
        several labels, a sign of label noise), ``label, path, phash``; groups with mixed labels first.
    """
    from covidxray.data.split import _ensure_hashes, duplicate_groups

    df = _ensure_hashes(manifest, root).assign(dup_group=duplicate_groups(manifest, near_dup_threshold, root))
    df = df[df.groupby("dup_group")["path"].transform("size") > 1]
    grouped = df.groupby("dup_group")
    df = df.assign(kind=np.where(grouped["sha1"].transform("nunique") == 1, "exact", "near"),
                   labels=np.where(grouped["label"].transform("nunique") > 1, "mixed", "same"))
    cols = ["dup_group", "kind", "labels", "label", "path", "phash"]
    return df.sort_values(["labels", "dup_group", "path"]).reset_index(drop=True)[cols]


@_styled
def duplicate_examples(manifest: pd.DataFrame, near_dup_threshold: int = 16, max_groups: int = 4,
                       per_group: int = 3, root: str | Path | None = None) -> Figure:
    """Members of the first duplicate groups side by side (mixed-label groups first), or a note if none.

    Args:
        manifest: Table with ``path``, ``label`` and ``sha1``/``phash`` (computed when missing).
        near_dup_threshold: Largest pHash Hamming distance that counts as a near duplicate.
        max_groups: Groups shown (rows).
        per_group: Images shown per group (columns).
        root: Folder of relative paths.
        save_to: Optional output path (keyword).

    Returns:
        The Figure.
    """
    table = duplicate_table(manifest, near_dup_threshold, root)
    groups = list(dict.fromkeys(table["dup_group"]))[:max_groups]
    if not groups:
        fig = Figure(figsize=(6, 1.3), layout="constrained")
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, f"No exact or near duplicates among {len(manifest)} images "
                f"(pHash distance <= {near_dup_threshold} bits)", ha="center", va="center", fontsize=11)
        ax.set_axis_off()
        return fig
    fig = Figure(figsize=(2.5 * per_group + 0.8, 2.7 * len(groups) + 0.5), layout="constrained")
    axes = fig.subplots(len(groups), per_group, squeeze=False)
    for row, g in zip(axes, groups, strict=True):
        members = table[table["dup_group"] == g]
        first = int(members["phash"].iloc[0], 16)
        for ax, (_, rec) in zip(row, members.head(per_group).iterrows(), strict=False):
            ax.imshow(read_image(_file(rec["path"], root)), cmap="gray", vmin=0, vmax=255)
            dist = (first ^ int(rec["phash"], 16)).bit_count()
            ax.set_title(f"{rec['label']}\n{Path(rec['path']).name} (Δ{dist} bits)", fontsize=8,
                         color=class_color(rec["label"]))
        for ax in row:
            _blank(ax)
        for ax in row[len(members):]:
            ax.set_axis_off()
        kind, labels = members["kind"].iloc[0], members["labels"].iloc[0]
        row[0].set_ylabel(f"{kind}, {len(members)} images\nlabels: {labels}")
    n = table["dup_group"].nunique()
    fig.suptitle(f"{n} duplicate groups ({len(table)} images); {len(groups)} shown. Δ = pHash distance "
                 "to the first image", fontsize=11)
    return fig


def describe_augment(aug: Mapping) -> str:
    """One line naming each augmentation and its range, e.g. ``rotation ±10°, ..., horizontal flip off``."""
    parts = [f"{k} {fmt.format(aug[k])}" for k, fmt in AUG_FORMATS.items() if aug[k]]
    return ", ".join(parts + [f"horizontal flip {'on' if aug['horizontal_flip'] else 'off'}"])


def single_layer_configs(aug: Mapping) -> dict[str, dict]:
    """Augment configs with one layer switched on at a time (the config's factor), then the full pipeline."""
    off = {**dict.fromkeys(AUG_FORMATS, 0.0), "horizontal_flip": False}
    out = {k: {**off, k: aug[k]} for k in AUG_FORMATS if aug[k]}
    if aug["horizontal_flip"]:
        out["horizontal_flip"] = {**off, "horizontal_flip": True}
    return {**out, "full pipeline": dict(aug)}


def augment_images(images: np.ndarray, augmenter, n_aug: int) -> np.ndarray:
    """``n_aug`` augmented versions of each ``(N, S, S)`` image, as in training.

    Returns:
        ``(N, n_aug, S, S)`` float32 in 0-255.
    """
    images = np.asarray(images)
    out = augmenter(np.repeat(images, n_aug, axis=0), key=(n_aug,))
    return out.reshape(len(images), n_aug, *images.shape[1:])


def _detail(images: np.ndarray) -> float:
    """Mean absolute Laplacian of the central 60% (fine detail, away from the fill at the borders)."""
    s = images.shape[-1]
    crop = np.asarray(images, np.float32).reshape(-1, s, s)[:, s // 5:s - s // 5, s // 5:s - s // 5]
    return float(np.mean([np.abs(cv2.Laplacian(np.ascontiguousarray(c), cv2.CV_32F)).mean() for c in crop]))


def augmentation_detail(images: np.ndarray, aug: Mapping, n_aug: int = 8, seed: int = 0) -> pd.Series:
    """Fine detail kept by each augmentation alone and by the full pipeline, relative to the originals.

    Every geometric layer resamples the image (bilinear interpolation), which blurs it; the layers
    of the pipeline resample one after the other, so their losses compound.

    Args:
        images: ``(N, S, S)`` grey images in 0-255.
        aug: The config's ``augment`` section.
        n_aug: Augmented versions per image.
        seed: Augmentation seed.

    Returns:
        Mean absolute Laplacian after augmentation / before, indexed like :func:`single_layer_configs`.
    """
    from covidxray.data.augment import make_augmenter

    before = _detail(images)
    kept = {name: _detail(augment_images(images, make_augmenter(c, seed), n_aug)) / before
            for name, c in single_layer_configs(aug).items()}
    return pd.Series(kept, name="detail kept").round(3)


def _image_rows(fig: Figure, originals, augmented, row_labels, colors) -> None:
    axes = fig.subplots(len(originals), augmented.shape[1] + 1, squeeze=False)
    for row, img, augs, label, color in zip(axes, originals, augmented, row_labels, colors, strict=True):
        for ax, shown in zip(row, [img, *augs], strict=True):
            ax.imshow(shown, cmap="gray", vmin=0, vmax=255)
            _blank(ax)
        for spine in row[0].spines.values():
            spine.set(visible=True, color=color, linewidth=2.5)
        row[0].set_ylabel(label, color=color, fontsize=10)
    axes[0, 0].set_title("original", fontsize=10)
    for k, ax in enumerate(axes[0, 1:], start=1):
        ax.set_title(f"augmented #{k}", fontsize=10)


@_styled
def augmentation_grid(images: np.ndarray, augmenter, n_aug: int = 4, labels: Sequence[str] | None = None,
                      title: str | None = None) -> Figure:
    """Each image (row) beside ``n_aug`` random augmentations of it.

    Args:
        images: ``(N, S, S)`` grey images in 0-255 (at model resolution).
        augmenter: An :class:`covidxray.augment.Augmenter` (:func:`covidxray.augment.make_augmenter`).
        n_aug: Augmented versions per image.
        labels: Row labels (class names get their colour).
        title: Figure title.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (N x (n_aug + 1) axes).
    """
    labels = list(labels or [""] * len(images))
    fig = Figure(figsize=(1.9 * (n_aug + 1) + 0.5, 1.95 * len(images) + 0.5), layout="constrained")
    _image_rows(fig, images, augment_images(images, augmenter, n_aug), labels,
                [class_color(c) if c in KNOWN_CLASSES else _NEUTRAL for c in labels])
    fig.suptitle(title or "Random training augmentations", fontsize=11)
    return fig


@_styled
def augmentation_by_layer(image: np.ndarray, aug: Mapping, n_aug: int = 4, seed: int = 0) -> Figure:
    """One image under each augmentation layer alone (one row each, config factor), then all together.

    Args:
        image: ``(S, S)`` grey image in 0-255 (at model resolution).
        aug: The config's ``augment`` section.
        n_aug: Augmented versions per row.
        seed: Augmentation seed.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (rows: enabled layers + full pipeline).
    """
    from covidxray.data.augment import make_augmenter

    configs = single_layer_configs(aug)
    augmented = np.concatenate([augment_images(image[None], make_augmenter(c, seed), n_aug)
                                for c in configs.values()])
    labels = [f"{k}\n{AUG_FORMATS[k].format(aug[k])}" if k in AUG_FORMATS else k for k in configs]
    fig = Figure(figsize=(1.9 * (n_aug + 1) + 0.5, 1.95 * len(configs) + 0.6), layout="constrained")
    _image_rows(fig, [image] * len(configs), augmented, labels, [_NEUTRAL] * len(configs))
    fig.suptitle(f"Each augmentation alone, then the full pipeline\n({describe_augment(aug)})", fontsize=11)
    return fig


@_styled
def flip_figure(image: np.ndarray) -> Figure:
    """An image and its horizontal mirror: the heart changes side, which real anatomy almost never does."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    titles = ("as acquired: heart on the image right\n(patient's left)",
              "horizontally flipped: heart on the image left\n(dextrocardia, about 1 in 10,000)")
    for ax, shown, title in zip(fig.subplots(1, 2), (image, image[:, ::-1]), titles, strict=True):
        ax.imshow(shown, cmap="gray", vmin=0, vmax=255)
        ax.axvline(image.shape[1] / 2 - 0.5, color="#F0E442", ls=":", lw=1)
        ax.set_title(title, fontsize=9)
        _blank(ax)
    fig.suptitle("Why horizontal_flip is off by default", fontsize=11)
    return fig


def _inbound(layer) -> list[str]:
    return [parent.operation.name for node in layer._inbound_nodes for parent in node.parent_nodes]


def architecture_table(model, backbone: str | None = None) -> pd.DataFrame:
    """The model as about twenty rows: input layers, stem, one row per backbone block, head.

    A block row covers every layer after the previous block's output up to and including the
    block's output (``mixed0`` ... ``mixed10`` for InceptionV3); the stem ends at the last layer
    that all of the first block's branches start from.

    Args:
        model: A model from :func:`covidxray.models.build_model`.
        backbone: Registry name (default: from the model's name, ``covidxray_<backbone>``).

    Returns:
        DataFrame with ``block, kind`` (input | stem | block | head | output), ``layers``,
        ``output_shape``, ``params``, ``trainable_params``; rows in data-flow order.
    """
    from covidxray.models import get_backbone

    entry = get_backbone(backbone or model.name.removeprefix("covidxray_"))
    layers = model.layers
    index = {layer.name: i for i, layer in enumerate(layers)}
    pre, gap = index["preprocess_input"], index["gap"]
    bounds = [index[b] for b in (*entry.blocks, entry.last_conv) if b]
    stem_end = max(j for j in range(pre, bounds[0])
                   if all(index[p] >= j for layer in layers[j + 1:bounds[0] + 1] for p in _inbound(layer)))
    spans = [(layers[i].name, "input", i, i) for i in range(pre + 1)]
    spans += [("stem", "stem", pre + 1, stem_end)] if stem_end > pre else []
    starts = [stem_end + 1, *[b + 1 for b in bounds[:-1]]]
    spans += [(layers[b].name, "block", s, b) for s, b in zip(starts, bounds, strict=True)]
    spans += [("top", "block", bounds[-1] + 1, gap - 1)] if bounds[-1] < gap - 1 else []
    spans += [(layers[i].name, "head", i, i) for i in range(gap, len(layers) - 1)]
    spans.append((layers[-1].name, "output", len(layers) - 1, len(layers) - 1))
    rows = []
    for name, kind, start, end in spans:
        group = layers[start:end + 1]
        rows.append({"block": name, "kind": kind, "layers": len(group),
                     "output_shape": "×".join(str(d) for d in layers[end].output.shape[1:]),
                     "params": sum(layer.count_params() for layer in group),
                     "trainable_params": sum(int(np.prod(w.shape)) for layer in group
                                             for w in layer.trainable_weights)})
    return pd.DataFrame(rows)


_KIND_COLORS = {"input": "#E3E3E3", "stem": "#D6E6F4", "block": "#D6E6F4", "head": "#F8DCC6", "output": "#CDEBD9"}


@_styled
def architecture_figure(model, backbone: str | None = None, unfreeze_blocks: int | None = None) -> Figure:
    """A compact diagram of the model: one box per row of :func:`architecture_table`, with parameter bars.

    Args:
        model: A model from :func:`covidxray.models.build_model`.
        backbone: Registry name (default: from the model's name).
        unfreeze_blocks: Mark the top blocks that fine-tuning (stage 2) unfreezes.
        save_to: Optional output path (keyword).

    Returns:
        The Figure (diagram axes, parameter axes).
    """
    table = architecture_table(model, backbone)
    n = len(table)
    blocks = table.index[table["kind"] == "block"]
    unfrozen = set(blocks[len(blocks) - unfreeze_blocks:]) if unfreeze_blocks else set()
    fig = Figure(figsize=(9.5, 0.34 * n + 1.2), layout="constrained")
    diagram, bars = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.5, 1]})
    diagram.plot([0.5, 0.5], [0, n - 1], color="#999999", lw=1.2, zorder=0)
    for i, rec in table.iterrows():
        color = "#8DB9DE" if i in unfrozen else _KIND_COLORS[rec["kind"]]
        diagram.add_patch(FancyBboxPatch((0.03, i - 0.36), 0.94, 0.72, boxstyle="round,pad=0,rounding_size=0.12",
                                         facecolor=color, edgecolor="#777777", lw=0.8))
        extra = f"  · {rec['layers']} layers" if rec["layers"] > 1 else ""
        diagram.text(0.06, i, f"{rec['block']}{extra}", va="center", fontsize=9,
                     fontweight="bold" if rec["kind"] == "block" else "normal")
        diagram.text(0.94, i, rec["output_shape"], va="center", ha="right", fontsize=9, family="monospace")
    diagram.set(xlim=(0, 1), ylim=(n - 0.5, -0.5), xticks=[], yticks=[], title="layers → output shape (H×W×C)")
    diagram.grid(False)
    diagram.spines[:].set_visible(False)
    frozen = (table["params"] - table["trainable_params"]) / 1e6
    bars.barh(table.index, table["trainable_params"] / 1e6, color="#0072B2", label="trainable")
    bars.barh(table.index, frozen, left=table["trainable_params"] / 1e6, color="#B9B9B9", label="not trainable")
    for i, p in enumerate(table["params"]):
        if p:
            bars.text(p / 1e6, i, f" {p / 1e6:.2f} M" if p >= 1e4 else f" {p:,}", va="center", fontsize=8)
    bars.set_xlim(0, table["params"].max() / 1e6 * 1.3)
    bars.set(xlabel="Parameters (millions)", title="parameters per block")
    bars.grid(axis="y", visible=False)
    handles = bars.get_legend_handles_labels()[0]
    if unfrozen:
        handles.append(Patch(facecolor="#8DB9DE", edgecolor="#777777",
                             label=f"unfrozen in stage 2 (top {unfreeze_blocks})"))
    bars.legend(handles=handles, loc="lower right", fontsize=8)
    total, trainable = table["params"].sum(), table["trainable_params"].sum()
    size = table.loc[0, "output_shape"]
    fig.suptitle(f"{model.name}: {size} grey input → {table.iloc[-1]['output_shape']} class probabilities, "
                 f"{total / 1e6:.1f} M parameters ({trainable / 1e6:.1f} M trainable)", fontsize=11)
    return fig


# ---- notebook plumbing: parameters -> config and folders; train or reuse a run -------------------------


def _under_root(path: str | Path | None) -> Path | None:
    """Notebook paths: absolute as given, relative ones against the repository root (not ``notebooks/``)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (paths.ROOT / p).resolve()


def output_data_dir(dataset: Path) -> Path:
    """Where derived tables (index, splits) of a dataset go: inside it only if the project generated it.

    A phantom dataset (``manifest.csv`` with ``source`` all ``phantom``) is ours, so its index and
    splits sit beside it (as ``make demo`` does); any other dataset is read-only and gets
    ``data/derived/<name>/``.
    """
    folder = dataset if dataset.is_dir() else dataset.parent
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        header = pd.read_csv(manifest, nrows=0).columns
        if "source" in header and set(pd.read_csv(manifest, usecols=["source"])["source"]) == {"phantom"}:
            return folder
    return paths.DATA / "derived" / folder.name


@dataclass
class NotebookContext:
    """What a notebook's parameters resolve to.

    Attributes:
        cfg: The resolved config (overlay, overrides and seed applied; cache folder absolute).
        dataset: The dataset folder (phantoms generated there on first use when it is the default).
        derived: Folder for the dataset's index and splits (see :func:`output_data_dir`).
        run_dir: The run folder that notebook 03 trains into and later notebooks read.
        figures: Folder the notebooks' figures are written to.
    """

    cfg: Config
    dataset: Path
    derived: Path
    run_dir: Path
    figures: Path

    @property
    def splits_csv(self) -> Path:
        """The splits written by notebook 01."""
        return self.derived / "splits.csv"

    def figure(self, name: str) -> Path:
        """Path of a figure file in the figures folder."""
        return self.figures / name


def notebook_context(config: str = "demo", overrides: Mapping | None = None, seed: int | None = None,
                     data_dir: str | Path | None = None, run_dir: str | Path | None = None,
                     figures_dir: str | Path | None = None, log=print) -> NotebookContext:
    """Resolve the notebook parameters (CONFIG, OVERRIDES, SEED, DATA_DIR, RUN_DIR, FIGURES_DIR).

    Args:
        config: Config overlay name or YAML path.
        overrides: ``{"dotted.key": value}`` config overrides.
        seed: Overrides ``seed`` when given.
        data_dir: Dataset (default: the phantoms in ``data/phantoms``, generated when missing).
        run_dir: Run folder (default ``models/notebook-<config>``).
        figures_dir: Figures folder (default ``figures/``).
        log: Where progress messages go.

    Returns:
        The :class:`NotebookContext`.
    """
    from covidxray.config import load_config
    from covidxray.data.pipeline import resolve_dataset

    items = {**(overrides or {}), **({"seed": seed} if seed is not None else {})}
    cfg = load_config([config], [f"{k}={json.dumps(v, default=str)}" for k, v in items.items()])
    cfg["data"]["cache_dir"] = str(_under_root(cfg.data.cache_dir))
    dataset = resolve_dataset(cfg, _under_root(data_dir) or paths.PHANTOMS, log=log)
    run = _under_root(run_dir) or paths.MODELS / f"notebook-{Path(config).stem}"
    return NotebookContext(cfg, dataset, output_data_dir(dataset), run, _under_root(figures_dir) or paths.FIGURES)


def load_manifest(ctx: NotebookContext) -> pd.DataFrame:
    """The splits of notebook 01 when they exist, else the discovered manifest of the dataset."""
    from covidxray.data.discover import discover
    from covidxray.data.pipeline import read_splits

    if ctx.splits_csv.is_file():
        return read_splits(ctx.splits_csv, ctx.cfg.classes)
    return discover(ctx.dataset, ctx.cfg.classes, ctx.cfg.data.min_size, workers=ctx.cfg.data.workers).manifest


def write_data_tables(ctx: NotebookContext, found, splits: pd.DataFrame) -> dict[str, Path]:
    """Write the index (``index.csv``), the quarantine report and ``splits.csv`` to ``ctx.derived``.

    Args:
        ctx: The notebook context.
        found: The :class:`covidxray.discover.Discovery` of the dataset.
        splits: Output of :func:`covidxray.split.make_splits`.

    Returns:
        Name -> path of each file written.
    """
    ctx.derived.mkdir(parents=True, exist_ok=True)
    tables = {"index": found.manifest, "quarantine": found.quarantine, "splits": splits}
    written = {name: ctx.derived / f"{name}.csv" for name, t in tables.items() if name != "quarantine" or len(t)}
    for name, path in written.items():
        tables[name].to_csv(path, index=False)
    return written


def model_inputs(files: Sequence[str | Path], size: int) -> np.ndarray:
    """Images as the model receives them: ``(N, size, size)`` uint8 via :func:`covidxray.cache.load_for_model`."""
    from covidxray.data.cache import load_for_model

    return np.stack([load_for_model(f, size) for f in files])


def training_examples(ctx: NotebookContext, n_per_class: int = 1,
                      seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Random training images of each class (all images when there is no split yet) at model resolution.

    Returns:
        The chosen rows and their ``(N, S, S)`` uint8 model inputs.
    """
    table = load_manifest(ctx)
    table = table[table["split"] == "train"] if "split" in table else table
    rows = pick_examples(table, n_per_class, seed)
    return rows, model_inputs(rows["path"], ctx.cfg.model.image_size)


def _flat(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v}
    return out


def train_or_reuse(ctx: NotebookContext, log=print) -> Path:
    """Train into ``ctx.run_dir`` (on notebook 01's splits when present), resume it, or reuse it.

    A finished run is reused when it was trained under the same config (delete the folder or change
    RUN_DIR to retrain); an interrupted one is resumed; otherwise :func:`covidxray.train.train`
    starts a new run.

    Returns:
        The run folder.

    Raises:
        ValueError: ``ctx.run_dir`` holds a run trained under another config (the keys are named).
    """
    from covidxray.config import load_config
    from covidxray.training.train import train

    run = ctx.run_dir
    if (run / "config.yaml").is_file():
        ours, theirs = _flat(ctx.cfg), _flat(load_config([run / "config.yaml"]))
        changed = sorted(k for k in ours if ours[k] != theirs.get(k))
        if changed:
            raise ValueError(f"{run} holds a run trained under another config ({', '.join(changed)} differ); "
                             "delete it or set RUN_DIR to another folder")
    if (run / "run.json").is_file() and json.loads((run / "run.json").read_text()).get("status") == "finished":
        log(f"{run} holds a finished run: reusing it (delete it or set RUN_DIR to train again)")
        return run
    if (run / "config.yaml").is_file() and (run / "splits.csv").is_file():
        return train(resume=run, log=log)
    data = ctx.splits_csv if ctx.splits_csv.is_file() else ctx.dataset
    return train(ctx.cfg, dataset=data, out=run, log=log)


def run_essentials(run_dir: str | Path) -> pd.Series:
    """The essentials of a run folder: what was trained, on how many images, how long, how well (val)."""
    run = Path(run_dir)
    meta = json.loads((run / "run.json").read_text())
    hist = pd.read_csv(run / "history.csv")
    best = hist.loc[hist["val_loss"].idxmin()] if "val_loss" in hist and len(hist) else None
    counts = pd.DataFrame(meta["counts"]).fillna(0).sum(axis=1).astype(int).to_dict()
    keys = ("status", "backbone", "image_size", "weights_source", "classes", "stages", "epochs_run", "wall_s",
            "global_batch_size", "seed", "git_sha")
    out = {k: meta.get(k) for k in keys} | {"images per split": counts,
                                             "tensorflow": meta["packages"].get("tensorflow")}
    if best is not None:
        out |= {"best val_loss": round(float(best["val_loss"]), 4),
                "val accuracy there": round(float(best.get("val_accuracy", np.nan)), 4)}
    return pd.Series(out, name=run.name)
