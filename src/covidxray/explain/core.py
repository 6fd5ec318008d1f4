"""Saliency and class-activation maps for the classifier, batched and traced once per model.

All methods share one contract, :func:`explain`:

* ``images``: raw grayscale 0-255, ``(N, S, S)`` or ``(N, S, S, 1)``, as the model takes them.
* ``target``: ``None`` explains the predicted class (argmax), an int or ``N`` ints name classes.
* ``score`` (gradient methods, CAMs, occlusion): ``"logit"`` (default) differentiates the
  pre-softmax logit of the target class: ``features @ W + b`` of the final softmax ``Dense``
  layer, computed from its variables (the model is never modified). Softmax probabilities
  saturate, so gradients of the probability vanish for confident predictions and mix in the other
  classes; ``"prob"`` uses the probability anyway. Score-CAM always uses the probability, as
  its paper does. A model without a final softmax is explained on its output as is.
* Output: ``(N, S, S)`` float32, bilinearly upsampled to the input size and min-max normalised
  per image to [0, 1] (a constant map becomes all zeros). Grad-CAM, Grad-CAM++, Score-CAM and
  occlusion keep only positive evidence (ReLU) before normalising.

Gradient maps follow the original study's vanilla gradient, ``max_c |d score / d input_c|``; our
model's input is the single grayscale channel (replicated to RGB inside the model), so the map is
``|d score / d gray|``, which equals the sum of the three replicated RGB channels' gradients.

Everything that touches the model runs in memory-bounded chunks of ``batch_size`` model inputs
(noisy copies, interpolation steps, masked or occluded copies of all images together), through
``tf.function``s cached per model (a few per model, released with the model), so repeated calls
do not retrace. Randomness (SmoothGrad noise) comes from a seeded NumPy generator.

tf-keras-vis 0.8.7 does run on our Keras 3 models (checked: Gradcam and Saliency), but it works
eagerly, rebuilds its sub-model on every call, draws SmoothGrad noise from the global NumPy
state and normalises Grad-CAM++ weights differently from the paper; these methods are therefore
written here with ``tf.GradientTape``, and tf-keras-vis serves as the reference in the tests and
the benchmark.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

METHODS = ("activation", "gradient", "smoothgrad", "integrated_gradients", "gradcam", "gradcam++",
           "scorecam", "occlusion")
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
    """The CAM layer: ``mixed10`` for InceptionV3, else the layer feeding ``gap``, else the last 4-D one."""
    names = [layer.name for layer in model.layers]
    if "mixed10" in names:
        return "mixed10"
    if "gap" in names:
        return names[names.index("gap") - 1]
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"model '{model.name}' has no layer with a spatial (4-D) output")


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


def _forward_fn(model: keras.Model, score: str) -> Callable:
    def build():
        tap, head = _head(model, score)
        sub = keras.Model(model.inputs[0], tap)
        return tf.function(lambda x: head(sub(x, training=False)), input_signature=[_spec(model)])

    return _cached(model, ("forward", score), build)


def _grad_fn(model: keras.Model, score: str, layer: str | None = None, cam: str = "") -> Callable:
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


def _act_fn(model: keras.Model, layers: tuple[str, ...]) -> Callable:
    def build():
        sub = keras.Model(model.inputs[0], {n: model.get_layer(n).output for n in layers})
        return tf.function(lambda x: sub(x, training=False), input_signature=[_spec(model)])

    return _cached(model, ("act", layers), build)


def _chunks(total: int, size: int) -> Iterator[slice]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def _upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return tf.image.resize(np.asarray(maps, np.float32)[..., None], size, method="bilinear").numpy()[..., 0]


def class_scores(model: keras.Model, images: np.ndarray, score: str = "prob", batch_size: int = 32) -> np.ndarray:
    """Class scores ``(N, C)``: softmax probabilities (``"prob"``) or pre-softmax logits (``"logit"``)."""
    x = as_batch(model, images)
    f = _forward_fn(model, score)
    parts = [f(x[s]).numpy() for s in _chunks(len(x), batch_size)]
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


def _gradient(model, x, target, score, batch_size):
    f, out = _grad_fn(model, score), np.empty(x.shape[:3], np.float32)
    t = np.full(len(x), -1, np.int32) if target is None else resolve_targets(model, x, target)
    for s in _chunks(len(x), batch_size):
        out[s] = np.abs(f(x[s], t[s])[0].numpy()).max(axis=-1)
    return out


def _smoothgrad(model, x, target, score, batch_size, n_samples: int = 25, noise: float = 0.15, seed: int = 0):
    t, rng = resolve_targets(model, x, target, batch_size), np.random.default_rng(seed)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    f, owner = _grad_fn(model, score), np.repeat(np.arange(len(x)), n_samples)
    acc = np.zeros(x.shape[:3], np.float64)
    for s in _chunks(len(owner), batch_size):
        idx = owner[s]
        noisy = x[idx] + rng.standard_normal(x[idx].shape, dtype=np.float32) * sigma[idx, None, None, None]
        np.add.at(acc, idx, np.abs(f(noisy, t[idx])[0].numpy()).max(axis=-1))
    return acc / n_samples


def _integrated_gradients(model, x, target, score, batch_size, steps: int = 32):
    t = resolve_targets(model, x, target, batch_size)
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)  # midpoint rule, black baseline
    f, owner, step = _grad_fn(model, score), np.repeat(np.arange(len(x)), steps), np.tile(np.arange(steps), len(x))
    acc = np.zeros(x.shape, np.float64)
    for s in _chunks(len(owner), batch_size):
        idx = owner[s]
        np.add.at(acc, idx, f(x[idx] * alphas[step[s], None, None, None], t[idx])[0].numpy())
    return np.abs(x * acc / steps).max(axis=-1)


def _cam(model, x, target, score, batch_size, layer, kind):
    f, out = _grad_fn(model, score, layer, kind), np.empty(x.shape[:3], np.float32)
    t = np.full(len(x), -1, np.int32) if target is None else resolve_targets(model, x, target)
    for s in _chunks(len(x), batch_size):
        out[s] = f(x[s], t[s])[0].numpy()
    return out


def _scorecam(model, x, target, batch_size, layer, max_channels: int | None = 256):
    """Score-CAM (Wang et al. 2020, official code): sum_k p_target(x * norm(up(A_k))) * up(A_k), ReLU.

    With more than ``max_channels`` channels, the highest-variance ones are used (Faster Score-CAM).
    """
    t, size = resolve_targets(model, x, target, batch_size), model.input_shape[1:3]
    acts = np.concatenate([_act_fn(model, (layer,))(x[s])[layer].numpy() for s in _chunks(len(x), batch_size)])
    prob = _forward_fn(model, "prob")
    out = np.zeros(x.shape[:3], np.float64)
    for i in range(len(x)):
        a = acts[i]
        keep = np.argsort(-a.var(axis=(0, 1)), kind="stable")[:max_channels] if max_channels else np.arange(a.shape[-1])
        for s in _chunks(len(keep), batch_size):
            up = _upsample(np.moveaxis(a[..., keep[s]], -1, 0), size)  # (c, S, S)
            lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
            valid = (hi > lo)[:, 0, 0]
            masks = np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
            p = prob((x[i][None, ..., 0] * masks)[..., None].astype(np.float32)).numpy()[:, t[i]] * valid
            out[i] += np.tensordot(p, up, axes=1)
    return np.maximum(out, 0.0)


def _occlusion(model, x, target, score, batch_size, patch: int | None = None, stride: int | None = None,
               fill: float | None = None):
    """Mean drop of the target score when a ``patch`` square (filled with ``fill``, default the image
    mean) covers each pixel (Zeiler & Fergus 2014); ReLU keeps the drops."""
    n, size = len(x), x.shape[1]
    patch = patch or max(1, size // 8)
    stride = stride or max(1, patch // 2)
    if not 1 <= patch <= size:
        raise ValueError(f"occlusion patch must be in 1..{size}, got {patch}")
    starts = list(range(0, size - patch + 1, stride))
    starts += [size - patch] if starts[-1] != size - patch else []
    pos = [(r, c) for r in starts for c in starts]
    t = resolve_targets(model, x, target, batch_size)
    f = _forward_fn(model, score)
    base = class_scores(model, x, score, batch_size)[np.arange(n), t]
    fills = x.mean(axis=(1, 2, 3)) if fill is None else np.full(n, fill, np.float32)
    acc, cover = np.zeros(x.shape[:3], np.float64), np.zeros((size, size))
    for r, c in pos:
        cover[r:r + patch, c:c + patch] += 1
    owner, which = np.repeat(np.arange(n), len(pos)), np.tile(np.arange(len(pos)), n)
    for s in _chunks(len(owner), batch_size):
        batch = x[owner[s]].copy()
        for j, (i, p) in enumerate(zip(owner[s], which[s], strict=True)):
            r, c = pos[p]
            batch[j, r:r + patch, c:c + patch] = fills[i]
        drop = base[owner[s]] - f(batch).numpy()[np.arange(len(batch)), t[owner[s]]]
        for j, (i, p) in enumerate(zip(owner[s], which[s], strict=True)):
            r, c = pos[p]
            acc[i, r:r + patch, c:c + patch] += drop[j]
    return np.maximum(acc / cover, 0.0)


def activation_maps(model: keras.Model, images: np.ndarray, layers: list[str] | None = None, k: int = 8,
                    batch_size: int = 32) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-k feature maps (by mean activation, per image) of named layers, for display.

    Args:
        model: The classifier.
        images: Raw 0-255 grayscale ``(N, S, S[, 1])``.
        layers: Layer names; default :func:`block_layers` (``mixed0``..``mixed10`` for InceptionV3).
        k: Channels kept per layer and image.
        batch_size: Images per forward pass.

    Returns:
        ``{layer: (maps, channels)}`` with ``maps`` ``(N, k, h, w)`` float32 raw activations at the
        layer's resolution, strongest first, and ``channels`` ``(N, k)`` their channel indices.
    """
    x = as_batch(model, images)
    layers = tuple(layers or block_layers(model))
    f = _act_fn(model, layers)
    parts: dict[str, list] = {n: [] for n in layers}
    for s in _chunks(len(x), batch_size):
        outs = f(x[s])
        for name in layers:
            a = outs[name].numpy()
            top = np.argsort(-a.mean(axis=(1, 2)), axis=1, kind="stable")[:, :k]
            maps = np.take_along_axis(a, top[:, None, None, :], axis=3)
            parts[name].append((np.moveaxis(maps, 3, 1).astype(np.float32), top))
    return {n: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for n, v in parts.items()}


