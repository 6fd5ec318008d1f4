"""Explanation figures: heat-map overlays, the method gallery, activation maps; `covidxray explain`.

Figures are :class:`matplotlib.figure.Figure` objects built without pyplot (headless-safe);
``save_to=`` writes them at 150 dpi (see :mod:`covidxray.plots`). Heat maps are drawn over the
grayscale image the model saw, with the lung contour (white) when a lung mask is known.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from covidxray import atomic
from covidxray.errors import UsageError
from covidxray.style import styled as _styled

DEFAULT_METHODS = ("gradcam", "gradcam++", "gradient", "smoothgrad", "integrated_gradients")


def draw_overlay(ax: Axes, image: np.ndarray, heatmap: np.ndarray | None = None,
                 lung_mask: np.ndarray | None = None, title: str | None = None, cmap: str = "jet",
                 alpha: float = 0.4) -> None:
    """Draw a grayscale image, optionally a [0, 1] heat map over it and the lung contour, on ``ax``."""
    ax.imshow(np.asarray(image).squeeze(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if heatmap is not None:
        ax.imshow(heatmap, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear")
    if lung_mask is not None and np.any(lung_mask):
        ax.contour(np.asarray(lung_mask, np.float32), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def caption(classes: Sequence[str], probs: np.ndarray, label: str | None = None) -> str:
    """``pred COVID-19 (0.93)`` plus ``| true Normal`` when the label is known."""
    k = int(np.argmax(probs))
    return f"pred {classes[k]} ({probs[k]:.2f})" + (f" | true {label}" if label else "")


@_styled
def overlay_figure(image: np.ndarray, heatmap: np.ndarray, lung_mask: np.ndarray | None = None,
                   title: str | None = None, cmap: str = "jet", alpha: float = 0.4) -> Figure:
    """One image beside its heat-map overlay.

    Args:
        image: ``(S, S)`` grayscale 0-255.
        heatmap: ``(S, S)`` map in [0, 1].
        lung_mask: Optional ``(S, S)`` bool lung mask (contour drawn).
        title: Figure title (e.g. method and :func:`caption`).
        cmap: Heat-map colour map (``jet``, ``inferno``...).
        alpha: Heat-map opacity.
        save_to: Optional output path (keyword).

    Returns:
        The Figure.
    """
    fig = Figure(figsize=(6.4, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    draw_overlay(left, image, None, lung_mask, "input")
    draw_overlay(right, image, heatmap, lung_mask, "overlay", cmap, alpha)
    fig.colorbar(right.images[-1], ax=right, shrink=0.8, label="attribution (min-max)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


@_styled
def gallery_figure(images: np.ndarray, maps: Mapping[str, np.ndarray], row_titles: Sequence[str],
                   lung_masks: Sequence[np.ndarray | None] | None = None, cmap: str = "jet",
                   alpha: float = 0.4) -> Figure:
    """Rows are images (one per class, say), columns the input and then each method's overlay.

    Args:
        images: ``(R, S, S)`` grayscale 0-255.
        maps: ``{method: (R, S, S) maps}``, in column order.
        row_titles: One caption per row.
        lung_masks: Optional per-row lung masks (or None entries).
        cmap: Heat-map colour map.
        alpha: Heat-map opacity.
        save_to: Optional output path (keyword).

    Returns:
        The Figure.
    """
    rows, cols = len(images), len(maps) + 1
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for r in range(rows):
        mask = lung_masks[r] if lung_masks is not None else None
        draw_overlay(axes[r, 0], images[r], None, mask, "input" if r == 0 else None)
        axes[r, 0].text(-0.06, 0.5, row_titles[r], transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
        for c, (method, m) in enumerate(maps.items(), start=1):
            draw_overlay(axes[r, c], images[r], m[r], mask, method if r == 0 else None, cmap, alpha)
    return fig


@_styled
def activation_figure(image: np.ndarray, activations: Mapping[str, tuple[np.ndarray, np.ndarray]],
                      title: str | None = None, cmap: str = "viridis") -> Figure:
    """Top-k channel maps of several layers for one image (rows layers, columns channels).

    Args:
        image: ``(S, S)`` grayscale 0-255 (first column).
        activations: ``{layer: (maps (k, h, w), channels (k,))}`` of one image, e.g. from
            :func:`covidxray.explain.activation_maps` indexed at the image.
        title: Figure title.
        cmap: Colour map of the feature maps (each scaled to its own range).
        save_to: Optional output path (keyword).

    Returns:
        The Figure.
    """
    k = max(len(ch) for _, ch in activations.values())
    fig = Figure(figsize=(1.5 * (k + 1), 1.6 * len(activations) + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(len(activations), k + 1, squeeze=False))
    for r, (layer, (maps, channels)) in enumerate(activations.items()):
        draw_overlay(axes[r, 0], image, title=layer)
        for c in range(k):
            ax = axes[r, c + 1]
            ax.set_axis_off()
            if c < len(channels):
                ax.imshow(maps[c], cmap=cmap, interpolation="nearest")
                ax.set_title(f"ch {int(channels[c])}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def mask_table(csvs: Sequence[str | Path]) -> dict[str, dict[str, str]]:
    """``{resolved image path: {"label", "lung_mask", "lesion_mask"}}`` from manifests / splits CSVs
    (paths relative to each CSV's folder; empty strings when unknown)."""
    table: dict[str, dict[str, str]] = {}
    for csv in map(Path, csvs):
        df = pd.read_csv(csv, keep_default_na=False, dtype=str)
        if "path" not in df.columns:
            continue

        def resolve(p: str, base: Path = csv.parent) -> str:
            return str((base / p).resolve()) if p else ""

        for row in df.to_dict("records"):
            table[resolve(row["path"])] = {"label": row.get("label", ""),
                                           **{k: resolve(row.get(k, "")) for k in ("lung_mask", "lesion_mask")}}
    return table


def _run_inputs(meta: dict, x: np.ndarray, *masks: list) -> tuple:
    """The run's own normalization / lung field on ``x``; masks (None where unknown) follow a crop."""
    from covidxray.data.inputs import for_run

    model_inputs = for_run(meta)
    if model_inputs.identity:
        return (x, *masks)
    filled = tuple(np.stack([m if m is not None else np.zeros(x.shape[1:], bool) for m in ms]) for ms in masks)
    x, moved = model_inputs(x, filled)
    return (x, *([None if m is None else mv[i] for i, m in enumerate(ms)] for ms, mv in zip(masks, moved, strict=True)))


def _mask(path: str, size: int) -> np.ndarray | None:
    from covidxray.data.cache import resize_mask
    from covidxray.data.imageio import read_mask

    if not path:
        return None
    return resize_mask(read_mask(path), size)


@dataclass
class ExplainReport:
    """What ``covidxray explain`` did: per image and method rows, figures written, files skipped."""

    table: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def explain_files(run_dir: str | Path, inputs: Sequence[str | Path], out_dir: str | Path,
                  methods: Sequence[str] = DEFAULT_METHODS, manifests: Sequence[str | Path] = (),
                  target: str | None = None, cmap: str = "jet", alpha: float = 0.4, batch_size: int = 16,
                  log: Callable[[str], None] = lambda _: None, layer: str | None = None) -> ExplainReport:
    """Explain image files with a run's model: overlays per image and method, a gallery, a CSV.

    Args:
        run_dir: Run folder (``model.keras``, ``run.json``; its ``splits.csv`` supplies masks/labels).
        inputs: Image files and/or folders (see :func:`covidxray.data.files.collect_images`).
        out_dir: Output folder: ``<image>_<method>.png``, ``gallery.png``, ``explain.csv``.
        methods: Methods of :func:`covidxray.explain.explain`.
        manifests: Extra manifest CSVs with ``lung_mask``/``lesion_mask`` columns (a ``manifest.csv``
            beside an image or up to two folders above it is used too).
        target: Class name to explain; default the predicted class.
        cmap: Heat-map colour map.
        alpha: Heat-map opacity.
        batch_size: Model inputs per pass.
        log: Progress callback.
        layer: CAM layer (default run.json's ``last_conv_layer``).

    Returns:
        :class:`ExplainReport`; the CSV has localisation columns where masks are known.
    """
    from covidxray.data.cache import load_for_model
    from covidxray.data.files import collect_images
    from covidxray.data.imageio import ImageReadError
    from covidxray.explain.core import class_scores, resolve_layer
    from covidxray.explain.localisation import localisation
    from covidxray.explain.registry import check_methods, explain
    from covidxray.runinfo import load_run

    check_methods(methods)
    model, meta = load_run(run_dir)
    size, classes = int(meta["image_size"]), list(meta["classes"])
    if target is not None and target not in classes:
        raise UsageError(f"target class {target!r} is not one of the run's classes {classes}")
    names, missing, _ = collect_images(inputs)
    if missing:
        raise FileNotFoundError(f"{missing[0][0]}: no such image file or folder")
    files = [Path(f) for f in names]
    near = {p / "manifest.csv" for f in files for p in list(f.resolve().parents)[:3] if (p / "manifest.csv").is_file()}
    run_csv = [Path(run_dir) / "splits.csv"] if (Path(run_dir) / "splits.csv").is_file() else []
    masks = mask_table([*run_csv, *sorted(near), *manifests])
    report, images, kept = ExplainReport(pd.DataFrame()), [], []
    for f in files:
        try:
            images.append(load_for_model(f, size))
            kept.append(f)
        except ImageReadError as err:
            report.skipped.append(str(err))
    if not kept:
        raise ImageReadError(files[0] if files else Path(str(inputs)), "no readable image among the inputs")
    x = np.stack(images)
    info = [masks.get(str(f.resolve()), {}) for f in kept]
    lungs = [_mask(i.get("lung_mask", ""), size) for i in info]
    lesions = [_mask(i.get("lesion_mask", ""), size) for i in info]
    x, lungs, lesions = _run_inputs(meta, x, lungs, lesions)
    probs = class_scores(model, x, "prob", batch_size)
    tgt = None if target is None else classes.index(target)
    layer = resolve_layer(model, layer, meta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = [f.stem if [g.stem for g in kept].count(f.stem) == 1 else f"{f.parent.name}_{f.stem}" for f in kept]
    rows, all_maps = [], {}
    for method in methods:
        start = time.perf_counter()
        maps = all_maps[method] = explain(model, x, method, target=tgt, layer=layer, batch_size=batch_size)
        seconds = (time.perf_counter() - start) / len(x)
        log(f"{method}: {len(x)} images, {seconds:.3f} s/image")
        for i, f in enumerate(kept):
            title = f"{f.name} | {method}\n{caption(classes, probs[i], info[i].get('label'))}"
            path = out / f"{stems[i]}_{method}.png"
            overlay_figure(x[i], maps[i], lungs[i], title, cmap, alpha, save_to=path)
            report.figures.append(path)
            loc = localisation(maps[i][None], *[None if m is None else m[None] for m in (lungs[i], lesions[i])])
            rows.append({"image": str(f), "label": info[i].get("label", ""), "method": method,
                         "predicted": classes[int(probs[i].argmax())], "probability": float(probs[i].max()),
                         "explained": classes[tgt if tgt is not None else int(probs[i].argmax())],
                         "seconds_per_image": seconds, **(loc.iloc[0].to_dict() if len(loc.columns) else {})})
    # gallery: one image per class (true label when known, else predicted), in class order
    row_class = [i.get("label") or classes[int(p.argmax())] for i, p in zip(info, probs, strict=True)]
    pick = [row_class.index(c) for c in classes if c in row_class] or [0]
    path = out / "gallery.png"
    gallery_figure(x[pick], {m: v[pick] for m, v in all_maps.items()},
                   [f"{kept[i].name}\n{caption(classes, probs[i], info[i].get('label'))}" for i in pick],
                   [lungs[i] for i in pick], cmap, alpha, save_to=path)
    report.figures.append(path)
    report.table = pd.DataFrame(rows)
    atomic.write_csv(report.table, out / "explain.csv")
    return report
