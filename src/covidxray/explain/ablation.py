"""Lesion ablation on phantoms: does a layer respond where the lesion is, and does Grad-CAM say so?

Grad-CAM and its relatives weight a layer's activations by gradients; they point at the model's
evidence only when the activations and gradients are local. Phantoms allow a direct test that needs
no gradients: each lesion-bearing phantom is drawn again without its lesions (same random draws,
:func:`covidxray.data.phantoms.make_phantom` with ``draw_lesions=False``), and for a layer with
activations ``A`` the map ``sum_k |A_k(x) - A_k(x without lesions)|`` (bilinearly upsampled,
min-max normalised) shows where that layer's activations change because of the lesion.

:func:`layer_study` scores this *activation-shift* map and an attribution method's map (Grad-CAM by
default) on the same images and layers with :func:`covidxray.explain.localisation.localisation`. A layer
whose shift map localises the lesion while Grad-CAM on it does not separates a failure of the method
from a model that does not look at the lesion; ``flip_rate`` (share of images whose predicted class
changes when the lesions are removed) shows the model uses them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from covidxray.data.cache import resize_for_model, resize_mask
from covidxray.data.imageio import read_image
from covidxray.data.pipeline import DataError


@dataclass
class Twins:
    """Phantoms with and without their lesions, at model resolution.

    Attributes:
        with_lesions: ``(N, S, S)`` uint8, identical to the files on disk after resizing.
        without: ``(N, S, S)`` uint8, the same phantoms drawn without lesions.
        lungs: ``(N, S, S)`` bool lung masks.
        lesions: ``(N, S, S)`` bool lesion masks.
        labels: Class name per image.
    """

    with_lesions: np.ndarray
    without: np.ndarray
    lungs: np.ndarray
    lesions: np.ndarray
    labels: list[str]


def _index(path: str) -> int:
    match = re.search(r"-(\d+)\.png$", str(path))
    if not match:
        raise DataError(f"{path}: not a phantom file name (<class>-<index>.png); lesion twins need phantoms")
    return int(match.group(1))


def lesion_twins(manifest: pd.DataFrame, root: str | Path, size: int) -> Twins:
    """Regenerate the lesion-bearing phantoms of ``manifest`` with and without their lesions.

    Args:
        manifest: Rows of a phantom ``manifest.csv`` (``path``, ``label``, ``seed``, ``difficulty``,
            ``marker``); rows of classes without lesions (Normal) are skipped.
        root: The phantom dataset folder (``path`` is relative to it).
        size: Model input size.

    Returns:
        The :class:`Twins`.

    Raises:
        DataError: A file that this generator does not reproduce byte for byte (another generator
            version or an edited image), or no lesion-bearing rows.
    """
    from covidxray.data.phantoms import LESION_CLASSES, image_rng, make_phantom

    rows = manifest[manifest["label"].isin(list(LESION_CLASSES))]
    if rows.empty:
        raise DataError("no lesion-bearing phantoms among the selected images")
    out: dict[str, list] = {"with": [], "without": [], "lungs": [], "lesions": []}
    for row in rows.itertuples():
        path = Path(root) / row.path
        on_disk = read_image(path)
        drawn, index = [], _index(row.path)
        for lesions in (True, False):
            rng, _ = image_rng(int(row.seed), row.label, index)
            drawn.append(make_phantom(rng, row.label, on_disk.shape[0], float(row.difficulty), bool(row.marker),
                                      draw_lesions=lesions))
        if not np.array_equal(drawn[0].image, on_disk):
            raise DataError(f"{path}: this phantom generator does not reproduce the file (made by another "
                            "version, or edited); regenerate the dataset with `covidxray phantoms`")
        out["with"].append(resize_for_model(on_disk, size))
        out["without"].append(resize_for_model(drawn[1].image, size))
        out["lungs"].append(resize_mask(drawn[0].lung_mask, size))
        out["lesions"].append(resize_mask(drawn[0].lesion_mask, size))
    return Twins(np.stack(out["with"]), np.stack(out["without"]), np.stack(out["lungs"]),
                 np.stack(out["lesions"]), rows["label"].tolist())


def activation_shift(model: keras.Model, images: np.ndarray, references: np.ndarray, layers: Sequence[str],
                     batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per layer, where its activations differ between ``images`` and ``references``.

    Args:
        model: The classifier.
        images: ``(N, S, S)`` model inputs.
        references: The same images with something removed (``(N, S, S)``).
        layers: Layer names.
        batch_size: Images per forward pass.

    Returns:
        Layer name -> ``(N, S, S)`` float32 maps in [0, 1] (all zero where nothing changed).
    """
    from covidxray.explain.core import act_fn, as_batch, chunks, normalize_maps, upsample

    x, r = as_batch(model, images), as_batch(model, references)
    if x.shape != r.shape:
        raise ValueError(f"images {x.shape} and references {r.shape} differ in shape")
    f = act_fn(model, tuple(layers))
    parts: dict[str, list] = {name: [] for name in layers}
    for s in chunks(len(x), batch_size):
        a, b = f(x[s]), f(r[s])
        for name in layers:
            parts[name].append(np.abs(a[name].numpy() - b[name].numpy()).sum(axis=-1))
    return {name: normalize_maps(upsample(np.concatenate(p), x.shape[1:3])) for name, p in parts.items()}


def layer_study(model: keras.Model, twins: Twins, layers: Sequence[str], method: str = "gradcam",
                batch_size: int = 32) -> pd.DataFrame:
    """Localisation of ``method`` and of the activation shift, per layer, on the lesion twins.

    Returns:
        One row per layer: ``layer``, ``grid`` (the layer's spatial size), ``flip_rate`` and, for
        ``method`` and ``shift``, ``<m>_pointing`` (pointing game on the lesion), ``<m>_lung_energy`` and
        ``<m>_lesion_energy`` (means over images); the maps target the predicted class of the image
        with lesions.
    """
    from covidxray.explain.core import class_scores
    from covidxray.explain.localisation import localisation
    from covidxray.explain.registry import explain

    probs = class_scores(model, twins.with_lesions, "prob", batch_size)
    flips = probs.argmax(1) != class_scores(model, twins.without, "prob", batch_size).argmax(1)
    shifts = activation_shift(model, twins.with_lesions, twins.without, layers, batch_size)
    rows = []
    for name in layers:
        row = {"layer": name, "grid": int(model.get_layer(name).output.shape[1]), "flip_rate": float(flips.mean())}
        maps = explain(model, twins.with_lesions, method, target=probs.argmax(1), layer=name, batch_size=batch_size)
        for key, m in ((method, maps), ("shift", shifts[name])):
            loc = localisation(m, twins.lungs, twins.lesions)
            row |= {f"{key}_pointing": float(loc["pointing_lesion"].mean()),
                    f"{key}_lung_energy": float(loc["lung_energy"].mean()),
                    f"{key}_lesion_energy": float(loc["lesion_energy"].mean())}
        rows.append(row)
    return pd.DataFrame(rows)
