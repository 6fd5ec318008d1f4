"""Image corruptions at five severities, for the robustness sweep (:mod:`covidxray.robustness`).

Each corruption takes uint8 grayscale images, one ``(H, W)`` or a batch ``(N, H, W)``, and returns
uint8 images of the same shape. Severity 0 returns the input unchanged. Random choices (noise,
the sign of a rotation or gamma, the direction of a shift) come from ``numpy.random.default_rng(seed)``,
drawn per image in batch order and in the same way at every severity, so one seed gives the same
output on every call and a higher severity only scales the same perturbation up.

The sweep applies them to the images *as the model receives them* (after the resize to the model
size), so spatial parameters are given relative to the image side. Severity 5 is meant to stay
readable by a radiologist: degraded like a poor portable film, not destroyed.

============== ========================= ================================ =====================================
corruption     parameter                 severities 1..5                  why severity 5 is still readable
============== ========================= ================================ =====================================
gaussian_noise sigma (grey levels)       4, 8, 12, 16, 20                 ~8% of the range: grainy, quantum-
                                                                          mottle-like low-dose film
gaussian_blur  sigma (px at 256 px,      0.8, 1.1, 1.4, 1.7, 2.0          2 px at 256 px blurs fine reticulation
               scaled by side / 256)                                      but keeps opacities and borders
contrast       factor around the mean    0.85, 0.7, 0.6, 0.5, 0.4         40% of the contrast, as an under-
                                                                          penetrated film; windowing restores it
gamma          gamma (or 1/gamma, random) 1.15, 1.3, 1.5, 1.75, 2.0       over/under-exposure look-up curve
rotation       degrees (random sign)     3, 6, 9, 12, 15                  patient rotation on a portable film
translation    fraction of the side      0.02, 0.04, 0.06, 0.08, 0.10     off-centre positioning; lungs stay in
               (random direction)                                         the field
jpeg           JPEG quality              75, 50, 30, 20, 10               blocking at 10, structures visible
resample       down-scale factor, then   0.75, 0.6, 0.5, 0.375, 0.25      a 1024 px film at 256 px is still
               back up (area / linear)                                    read on thumbnails
============== ========================= ================================ =====================================

Rotation and translation fill the uncovered border with black, as the training augmentation does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)


def _batch(images: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(N, H, W)`` uint8 view of the input and whether it was a single image."""
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim not in (2, 3):
        raise ValueError(f"corruptions take uint8 (H, W) or (N, H, W) images, got {x.dtype} {x.shape}")
    return (x[None], True) if x.ndim == 2 else (x, False)


def _out(x: np.ndarray, single: bool) -> np.ndarray:
    return x[0] if single else x


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _signs(n: int, seed: int) -> np.ndarray:
    return np.where(np.random.default_rng(seed).random(n) < 0.5, -1.0, 1.0)


