"""Acquisition augmentation (training only): vary how an image was produced, not what it shows.

Each class of a public COVID-19 collection tends to come from its own hospitals, scanners and
post-processing, and a CNN learns those traces (DeGrave et al. 2021, Nat. Mach. Intell.;
Maguolo & Nanni 2021, "A critic evaluation of methods for COVID-19 automatic detection from X-ray
images", Inf. Fusion). Randomising them in training takes their predictive value away. Each step
runs on an image with its own probability (``augment.<step>_p``) and draws its strength uniformly
from a range (``augment.<step>``), in this order:

==========  ==========================================================  ========================
step        what                                                        range key (default)
==========  ==========================================================  ========================
gamma       ``255 (x / 255) ** g``, ``log g`` uniform                   ``gamma`` [0.7, 1.5]
blur        Gaussian blur, sigma in pixels at model size                ``blur_sigma`` [0.5, 1.5]
sharpen     unsharp mask ``x + a (x - blur_1px(x))``                    ``sharpen_amount`` [0.5, 1.5]
resample    down to a fraction of the side (area), back up (linear)     ``resample_scale`` [0.4, 0.8]
border      black or white frame, each side with p 1/2 (>= 1 side)      ``border_width`` [0.02, 0.1]
text        burned-in marker (L, R, AP, PA, PORTABLE, ...) near an edge ``text_scale`` [0.25, 0.6]
noise       additive Gaussian noise, std in gray levels                 ``noise_std`` [2, 8]
jpeg        JPEG re-encoding (OpenCV), quality                          ``jpeg_quality`` [20, 90]
==========  ==========================================================  ========================

All steps work on ``(S, S)`` uint8 with OpenCV inside the data pipeline's one NumPy hop per batch
(:func:`covidxray.data.pipeline.make_dataset`), drawing from the generator the augmenter seeds with the
batch's image indices, so a batch is augmented the same way eagerly and in ``tf.data``. Every
probability is 0 by default: nothing changes unless a config turns a step on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

STEPS = ("gamma", "blur", "sharpen", "resample", "border", "text", "noise", "jpeg")
#: Range key of each step and the bounds its range must lie in.
RANGE_KEYS = {"gamma": ("gamma", 0.1, 10.0), "blur": ("blur_sigma", 0.0, 10.0),
              "sharpen": ("sharpen_amount", 0.0, 5.0), "resample": ("resample_scale", 0.05, 1.0),
              "border": ("border_width", 0.0, 0.3), "text": ("text_scale", 0.05, 3.0),
              "noise": ("noise_std", 0.0, 64.0), "jpeg": ("jpeg_quality", 1, 100)}
MARKERS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT", "AP SUPINE")


@dataclass(frozen=True)
class Acquisition:
    """Probabilities (``p``, step -> [0, 1]) and ranges (``ranges``, step -> (lo, hi)) of the steps."""

    p: tuple[tuple[str, float], ...] = ()
    ranges: tuple[tuple[str, tuple[float, float]], ...] = ()

    @property
    def active(self) -> bool:
        return any(v > 0 for _, v in self.p)

    def to_dict(self) -> dict:
        """``{step: {"p": p, "range": [lo, hi]}}`` of the steps that are on (for ``run.json``)."""
        r = dict(self.ranges)
        return {k: {"p": v, "range": list(r[k])} for k, v in self.p if v > 0}

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a ``(N, S, S)`` uint8 batch (a new array; the input is not changed)."""
        out = np.array(images, np.uint8, copy=True)
        p, r = dict(self.p), dict(self.ranges)
        for i in range(len(out)):
            img = out[i]
            for step in STEPS:
                # draw for every step so turning one on does not change the draws of the others
                on, u, extra = rng.random() < p.get(step, 0.0), rng.random(), rng.random(6)
                if on:
                    lo, hi = r[step]
                    if step == "gamma":  # log-uniform: as likely to darken by g as to brighten by 1/g
                        value = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)
                    else:
                        value = lo + (hi - lo) * u
                    img = APPLY[step](img, value, extra)
            out[i] = img
        return out


def gamma(img: np.ndarray, g: float, _extra=None) -> np.ndarray:
    """``255 (x / 255) ** g`` through a lookup table."""
    lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** g), 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def blur(img: np.ndarray, sigma: float, _extra=None) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), max(sigma, 1e-3)) if sigma > 0 else img


