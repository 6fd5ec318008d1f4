"""Predicted lung contours on a few films of each source: does the segmenter hold on every kind of film?

One row per (dataset, source), ``per_source`` films each: the predicted outline in orange and, where the
dataset has a reference mask, the reference outline dashed in blue (Okabe-Ito colours, see
:mod:`covidxray.style`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covidxray.data.discover import discover
from covidxray.data.imageio import ImageReadError, read_image, read_mask
from covidxray.style import CLASS_COLORS, blank_axes, styled

PRED_COLOR, REF_COLOR = CLASS_COLORS["Lung Opacity"], CLASS_COLORS["Viral Pneumonia"]


def pick_films(data: Sequence[str | Path], per_source: int = 3, seed: int = 0) -> list[dict]:
    """Choose up to ``per_source`` readable films of each source of each dataset (seeded).

    Args:
        data: Dataset folders or manifests (every label is accepted).
        per_source: Films per source.
        seed: Random seed of the choice.

    Returns:
        Dicts with ``dataset, source, path, image`` and ``ref`` (reference mask or None).
    """
    rng, films = np.random.default_rng(seed), []
    for d in data:
        df = discover(d, classes=_labels(d), check_images=False).manifest
        df = df.drop(columns=["height", "width"], errors="ignore").fillna("")
        df["source"] = df["source"].replace("", "unknown")
        for source, group in df.groupby("source", sort=True):
            taken = 0
            for i in rng.permutation(len(group)):
                rec = group.iloc[int(i)]
                try:
                    img = read_image(rec["path"])
                    ref = read_mask(rec["lung_mask"]) if rec.get("lung_mask") else None
                except ImageReadError:
                    continue
                films.append({"dataset": Path(d).name, "source": str(source), "path": rec["path"],
                              "image": img, "ref": ref if ref is not None and ref.shape == img.shape else None})
                taken += 1
                if taken == per_source:
                    break
    return films


def _labels(data: str | Path) -> tuple[str, ...]:
    """Every label a manifest uses (so ``Other`` films of an annotated set are shown too)."""
    csv = Path(data) / "manifest.csv" if Path(data).is_dir() else Path(data)
    if csv.is_file():
        labels = pd.read_csv(csv, usecols=["label"], dtype=str)["label"].dropna().unique()
        return tuple(sorted(labels))
    return ("COVID-19", "Normal", "Viral Pneumonia")


@styled
def contour_figure(segmenter, films: Sequence[dict]) -> Figure:
    """Grid of films with predicted (and reference) lung contours, one row per dataset and source.

    Args:
        segmenter: A :class:`covidxray.lungs.segment.Segmenter`.
        films: From :func:`pick_films`.

    Returns:
        The figure (``save_to=`` writes it).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for f in films:
        groups.setdefault((f["dataset"], f["source"]), []).append(f)
    ncols = max(len(g) for g in groups.values())
    fig = Figure(figsize=(2.0 * ncols, 2.1 * len(groups)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(groups), ncols, squeeze=False))
    for r, ((dataset, source), group) in enumerate(groups.items()):
        for c in range(ncols):
            ax = axes[r, c]
            blank_axes(ax)
            if c >= len(group):
                ax.set_axis_off()
                continue
            f = group[c]
            mask = segmenter.predict(f["image"][None])[0]
            ax.imshow(f["image"], cmap="gray", vmin=0, vmax=255)
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=[PRED_COLOR], linewidths=1.2)
            if f["ref"] is not None and f["ref"].any():
                ax.contour(f["ref"].astype(float), levels=[0.5], colors=[REF_COLOR], linewidths=1.0,
                           linestyles="dashed")
            if c == 0:
                ax.set_ylabel(f"{dataset}\n{source.split('/')[-1][:28]}", fontsize=8)
    fig.suptitle("Predicted lung contours (orange); reference masks dashed (blue)", fontsize=10)
    return fig
