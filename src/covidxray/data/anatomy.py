"""Procedural chest anatomy for the phantom generator: geometry and X-ray density.

Everything is drawn with OpenCV into float32 *density* maps (0 = air, about 1 = bone over
soft tissue) at the target size; :mod:`covidxray.data.phantoms` adds lesions and turns density
into a radiograph. Geometry is expressed in fractions of the image side, so the same
parameters give the same anatomy at every size. Image left is the patient's right (PA view):
the heart bulges into the image-right lung and the image-left diaphragm dome sits higher.
The anatomy never depends on the class label.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SIDES = (-1, 1)  # image-left lung (patient right), image-right lung (patient left)


@dataclass
class Anatomy:
    """Rendered anatomy of one phantom (unrotated frame).

    Attributes:
        density: Float32 (H, W) density map.
        lungs: Boolean masks of the image-left and image-right lung fields.
        hila: Pixel (x, y) of the image-left and image-right hilum.
        params: The sampled anatomy parameters (fractions of the image side).
    """

    density: np.ndarray
    lungs: tuple[np.ndarray, np.ndarray]
    hila: tuple[tuple[float, float], tuple[float, float]]
    params: dict


def sample_anatomy(rng: np.random.Generator) -> dict:
    """Draw the per-image anatomy parameters (independent of the class label).

    Args:
        rng: Random generator.

    Returns:
        Dict of floats in fractions of the image side (``rotation`` in degrees).
    """
    s = rng.uniform(0.92, 1.12)
    top = rng.uniform(0.11, 0.16)
    return {
        "cx": 0.5 + float(np.clip(rng.normal(0, 0.012), -0.03, 0.03)),
        "scale": s,
        "half_width": 0.375 * s * rng.uniform(0.96, 1.04),
        "mediastinum": rng.uniform(0.048, 0.062) * s,
        "apex_y": top,
        "cp_y": top + rng.uniform(0.62, 0.70) * s,
        "dome_h": rng.uniform(0.06, 0.10),
        "right_lift": rng.uniform(0.015, 0.04),
        "heart": rng.uniform(0.85, 1.15),
        "heart_dx": rng.uniform(0.06, 0.085),
        "rotation": rng.uniform(-4.0, 4.0),
        "rib_phase": rng.uniform(-0.3, 0.3),
    }


def _pts(x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Normalized coordinates -> fixed-point int32 points for cv2 drawing with ``shift``."""
    return np.round(np.stack([x, y], -1) * (size * (1 << _SHIFT))).astype(np.int32)


