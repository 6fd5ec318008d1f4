"""Synthetic chest radiographs with lung and lesion masks: the embedded default dataset.

Every phantom is a frontal (PA) chest film drawn procedurally (:mod:`covidxray.anatomy`):
body, lungs, heart, mediastinum, spine, ribs, clavicles and bronchovascular markings, with
per-image anatomy, rotation, exposure, gamma, noise and blur. The class is carried *only* by
the lesions, which always lie inside the lung mask:

* ``Normal``: clear lungs (empty lesion mask).
* ``COVID-19``: 2-6 soft ground-glass opacities, bilateral, peripheral, lower zones.
* ``Viral Pneumonia``: bilateral perihilar interstitial streaks with a faint perihilar haze.
* ``Lung Opacity``: one dense lobar-like consolidation in one lung.

``difficulty`` sets lesion contrast: the lesion density amplitude is ``base / difficulty``
(1.0 = moderately visible, 2.0 = half the contrast, 0.5 = twice), nothing else changes, so the
same seed at two difficulties gives the same image with fainter or stronger lesions.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covidxray import atomic
from covidxray.data.anatomy import Anatomy, render_anatomy, sample_anatomy

KNOWN_CLASSES = ("COVID-19", "Normal", "Viral Pneumonia", "Lung Opacity")
_SLUG = {"COVID-19": "covid19", "Normal": "normal", "Viral Pneumonia": "viral", "Lung Opacity": "opacity"}
_BASE_AMPLITUDE = {"COVID-19": 0.3, "Viral Pneumonia": 0.14, "Lung Opacity": 0.26}
_MARKER_TEXTS = ("L", "R", "PORT", "AP", "SUPINE")
MANIFEST_COLUMNS = ("path", "label", "patient_id", "source", "lung_mask", "lesion_mask", "marker",
                    "difficulty", "seed", "marker_box", "marker_mask")


@dataclass
class Phantom:
    """One synthetic radiograph and its masks.

    Attributes:
        image: (H, W) uint8 radiograph.
        lung_mask: (H, W) bool, both lung fields.
        lesion_mask: (H, W) bool, lesions (all False for Normal); a subset of ``lung_mask``.
        marker_mask: (H, W) bool, bounding box of the burned-in text marker (all False without one).
        meta: Label, size, difficulty, anatomy and acquisition parameters, lesion count, marker box.
    """

    image: np.ndarray
    lung_mask: np.ndarray
    lesion_mask: np.ndarray
    marker_mask: np.ndarray
    meta: dict = field(default_factory=dict)


def _check_label(label: str) -> None:
    if label not in KNOWN_CLASSES:
        raise ValueError(f"unknown phantom class {label!r}; known classes: {', '.join(KNOWN_CLASSES)}")


def _check_size_difficulty(size: int, difficulty: float) -> None:
    if not 64 <= size <= 1024:
        raise ValueError(f"phantom size must be between 64 and 1024 px, got {size}")
    if not (np.isfinite(difficulty) and difficulty > 0):
        raise ValueError(f"difficulty must be a positive number, got {difficulty}")


def _blob(layer: np.ndarray, center: tuple[float, float], axes: tuple[float, float], angle: float,
          sigma: float) -> None:
    """Max-composite a soft elliptical blob (peak about 1) into ``layer``, blurring only its window."""
    size = layer.shape[0]
    reach = max(axes) + 3 * sigma + 2
    x0, y0 = max(0, int(center[0] - reach)), max(0, int(center[1] - reach))
    x1, y1 = min(size, int(center[0] + reach) + 1), min(size, int(center[1] + reach) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    win = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.ellipse(win, (round((center[0] - x0) * 16), round((center[1] - y0) * 16)),
                (max(1, round(axes[0] * 16)), max(1, round(axes[1] * 16))), angle, 0, 360, 1.0, -1, cv2.LINE_8, 4)
    win = cv2.GaussianBlur(win, (0, 0), max(sigma, 0.5), borderType=cv2.BORDER_CONSTANT)
    np.maximum(layer[y0:y1, x0:x1], win, out=layer[y0:y1, x0:x1])


def _row_extent(lung: np.ndarray, frac: float) -> tuple[int, int, int]:
    """Row at ``frac`` of the lung's height and the lung's first/last column on it."""
    rows = np.flatnonzero(lung.any(axis=1))
    y = int(rows[0] + frac * (rows[-1] - rows[0]))
    cols = np.flatnonzero(lung[y])
    return y, int(cols[0]), int(cols[-1])


def _mottle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Patchy multiplicative texture around 1 so that opacities are not uniform discs."""
    coarse = rng.standard_normal((16, 16)).astype(np.float32)
    return np.clip(0.85 + 0.2 * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0.4, 1.3)