def gaussian_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Add zero-mean Gaussian noise of ``sigma`` grey levels, clipped to 0..255."""
    x, single = _batch(images)
    noise = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    return _out(_to_uint8(x + sigma * noise), single)


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (reflected borders); ``sigma`` 0 is the identity."""
    x, single = _batch(images)
    if sigma <= 0:
        return _out(x.copy(), single)
    return _out(np.stack([cv2.GaussianBlur(im, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for im in x]), single)


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Scale each image's deviations from its own mean grey level by ``factor``."""
    x, single = _batch(images)
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    return _out(_to_uint8(mean + factor * (x - mean)), single)


def gamma(images: np.ndarray, value: float, seed: int = 0) -> np.ndarray:
    """Apply the curve ``255 * (x / 255) ** g`` with ``g = value`` or ``1 / value`` (random per image)."""
    x, single = _batch(images)
    levels = np.arange(256) / 255.0
    luts = _to_uint8(255 * np.stack([levels ** (1 / value), levels**value]))
    pick = (_signs(len(x), seed) > 0).astype(np.intp)
    return _out(luts[pick[:, None, None], x], single)


def affine(images: np.ndarray, degrees: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Rotate each image about its centre and shift it, filling the uncovered border with black.

    Args:
        images: uint8 ``(N, H, W)``.
        degrees: ``(N,)`` counter-clockwise rotation angles.
        shifts: ``(N, 2)`` shifts ``(dx, dy)`` in pixels.

    Returns:
        uint8 ``(N, H, W)``.
    """
    x, _ = _batch(images)
    out = np.empty_like(x)
    h, w = x.shape[1:]
    for i, (im, angle, (dx, dy)) in enumerate(zip(x, degrees, shifts, strict=True)):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(angle), 1.0)
        m[:, 2] += (dx, dy)
        out[i] = cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0)
    return out


def rotation(images: np.ndarray, degrees: float, seed: int = 0) -> np.ndarray:
    """Rotate by ``degrees`` with a random sign per image."""
    x, single = _batch(images)
    return _out(affine(x, degrees * _signs(len(x), seed), np.zeros((len(x), 2))), single)


def translation(images: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Shift by ``fraction`` of the image side in a random direction per image."""
    x, single = _batch(images)
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(x))
    shifts = fraction * np.array(x.shape[1:][::-1]) * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return _out(affine(x, np.zeros(len(x)), shifts), single)


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` (1-100) and decode again."""
    x, single = _batch(images)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    return _out(np.stack([cv2.imdecode(cv2.imencode(".jpg", im, params)[1], cv2.IMREAD_GRAYSCALE) for im in x]),
                single)


def resample(images: np.ndarray, scale: float) -> np.ndarray:
    """Down-sample by ``scale`` (area averaging), then up-sample back (bilinear)."""
    x, single = _batch(images)
    h, w = x.shape[1:]
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    return _out(np.stack([cv2.resize(cv2.resize(im, small, interpolation=cv2.INTER_AREA), (w, h),
                                     interpolation=cv2.INTER_LINEAR) for im in x]), single)


@dataclass(frozen=True)
class Corruption:
    """A corruption, its parameter at severities 1..5 and how the parameter is applied."""

    apply: Callable[..., np.ndarray]
    parameter: str
    values: tuple[float, ...]
    seeded: bool = False
    scale_with_size: bool = False


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": Corruption(gaussian_noise, "sigma (grey levels)", (4, 8, 12, 16, 20), seeded=True),
    "gaussian_blur": Corruption(gaussian_blur, "sigma (px at 256 px)", (0.8, 1.1, 1.4, 1.7, 2.0),
                                scale_with_size=True),
    "contrast": Corruption(contrast, "contrast factor", (0.85, 0.7, 0.6, 0.5, 0.4)),
    "gamma": Corruption(gamma, "gamma (or 1/gamma)", (1.15, 1.3, 1.5, 1.75, 2.0), seeded=True),
    "rotation": Corruption(rotation, "degrees", (3, 6, 9, 12, 15), seeded=True),
    "translation": Corruption(translation, "fraction of the side", (0.02, 0.04, 0.06, 0.08, 0.10), seeded=True),
    "jpeg": Corruption(jpeg, "JPEG quality", (75, 50, 30, 20, 10)),
    "resample": Corruption(resample, "down-scale factor", (0.75, 0.6, 0.5, 0.375, 0.25)),
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (0 = unchanged copy, 1..5 = the table above).

    Args:
        images: uint8 ``(H, W)`` or ``(N, H, W)``.
        name: A key of :data:`CORRUPTIONS`.
        severity: 0 to 5.
        seed: Seed of the random choices (same seed, same output).

    Returns:
        uint8 array of the input's shape.

    Raises:
        ValueError: Unknown corruption, severity out of range, or images that are not uint8 2-D/3-D.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0..{SEVERITIES[-1]}, got {severity!r}")
    x, single = _batch(images)
    if severity == 0:
        return _out(x.copy(), single)
    c = CORRUPTIONS[name]
    value = c.values[severity - 1] * (x.shape[2] / 256 if c.scale_with_size else 1)
    return c.apply(images, value, seed) if c.seeded else c.apply(images, value)
