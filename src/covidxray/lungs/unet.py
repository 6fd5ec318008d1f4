"""The lung segmenter's network: a small U-Net (Ronneberger et al. 2015) in Keras 3.

Input: raw 0-255 grayscale ``(size, size, 1)``; the rescaling to [0, 1] is the model's first layer, so
callers feed uint8 pixels as they come. Output: per-pixel lung probability (sigmoid), same size.

Ronneberger O, Fischer P, Brox T. U-Net: convolutional networks for biomedical image segmentation.
MICCAI 2015, LNCS 9351:234-241.
"""

from __future__ import annotations

import keras
from keras import layers


def _block(x, filters: int, name: str):
    """Two 3x3 convolutions, each followed by batch normalisation and ReLU."""
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(size: int = 128, base_filters: int = 16, depth: int = 4) -> keras.Model:
    """Build the U-Net.

    Args:
        size: Input side in pixels; must be divisible by ``2 ** depth``.
        base_filters: Filters of the first level; each level down doubles them.
        depth: Number of down-sampling steps (the bottleneck is at ``size / 2 ** depth``).

    Returns:
        An uncompiled ``keras.Model`` named ``lung_unet``: ``(None, size, size, 1)`` 0-255 input,
        ``(None, size, size, 1)`` sigmoid output.

    Raises:
        ValueError: When ``size`` is not divisible by ``2 ** depth`` or an argument is not positive.
    """
    if depth < 1 or base_filters < 1 or size < 1 or size % (2 ** depth):
        raise ValueError(f"need size divisible by 2**depth and positive arguments (size={size}, depth={depth}, "
                         f"base_filters={base_filters})")
    inp = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    skips = []
    for level in range(depth):
        x = _block(x, base_filters * 2 ** level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _block(x, base_filters * 2 ** depth, "bottleneck")
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_tconv")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _block(x, filters, f"up{level}")
    out = layers.Conv2D(1, 1, activation="sigmoid", name="lung_prob")(x)
    return keras.Model(inp, out, name="lung_unet")


def dice_bce_loss(y_true, y_pred, smooth: float = 1.0):
    """Binary cross-entropy plus soft Dice loss (Milletari et al. 2016), averaged over the batch.

    Milletari F, Navab N, Ahmadi S-A. V-Net: fully convolutional neural networks for volumetric
    medical image segmentation. 3DV 2016:565-571.

    Args:
        y_true: ``(N, H, W, 1)`` 0/1 target masks.
        y_pred: ``(N, H, W, 1)`` predicted probabilities.
        smooth: Additive smoothing of the Dice ratio (keeps empty masks finite).

    Returns:
        A scalar loss tensor.
    """
    from keras import ops

    y_true = ops.cast(y_true, y_pred.dtype)
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3))
    dice = (2.0 * inter + smooth) / (total + smooth)
    return bce + 1.0 - ops.mean(dice)
