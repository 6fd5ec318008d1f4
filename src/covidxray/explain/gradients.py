"""Gradient methods: vanilla gradient, SmoothGrad, integrated gradients.

Gradient maps follow the original study's vanilla gradient, ``max_c |d score / d input_c|``; our
model's input is the single grayscale channel (replicated to RGB inside the model), so the map is
``|d score / d gray|``, which equals the sum of the three replicated RGB channels' gradients.
SmoothGrad (Smilkov et al. 2017) averages it over noisy copies drawn from a seeded NumPy
generator; integrated gradients (Sundararajan et al. 2017) integrate it from a black baseline
(midpoint rule). Each entry of :data:`METHODS` registers one method (see
:mod:`covidxray.explain.method`).
"""

from __future__ import annotations

import numpy as np

from covidxray.explain.method import Method


def gradient(model, x, target, *, score, batch_size, layer=None):
    """``|d score / d input|`` of the target class (Simonyan et al. 2014)."""
    from covidxray.explain.core import chunks, grad_fn, resolve_targets

    f, out = grad_fn(model, score), np.empty(x.shape[:3], np.float32)
    t = np.full(len(x), -1, np.int32) if target is None else resolve_targets(model, x, target)
    for s in chunks(len(x), batch_size):
        out[s] = np.abs(f(x[s], t[s])[0].numpy()).max(axis=-1)
    return out


def smoothgrad(model, x, target, *, score, batch_size, layer=None, n_samples: int = 25, noise: float = 0.15,
               seed: int = 0):
    """Mean gradient map over ``n_samples`` noisy copies (sigma = ``noise`` x each image's max - min)."""
    from covidxray.explain.core import chunks, grad_fn, resolve_targets

    t, rng = resolve_targets(model, x, target, batch_size), np.random.default_rng(seed)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    f, owner = grad_fn(model, score), np.repeat(np.arange(len(x)), n_samples)
    acc = np.zeros(x.shape[:3], np.float64)
    for s in chunks(len(owner), batch_size):
        idx = owner[s]
        noisy = x[idx] + rng.standard_normal(x[idx].shape, dtype=np.float32) * sigma[idx, None, None, None]
        np.add.at(acc, idx, np.abs(f(noisy, t[idx])[0].numpy()).max(axis=-1))
    return acc / n_samples


def integrated_gradients(model, x, target, *, score, batch_size, layer=None, steps: int = 32):
    """``|x * mean_k grad(alpha_k x)|`` over ``steps`` midpoints alpha_k (black baseline)."""
    from covidxray.explain.core import chunks, grad_fn, resolve_targets

    t = resolve_targets(model, x, target, batch_size)
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)  # midpoint rule, black baseline
    f, owner, step = grad_fn(model, score), np.repeat(np.arange(len(x)), steps), np.tile(np.arange(steps), len(x))
    acc = np.zeros(x.shape, np.float64)
    for s in chunks(len(owner), batch_size):
        idx = owner[s]
        np.add.at(acc, idx, f(x[idx] * alphas[step[s], None, None, None], t[idx])[0].numpy())
    return np.abs(x * acc / steps).max(axis=-1)


METHODS = (
    Method("gradient", gradient, summary="vanilla gradient, |d score / d pixel| (Simonyan et al. 2014)"),
    Method("smoothgrad", smoothgrad, options={"n_samples": "explain.smoothgrad_samples", "seed": "seed"},
           summary="gradient averaged over noisy copies (Smilkov et al. 2017)"),
    Method("integrated_gradients", integrated_gradients, expensive=True, options={"steps": "explain.ig_steps"},
           summary="path integral of the gradient from a black image (Sundararajan et al. 2017)"),
)
