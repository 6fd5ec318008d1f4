"""Images that are not frontal chest X-rays, for measuring and testing the OOD score (:mod:`covidxray.evaluation.ood`).

Everything is made offline from what installed packages ship: natural photographs (the two
scikit-learn sample images and matplotlib's sample photographs), synthetic patterns, inverted
(negative) films of given CXRs, and matplotlib's MRI head slice as the only cross-sectional image
at hand. Lateral views and CT slices cannot be made from these and are not covered.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np

PATTERNS = ("uniform_noise", "gaussian_noise", "smooth_noise", "gradient", "radial", "checkerboard",
            "stripes", "text", "shapes", "constant")


def _photo_sources() -> list[tuple[str, np.ndarray]]:
    """Grayscale photographs bundled with scikit-learn and matplotlib."""
    import matplotlib
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    out = [(Path(f).stem, cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)) for f, im in zip(bunch.filenames, bunch.images,
                                                                               strict=True)]
    folder = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        im = cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE)
        if im is not None:
            out.append((Path(name).stem, im))
    return out


def _crop(rng: np.random.Generator, img: np.ndarray, size: int, min_frac: float = 0.3) -> np.ndarray:
    h, w = img.shape
    side = int(rng.uniform(min_frac, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = img[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def natural_images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Random square crops (30-100% of the short side, random flips) of the bundled photographs.

    Args:
        n: Number of images.
        size: Output side in pixels.
        seed: Random seed.

    Returns:
        ``(n, size, size)`` uint8 images and the source photo of each.
    """
    rng = np.random.default_rng(seed)
    sources = _photo_sources()
    picks = [sources[i % len(sources)] for i in range(n)]
    return np.stack([_crop(rng, im, size) for _, im in picks]), [name for name, _ in picks]


def mri_slices(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Crops of matplotlib's 256x256 MRI head slice (``s1045.ima.gz``), a cross-sectional stand-in for CT.

    Returns:
        ``(n, size, size)`` uint8 images (empty when the sample file is not installed).
    """
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz"
    if not path.is_file():
        return np.zeros((0, size, size), np.uint8)
    raw = np.frombuffer(gzip.decompress(path.read_bytes()), ">u2").reshape(256, 256).astype(np.float64)
    img = (255 * (raw - raw.min()) / max(np.ptp(raw), 1)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    return np.stack([_crop(rng, img, size, 0.6) for _ in range(n)])


def pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic ``(size, size)`` uint8 image of a kind in :data:`PATTERNS`."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "uniform_noise":
        img = rng.uniform(0, 255, (size, size))
    elif kind == "gaussian_noise":
        img = rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (size, size))
    elif kind == "smooth_noise":
        img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)), (0, 0), size / rng.uniform(8, 32))
        img = 255 * (img - img.min()) / max(np.ptp(img), 1e-9)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        g = np.cos(a) * xx + np.sin(a) * yy
        img = 255 * (g - g.min()) / max(np.ptp(g), 1e-9)
    elif kind == "radial":
        r = np.hypot(xx - rng.uniform(0.2, 0.8), yy - rng.uniform(0.2, 0.8))
        img = 255 * (r / r.max() if rng.random() < 0.5 else 1 - r / r.max())
    elif kind == "checkerboard":
        period = int(rng.integers(2, max(3, size // 4)))
        img = 255.0 * ((np.arange(size)[:, None] // period + np.arange(size)[None, :] // period) % 2)
    elif kind == "stripes":
        img = 127.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 20) * (xx if rng.random() < 0.5 else yy)))
    elif kind == "text":
        img = np.full((size, size), int(rng.uniform(200, 255)), np.uint8)
        for row in range(int(rng.integers(4, 10))):
            chars = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "), int(rng.integers(4, 16))))
            cv2.putText(img, chars, (int(rng.integers(0, size // 4)), int((row + 1) * size / 10)),
                        cv2.FONT_HERSHEY_SIMPLEX, size / 400, int(rng.uniform(0, 60)), 1)
    elif kind == "shapes":
        img = np.full((size, size), int(rng.uniform(0, 255)), np.uint8)
        for _ in range(int(rng.integers(3, 10))):
            c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            colour = int(rng.uniform(0, 255))
            if rng.random() < 0.5:
                cv2.circle(img, c, int(rng.integers(size // 16, size // 3)), colour, -1)
            else:
                cv2.rectangle(img, c, (int(rng.integers(0, size)), int(rng.integers(0, size))), colour, -1)
    elif kind == "constant":
        img = np.full((size, size), rng.uniform(0, 255))
    else:
        raise ValueError(f"unknown pattern '{kind}' (known: {', '.join(PATTERNS)})")
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_patterns(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` synthetic images cycling through :data:`PATTERNS`; returns the images and their kinds."""
    rng = np.random.default_rng(seed)
    kinds = [PATTERNS[i % len(PATTERNS)] for i in range(n)]
    return np.stack([pattern(k, size, rng) for k in kinds]), kinds


def inverted(images: np.ndarray) -> np.ndarray:
    """Negative films: ``255 - x`` of uint8 images."""
    return (255 - np.asarray(images, np.uint8)).astype(np.uint8)