def _covid(rng: np.random.Generator, anat: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Ground-glass opacities: 1-3 per lung, against the lateral lung edge, lower half."""
    layer = np.zeros((size, size), np.float32)
    count = 0
    for side, lung in zip((-1, 1), anat.lungs, strict=True):
        for _ in range(int(rng.integers(1, 4))):
            y, x0, x1 = _row_extent(lung, rng.uniform(0.5, 0.88))
            r = rng.uniform(0.05, 0.085) * size
            edge = x0 if side < 0 else x1
            cx = edge - side * min(r * rng.uniform(0.3, 0.8), 0.45 * (x1 - x0))
            _blob(layer, (cx, y), (r, r * rng.uniform(0.8, 1.4)), rng.uniform(0, 180), 0.45 * r)
            count += 1
    layer /= max(float(layer.max()), 1e-6)
    return layer * _mottle(rng, size), layer > 0.3, count


def _viral(rng: np.random.Generator, anat: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Perihilar interstitial pattern: streaks radiating from each hilum, reticulation, haze."""
    lines = np.zeros((size, size), np.float32)
    haze = np.zeros((size, size), np.float32)
    thick = max(1, round(size * 0.007))
    for side, (hx, hy) in zip((-1, 1), anat.hila, strict=True):
        for _ in range(int(rng.integers(16, 24))):
            a, r = rng.uniform(-1.25, 1.35), rng.uniform(0.0, 0.025) * size
            x, y = hx + side * r * np.cos(a), hy + r * np.sin(a)
            for _seg in range(4):
                a += rng.normal(0, 0.2)
                step = rng.uniform(0.018, 0.035) * size
                nx, ny = x + side * step * np.cos(a), y + step * np.sin(a)
                cv2.line(lines, (round(x * 16), round(y * 16)), (round(nx * 16), round(ny * 16)),
                         rng.uniform(0.3, 0.6), thick, cv2.LINE_8, 4)
                x, y = nx, ny
        for _ in range(int(rng.integers(14, 22))):
            px = hx + side * rng.uniform(0.01, 0.11) * size
            py = hy + rng.uniform(-0.12, 0.14) * size
            a, h = rng.uniform(0, np.pi), rng.uniform(0.01, 0.02) * size
            cv2.line(lines, (round((px - h * np.cos(a)) * 16), round((py - h * np.sin(a)) * 16)),
                     (round((px + h * np.cos(a)) * 16), round((py + h * np.sin(a)) * 16)),
                     rng.uniform(0.25, 0.5), thick, cv2.LINE_8, 4)
        _blob(haze, (hx + side * 0.05 * size, hy + 0.01 * size), (0.06 * size, 0.1 * size), 0, 0.04 * size)
    lines = cv2.GaussianBlur(lines, (0, 0), max(0.6, 0.003 * size))
    layer = np.clip(lines + 0.5 * haze / max(float(haze.max()), 1e-6), 0, 1.2)
    region = cv2.GaussianBlur(lines, (0, 0), 0.015 * size)
    return layer, region > 0.1 * float(region.max()), 2


def _opacity(rng: np.random.Generator, anat: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One dense, unilateral, lobar-like consolidation in the lower or upper zone."""
    lung = anat.lungs[int(rng.integers(0, 2))]
    y, x0, x1 = _row_extent(lung, rng.uniform(0.6, 0.8) if rng.random() < 0.6 else rng.uniform(0.25, 0.4))
    axes = (rng.uniform(0.3, 0.42) * (x1 - x0), rng.uniform(0.09, 0.13) * size)
    layer = np.zeros((size, size), np.float32)
    _blob(layer, ((x0 + x1) / 2, y), axes, rng.uniform(-20, 20), 0.02 * size)
    layer /= max(float(layer.max()), 1e-6)
    return layer * _mottle(rng, size), layer > 0.3, 1


_LESIONS = {"COVID-19": _covid, "Viral Pneumonia": _viral, "Lung Opacity": _opacity}
LESION_CLASSES = tuple(_LESIONS)  # the classes drawn with lesions


def _draw_marker(rng: np.random.Generator, image: np.ndarray, lung_mask: np.ndarray) -> tuple[np.ndarray, tuple, str]:
    """Burn a bright text label on a dark block into a corner outside the lungs; return box mask, box, text."""
    size = image.shape[0]
    text = str(rng.choice(_MARKER_TEXTS))
    scale = size / 256 * rng.uniform(0.55, 0.9)
    thick = max(1, round(size / 256 * rng.uniform(1.5, 2.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad, margin = max(1, size // 128), round(size * rng.uniform(0.02, 0.05))
    forbidden = cv2.dilate(lung_mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, size // 64))
    best = None
    for corner in rng.permutation(4):
        x = margin if corner % 2 == 0 else size - margin - tw
        y = margin + th if corner < 2 else size - margin - base
        box = (max(0, x - pad), max(0, y - th - pad), min(size, x + tw + pad), min(size, y + base + pad))
        overlap = int(forbidden[box[1]:box[3], box[0]:box[2]].sum())
        if best is None or overlap < best[0]:
            best = (overlap, x, y, box)
        if overlap == 0:
            break
    _, x, y, box = best
    image[box[1]:box[3], box[0]:box[2]] = rng.integers(0, 40)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, int(rng.integers(225, 256)), thick,
                cv2.LINE_AA)
    mask = np.zeros_like(lung_mask)
    mask[box[1]:box[3], box[0]:box[2]] = True
    return mask, box, text


def make_phantom(rng: np.random.Generator, label: str, size: int = 256, difficulty: float = 1.0,
                 marker: bool = False, draw_lesions: bool = True) -> Phantom:
    """Draw one synthetic chest radiograph.

    The random draws for anatomy, lesions and acquisition come before the marker's, so the
    same generator state gives the same image with or without the marker.

    Args:
        rng: Random generator (its state advances).
        label: One of :data:`KNOWN_CLASSES`.
        size: Side in pixels (64 to 1024).
        difficulty: Lesion contrast divisor, > 0 (amplitude = base / difficulty).
        marker: Burn in a text marker (``L``, ``R``, ``PORT``...) in a corner outside the lungs.
        draw_lesions: False leaves the lesions out of the image but still draws them (same random
            draws) into ``lesion_mask``: the same generator state then gives the lesion-free twin of
            the image, for ablation checks.

    Returns:
        The :class:`Phantom`.

    Raises:
        ValueError: Unknown label, size out of range, or difficulty not positive.
    """
    _check_label(label)
    _check_size_difficulty(size, difficulty)
    params = sample_anatomy(rng)
    # patient positioning: scale, shift and tilt vary between films as much as anatomy does
    params.update(zoom=rng.uniform(0.88, 1.12), shift_x=rng.uniform(-0.07, 0.07), shift_y=rng.uniform(-0.06, 0.06))
    anat = render_anatomy(params, size, rng)
    lung = anat.lungs[0] | anat.lungs[1]
    density, lesion, n_lesions = anat.density, np.zeros_like(lung), 0
    if label in _LESIONS:
        layer, lesion, n_lesions = _LESIONS[label](rng, anat, size)
        lesion &= lung
        layer = layer if draw_lesions else np.zeros_like(layer)
        inner = np.clip(2 * cv2.GaussianBlur(lung.astype(np.float32), (0, 0), 0.008 * size) - 1, 0, 1)
        density = density + (_BASE_AMPLITUDE[label] / difficulty) * layer * inner

    rot = cv2.getRotationMatrix2D((size / 2, size / 2), params["rotation"], params["zoom"])
    rot[:, 2] += (params["shift_x"] * size, params["shift_y"] * size)
    density = cv2.warpAffine(density, rot, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    masks = cv2.warpAffine(lung.astype(np.uint8) + lesion.astype(np.uint8), rot, (size, size),
                           flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    acq = {"exposure": rng.uniform(0.92, 1.08), "offset": rng.uniform(-0.04, 0.04),
           "gamma": rng.uniform(0.8, 1.25), "blur": rng.uniform(0.3, 0.8), "noise": rng.uniform(0.008, 0.025),
           "heel": rng.uniform(-0.08, 0.08), "heel_angle": rng.uniform(0, 2 * np.pi)}
    # anode heel effect: exposure falls off smoothly across the film, in a random direction
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    heel = acq["heel"] * (np.cos(acq["heel_angle"]) * ramp[None, :] + np.sin(acq["heel_angle"]) * ramp[:, None])
    img = np.clip(density * (acq["exposure"] + heel) + acq["offset"], 0, 1) ** acq["gamma"]
    img = cv2.GaussianBlur(img, (0, 0), acq["blur"] * size / 256)
    img += acq["noise"] * rng.standard_normal(img.shape, dtype=np.float32)
    image = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)

    lung_mask, lesion_mask = masks >= 1, masks == 2
    marker_mask, box, text = np.zeros_like(lung_mask), None, None
    if marker:
        marker_mask, box, text = _draw_marker(rng, image, lung_mask)
    meta = {"label": label, "size": size, "difficulty": float(difficulty), "n_lesions": n_lesions,
            "marker": bool(marker), "marker_box": box, "marker_text": text, **params, **acq}
    return Phantom(image, lung_mask, lesion_mask, marker_mask, meta)


def image_rng(seed: int, label: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Per-image generators for (image, marker decision), independent of order and worker count.

    Args:
        seed: Dataset seed (non-negative int).
        label: Class name (its position in :data:`KNOWN_CLASSES` keys the stream).
        index: Image index within the class.

    Returns:
        Generator for :func:`make_phantom` and generator for the marker coin flip.
    """
    _check_label(label)
    ss = np.random.SeedSequence(seed, spawn_key=(KNOWN_CLASSES.index(label), index))
    img_ss, marker_ss = ss.spawn(2)
    return np.random.default_rng(img_ss), np.random.default_rng(marker_ss)


def marker_probability(label: str, strength: float) -> float:
    """Probability that an image of ``label`` carries the marker under the ``"marker"`` confounder.

    ``0.5 + 0.5 * strength`` for COVID-19 and ``0.5 - 0.5 * strength`` for every other class:
    at strength 1 the marker is on every COVID-19 image and on no other, at strength 0 it is on a
    random half of every class (independent of the label).

    Args:
        label: Class name.
        strength: Confounder strength in [0, 1].

    Returns:
        The probability.
    """
    return 0.5 + 0.5 * strength if label == "COVID-19" else 0.5 - 0.5 * strength


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(path.suffix or ".png", array)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic.write_bytes(path, png.tobytes())


def _render_job(job: tuple) -> dict:
    """Generate, write and describe one phantom (top level so that worker processes can run it)."""
    out, label, index, seed, size, difficulty, confounder, strength = job
    rng, marker_rng = image_rng(seed, label, index)
    marker = confounder == "marker" and bool(marker_rng.random() < marker_probability(label, strength))
    ph = make_phantom(rng, label, size, difficulty, marker)
    name = f"{_SLUG[label]}-{index:05d}.png"
    rel = {"path": f"{label}/{name}", "lung_mask": f"masks/lungs/{label}/{name}",
           "lesion_mask": f"masks/lesions/{label}/{name}",
           "marker_mask": f"masks/markers/{label}/{name}" if confounder else ""}
    _write_png(out / rel["path"], ph.image)
    _write_png(out / rel["lung_mask"], ph.lung_mask.astype(np.uint8) * 255)
    _write_png(out / rel["lesion_mask"], ph.lesion_mask.astype(np.uint8) * 255)
    if confounder:
        _write_png(out / rel["marker_mask"], ph.marker_mask.astype(np.uint8) * 255)
    box = ph.meta["marker_box"]
    return {**rel, "label": label, "patient_id": f"phantom-{seed}-{_SLUG[label]}-{index:05d}", "source": "phantom",
            "marker": int(marker), "difficulty": float(difficulty), "seed": seed,
            "marker_box": " ".join(map(str, box)) if box else ""}


def generate_dataset(out: Path, n_per_class: int = 100, size: int = 256, seed: int = 0, difficulty: float = 1.0,
                     classes: Sequence[str] = ("COVID-19", "Normal", "Viral Pneumonia"),
                     confounder: str | None = None, confounder_strength: float = 0.0,
                     workers: int = 1) -> pd.DataFrame:
    """Write a phantom dataset: images, lung/lesion(/marker) masks and ``manifest.csv``.

    Layout under ``out``: ``<Class>/<name>.png``, ``masks/lungs/<Class>/<name>.png``,
    ``masks/lesions/<Class>/<name>.png`` (all zero for Normal) and, with a confounder,
    ``masks/markers/<Class>/<name>.png`` (the marker's bounding box, all zero without one).
    Masks are 0/255 PNGs. Each image's randomness comes from ``SeedSequence(seed,
    spawn_key=(class position in KNOWN_CLASSES, index))``, so the same seed gives byte-identical
    files whatever ``workers`` and ``classes`` order.

    Confounder ``"marker"``: an image gets a burned-in text marker with probability
    ``0.5 + 0.5 * p`` if it is COVID-19 and ``0.5 - 0.5 * p`` otherwise (``p`` =
    ``confounder_strength``): p = 1 makes the marker a perfect COVID-19 indicator, p = 0 puts it
    on a random half of every class. The marker never changes the rest of the image.

    Args:
        out: Output folder (created; existing files of the same names are overwritten).
        n_per_class: Images per class.
        size: Image side in pixels.
        seed: Dataset seed (non-negative int).
        difficulty: Lesion contrast divisor (see the module docstring).
        classes: Class names, each one of :data:`KNOWN_CLASSES`.
        confounder: ``None`` or ``"marker"``.
        confounder_strength: p in [0, 1].
        workers: Processes to use (1 = in this process).

    Returns:
        The manifest as a DataFrame with columns :data:`MANIFEST_COLUMNS`, paths relative to ``out``
        (``marker`` is 0/1; ``marker_box`` is ``"x0 y0 x1 y1"``, end-exclusive pixels, or empty).

    Raises:
        ValueError: Unknown class or confounder, bad strength, count, seed or worker number.
    """
    for label in classes:
        _check_label(label)
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate class names in {list(classes)}")
    if confounder not in (None, "marker"):
        raise ValueError(f"unknown confounder {confounder!r}; use None or 'marker'")
    if not 0.0 <= confounder_strength <= 1.0:
        raise ValueError(f"confounder_strength must be in [0, 1], got {confounder_strength}")
    if n_per_class < 0 or seed < 0 or workers < 1:
        raise ValueError(f"need n_per_class >= 0, seed >= 0 and workers >= 1 (got {n_per_class}, {seed}, {workers})")
    _check_size_difficulty(size, difficulty)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, label, i, int(seed), size, difficulty, confounder, confounder_strength)
            for label in classes for i in range(n_per_class)]
    if workers == 1 or len(jobs) < 2:
        rows = [_render_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(_render_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    atomic.write_csv(manifest, out / "manifest.csv")
    return manifest
