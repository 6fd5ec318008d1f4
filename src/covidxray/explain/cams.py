"""Class-activation maps: Grad-CAM, Grad-CAM++, Score-CAM, on one layer's activations.

Grad-CAM (Selvaraju et al. 2017) weights the layer's channels by the mean gradient of the target
score; Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exp(score) trick) by positive
gradients with per-pixel weights; both are computed in one traced function
(:func:`covidxray.explain.core.grad_fn`). Score-CAM (Wang et al. 2020) weights each channel by the
target probability of the image masked with that channel. All keep only positive evidence (ReLU).
"""

from __future__ import annotations

import numpy as np

from covidxray.explain.method import Method


def _cam(model, x, target, score, batch_size, layer, kind):
    from covidxray.explain.core import chunks, grad_fn, resolve_targets

    f, out = grad_fn(model, score, layer, kind), np.empty(x.shape[:3], np.float32)
    t = np.full(len(x), -1, np.int32) if target is None else resolve_targets(model, x, target)
    for s in chunks(len(x), batch_size):
        out[s] = f(x[s], t[s])[0].numpy()
    return out


def gradcam(model, x, target, *, score, batch_size, layer):
    """ReLU of the gradient-weighted sum of the layer's channels, upsampled (Selvaraju et al. 2017)."""
    return _cam(model, x, target, score, batch_size, layer, "gradcam")


def gradcam_pp(model, x, target, *, score, batch_size, layer):
    """Grad-CAM++ (Chattopadhay et al. 2018): positive gradients with second-order pixel weights."""
    return _cam(model, x, target, score, batch_size, layer, "gradcam++")


def scorecam(model, x, target, *, score=None, batch_size, layer, max_channels: int | None = 256):
    """Score-CAM (Wang et al. 2020, official code): sum_k p_target(x * norm(up(A_k))) * up(A_k), ReLU.

    Always scores the probability, as the paper does (``score`` is ignored). With more than
    ``max_channels`` channels, the highest-variance ones are used (Faster Score-CAM).
    """
    from covidxray.explain.core import act_fn, chunks, forward_fn, resolve_targets, upsample

    t, size = resolve_targets(model, x, target, batch_size), model.input_shape[1:3]
    acts = np.concatenate([act_fn(model, (layer,))(x[s])[layer].numpy() for s in chunks(len(x), batch_size)])
    prob = forward_fn(model, "prob")
    out = np.zeros(x.shape[:3], np.float64)
    for i in range(len(x)):
        a = acts[i]
        keep = np.argsort(-a.var(axis=(0, 1)), kind="stable")[:max_channels] if max_channels else np.arange(a.shape[-1])
        for s in chunks(len(keep), batch_size):
            up = upsample(np.moveaxis(a[..., keep[s]], -1, 0), size)  # (c, S, S)
            lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
            valid = (hi > lo)[:, 0, 0]
            masks = np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
            p = prob((x[i][None, ..., 0] * masks)[..., None].astype(np.float32)).numpy()[:, t[i]] * valid
            out[i] += np.tensordot(p, up, axes=1)
    return np.maximum(out, 0.0)


METHODS = (
    Method("gradcam", gradcam, needs_layer=True, summary="Grad-CAM (Selvaraju et al. 2017)"),
    Method("gradcam++", gradcam_pp, needs_layer=True, summary="Grad-CAM++ (Chattopadhay et al. 2018)"),
    Method("scorecam", scorecam, needs_layer=True, expensive=True,
           options={"max_channels": "explain.scorecam_channels"}, summary="Score-CAM (Wang et al. 2020)"),
)
