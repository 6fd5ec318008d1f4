"""Activations: a layer's strongest feature maps, for display and as the ``activation`` method.

``activation`` averages the ``k`` channels of the layer with the highest mean activation and
upsamples the result: what the layer responds to, whatever the class (it ignores ``target``).
"""

from __future__ import annotations

import numpy as np

from covidxray.explain.method import Method


def activation_maps(model, images: np.ndarray, layers: list[str] | None = None, k: int = 8,
                    batch_size: int = 32) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-k feature maps (by mean activation, per image) of named layers, for display.

    Args:
        model: The classifier.
        images: Raw 0-255 grayscale ``(N, S, S[, 1])``.
        layers: Layer names; default :func:`covidxray.explain.core.block_layers` (``mixed0``..``mixed10``
            for InceptionV3).
        k: Channels kept per layer and image.
        batch_size: Images per forward pass.

    Returns:
        ``{layer: (maps, channels)}`` with ``maps`` ``(N, k, h, w)`` float32 raw activations at the
        layer's resolution, strongest first, and ``channels`` ``(N, k)`` their channel indices.
    """
    from covidxray.explain.core import act_fn, as_batch, block_layers, chunks

    x = as_batch(model, images)
    layers = tuple(layers or block_layers(model))
    f = act_fn(model, layers)
    parts: dict[str, list] = {n: [] for n in layers}
    for s in chunks(len(x), batch_size):
        outs = f(x[s])
        for name in layers:
            a = outs[name].numpy()
            top = np.argsort(-a.mean(axis=(1, 2)), axis=1, kind="stable")[:, :k]
            maps = np.take_along_axis(a, top[:, None, None, :], axis=3)
            parts[name].append((np.moveaxis(maps, 3, 1).astype(np.float32), top))
    return {n: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for n, v in parts.items()}


def activation(model, x, target=None, *, score=None, batch_size, layer, k: int = 8):
    """Mean of the layer's ``k`` strongest channels, upsampled to the input (class-agnostic)."""
    from covidxray.explain.core import upsample

    maps = activation_maps(model, x, [layer], k=k, batch_size=batch_size)[layer][0].mean(axis=1)
    return upsample(maps, x.shape[1:3])


METHODS = (
    Method("activation", activation, needs_layer=True,
           summary="mean of the layer's strongest channels (class-agnostic)"),
)
