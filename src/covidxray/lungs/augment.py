"""Augmentation of (film, lung mask) pairs for the segmenter: adult, pediatric and portable films.

One random affine warp (scale, aspect, rotation, shift) takes the source film straight to the
working size, so no detail is lost to a second resize; then intensity changes (gamma, contrast,
brightness, histogram equalisation), blur and noise, and acquisition artefacts: collimation bands
(dark or bright borders, their lung pixels cleared from the mask: the reader cannot see lung there)
and burned-in text markers. Zooming out (scale < 1) with a dark or replicated border mimics
pediatric framing, where the small lungs fill only part of a film that also shows the abdomen and arms;
portable films are rotated, tilted and low in contrast. Geometric plus photometric augmentation of
this kind is what lets a U-Net learn from tens of annotated films (Ronneberger et al. 2015; Buslaev
et al. 2020).

Buslaev A, Iglovikov VI, Khvedchenya E, et al. Albumentations: fast and flexible image augmentations.
Information 2020;11(2):125.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Parameter ranges (uniform) of :func:`augment_pair`.
RANGES = {
    "zoom": (0.72, 1.18), "small_zoom": (0.55, 0.75), "small_p": 0.15, "aspect": (0.85, 1.18),
    "rotation": (-12.0, 12.0), "shift": 0.08, "gamma": (0.6, 1.6), "contrast": (0.7, 1.3),
    "brightness": (-0.12, 0.12), "equalize_p": 0.15, "blur_p": 0.3, "blur": (0.3, 1.5),
    "noise_p": 0.3, "noise": (0.005, 0.04), "collimation_p": 0.3, "band": (0.02, 0.12), "marker_p": 0.3,
}


def _affine(rng: np.random.Generator, in_size: tuple[int, int], out: int) -> np.ndarray:
    h, w = in_size
    zoom = rng.uniform(*RANGES["small_zoom"]) if rng.random() < RANGES["small_p"] else rng.uniform(*RANGES["zoom"])
    aspect = rng.uniform(*RANGES["aspect"])
    sx, sy = out / w * zoom * np.sqrt(aspect), out / h * zoom / np.sqrt(aspect)
    a = np.deg2rad(rng.uniform(*RANGES["rotation"]))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag([sx, sy])
    shift = rng.uniform(-RANGES["shift"], RANGES["shift"], 2) * out
    centre_out = np.array([out / 2, out / 2]) + shift
    t = centre_out - rot @ np.array([w / 2, h / 2])
    return np.hstack([rot, t[:, None]]).astype(np.float64)


def _photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    if rng.random() < RANGES["equalize_p"]:
        x = cv2.equalizeHist(img).astype(np.float32) / 255.0
    x = np.clip(x, 0, 1) ** rng.uniform(*RANGES["gamma"])
    x = (x - 0.5) * rng.uniform(*RANGES["contrast"]) + 0.5 + rng.uniform(*RANGES["brightness"])
    if rng.random() < RANGES["blur_p"]:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*RANGES["blur"]))
    if rng.random() < RANGES["noise_p"]:
        x = x + rng.uniform(*RANGES["noise"]) * rng.standard_normal(x.shape).astype(np.float32)
    return x


def _artefacts(rng: np.random.Generator, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    if rng.random() < RANGES["collimation_p"]:
        value = 0.0 if rng.random() < 0.7 else rng.uniform(0.8, 1.0)
        for side in np.flatnonzero(rng.random(4) < 0.5):
            k = int(rng.uniform(*RANGES["band"]) * n)
            sl = [(slice(0, k), slice(None)), (slice(n - k, n), slice(None)),
                  (slice(None), slice(0, k)), (slice(None), slice(n - k, n))][side]
            x[sl], mask[sl] = value, False
    if rng.random() < RANGES["marker_p"]:
        h, w = (rng.uniform(0.04, 0.09, 2) * n).astype(int) + 2
        y0 = int(rng.choice([rng.uniform(0.02, 0.15), rng.uniform(0.75, 0.9)]) * n)
        x0 = int(rng.choice([rng.uniform(0.02, 0.15), rng.uniform(0.75, 0.9)]) * n)
        x[y0:y0 + h, x0:x0 + w] = rng.uniform(0.85, 1.0)
    return x, mask


def augment_pair(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                 out: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy of a film and its lung mask at the working size.

    Args:
        rng: Random generator (its state advances).
        image: ``(H, W)`` uint8 film.
        mask: ``(H, W)`` bool lung mask.
        out: Working side in pixels.

    Returns:
        ``(image (out, out) uint8, mask (out, out) bool)``.
    """
    m = _affine(rng, image.shape, out)
    border = [cv2.BORDER_CONSTANT, cv2.BORDER_REPLICATE, cv2.BORDER_REFLECT_101][int(rng.integers(0, 3))]
    fill = float(rng.choice([0.0, rng.uniform(0, 60)]))
    interp = cv2.INTER_AREA if max(image.shape) > 2 * out else cv2.INTER_LINEAR
    img = cv2.warpAffine(image, m, (out, out), flags=interp, borderMode=border, borderValue=fill)
    msk = cv2.warpAffine(mask.astype(np.float32), m, (out, out), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0) >= 0.5
    x, msk = _artefacts(rng, _photometric(rng, img), msk)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), msk


def identity_pair(image: np.ndarray, mask: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """A film and mask resized to the working size without augmentation (area / linear interpolation)."""
    interp = cv2.INTER_AREA if min(image.shape) >= out else cv2.INTER_LINEAR
    img = cv2.resize(image, (out, out), interpolation=interp)
    msk = cv2.resize(mask.astype(np.float32), (out, out), interpolation=cv2.INTER_LINEAR) >= 0.5
    return img, msk