def _blur(img: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Gaussian blur with ``sigma`` in fractions of the image side (wide ones on a downsampled copy)."""
    px = max(sigma * size, 0.3)
    if px < 4:
        return cv2.GaussianBlur(img, (0, 0), px)
    f = int(px // 2)
    small = cv2.resize(img, (size // f, size // f), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), px / f)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def _diaphragm(p: dict, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Diaphragm dome of one side, from the costophrenic angle to the midline (normalized x, y)."""
    w, m = p["half_width"], p["mediastinum"]
    cp = p["cp_y"] - (p["right_lift"] if side < 0 else 0.0)
    s = np.linspace(0, 1, 24)[1:]
    y = cp - p["dome_h"] * np.sin(np.pi * 0.8 * s) ** 0.6
    return p["cx"] + side * (w + (m - w) * s), y


def _lung_polygon(p: dict, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Outline of one lung field: lateral edge, diaphragm dome, medial border, apex."""
    cx, w, m = p["cx"], p["half_width"], p["mediastinum"]
    cp = p["cp_y"] - (p["right_lift"] if side < 0 else 0.0)
    top = p["apex_y"] + (0.0 if side < 0 else 0.008)
    ac = m + 0.42 * (w - m)  # apex offset from the midline
    th = np.linspace(0, np.pi / 2, 28)
    lat_x, lat_y = cx + side * (ac + (w - ac) * np.sin(th) ** 0.85), cp - (cp - top) * np.cos(th)
    dia_x, dia_y = _diaphragm(p, side)
    th2 = np.linspace(np.pi / 2, 0, 16)
    med_x, med_y = cx + side * (ac - (ac - m) * np.sin(th2)), top + 0.09 * (1 - np.cos(th2))
    return np.concatenate([lat_x, dia_x, med_x]), np.concatenate([lat_y, dia_y, med_y])


def _abdomen(p: dict, size: int) -> np.ndarray:
    """Everything below the diaphragm domes (liver, spleen, stomach) as a filled layer."""
    layer = np.zeros((size, size), np.float32)
    (lx, ly), (rx, ry) = _diaphragm(p, -1), _diaphragm(p, 1)
    x = np.concatenate([[lx[0] - 0.2], lx, rx[::-1], [rx[0] + 0.2, rx[0] + 0.2, lx[0] - 0.2]])
    y = np.concatenate([[ly[0] + 0.02], ly, ry[::-1], [ry[0] + 0.02, 1.1, 1.1]])
    cv2.fillPoly(layer, [_pts(x, y, size)], 1.0, cv2.LINE_8, _SHIFT)
    return layer


def _heart(p: dict, size: int) -> np.ndarray:
    """Heart silhouette and aortic knob as one filled layer (1 inside)."""
    layer = np.zeros((size, size), np.float32)
    hs, cx, k = p["heart"], p["cx"], size * (1 << _SHIFT)
    bottom = p["cp_y"] - 0.5 * p["dome_h"]
    center = (cx + p["heart_dx"] * hs, bottom - 0.055)
    axes = (0.19 * hs * p["scale"], 0.14 * hs * p["scale"])
    cv2.ellipse(layer, (round(center[0] * k), round(center[1] * k)), (round(axes[0] * k), round(axes[1] * k)),
                15, 0, 360, 1.0, -1, cv2.LINE_8, _SHIFT)
    knob = (cx + p["mediastinum"] - 0.008, p["apex_y"] + 0.17)
    cv2.ellipse(layer, (round(knob[0] * k), round(knob[1] * k)), (round(0.03 * k), round(0.036 * k)), 0, 0, 360,
                1.0, -1, cv2.LINE_8, _SHIFT)
    return layer


def _ribs(p: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior ribs (arched bands from the spine) and faint anterior ribs, with bright cortex."""
    layer = np.zeros((size, size), np.float32)
    cx, w = p["cx"], p["half_width"]
    span = p["cp_y"] - p["apex_y"]
    step = span / 8.3
    width = max(2, round(0.03 * size * p["scale"]))
    v, tail, u = np.linspace(0, 1, 18), np.linspace(0, 1, 7)[1:], np.linspace(0, 1, 12)
    i = np.arange(9)[:, None]
    for side in _SIDES:
        y0 = p["apex_y"] - 0.02 + (i + p["rib_phase"] + rng.normal(0, 0.06, (9, 1))) * step
        arch = y0 - 0.08 * (1 - ((v - 0.5) / 0.5) ** 2)
        off = np.concatenate([(w - 0.03) * v, w - 0.03 + 0.025 * np.sin(tail * np.pi / 2)])
        px = np.broadcast_to(cx + side * (0.035 + off), (9, len(off)))
        py = np.concatenate([arch, arch[:, -1:] + (0.07 + 0.004 * i) * tail], axis=1)
        front = _pts(np.broadcast_to(cx + side * (w + 0.01 - 0.65 * w * u), (9, len(u))),
                     py[:, -1:] + 0.13 * u ** 0.8, size)
        cv2.polylines(layer, list(front), False, 0.4, max(1, width - 1), cv2.LINE_8, _SHIFT)
        back = list(_pts(px, py, size))
        cv2.polylines(layer, back, False, 1.0, width, cv2.LINE_8, _SHIFT)
        cv2.polylines(layer, back, False, 0.6, max(1, width // 2), cv2.LINE_8, _SHIFT)
    return layer


def _clavicles(p: dict, size: int) -> np.ndarray:
    """Clavicles: S-shaped bands from the sternal notch out to the shoulders."""
    layer = np.zeros((size, size), np.float32)
    u = np.linspace(0, 1, 16)
    width = max(2, round(0.03 * size * p["scale"]))
    for side in _SIDES:
        x = p["cx"] + side * (0.03 + (p["half_width"] + 0.07) * u)
        y = p["apex_y"] + 0.07 - 0.07 * u + 0.015 * np.sin(u * 2 * np.pi)
        pts = _pts(x, y, size)
        cv2.polylines(layer, [pts], False, 1.0, width, cv2.LINE_8, _SHIFT)
        cv2.polylines(layer, [pts], False, 0.6, max(1, width // 2), cv2.LINE_8, _SHIFT)
    return layer


def _spine(p: dict, size: int) -> np.ndarray:
    """Vertebral column: bright band with darker disc spaces, pedicles and spinous processes."""
    layer = np.zeros((size, size), np.float32)
    cx, s = p["cx"], p["scale"]
    k = size * (1 << _SHIFT)
    half = 0.032 * s
    cv2.rectangle(layer, (round((cx - half) * k), 0), (round((cx + half) * k), size * (1 << _SHIFT)), 0.8, -1,
                  cv2.LINE_8, _SHIFT)
    step = 0.043 * s
    disc = max(1, round(0.007 * size))
    for y in np.arange(p["apex_y"] - 0.1, 1.05, step):
        yy = round(y * k)
        cv2.line(layer, (round((cx - half) * k), yy), (round((cx + half) * k), yy), 0.55, disc, cv2.LINE_8, _SHIFT)
        for side in _SIDES:
            c = (round((cx + side * 0.021 * s) * k), round((y + step / 2) * k))
            cv2.ellipse(layer, c, (round(0.007 * s * k), round(0.011 * s * k)), 0, 0, 360, 1.15,
                        max(1, round(0.004 * size)), cv2.LINE_8, _SHIFT)
        c = (round(cx * k), round((y + step * 0.6) * k))
        cv2.ellipse(layer, c, (round(0.005 * s * k), round(0.012 * s * k)), 0, 0, 360, 1.1, -1, cv2.LINE_8, _SHIFT)
    return layer


def _body(p: dict, size: int) -> np.ndarray:
    """Soft-tissue envelope (neck, shoulders, chest wall) with thickness falling off laterally."""
    layer = np.zeros((size, size), np.float32)
    s, cx = p["scale"], p["cx"]
    ox = np.array([0.09, 0.10, 0.20, 0.35, 0.50, 0.58, 0.53, 0.51, 0.52]) * s
    oy = np.array([-0.05, 0.02, 0.05, 0.07, 0.10, 0.16, 0.40, 0.75, 1.1])
    oy[1:-1] = p["apex_y"] - 0.13 + oy[1:-1] * (0.9 + 0.1 * s)
    x = np.concatenate([cx - ox, (cx + ox)[::-1]])
    y = np.concatenate([oy, oy[::-1]])
    cv2.fillPoly(layer, [_pts(x, y, size)], 1.0, cv2.LINE_8, _SHIFT)
    xs = (np.arange(size, dtype=np.float32) + 0.5) / size
    thick = np.clip(1 - ((xs - cx) / (0.53 * s)) ** 2, 0, 1) ** 0.6
    return _blur(layer, 0.012, size) * (0.46 + 0.30 * thick)[None, :]


def _walk(x0: np.ndarray, y0: np.ndarray, angle: np.ndarray, side: int, steps: int, step: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized wiggly paths: (n, steps + 1) x and y arrays starting at (x0, y0)."""
    a = angle[:, None] + np.cumsum(rng.normal(0, 0.15, (len(angle), steps)), axis=1)
    x = np.concatenate([x0[:, None], x0[:, None] + side * step * np.cumsum(np.cos(a), axis=1)], axis=1)
    y = np.concatenate([y0[:, None], y0[:, None] + step * np.cumsum(np.sin(a), axis=1)], axis=1)
    return x, y


def _markings(p: dict, size: int, rng: np.random.Generator, hila: list) -> np.ndarray:
    """Normal bronchovascular markings: tapering, branching vessels fanning out from the hila."""
    layer = np.zeros((size, size), np.float32)
    step = 0.022
    for side, (hx, hy) in zip(_SIDES, hila, strict=True):
        n = 9
        angle = rng.uniform(-1.2, 1.3, n)
        x, y = _walk(np.full(n, hx / size), np.full(n, hy / size), angle, side, 10, step, rng)
        pick = rng.integers(2, 8, 2 * n)
        bx, by = _walk(x[np.arange(2 * n) % n, pick], y[np.arange(2 * n) % n, pick],
                       angle[np.arange(2 * n) % n] + rng.choice([-0.7, 0.7], 2 * n), side, 5, step, rng)
        for (px, py), (a, b), level in (((x, y), (0, 4), 0), ((x, y), (3, 8), 1), ((x, y), (7, 11), 2),
                                        ((bx, by), (0, 6), 2)):
            pts = list(_pts(px[:, a:b], py[:, a:b], size))
            thick = max(1, round(size * 0.009 * (1 - level / 3)))
            cv2.polylines(layer, pts, False, (1.0, 0.55, 0.3)[level], thick, cv2.LINE_8, _SHIFT)
    return layer


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field from an upsampled coarse grid."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def render_anatomy(p: dict, size: int, rng: np.random.Generator) -> Anatomy:
    """Render body, lungs, mediastinum, heart, spine, ribs, clavicles and lung markings.

    Args:
        p: Parameters from :func:`sample_anatomy`.
        size: Image side in pixels.
        rng: Random generator for the markings and textures.

    Returns:
        The rendered :class:`Anatomy` (unrotated).
    """
    heart = _heart(p, size)
    lungs = []
    for side in _SIDES:
        m = np.zeros((size, size), np.uint8)
        cv2.fillPoly(m, [_pts(*_lung_polygon(p, side), size)], 1, cv2.LINE_8, _SHIFT)
        lungs.append((m > 0) & (heart < 0.5))
    lung = (lungs[0] | lungs[1]).astype(np.float32)
    lung_wide = _blur(lung, 0.03, size)
    lung_soft = _blur(lung, 0.005, size) * (0.7 + 0.3 * lung_wide)
    cx, cp = p["cx"], p["cp_y"]
    hila = [((cx + side * (p["mediastinum"] + 0.035)) * size, (p["apex_y"] + 0.26 * p["scale"]) * size)
            for side in _SIDES]

    d = _body(p, size)
    dense = np.zeros((size, size), np.float32)
    mw = p["mediastinum"] + 0.01
    cv2.rectangle(dense, _pts(np.array([cx - mw]), np.array([0.0]), size)[0],
                  _pts(np.array([cx + mw]), np.array([cp]), size)[0], 0.12, -1, cv2.LINE_8, _SHIFT)
    abdomen = _blur(_abdomen(p, size), 0.01, size)
    d += np.maximum(_blur(np.maximum(dense, 0.12 * heart), 0.01, size), 0.13 * abdomen)
    central = 0.035 * _spine(p, size)
    carina = p["apex_y"] + 0.19 * p["scale"]
    cv2.line(central, *_pts(np.array([cx, cx]), np.array([-0.05, carina]), size), -0.06,
             max(2, round(0.028 * size)), cv2.LINE_8, _SHIFT)
    for hx, hy in hila:
        cv2.line(central, *_pts(np.array([cx, hx / size]), np.array([carina, hy / size]), size), -0.04,
                 max(1, round(0.014 * size)), cv2.LINE_8, _SHIFT)
    d += _blur(central, 0.004, size)
    bones = _blur(0.11 * _ribs(p, size, rng) + 0.2 * _clavicles(p, size), 0.003, size)
    d += bones * (0.6 + 0.4 * lung_wide) * (1 - 0.75 * abdomen)
    texture = 0.025 * _smooth_noise(rng, size, 10) + 0.018 * _smooth_noise(rng, size, 48)
    yy = (np.arange(size, dtype=np.float32)[:, None] / size - p["apex_y"]) / (cp - p["apex_y"])
    hilar = np.zeros((size, size), np.float32)
    for hx, hy in hila:
        cv2.circle(hilar, (round(hx), round(hy)), max(1, round(0.025 * size)), 0.07, -1)
    vessels = _blur(0.13 * _markings(p, size, rng, hila), 0.003, size) + _blur(hilar, 0.015, size)
    xs = np.abs(np.arange(size, dtype=np.float32)[None, :] / size - cx)
    medial = np.clip(1 - (xs - p["mediastinum"]) / (p["half_width"] - p["mediastinum"]), 0, 1) ** 2
    d += lung_soft * (vessels + texture + 0.08 * medial - 0.43 - 0.06 * np.clip(yy, 0, 1))
    return Anatomy(d, (lungs[0], lungs[1]), (hila[0], hila[1]), p)
