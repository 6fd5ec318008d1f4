"""Training and evaluation data of the lung segmenter: masked manifests, phantoms, the patient split.

Real lung masks come from any dataset whose ``manifest.csv`` has a ``lung_mask`` column (the
radiologist masks of ``cxr-annotated``, or a phantom folder); phantoms are also drawn in memory
(:func:`phantom_set`), each from its own seed stream, so train and held-out phantoms never coincide.
The held-out real images are whole patients (grouped by ``patient_id``), drawn with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from covidxray.data.imageio import read_image, read_mask
from covidxray.data.layouts import MANIFEST_NAME
from covidxray.data.phantoms import image_rng, make_phantom
from covidxray.errors import DataError

PHANTOM_CLASSES = ("COVID-19", "Normal", "Viral Pneumonia")


def masked_manifest(data: str | Path) -> pd.DataFrame:
    """Rows of a dataset's manifest that have a lung mask, with absolute ``path`` and ``lung_mask``.

    Args:
        data: A folder holding ``manifest.csv``, or the CSV itself.

    Returns:
        Columns ``path,lung_mask,patient_id,source,label`` (+ the CSV's others); a blank
        ``patient_id`` becomes the image path (one image, one patient).

    Raises:
        DataError: No manifest, or no row with a lung mask.
    """
    data = Path(data)
    csv = data / MANIFEST_NAME if data.is_dir() else data
    if not csv.is_file():
        raise DataError(f"{data}: no {MANIFEST_NAME} with a lung_mask column (lung masks are read from a manifest)")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "lung_mask" not in df.columns or "path" not in df.columns:
        raise DataError(f"{csv}: needs columns path and lung_mask")
    df = df[df["lung_mask"].str.strip() != ""].copy()
    if not len(df):
        raise DataError(f"{csv}: no row has a lung_mask")
    base = csv.parent.resolve()
    for col in ("path", "lung_mask"):
        df[col] = [str(p if Path(p).is_absolute() else base / p) for p in df[col]]
    for col in ("patient_id", "source", "label"):
        if col not in df.columns:
            df[col] = ""
    df["patient_id"] = np.where(df["patient_id"].str.strip() == "", df["path"], df["patient_id"])
    return df.reset_index(drop=True)


def load_pairs(df: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read the images (uint8) and lung masks (bool, resized to the image when they differ) of a manifest."""
    import cv2

    images, masks = [], []
    for path, mpath in zip(df["path"], df["lung_mask"], strict=True):
        img, mask = read_image(path), read_mask(mpath)
        if mask.shape != img.shape:
            mask = cv2.resize(mask.astype(np.uint8), img.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        images.append(img)
        masks.append(mask)
    return images, masks


def heldout_patients(patient_ids, fraction: float = 0.2, seed: int = 42) -> list[str]:
    """Patients held out from training: a seeded random ``fraction`` of the distinct ids (at least one).

    Args:
        patient_ids: Patient id of every image (repeats allowed).
        fraction: Share of patients held out.
        seed: Random seed.

    Returns:
        The held-out ids, sorted.
    """
    ids = sorted(set(patient_ids))
    n = max(1, int(round(fraction * len(ids)))) if ids else 0
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted(ids[i] for i in order[:n])


def phantom_set(n: int, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` phantoms in memory (classes in turn), images and lung masks.

    Args:
        n: Number of phantoms.
        size: Side in pixels.
        seed: Stream seed (different seeds give disjoint phantoms).

    Returns:
        ``(images (n, size, size) uint8, masks (n, size, size) bool)``.
    """
    images, masks = np.zeros((n, size, size), np.uint8), np.zeros((n, size, size), bool)
    for i in range(n):
        label = PHANTOM_CLASSES[i % len(PHANTOM_CLASSES)]
        ph = make_phantom(image_rng(seed, label, i // len(PHANTOM_CLASSES))[0], label, size)
        images[i], masks[i] = ph.image, ph.lung_mask
    return images, masks
