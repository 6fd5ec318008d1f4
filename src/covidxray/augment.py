"""Training augmentation: one random affine warp, then Keras' contrast and brightness layers.

Keras' geometric layers (RandomRotation, RandomTranslation, RandomZoom, RandomShear) each resample
the image, so chaining four of them low-pass filters every training image while validation and
test images stay sharp (measured in notebook 02: at 128 px one resample keeps ~70% of the fine
detail, the chain ~45%). :class:`RandomAffine` composes rotation, translation, zoom and shear into
one matrix per image and resamples once, with the same op the Keras layers use
(``keras.ops.image.affine_transform``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="covidxray")
class RandomAffine(keras.layers.Layer):
    """Random rotation, translation, zoom and shear about the image centre, in one resample.

    Args:
        rotation: Largest rotation in degrees (uniform in ``[-rotation, rotation]``).
        translation: Largest shift as a fraction of the image size, per axis.
        zoom: Largest relative zoom in or out (scale uniform in ``[1 - zoom, 1 + zoom]``).
        shear: Largest shear factor, per axis.
        fill_value: Value of pixels that come from outside the image (0 = black film border).
        seed: Seed of the layer's random generator.
    """

    def __init__(self, rotation=0.0, translation=0.0, zoom=0.0, shear=0.0, fill_value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.translation, self.zoom, self.shear = rotation, translation, zoom, shear
        self.fill_value, self.seed = fill_value, seed
        self.generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, limit):
        return keras.random.uniform((batch,), -limit, limit, seed=self.generator)

    def transforms(self, batch: int, height: int, width: int):
        """``(batch, 8)`` inverse maps (output pixel -> input pixel), as ``affine_transform`` takes."""
        angle = self._uniform(batch, math.radians(self.rotation))
        scale = 1.0 + self._uniform(batch, self.zoom)
        sx, sy = self._uniform(batch, self.shear), self._uniform(batch, self.shear)
        tx, ty = self._uniform(batch, self.translation) * width, self._uniform(batch, self.translation) * height
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        # inverse of (rotate . shear . scale): input = A @ (output - centre - t) + centre
        a0, a1 = cos - sin * sy, -sin + cos * sx
        b0, b1 = sin + cos * sy, cos + sin * sx
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
        b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
        zeros = ops.zeros_like(a0)
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def call(self, images, training=True):
        if not training:
            return images
        shape = ops.shape(images)
        matrices = self.transforms(shape[0], images.shape[1], images.shape[2])
        return ops.image.affine_transform(images, matrices, interpolation="bilinear", fill_mode="constant",
                                          fill_value=self.fill_value)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "translation": self.translation,
                "zoom": self.zoom, "shear": self.shear, "fill_value": self.fill_value, "seed": self.seed}


def make_augmenter(aug: Mapping, seed: int) -> keras.Sequential:
    """Training augmentation for batches of raw 0-255 images, from the ``augment`` config section.

    Args:
        aug: ``rotation`` (degrees), ``translation``, ``zoom``, ``shear``, ``contrast``, ``brightness``
            (fractions) and ``horizontal_flip``.
        seed: Base seed; each layer gets its own.

    Returns:
        A ``keras.Sequential`` (empty when every factor is 0).
    """
    L = keras.layers
    layers = []
    if any(aug[k] for k in ("rotation", "translation", "zoom", "shear")):
        layers.append(RandomAffine(aug["rotation"], aug["translation"], aug["zoom"], aug["shear"], seed=seed + 1))
    if aug["contrast"]:
        layers.append(L.RandomContrast(aug["contrast"], value_range=(0, 255), seed=seed + 5))
    if aug["brightness"]:
        layers.append(L.RandomBrightness(aug["brightness"], value_range=(0, 255), seed=seed + 6))
    if aug["horizontal_flip"]:
        layers.append(L.RandomFlip("horizontal", seed=seed + 7))
    return keras.Sequential(layers, name="augment")
