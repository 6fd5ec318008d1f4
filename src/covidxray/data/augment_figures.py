"""Augmentation figures for notebook 02: what training augmentation does to an image.

Every geometric layer resamples the image (bilinear interpolation), which blurs it; the layers of
the pipeline resample one after the other, so their losses compound (:func:`augmentation_detail`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covidxray.data.phantoms import KNOWN_CLASSES
from covidxray.style import NEUTRAL, blank_axes, class_color, styled

AUG_FORMATS = {"rotation": "±{:g}°", "translation": "±{:.0%}", "zoom": "±{:.0%}", "shear": "±{:g}",
               "contrast": "±{:.0%}", "brightness": "±{:.0%}"}


def describe_augment(aug: Mapping) -> str:
    """One line naming each augmentation and its range, e.g. ``rotation ±10°, ..., horizontal flip off``."""
    parts = [f"{k} {fmt.format(aug[k])}" for k, fmt in AUG_FORMATS.items() if aug[k]]
    return ", ".join(parts + [f"horizontal flip {'on' if aug['horizontal_flip'] else 'off'}"])


def single_layer_configs(aug: Mapping) -> dict[str, dict]:
    """Augment configs with one layer switched on at a time (the config's factor), then the full pipeline."""
    # every other key as configured, but each layer and each acquisition step (``*_p``) switched off
    off = {**aug, **{k: 0.0 for k in aug if k.endswith("_p")}, **dict.fromkeys(AUG_FORMATS, 0.0),
           "horizontal_flip": False}
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
            blank_axes(ax)
        for spine in row[0].spines.values():
            spine.set(visible=True, color=color, linewidth=2.5)
        row[0].set_ylabel(label, color=color, fontsize=10)
    axes[0, 0].set_title("original", fontsize=10)
    for k, ax in enumerate(axes[0, 1:], start=1):
        ax.set_title(f"augmented #{k}", fontsize=10)


@styled
def augmentation_grid(images: np.ndarray, augmenter, n_aug: int = 4, labels: Sequence[str] | None = None,
                      title: str | None = None) -> Figure:
    """Each image (row) beside ``n_aug`` random augmentations of it.

    Args:
        images: ``(N, S, S)`` grey images in 0-255 (at model resolution).
        augmenter: An :class:`covidxray.data.augment.Augmenter` (:func:`covidxray.data.augment.make_augmenter`).
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
                [class_color(c) if c in KNOWN_CLASSES else NEUTRAL for c in labels])
    fig.suptitle(title or "Random training augmentations", fontsize=11)
    return fig


@styled
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
    _image_rows(fig, [image] * len(configs), augmented, labels, [NEUTRAL] * len(configs))
    fig.suptitle(f"Each augmentation alone, then the full pipeline\n({describe_augment(aug)})", fontsize=11)
    return fig


@styled
def flip_figure(image: np.ndarray) -> Figure:
    """An image and its horizontal mirror: the heart changes side, which real anatomy almost never does."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    titles = ("as acquired: heart on the image right\n(patient's left)",
              "horizontally flipped: heart on the image left\n(dextrocardia, about 1 in 10,000)")
    for ax, shown, title in zip(fig.subplots(1, 2), (image, image[:, ::-1]), titles, strict=True):
        ax.imshow(shown, cmap="gray", vmin=0, vmax=255)
        ax.axvline(image.shape[1] / 2 - 0.5, color="#F0E442", ls=":", lw=1)
        ax.set_title(title, fontsize=9)
        blank_axes(ax)
    fig.suptitle("Why horizontal_flip is off by default", fontsize=11)
    return fig
