"""Predict lung masks for a whole dataset: one PNG per image, a manifest pairing them, a sidecar record.

Output folder layout (``covidxray lungs predict DATA -o DIR``)::

    DIR/masks/lungs/<image path relative to DATA>.png   0/255 mask at the image's own size
    DIR/manifest.csv        path,label,patient_id,source,lung_mask (image paths absolute, masks relative)
    DIR/manifest.meta.json  the table sidecar (rows, columns, SHA-256)
    DIR/lungs.json          which weights (path, SHA-256, held-out Dice), the data, counts, failures

``covidxray index DIR`` reads ``DIR/manifest.csv`` as a csv-manifest and pairs each image with its mask
(the ``masks`` folder is not searched for images).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covidxray import atomic
from covidxray.data.discover import discover
from covidxray.data.imageio import ImageReadError, read_image
from covidxray.data.layouts import DEFAULT_CLASSES, MANIFEST_NAME
from covidxray.data.tables import write_table
from covidxray.errors import DataError
from covidxray.lungs.evaluate import predict_each

WRITER = "covidxray lungs predict"
MASK_DIR = Path("masks") / "lungs"
COLUMNS = ["path", "label", "patient_id", "source", "lung_mask"]


def mask_name(image: str, root: Path) -> Path:
    """Relative mask path of an image: its path below the dataset root (else its name), as ``.png``."""
    rel = os.path.relpath(image, root)
    rel = Path(rel if not rel.startswith("..") else Path(image).name)
    return MASK_DIR / rel.with_suffix(".png")


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Write a bool mask as a 0/255 PNG (atomically)."""
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, png.tobytes())


def predict_dataset(segmenter, data: str | Path, out: str | Path, classes: Sequence[str] = DEFAULT_CLASSES,
                    batch_size: int = 32, chunk: int = 256, log: Callable[[str], None] = print) -> dict:
    """Predict and write a lung mask for every image of a dataset.

    Args:
        segmenter: A :class:`covidxray.lungs.segment.Segmenter`.
        data: Dataset folder or manifest CSV (any layout :func:`covidxray.data.discover.discover` reads).
        out: Output folder (created).
        classes: Classes kept by discovery (other labels are left out, as ``index`` does).
        batch_size: Images per model call.
        chunk: Images decoded and predicted at a time (bounds memory).
        log: Progress lines.

    Returns:
        The record written to ``out/lungs.json``.

    Raises:
        DataError: The dataset has no usable image.
    """
    t0 = time.perf_counter()
    data, out = Path(data), Path(out)
    found = discover(data, classes=classes, check_images=False)
    if not len(found.manifest):
        raise DataError(f"{data}: no images found")
    root = (data if data.is_dir() else data.parent).resolve()
    rows, failed = [], []
    df = found.manifest.drop(columns=["height", "width"], errors="ignore").fillna("")
    for start in range(0, len(df), chunk):
        part, images = df.iloc[start:start + chunk], []
        for rec in part.to_dict("records"):
            try:
                images.append((rec, read_image(rec["path"])))
            except ImageReadError as err:
                failed.append({"path": rec["path"], "reason": str(err)})
        masks = predict_each(segmenter, [im for _, im in images], batch_size)
        for (rec, _), mask in zip(images, masks, strict=True):
            rel = mask_name(rec["path"], root)
            write_mask(out / rel, mask)
            rows.append({"path": rec["path"], "label": rec["label"], "patient_id": rec["patient_id"],
                         "source": rec["source"], "lung_mask": rel.as_posix()})
        log(f"lungs predict: {min(start + chunk, len(df))}/{len(df)} images")
    manifest = pd.DataFrame(rows, columns=COLUMNS)
    write_table(manifest, out / MANIFEST_NAME, WRITER)
    held = segmenter.metrics.get("heldout_real", {})
    record = {"weights": str(segmenter.path), "weights_sha256": segmenter.sha256, "weights_bytes": segmenter.size,
              "heldout_dice": held.get("dice_mean"), "heldout_hd95": held.get("hd95_mean"),
              "heldout_phantom_dice": segmenter.metrics.get("heldout_phantoms", {}).get("dice_mean"),
              "data": str(data.resolve()), "n_masks": len(manifest), "n_failed": len(failed), "failed": failed,
              "input_size": segmenter.input_size, "seconds": round(time.perf_counter() - t0, 1)}
    atomic.write_json(out / "lungs.json", record)
    return record
