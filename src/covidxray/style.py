"""The shared figure style: class palette, matplotlib settings and the ``save_to=`` decorator.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state), so they work
with any backend, headless included, and are never left open. A function decorated with
:func:`styled` builds its figure under :data:`STYLE` and, given ``save_to``, also writes it
(150 dpi, white background; atomically, so a killed process never leaves half a PNG). Class
colours come from one palette, :data:`CLASS_COLORS` (Okabe-Ito, colour-blind safe).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

from covidxray.atomic import atomic_path

CLASS_COLORS = {
    "COVID-19": "#D55E00",
    "Normal": "#009E73",
    "Viral Pneumonia": "#0072B2",
    "Lung Opacity": "#E69F00",
}
EXTRA_COLORS = ("#CC79A7", "#56B4E9", "#F0E442", "#000000")
NEUTRAL = "#444444"
STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "figure.facecolor": "white",
}


def class_color(name: str) -> str:
    """Colour of a class: fixed for the canonical classes, stable for any other name."""
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    return EXTRA_COLORS[sum(map(ord, name)) % len(EXTRA_COLORS)]


def blank_axes(ax) -> None:
    """No ticks and no grid: for axes that show an image."""
    ax.set(xticks=[], yticks=[])
    ax.grid(False)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure (150 dpi, white background, tight box) atomically; its folder is created."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", facecolor="white", format=path.suffix.lstrip(".") or "png")
    return path


def styled(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under the shared style and save it when ``save_to`` is given."""

    @functools.wraps(func)
    def wrapper(*args: Any, save_to: str | Path | None = None, **kwargs: Any) -> Figure:
        with mpl.rc_context(STYLE):
            fig = func(*args, **kwargs)
            if save_to is not None:
                save_figure(fig, save_to)
        return fig

    return wrapper
