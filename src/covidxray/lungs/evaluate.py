"""Score a lung segmenter against reference masks: Dice and HD95 per image, and their summary.

``covidxray lungs evaluate DATA`` runs :func:`evaluate_dataset` on any dataset whose manifest has
lung masks and writes a per-image CSV and a JSON summary (both atomically). ``--heldout`` keeps only
the patients the segmenter's ``lungs.json`` lists as held out, i.e. the images it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray import atomic
from covidxray.errors import DataError
from covidxray.lungs.data import load_pairs, masked_manifest
from covidxray.lungs.metrics import dice, hd95


def score_masks(preds: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> pd.DataFrame:
    """Dice and HD95 (pixels, at the image's own size) of each predicted mask against its reference.

    Args:
        preds: Predicted bool masks.
        refs: Reference bool masks, one per prediction, same shapes.

    Returns:
        Columns ``dice,hd95,area_pred,area_ref`` (areas as fractions of the image).
    """
    rows = [{"dice": dice(p, r), "hd95": hd95(p, r), "area_pred": float(np.mean(p)), "area_ref": float(np.mean(r))}
            for p, r in zip(preds, refs, strict=True)]
    return pd.DataFrame(rows, columns=["dice", "hd95", "area_pred", "area_ref"])


def predict_each(segmenter, images: Sequence[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
    """Predict images of different sizes: grouped by shape, each group in batches."""
    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for idx in by_shape.values():
        masks = segmenter.predict(np.stack([images[i] for i in idx]), batch_size)
        for i, m in zip(idx, masks, strict=True):
            out[i] = m
    return out


def summarize(df: pd.DataFrame) -> dict:
    """Mean, median, minimum and 5th percentile of Dice; mean, median and 95th percentile of HD95."""
    if not len(df):
        return {"n": 0}
    d, h = df["dice"].to_numpy(float), df["hd95"].to_numpy(float)
    return {"n": int(len(df)), "dice_mean": round(float(d.mean()), 4), "dice_median": round(float(np.median(d)), 4),
            "dice_min": round(float(d.min()), 4), "dice_p05": round(float(np.percentile(d, 5)), 4),
            "hd95_mean": round(float(np.mean(h)), 2), "hd95_median": round(float(np.median(h)), 2),
            "hd95_p95": round(float(np.percentile(h, 95)), 2)}


def evaluate_dataset(segmenter, data: str | Path, heldout: bool = False, batch_size: int = 32) -> pd.DataFrame:
    """Per-image scores of a segmenter on a dataset with lung masks.

    Args:
        segmenter: A :class:`covidxray.lungs.segment.Segmenter`.
        data: Folder with ``manifest.csv`` (column ``lung_mask``) or the CSV.
        heldout: Keep only the patients listed in ``segmenter.metrics["heldout_patients"]``.
        batch_size: Images per model call.

    Returns:
        Columns ``path,patient_id,source,label,height,width,dice,hd95,area_pred,area_ref``.

    Raises:
        DataError: No masked rows, or ``heldout`` with no listed patient in the data.
    """
    df = masked_manifest(data)
    if heldout:
        keep = set(segmenter.metrics.get("heldout_patients", []))
        df = df[df["patient_id"].isin(keep)].reset_index(drop=True)
        if not len(df):
            raise DataError(f"{data}: none of the segmenter's held-out patients is in this dataset")
    images, masks = load_pairs(df)
    scores = score_masks(predict_each(segmenter, images, batch_size), masks)
    meta = df[["path", "patient_id", "source", "label"]].assign(height=[im.shape[0] for im in images],
                                                                  width=[im.shape[1] for im in images])
    return pd.concat([meta, scores], axis=1)


def write_report(df: pd.DataFrame, out: str | Path, segmenter, data: str | Path, heldout: bool) -> dict:
    """Write ``out/lungs_eval.csv`` (per image) and ``out/lungs_eval.json`` (summary); return the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"data": str(data), "heldout_only": bool(heldout), "weights": str(segmenter.path),
               "weights_sha256": segmenter.sha256, **summarize(df),
               "by_source": {str(k): summarize(g) for k, g in df.groupby("source")}}
    atomic.write_csv(df, out / "lungs_eval.csv")
    atomic.write_json(out / "lungs_eval.json", summary)
    return summary
