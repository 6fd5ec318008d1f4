"""Data figures for notebook 01: example images, class balance, splits and duplicates.

Like every figure of the package, each is a :class:`matplotlib.figure.Figure` (no pyplot state) in
the shared style and class palette (:mod:`covidxray.style`), written to ``save_to=`` when given.
Image statistics and the shortcut screen are in :mod:`covidxray.data.image_stats`, the
augmentation figures in :mod:`covidxray.data.augment_figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from covidxray.data.imageio import read_image, read_mask
from covidxray.data.phantoms import KNOWN_CLASSES
from covidxray.style import NEUTRAL, blank_axes, class_color, styled

SPLIT_ALPHA = {"train": 1.0, "val": 0.6, "test": 0.3}


def class_order(labels: Sequence[str]) -> list[str]:
    """Classes present in ``labels``: the canonical ones in canonical order, then others sorted."""
    rank = {c: i for i, c in enumerate(KNOWN_CLASSES)}
    return sorted(set(labels), key=lambda c: (rank.get(c, len(rank)), c))


def rooted(path: str, root: str | Path | None) -> Path:
    """``path`` as given when absolute or without ``root``, else under ``root``."""
    p = Path(path)
    return p if p.is_absolute() or root is None else Path(root) / p


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
            mask = read_mask(rooted(value, root)).astype(np.uint8)
            mask = cv2.resize(mask, shape[::-1], interpolation=cv2.INTER_NEAREST) if mask.shape != shape else mask
            if mask.any():
                ax.contour(mask, levels=[0.5], linewidths=1.1, **style)
                drawn = True
    return drawn


@styled
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
            img = read_image(rooted(rec["path"], root))
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            if contours:
                drawn |= _contours(ax, rec, img.shape, root, class_color(cls))
            ax.set_title(f"{Path(rec['path']).name}  ({img.shape[1]}×{img.shape[0]})", fontsize=7)
        for ax in row:
            blank_axes(ax)
        for ax in row[len(recs):]:
            ax.set_axis_off()
        row[0].set_ylabel(cls, color=class_color(cls), fontsize=12, fontweight="bold")
    if drawn:
        handles = [Line2D([], [], color="#F0E442", ls="--", label="lung mask"),
                   Line2D([], [], color=NEUTRAL, label="lesion mask (class colour)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
    fig.suptitle(f"{n_per_class} random images per class (seed {seed})", fontsize=12)
    return fig


@styled
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
        ax.legend(handles=[Patch(color=NEUTRAL, alpha=SPLIT_ALPHA[s], label=s) for s in groups], title="split",
                  loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"Images per class (n={len(table)})")
    return fig


@styled
def plot_split_summary(splits: pd.DataFrame, leakage=None) -> Figure:
    """Images per split and class (left) and each split's class mix (right), with the leakage verdict.

    Args:
        splits: Table with ``label`` and ``split`` (``group``/``patient_id`` optional).
        leakage: Optional :class:`covidxray.data.split.LeakageReport`.
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
    """Images that belong to an exact or near duplicate group (see :func:`covidxray.data.duplicates.duplicate_groups`).

    Returns:
        One row per image in a group of two or more: ``dup_group, kind`` (``exact``: one pixel content;
        ``near``: several within the pHash threshold), ``labels`` (``mixed`` when the group holds
        several labels, a sign of label noise), ``label, path, phash``; groups with mixed labels first.
    """
    from covidxray.data.duplicates import duplicate_groups, ensure_hashes

    df = ensure_hashes(manifest, root).assign(dup_group=duplicate_groups(manifest, near_dup_threshold, root))
    df = df[df.groupby("dup_group")["path"].transform("size") > 1]
    grouped = df.groupby("dup_group")
    df = df.assign(kind=np.where(grouped["sha1"].transform("nunique") == 1, "exact", "near"),
                   labels=np.where(grouped["label"].transform("nunique") > 1, "mixed", "same"))
    cols = ["dup_group", "kind", "labels", "label", "path", "phash"]
    return df.sort_values(["labels", "dup_group", "path"]).reset_index(drop=True)[cols]


@styled
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
            ax.imshow(read_image(rooted(rec["path"], root)), cmap="gray", vmin=0, vmax=255)
            dist = (first ^ int(rec["phash"], 16)).bit_count()
            ax.set_title(f"{rec['label']}\n{Path(rec['path']).name} (Δ{dist} bits)", fontsize=8,
                         color=class_color(rec["label"]))
        for ax in row:
            blank_axes(ax)
        for ax in row[len(members):]:
            ax.set_axis_off()
        kind, labels = members["kind"].iloc[0], members["labels"].iloc[0]
        row[0].set_ylabel(f"{kind}, {len(members)} images\nlabels: {labels}")
    n = table["dup_group"].nunique()
    fig.suptitle(f"{n} duplicate groups ({len(table)} images); {len(groups)} shown. Δ = pHash distance "
                 "to the first image", fontsize=11)
    return fig
