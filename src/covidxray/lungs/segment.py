"""Load the lung segmenter and predict lung masks at any image size.

The shipped weights are ``models/lungs/lungs.keras`` (:data:`DEFAULT_WEIGHTS`) with their training
record and held-out metrics beside them in ``lungs.json``; ``covidxray lungs train`` writes both.
Masks are predicted at the network's working size and resized back to each image's own size, then
cleaned: holes filled and only the (at most two) large connected components kept, since a frontal
film shows two lung fields (connected-component filtering as in Candemir et al. 2014).

Candemir S, Jaeger S, Palaniappan K, et al. Lung segmentation in chest radiographs using anatomical
atlases with nonrigid registration. IEEE Trans Med Imaging 2014;33(2):577-590.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from covidxray import paths
from covidxray.errors import WeightsError
from covidxray.runinfo import file_sha256

DEFAULT_WEIGHTS: Path = paths.ROOT / "models" / "lungs" / "lungs.keras"
THRESHOLD = 0.5
MIN_COMPONENT = 0.1  # a second component smaller than 10% of the largest is noise, not a lung


def metrics_path(weights: str | Path) -> Path:
    """The metrics/record JSON beside a weights file (``lungs.keras`` -> ``lungs.json``)."""
    return Path(weights).with_suffix(".json")




def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component and a second one of at least 10% of its area; fill holes.

    Args:
        mask: ``(H, W)`` bool mask.

    Returns:
        The cleaned ``(H, W)`` bool mask (an empty mask stays empty).
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1][:2]
    keep = [i + 1 for i in order if areas[i] >= MIN_COMPONENT * areas[order[0]]]
    out = np.isin(labels, keep).astype(np.uint8)
    contours, _ = cv2.findContours(out, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(out)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


@dataclass
class Segmenter:
    """A loaded lung segmenter.

    Attributes:
        model: The Keras U-Net (0-255 ``(S, S, 1)`` input, sigmoid output).
        path: The weights file.
        sha256: SHA-256 of the weights file.
        size: Size of the weights file in bytes (with ``path`` and ``sha256``: which file was used).
        metrics: The record in ``lungs.json`` (held-out Dice/HD95, training data, seed, command);
            empty when there is none.
    """

    model: object
    path: Path
    sha256: str
    size: int
    metrics: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        """The network's working side ``S`` in pixels (masks are predicted at S x S, then resized)."""
        return int(self.model.input_shape[1])

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Lung probabilities at the working size.

        Args:
            images: ``(N, H, W)`` uint8 grayscale images (all of one size).
            batch_size: Images per model call.

        Returns:
            ``(N, S, S)`` float32 probabilities.
        """
        images = np.asarray(images)
        if images.ndim != 3:
            raise ValueError(f"images must be (N, H, W) grayscale, got shape {images.shape}")
        small = np.stack([_resize_image(im, self.input_size) for im in images]) if len(images) else \
            np.zeros((0, self.input_size, self.input_size), np.uint8)
        out = np.zeros((len(small), self.input_size, self.input_size), np.float32)
        for i in range(0, len(small), batch_size):
            batch = small[i:i + batch_size, ..., None].astype(np.float32)
            out[i:i + batch_size] = np.asarray(self.model.predict_on_batch(batch))[..., 0]
        return out

    def record(self) -> dict:
        """Which weights these are and the Dice they had on held-out real patients (for reports)."""
        return {"path": str(self.path), "sha256": self.sha256, "heldout_dice": heldout_dice(self.metrics),
                "heldout_images": (self.metrics.get("heldout_real") or {}).get("n")}

    def predict(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Lung masks at the input size.

        Args:
            images: ``(N, H, W)`` uint8 grayscale images (any ``H, W``, all equal).
            batch_size: Images per model call.

        Returns:
            ``(N, H, W)`` bool lung masks.
        """
        images = np.asarray(images)
        probs = self.probabilities(images, batch_size)
        h, w = images.shape[1:]
        out = np.zeros(images.shape, bool)
        for i, p in enumerate(probs):
            if (h, w) != p.shape:
                p = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
            out[i] = clean_mask(p >= THRESHOLD)
        return out

    def fill_missing(self, lungs: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predict the lungs of the images whose lung mask is empty; the others keep theirs.

        Args:
            lungs: ``(N, S, S)`` bool lung masks, all False where an image has none.
            images: ``(N, S, S[, 1])`` 0-255 images at the same size.

        Returns:
            ``(lungs, predicted)``: a copy with the predicted masks filled in, and the indices of the
            images whose lungs were predicted (an empty prediction leaves the mask empty and the
            index out).
        """
        lungs = np.array(lungs, bool, copy=True)
        n, size = lungs.shape[0], lungs.shape[1]
        missing = np.flatnonzero(~lungs.reshape(n, -1).any(axis=1))
        if not len(missing):
            return lungs, missing
        gray = np.clip(np.asarray(images)[missing].reshape(len(missing), size, size), 0, 255).astype(np.uint8)
        found = self.predict(gray)
        hit = found.reshape(len(missing), -1).any(axis=1)
        lungs[missing[hit]] = found[hit]
        return lungs, missing[hit]


def _resize_image(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape == (size, size):
        return img
    interp = cv2.INTER_AREA if min(img.shape) >= size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def load_segmenter(path: str | Path | None = None) -> Segmenter:
    """Load a lung segmenter and its ``lungs.json`` record.

    Args:
        path: A ``.keras`` file, or a folder holding ``lungs.keras``; None: :data:`DEFAULT_WEIGHTS`.

    Returns:
        The :class:`Segmenter`.

    Raises:
        WeightsError: The file is missing or cannot be loaded (the message says to run
            ``covidxray lungs train``).
    """
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if path.is_dir():
        path = path / DEFAULT_WEIGHTS.name
    if not path.is_file():
        raise WeightsError(f"lung segmenter weights not found: {path}; run `covidxray lungs train` "
                           f"(it writes {DEFAULT_WEIGHTS.relative_to(paths.ROOT)})")
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 (a damaged or foreign file: one clear line)
        raise WeightsError(f"cannot load lung segmenter {path}: {type(err).__name__}: {err}; "
                           "run `covidxray lungs train` to rebuild it") from None
    mpath = metrics_path(path)
    metrics = json.loads(mpath.read_text()) if mpath.is_file() else {}
    return Segmenter(model, path, file_sha256(path), path.stat().st_size, metrics)


def heldout_dice(metrics: dict) -> float | None:
    """Mean Dice on the held-out real patients from a ``lungs.json`` record (None when it has none).

    Args:
        metrics: The record (``heldout_real.dice_mean``; a flat ``dice`` key is read too).

    Returns:
        The Dice, or None.
    """
    value = (metrics.get("heldout_real") or {}).get("dice_mean", metrics.get("dice"))
    return float(value) if isinstance(value, int | float) else None


def dice_text(metrics: dict) -> str:
    """``held-out Dice 0.943 on 12 real films of unseen patients, 0.991 on 60 phantoms`` from a ``lungs.json`` record."""
    parts = []
    for key, what in (("heldout_real", "real films of unseen patients"), ("heldout_phantoms", "phantoms")):
        rec = (metrics or {}).get(key) or {}
        if isinstance(rec.get("dice_mean"), int | float):
            parts.append(f"{rec['dice_mean']:.3f} on {rec.get('n', '?')} {what}")
    return "held-out Dice " + ", ".join(parts) if parts else "held-out Dice not recorded"


def installed_segmenter(log=print) -> Segmenter | None:
    """The shipped segmenter (:data:`DEFAULT_WEIGHTS`), or None with one line saying why.

    Args:
        log: Where the line goes when there is no usable segmenter.

    Returns:
        The :class:`Segmenter`, or None.
    """
    try:
        return load_segmenter(None)
    except WeightsError as err:
        log(f"no lung segmenter ({err}); images without a lung mask fall back")
        return None


def lung_bbox(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Bounding box of a lung mask, widened by a margin and clipped to the image.

    Args:
        mask: ``(H, W)`` bool mask.
        margin: Fraction of the box's height (rows) and width (columns) added on each side.

    Returns:
        ``(y0, y1, x0, x1)``, end-exclusive; the whole image ``(0, H, 0, W)`` when the mask is empty.
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return 0, h, 0, w
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dy, dx = margin * (y1 - y0), margin * (x1 - x0)
    return (max(0, int(np.floor(y0 - dy))), min(h, int(np.ceil(y1 + dy))),
            max(0, int(np.floor(x0 - dx))), min(w, int(np.ceil(x1 + dx))))