def explain(model: keras.Model, images: np.ndarray, method: str, target=None, layer: str | None = None,
            *, score: str = "logit", batch_size: int = 32, **kw) -> np.ndarray:
    """Explain a batch of images with one method.

    Args:
        model: The classifier (raw 0-255 grayscale in, softmax out).
        images: ``(N, S, S)`` or ``(N, S, S, 1)`` raw 0-255 grayscale.
        method: One of :data:`METHODS`.
        target: ``None`` (predicted class), a class index, or ``N`` class indices.
        layer: Layer for ``activation``/``gradcam``/``gradcam++``/``scorecam``; default
            :func:`default_layer`.
        score: ``"logit"`` or ``"prob"`` (see the module docstring).
        batch_size: Model inputs per pass (bounds memory).
        **kw: Method options: ``activation``: ``k=8`` channels averaged; ``smoothgrad``:
            ``n_samples=25``, ``noise=0.15`` (sigma as a fraction of each image's max - min), ``seed=0``;
            ``integrated_gradients``: ``steps=32`` (midpoint rule, black baseline); ``scorecam``:
            ``max_channels=256``; ``occlusion``: ``patch=S//8``, ``stride=patch//2``, ``fill=None``
            (image mean).

    Returns:
        ``(N, S, S)`` float32 maps in [0, 1].
    """
    x = as_batch(model, images)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if len(x) == 0:
        return np.zeros((0, *x.shape[1:3]), np.float32)
    layer = layer or default_layer(model)
    if method in ("activation", "gradcam", "gradcam++", "scorecam") and \
            tuple(model.get_layer(layer).output.shape[1:3]) == (1, 1):
        warnings.warn(f"layer '{layer}' is 1x1 at input size {x.shape[1]}: {method} maps are constant (zeros); "
                      "use a larger input or an earlier layer", stacklevel=2)
    if method == "activation":
        maps = activation_maps(model, x, [layer], batch_size=batch_size, **kw)[layer][0].mean(axis=1)
        heat = _upsample(maps, x.shape[1:3])
    elif method == "gradient":
        heat = _gradient(model, x, target, score, batch_size, **kw)
    elif method == "smoothgrad":
        heat = _smoothgrad(model, x, target, score, batch_size, **kw)
    elif method == "integrated_gradients":
        heat = _integrated_gradients(model, x, target, score, batch_size, **kw)
    elif method in ("gradcam", "gradcam++"):
        heat = _cam(model, x, target, score, batch_size, layer, method, **kw)
    elif method == "scorecam":
        heat = _scorecam(model, x, target, batch_size, layer, **kw)
    else:
        heat = _occlusion(model, x, target, score, batch_size, **kw)
    return normalize_maps(heat)
