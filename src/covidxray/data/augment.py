"""Training augmentation: one random affine warp, then Keras' contrast and brightness, on uint8 batches.

Geometry. Rotation, translation, zoom and shear (and the optional horizontal flip) are composed
into one matrix per image and the image is resampled once. Keras' geometric layers
(RandomRotation, RandomTranslation, RandomZoom, RandomShear) each resample the image, so chaining
four of them low-pass filters every training image while validation and test images stay sharp
(notebook 02: at 128 px one resample keeps ~70% of the fine detail, the chain ~45%).

Intensity. Contrast and brightness follow Keras' ``RandomContrast`` and ``RandomBrightness``
exactly: ``clip((x - mean) * c + mean)`` with ``c ~ U[1 - f, 1 + f]`` and the mean over the image,
then ``clip(x + d * 255)`` with ``d ~ U[-f, f]`` (the tests compare against those layers'
``transform_images`` with the same factors).

Speed. The warp runs with OpenCV on uint8 (``cv2.warpAffine``, bilinear, the same inverse map and
pixel-centre convention as ``keras.ops.image.affine_transform``; the tests compare the two), and
both intensity steps collapse into one 256-entry lookup table per image that also converts to
float32 (``cv2.LUT``). Measured at 224 px (``benchmarks/train_throughput.py``): 0.11 ms per
image on one core, against 0.29 ms for the same transforms through Keras' ops on float32 using
both cores. The data pipeline calls the augmenter inside its one NumPy hop per batch.

Randomness is a pure function of ``(seed, key)``: the pipeline passes the batch's image indices as
the key, so a batch is augmented the same way eagerly and inside ``tf.data``, whatever the thread
order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from covidxray.data.acquisition import Acquisition, make_acquisition

GEOMETRIC = ("rotation", "translation", "zoom", "shear")


@dataclass(frozen=True)
class Augmenter:
    """Random affine warp + contrast + brightness for ``(N, S, S)`` uint8 batches.

    Args:
        rotation: Largest rotation in degrees (uniform in ``[-rotation, rotation]``).
        translation: Largest shift as a fraction of the image size, per axis.
        zoom: Largest relative zoom in or out (scale uniform in ``[1 - zoom, 1 + zoom]``).
        shear: Largest shear factor, per axis.
        contrast: Keras ``RandomContrast`` factor (0 = off).
        brightness: Keras ``RandomBrightness`` factor, a fraction of 255 (0 = off).
        horizontal_flip: Mirror half of the images (off by default: anatomy is not symmetric).
        seed: Base seed.
        fill_value: Value of pixels that come from outside the image (0 = black film border).
    """

    rotation: float = 0.0
    translation: float = 0.0
    zoom: float = 0.0
    shear: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0
    horizontal_flip: bool = False
    seed: int = 0
    fill_value: int = 0
    acquisition: Acquisition | None = None

    @property
    def geometric(self) -> bool:
        return bool(self.horizontal_flip or any(getattr(self, k) for k in GEOMETRIC))

    @property
    def active(self) -> bool:
        """Whether the augmenter changes images at all."""
        return bool(self.geometric or self.contrast or self.brightness or self.acquisition and self.acquisition.active)

    def transforms(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        """``(n, 2, 3)`` inverse maps (output pixel -> input pixel), as ``cv2.WARP_INVERSE_MAP`` takes.

        The first six numbers of ``keras.ops.image.affine_transform``'s 8-vector, same convention.
        """
        def u(limit):
            return rng.uniform(-limit, limit, n)

        angle, scale = u(math.radians(self.rotation)), 1.0 + u(self.zoom)
        sx, sy = u(self.shear), u(self.shear)
        tx, ty = u(self.translation) * width, u(self.translation) * height
        cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
        # inverse of (rotate . shear . scale): input = A @ (output - centre - t) + centre
        a0, a1 = cos - sin * sy, -sin + cos * sx
        b0, b1 = sin + cos * sy, cos + sin * sx
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        if self.horizontal_flip:  # mirror the output about the centre column: x -> 2 cx - x
            flip = rng.random(n) < 0.5
            a0, b0 = np.where(flip, -a0, a0), np.where(flip, -b0, b0)
            tx = np.where(flip, -tx, tx)
        a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
        b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
        return np.stack([a0, a1, a2, b0, b1, b2], axis=1).reshape(n, 2, 3)

    def factors(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-image contrast factors and brightness deltas (in gray levels), Keras' distributions."""
        c = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast, n) if self.contrast else np.ones(n)
        d = rng.uniform(-self.brightness, self.brightness, n) * 255.0 if self.brightness else np.zeros(n)
        return c, d

    def warp_masks(self, masks: np.ndarray, key: Sequence[int] = ()) -> np.ndarray:
        """The geometric warp that :meth:`__call__` applies to images with this ``key``, on masks (nearest)."""
        m = np.asarray(masks).astype(np.uint8)
        if not self.geometric:
            return m > 0
        n, h, w = m.shape
        mats = self.transforms(np.random.default_rng([int(self.seed), *map(int, key)]), n, h, w)
        return np.stack([cv2.warpAffine(m[i], mats[i], (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0) for i in range(n)]) > 0

    def __call__(self, images: np.ndarray, key: Sequence[int] = ()) -> np.ndarray:
        """Augment a batch.

        Args:
            images: ``(N, S, S)`` uint8 (float input is rounded and clipped to uint8 first).
            key: Integers that, with the seed, fix the random draw (the pipeline passes image indices).

        Returns:
            ``(N, S, S)`` float32 in [0, 255].
        """
        x = np.asarray(images)
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if x.ndim != 3:
            raise ValueError(f"augment takes (N, S, S) images, got shape {x.shape}")
        n, h, w = x.shape
        if self.acquisition is not None and self.acquisition.active:  # its own stream: the rest draws as before
            x = self.acquisition(x, np.random.default_rng([int(self.seed), 1, *map(int, key)]))
        rng = np.random.default_rng([int(self.seed), *map(int, key)])
        mats = self.transforms(rng, n, h, w) if self.geometric else None
        c, d = self.factors(rng, n)
        out = np.empty((n, h, w), np.float32)
        levels = np.arange(256, dtype=np.float32)
        for i in range(n):
            img = x[i]
            if mats is not None:
                img = cv2.warpAffine(img, mats[i], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=self.fill_value)
            lut = levels
            if self.contrast:
                mean = np.float32(cv2.mean(img)[0])
                lut = np.clip((lut - mean) * np.float32(c[i]) + mean, 0, 255)
            if self.brightness:
                lut = np.clip(lut + np.float32(d[i]), 0, 255)
            out[i] = cv2.LUT(img, lut.astype(np.float32))
        return out


def make_augmenter(aug: Mapping, seed: int) -> Augmenter:
    """Training augmentation from the ``augment`` config section.

    Args:
        aug: ``rotation`` (degrees), ``translation``, ``zoom``, ``shear``, ``contrast``, ``brightness``
            (fractions), ``horizontal_flip`` and the acquisition steps (:mod:`covidxray.data.acquisition`,
            applied first, on uint8).
        seed: Base seed.

    Returns:
        An :class:`Augmenter` (``active`` is False when every factor is 0).
    """
    return Augmenter(float(aug["rotation"]), float(aug["translation"]), float(aug["zoom"]), float(aug["shear"]),
                     float(aug["contrast"]), float(aug["brightness"]), bool(aug["horizontal_flip"]), int(seed),
                     acquisition=make_acquisition(aug))
