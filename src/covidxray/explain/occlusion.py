"""Occlusion (Zeiler & Fergus 2014): how much the target score drops when a square covers each pixel."""

from __future__ import annotations

import numpy as np

from covidxray.explain.method import Method


def occlusion(model, x, target, *, score, batch_size, layer=None, patch: int | None = None,
              stride: int | None = None, fill: float | None = None):
    """Mean drop of the target score when a ``patch`` square (filled with ``fill``, default the image
    mean) covers each pixel; ReLU keeps the drops. ``patch`` 0 or None = image size / 8,
    ``stride`` default ``patch // 2``."""
    from covidxray.explain.core import chunks, class_scores, forward_fn, resolve_targets

    n, size = len(x), x.shape[1]
    patch = patch or max(1, size // 8)
    stride = stride or max(1, patch // 2)
    if not 1 <= patch <= size:
        raise ValueError(f"occlusion patch must be in 1..{size}, got {patch}")
    starts = list(range(0, size - patch + 1, stride))
    starts += [size - patch] if starts[-1] != size - patch else []
    pos = [(r, c) for r in starts for c in starts]
    t = resolve_targets(model, x, target, batch_size)
    f = forward_fn(model, score)
    base = class_scores(model, x, score, batch_size)[np.arange(n), t]
    fills = x.mean(axis=(1, 2, 3)) if fill is None else np.full(n, fill, np.float32)
    acc, cover = np.zeros(x.shape[:3], np.float64), np.zeros((size, size))
    for r, c in pos:
        cover[r:r + patch, c:c + patch] += 1
    owner, which = np.repeat(np.arange(n), len(pos)), np.tile(np.arange(len(pos)), n)
    for s in chunks(len(owner), batch_size):
        batch = x[owner[s]].copy()
        for j, (i, p) in enumerate(zip(owner[s], which[s], strict=True)):
            r, c = pos[p]
            batch[j, r:r + patch, c:c + patch] = fills[i]
        drop = base[owner[s]] - f(batch).numpy()[np.arange(len(batch)), t[owner[s]]]
        for j, (i, p) in enumerate(zip(owner[s], which[s], strict=True)):
            r, c = pos[p]
            acc[i, r:r + patch, c:c + patch] += drop[j]
    return np.maximum(acc / cover, 0.0)


METHODS = (
    Method("occlusion", occlusion, expensive=True, options={"patch": "explain.occlusion_patch"},
           summary="score drop under a sliding grey square (Zeiler & Fergus 2014)"),
)
