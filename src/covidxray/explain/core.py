"""Shared machinery of the explanation methods: input checks, traced model functions, targets.

Every method of :mod:`covidxray.explain.registry` runs on what this module provides:

* ``images``: raw grayscale 0-255, ``(N, S, S)`` or ``(N, S, S, 1)``, as the model takes them
  (:func:`as_batch`).
* ``target``: ``None`` explains the predicted class (argmax), an int or ``N`` ints name classes
  (:func:`resolve_targets`).
* ``score`` (gradient methods, CAMs, occlusion): ``"logit"`` (default) differentiates the
  pre-softmax logit of the target class: ``features @ W + b`` of the final softmax ``Dense``
  layer, computed from its variables (the model is never modified). Softmax probabilities
  saturate, so gradients of the probability vanish for confident predictions and mix in the other
  classes; ``"prob"`` uses the probability anyway. Score-CAM always uses the probability, as
  its paper does. A model without a final softmax is explained on its output as is.
* Output of :func:`covidxray.explain.registry.explain`: ``(N, S, S)`` float32, bilinearly
  upsampled to the input size and min-max normalised per image to [0, 1] (:func:`normalize_maps`;
  a constant map becomes all zeros).

Everything that touches the model runs in memory-bounded chunks of ``batch_size`` model inputs
(:func:`chunks`), through ``tf.function``s cached per model (a few per model, released with the
model), so repeated calls do not retrace. The CAM layer is resolved in one place,
:func:`resolve_layer`: the layer asked for, else run.json's ``last_conv_layer``, else the backbone
registry's last convolutional block (:func:`covidxray.models.last_conv_layer`).

tf-keras-vis 0.8.7 does run on our Keras 3 models (checked: Gradcam and Saliency), but it works
eagerly, rebuilds its sub-model on every call, draws SmoothGrad noise from the global NumPy
state and normalises Grad-CAM++ weights differently from the paper; these methods are therefore
written here with ``tf.GradientTape``, and tf-keras-vis serves as the reference in the tests and
the benchmark.
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from covidxray.errors import UsageError

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_SIZE = 6  # traced functions kept per model (each holds a graph of the model)


def as_batch(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Check images against the model input and return them as ``(N, S, S, 1)`` float32."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[..., None]
    want = tuple(model.input_shape[1:])
    if x.ndim != 4 or x.shape[1:] != want:
        raise ValueError(f"images have shape {np.shape(images)}; the model takes (N, {want[0]}, {want[1]}) "
                         f"or (N, {want[0]}, {want[1]}, 1) raw 0-255 grayscale")
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    return x


def default_layer(model: keras.Model) -> str:
    """The CAM layer of a model: its backbone's last convolutional block (the backbone registry,
    :func:`covidxray.models.last_conv_layer`, for models named ``covidxray_<backbone>``), else the
    layer feeding ``gap``, else the last layer with a 4-D output."""
    from covidxray.models import REGISTRY, last_conv_layer

    names = [layer.name for layer in model.layers]
    backbone = model.name.removeprefix("covidxray_")
    if backbone in REGISTRY and "gap" in names:
        return last_conv_layer(model, backbone)
    if "gap" in names:
        return names[names.index("gap") - 1]
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"model '{model.name}' has no layer with a spatial (4-D) output")


def resolve_layer(model: keras.Model, layer: str | None = None, meta: Mapping | None = None,
                  strict: bool = True) -> str:
    """The CAM layer: ``layer``, else run.json's ``last_conv_layer`` (``meta``), else :func:`default_layer`.

    Args:
        model: The classifier.
        layer: The layer asked for (``--layer``, ``explain.cam_layer``, ``robustness.cam_layer``); "" = none.
        meta: The run's ``run.json``, when known.
        strict: Refuse a ``layer`` that is not a spatial layer of the model (UsageError); otherwise
            fall back to the default for it.

    Raises:
        UsageError: ``strict`` and the layer is not a spatial (4-D) layer of the model.
    """
    spatial = [lyr.name for lyr in model.layers if len(lyr.output.shape) == 4]
    if layer and layer not in spatial and not strict:
        layer = None
    name = layer or (meta or {}).get("last_conv_layer") or default_layer(model)
    if name not in spatial:
        raise UsageError(f"CAM layer {name!r} (--layer / explain.cam_layer) is not a spatial layer of model "
                         f"'{model.name}'; e.g. {', '.join(spatial[-5:])}")
    return name


def block_layers(model: keras.Model) -> list[str]:
    """Block outputs for activation figures: InceptionV3's ``mixed0``..``mixed10``, else the CAM layer."""
    blocks = [layer.name for layer in model.layers if re.fullmatch(r"mixed\d+", layer.name)]
    return sorted(blocks, key=lambda n: int(n[5:])) or [default_layer(model)]


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each map of ``(N, H, W)`` to [0, 1]; constant maps become zeros."""
    maps = np.asarray(maps, dtype=np.float64)
    if not np.isfinite(maps).all():
        raise ValueError("attribution maps contain NaN or infinite values (model output not finite?)")
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    ok = span > 1e-12 * np.maximum(1.0, np.abs(lo))
    out = np.where(ok, (maps - lo) / np.where(ok, span, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _cached(model: keras.Model, key: tuple, build: Callable[[], Callable]) -> Callable:
    """LRU cache of traced functions per model (weakly keyed: freed with the model)."""
    per_model = _CACHE.setdefault(model, OrderedDict())
    if key not in per_model:
        per_model[key] = build()
        while len(per_model) > _CACHE_SIZE:
            per_model.popitem(last=False)
    per_model.move_to_end(key)
    return per_model[key]


def _head(model: keras.Model, score: str) -> tuple[keras.KerasTensor, Callable]:
    """The tensor to tap and the function turning it into class scores (logits or probabilities)."""
    if score not in ("logit", "prob"):
        raise ValueError(f"score must be 'logit' or 'prob', got {score!r}")
    last = model.layers[-1]
    act = getattr(getattr(last, "activation", None), "__name__", "")
    if score == "logit" and isinstance(last, keras.layers.Dense) and act == "softmax":
        kernel, bias = last.kernel, last.bias

        def logits(feats):
            z = keras.ops.matmul(keras.ops.cast(feats, kernel.dtype), kernel)
            return z + bias if bias is not None else z

        return last.input, logits
    if score == "logit" and (isinstance(last, keras.layers.Softmax) or act == "softmax"):
        return last.input, tf.identity
    return model.outputs[0], tf.identity


def _pick(scores: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Score of the target class per row; target -1 means the argmax."""
    t = tf.where(target < 0, tf.argmax(scores, axis=-1, output_type=tf.int32), target)
    return tf.gather(scores, t, axis=1, batch_dims=1), t


