"""Backbone registry and the classifier builder.

Each backbone entry keeps together what must never be mixed up: its Keras builder, its
``preprocess_input`` (expressed as built-in Keras layers inside the model, so a saved model takes
raw 0-255 grayscale pixels and cannot be fed the wrong scaling), its last convolutional layer (for
class-activation maps) and its block boundaries (for partial unfreezing).

The backbone is built *flat* (``input_tensor=``): its layers live directly in our model, which
CAM tools need, instead of one nested layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from covidxray.errors import WeightsError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255.0
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


@dataclass(frozen=True)
class Backbone:
    """What the code needs to know about one keras.applications backbone.

    Attributes:
        builder: The ``keras.applications`` constructor.
        preprocess_input: The matching ``keras.applications`` function (reference for tests).
        scale: ``x * scale + offset`` reproduces ``preprocess_input`` on 0-255 input (per channel).
        offset: See ``scale``.
        last_conv: Name of the last convolutional block output (for Grad-CAM and friends); empty when
            Keras names it by a global counter (then the layer feeding global pooling is used).
        blocks: Block outputs below the top block, bottom to top; ``unfreeze_blocks=N`` unfreezes the
            layers after ``blocks[-N]``.
        min_size: Smallest input size the architecture accepts.
    """

    builder: Callable[..., keras.Model]
    preprocess_input: Callable[..., Any]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    last_conv: str
    blocks: tuple[str, ...] = field(default_factory=tuple)
    min_size: int = 32


def _affine(mean, std) -> tuple[tuple, tuple]:
    return tuple(float(1 / s) for s in std), tuple(float(-m / s) for m, s in zip(mean, std, strict=True))


_TORCH = _affine(IMAGENET_MEAN, IMAGENET_STD)
_CAFFE = ((1.0, 1.0, 1.0), tuple(float(-m) for m in CAFFE_MEAN_BGR))  # gray input: BGR flip is a no-op
_APPS = keras.applications
REGISTRY: dict[str, Backbone] = {
    "inceptionv3": Backbone(
        _APPS.InceptionV3, _APPS.inception_v3.preprocess_input, (1 / 127.5,) * 3, (-1.0,) * 3,
        "mixed10", tuple(f"mixed{i}" for i in range(10)), 75),
    "densenet121": Backbone(
        _APPS.DenseNet121, _APPS.densenet.preprocess_input, *_TORCH, "relu",
        ("pool2_relu", "pool3_relu", "pool4_relu"), 32),
    "resnet50": Backbone(
        _APPS.ResNet50, _APPS.resnet50.preprocess_input, *_CAFFE, "conv5_block3_out",
        ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out"), 32),
    "efficientnetb0": Backbone(
        _APPS.EfficientNetB0, _APPS.efficientnet.preprocess_input, (1.0,) * 3, (0.0,) * 3, "top_activation",
        tuple(f"block{i}b_add" for i in range(2, 7)), 32),
    "mobilenetv3small": Backbone(
        _APPS.MobileNetV3Small, _APPS.mobilenet_v3.preprocess_input, (1.0,) * 3, (0.0,) * 3, "",
        ("expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_10_add"), 32),
}


def get_backbone(name: str) -> Backbone:
    """Return the registry entry for ``name`` (case-insensitive), or raise naming the known ones."""
    try:
        return REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown backbone '{name}'; known: {', '.join(REGISTRY)}") from None


def _imagenet_available(builder_name: str) -> bool:
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return cache.is_dir() and any(builder_name.lower() in p.name.lower() for p in cache.glob("*notop*"))


def resolve_weights(weights: str, backbone: str = "inceptionv3") -> tuple[str | None, str]:
    """Turn the ``model.weights`` setting into what the Keras builder takes.

    Args:
        weights: ``imagenet``, ``none``, ``auto`` or a path to a weights file.
        backbone: Registry name, for the messages.

    Returns:
        ``(builder_weights, source)``: the value for the builder's ``weights=`` (None, "imagenet" or a
        path) and a human-readable description of where the weights came from, for run.json.

    Raises:
        WeightsError: A given path does not exist.
    """
    key = str(weights).strip()
    if key.lower() in ("none", "scratch", "random", ""):
        return None, "none (random initialisation)"
    if key.lower() in ("imagenet", "auto"):
        return "imagenet", "imagenet"
    path = Path(key).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' does not exist (model.weights / --weights)")
    return str(path.resolve()), f"file {path.resolve()}"


def build_backbone(name: str, inputs: keras.KerasTensor, weights: str) -> tuple[keras.Model, str]:
    """Build a backbone flat on ``inputs`` (already preprocessed, 3 channels).

    Args:
        name: Registry name.
        inputs: The preprocessed tensor the backbone starts from.
        weights: As in :func:`resolve_weights`; ``auto`` falls back to random weights with a warning.

    Returns:
        ``(backbone_model, weights_source)``.

    Raises:
        WeightsError: ImageNet weights could not be downloaded, or a weights file does not fit.
    """
    entry = get_backbone(name)
    builder_weights, source = resolve_weights(weights, name)
    kwargs = dict(include_top=False, input_tensor=inputs)
    if builder_weights is None or builder_weights == "imagenet":
        try:
            return entry.builder(weights=builder_weights, **kwargs), source
        except Exception as err:  # noqa: BLE001 - download errors come in many types
            if str(weights).lower() != "auto":
                raise WeightsError(
                    f"could not obtain ImageNet weights for {name} ({type(err).__name__}: {err}). "
                    "Without internet access, download them elsewhere (keras.applications caches them in "
                    "~/.keras/models) and pass the file with --weights PATH (or set model.weights: PATH), "
                    "or train from scratch with --weights none."
                ) from None
            import warnings

            warnings.warn(
                f"ImageNet weights for {name} unavailable ({type(err).__name__}); training FROM SCRATCH "
                "(weights: auto). Pass --weights PATH to use a local weights file.",
                stacklevel=2,
            )
            return entry.builder(weights=None, **kwargs), "none (auto: imagenet unavailable)"
    base = entry.builder(weights=None, **kwargs)
    try:
        base.load_weights(builder_weights, skip_mismatch=False)
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"weights file '{builder_weights}' does not fit {name}: {err}") from None
    return base, source


def build_model(
    classes: list[str] | tuple[str, ...],
    backbone: str = "inceptionv3",
    image_size: int = 299,
    weights: str = "none",
    head_units: list[int] = (256, 128),
    head_dropout: list[float] = (0.5, 0.3),
    bn_momentum: float | None = 0.9,
) -> tuple[keras.Model, str]:
    """Build the classifier: raw grayscale 0-255 in, class probabilities out.

    Args:
        classes: Class names; their order is the output order.
        backbone: Registry name.
        image_size: Square input size in pixels.
        weights: ``imagenet``, ``none``, ``auto`` or a weights-file path.
        head_units: Dense layer widths after global average pooling.
        head_dropout: Dropout after each dense layer (same length as ``head_units``).
        bn_momentum: Overrides the backbone's BatchNorm momentum (None keeps it).

    Returns:
        ``(model, weights_source)``.
    """
    entry = get_backbone(backbone)
    if image_size < entry.min_size:
        raise ValueError(f"{backbone} needs image_size >= {entry.min_size}, got {image_size}")
    if len(head_units) != len(head_dropout):
        raise ValueError("model.head_units and model.head_dropout must have the same length")
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    x = keras.layers.Rescaling(list(entry.scale), list(entry.offset), name="preprocess_input")(x)
    base, source = build_backbone(backbone, x, weights)
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base.output)
    for i, (units, drop) in enumerate(zip(head_units, head_dropout, strict=True)):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense{i}")(x)
        x = keras.layers.Dropout(drop, name=f"head_dropout{i}")(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"covidxray_{backbone}"), source


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers after global average pooling (trained alone in stage 1)."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index("gap") + 1 :]


def last_conv_layer(model: keras.Model, backbone: str) -> str:
    """Name of the layer whose activations class-activation maps use."""
    name = get_backbone(backbone).last_conv
    if name:
        return name
    names = [layer.name for layer in model.layers]
    return names[names.index("gap") - 1]


def set_trainable(model: keras.Model, backbone: str, unfreeze_blocks: int) -> None:
    """Freeze the backbone except its top ``unfreeze_blocks`` blocks; BatchNorm stays frozen.

    Frozen BatchNorm layers run in inference mode in Keras 3, which is what fine-tuning needs.
    Recompile the model after calling this.

    Args:
        model: A model from :func:`build_model`.
        backbone: Registry name.
        unfreeze_blocks: 0 freezes the whole backbone; -1 unfreezes everything (BatchNorm included,
            for training from scratch).
    """
    names = [layer.name for layer in model.layers]
    gap = names.index("gap")
    if unfreeze_blocks < 0:
        for layer in model.layers:
            layer.trainable = True
        return
    blocks = get_backbone(backbone).blocks
    if unfreeze_blocks > len(blocks):
        raise ValueError(f"{backbone} has {len(blocks) + 1} blocks; cannot unfreeze {unfreeze_blocks}")
    start = gap if unfreeze_blocks == 0 else names.index(blocks[-unfreeze_blocks]) + 1
    for i, layer in enumerate(model.layers):
        in_top = start <= i < gap
        layer.trainable = i > gap or (in_top and not isinstance(layer, keras.layers.BatchNormalization))