def sharpen(img: np.ndarray, amount: float, _extra=None) -> np.ndarray:
    soft = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32)
    return np.clip(np.rint(img + amount * (img - soft)), 0, 255).astype(np.uint8)


def resample(img: np.ndarray, scale: float, _extra=None) -> np.ndarray:
    h, w = img.shape
    small = cv2.resize(img, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def border(img: np.ndarray, width: float, extra: np.ndarray) -> np.ndarray:
    """A black or white frame: each side with probability 1/2 (at least one), ``width`` x the side."""
    out, n = img.copy(), max(1, round(width * img.shape[0]))
    sides = extra[:4] < 0.5
    sides[int(extra[5] * 4) % 4] = True
    value = 255 if extra[4] < 0.5 else 0
    if sides[0]:
        out[:n] = value
    if sides[1]:
        out[-n:] = value
    if sides[2]:
        out[:, :n] = value
    if sides[3]:
        out[:, -n:] = value
    return out


def text(img: np.ndarray, scale: float, extra: np.ndarray) -> np.ndarray:
    """A burned-in marker word in the top or bottom fifth, near-white, font scale ``scale`` per 100 px."""
    out, h = img.copy(), img.shape[0]
    word = MARKERS[int(extra[0] * len(MARKERS)) % len(MARKERS)]
    fs = scale * h / 100.0
    thick = max(1, round(fs * 2))
    (tw, th), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, fs, thick)
    x = int(extra[1] * max(1, img.shape[1] - tw))
    band = max(1, h // 5 - th)
    y = th + int(extra[2] * band) if extra[3] < 0.5 else h - 2 - int(extra[2] * band)
    cv2.putText(out, word, (x, y), cv2.FONT_HERSHEY_SIMPLEX, fs, int(200 + 55 * extra[4]), thick, cv2.LINE_AA)
    return out


def noise(img: np.ndarray, std: float, extra: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(int(extra[0] * 2**31))
    return np.clip(np.rint(img + rng.normal(0.0, std, img.shape)), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: float, _extra=None) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(round(quality))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else img


APPLY = {"gamma": gamma, "blur": blur, "sharpen": sharpen, "resample": resample, "border": border, "text": text,
         "noise": noise, "jpeg": jpeg}


def check(aug: Mapping, steps=STEPS) -> list[str]:
    """Problems with the acquisition keys of an ``augment`` section (probabilities, range order, bounds)."""
    problems = []
    for s in steps:
        p, (key, low, high) = aug.get(f"{s}_p", 0.0), RANGE_KEYS[s]
        if not 0.0 <= p <= 1.0:
            problems.append(f"'augment.{s}_p' must be in [0, 1], got {p!r}")
        r = aug.get(key, [low, high])
        if not isinstance(r, list | tuple) or len(r) != 2 or not all(isinstance(v, int | float) for v in r) or not low <= r[0] <= r[1] <= high:
            problems.append(f"'augment.{key}' must be [lo, hi] with {low} <= lo <= hi <= {high}, got {r!r}")
    return problems


def make_acquisition(aug: Mapping) -> Acquisition:
    """The acquisition steps of the ``augment`` config section (``<step>_p`` and the range keys).

    Args:
        aug: The section: ``gamma_p``, ``gamma``, ``blur_p``, ``blur_sigma``, ... (see the module table).

    Returns:
        An :class:`Acquisition` (``active`` is False when every probability is 0).

    Raises:
        ConfigError: A probability outside [0, 1] or a range out of order or bounds.
    """
    from covidxray.errors import ConfigError

    p = {"gamma": aug["gamma_p"], "blur": aug["blur_p"], "sharpen": aug["sharpen_p"], "resample": aug["resample_p"],
         "border": aug["border_p"], "text": aug["text_p"], "noise": aug["noise_p"], "jpeg": aug["jpeg_p"]}
    r = {"gamma": aug["gamma"], "blur": aug["blur_sigma"], "sharpen": aug["sharpen_amount"],
         "resample": aug["resample_scale"], "border": aug["border_width"], "text": aug["text_scale"],
         "noise": aug["noise_std"], "jpeg": aug["jpeg_quality"]}
    on = [s for s in STEPS if p[s]]
    if problems := check(aug, on):
        raise ConfigError(problems[0])
    return Acquisition(tuple((s, float(p[s])) for s in on), tuple((s, (float(r[s][0]), float(r[s][1]))) for s in on))