def _spec(model: keras.Model) -> tf.TensorSpec:
    return tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)


def forward_fn(model: keras.Model, score: str) -> Callable:
    def build():
        tap, head = _head(model, score)
        sub = keras.Model(model.inputs[0], tap)
        return tf.function(lambda x: head(sub(x, training=False)), input_signature=[_spec(model)])

    return _cached(model, ("forward", score), build)


def grad_fn(model: keras.Model, score: str, layer: str | None = None, cam: str = "") -> Callable:
    """Traced ``f(x, target)`` -> (gradient w.r.t. the input, or the upsampled CAM of ``layer``; target)."""

    def build():
        tap, head = _head(model, score)
        sub = keras.Model(model.inputs[0], [model.get_layer(layer).output if layer else tap, tap])
        size = model.input_shape[1:3]

        def f(x, target):
            with tf.GradientTape() as tape:
                tape.watch(x)
                act, feats = sub(x, training=False)
                y, t = _pick(head(feats), target)
            if not layer:
                return tape.gradient(y, x), t
            g = tape.gradient(y, act)
            if cam == "gradcam++":  # Chattopadhay et al. 2018, eq. 19 with the exp(score) trick
                g2, g3 = g * g, g * g * g
                denom = 2.0 * g2 + tf.reduce_sum(act, axis=(1, 2), keepdims=True) * g3
                alpha = tf.math.divide_no_nan(g2, denom)
                w = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2), keepdims=True)
            else:
                w = tf.reduce_mean(g, axis=(1, 2), keepdims=True)
            heat = tf.nn.relu(tf.reduce_sum(w * act, axis=-1, keepdims=True))
            return tf.image.resize(heat, size, method="bilinear")[..., 0], t

        return tf.function(f, input_signature=[_spec(model), tf.TensorSpec((None,), tf.int32)])

    return _cached(model, ("grad", score, layer, cam), build)


def act_fn(model: keras.Model, layers: tuple[str, ...]) -> Callable:
    def build():
        sub = keras.Model(model.inputs[0], {n: model.get_layer(n).output for n in layers})
        return tf.function(lambda x: sub(x, training=False), input_signature=[_spec(model)])

    return _cached(model, ("act", layers), build)


def chunks(total: int, size: int) -> Iterator[slice]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return tf.image.resize(np.asarray(maps, np.float32)[..., None], size, method="bilinear").numpy()[..., 0]


def class_scores(model: keras.Model, images: np.ndarray, score: str = "prob", batch_size: int = 32) -> np.ndarray:
    """Class scores ``(N, C)``: softmax probabilities (``"prob"``) or pre-softmax logits (``"logit"``)."""
    x = as_batch(model, images)
    f = forward_fn(model, score)
    parts = [f(x[s]).numpy() for s in chunks(len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.output_shape[-1]), np.float32)


def resolve_targets(model: keras.Model, images: np.ndarray, target=None, batch_size: int = 32) -> np.ndarray:
    """Target class per image as int32: ``None`` -> predicted class, an int -> that class for all."""
    n, n_classes = len(images), model.output_shape[-1]
    if target is None:
        return class_scores(model, images, "logit", batch_size).argmax(axis=1).astype(np.int32)
    t = np.asarray(target, dtype=np.int64)
    if t.ndim > 1 or (t.ndim == 1 and len(t) != n):
        raise ValueError(f"target must be None, one class index or {n} indices (one per image), got shape {t.shape}")
    t = np.broadcast_to(t, (n,)).astype(np.int32)
    if ((t < 0) | (t >= n_classes)).any():
        raise ValueError(f"target classes must be in 0..{n_classes - 1}, got {np.unique(t).tolist()}")
    return t
