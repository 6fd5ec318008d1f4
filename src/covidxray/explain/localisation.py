"""Localisation: is the attribution where the lungs and the lesions are?

Share of attribution energy (sum of the map) inside the lung and the lesion masks, and the
pointing game (Zhang et al. 2016): a hit when the map's maximum (the first one in raster order on
ties) lies inside the mask dilated by ``tolerance`` pixels (a disk), so that a maximum on a
lesion's edge after bilinear upsampling still counts.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd


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
