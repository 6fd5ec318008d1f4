"""The viewer's pictures as RGB arrays: the heat map over the X-ray, with the lung contour.

Drawn by :func:`covidxray.explain.overlays.draw_overlay` (the same overlay ``covidxray explain``
writes) on a pyplot-free Agg canvas and returned as a ``(H, W, 3)`` uint8 array for the page.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from covidxray.explain.overlays import draw_overlay

PIXELS = 384  # side of the rendered overlay


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray | None, lung_mask: np.ndarray | None = None,
                alpha: float = 0.4, pixels: int = PIXELS) -> np.ndarray:
    """Render ``image`` with ``heatmap`` (in [0, 1]) and the lung contour over it.

    Args:
        image: ``(S, S)`` uint8 model input.
        heatmap: ``(S, S)`` map in [0, 1], or None for the image alone.
        lung_mask: ``(S, S)`` bool lung mask, or None.
        alpha: Heat-map opacity.
        pixels: Output side in pixels.

    Returns:
        ``(pixels, pixels, 3)`` uint8 RGB.
    """
    fig = Figure(figsize=(pixels / 100, pixels / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_overlay(ax, image, heatmap, lung_mask, alpha=alpha)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
