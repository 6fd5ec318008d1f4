"""Explanation checks on annotated real X-rays: ``covidxray interpret RUN --data DATASET``.

A dataset qualifies when its manifest has mask columns (``lung_mask``, ``lesion_mask``,
``device_mask``: radiologist-drawn masks, paths relative to the manifest) or boxes (a CSV of
``path,label,x,y,w,h`` or a COCO JSON, one box per row / annotation; :func:`box_masks` turns them
into masks). For every method the report gives, with 95% intervals over images (percentile
bootstrap of the mean), the share of attribution energy inside the lungs, on the lesions and on the
devices, and the pointing game on the lesions (Zhang et al. 2016), each beside the value of a
uniform map (the mask's area fraction). Devices (tubes, lines, probes) are where a shortcut would
look (DeGrave et al. 2021): energy on them well above their area is a warning.

Rows flagged ``in_dev=1`` share a patient with the training database and are left out (they would
flatter a model trained on it), and the count left out is reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray import atomic, runinfo
from covidxray.data.cache import load_masks, resize_mask
from covidxray.errors import DataError
from covidxray.evaluation.evaluate import drop_in_dev
from covidxray.explain.localisation import energy_share, pointing_game

MASK_COLUMNS = {"lung": "lung_mask", "lesion": "lesion_mask", "device": "device_mask"}
BOX_COLUMNS = ("path", "x", "y", "w", "h")


def _size_of(path: Path) -> tuple[int, int]:
    from covidxray.data.imageio import read_image

    return read_image(path).shape[:2]


def box_masks(boxes: str | Path, sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Masks from boxes: a CSV ``path,label,x,y,w,h`` or a COCO JSON (``bbox`` = x, y, w, h in pixels).

    Args:
        boxes: The CSV or JSON file. Image paths are relative to its folder.
        sizes: ``{path: (height, width)}``; for the CSV, read from the images when missing (COCO
            carries them).

    Returns:
        ``{absolute image path: (H, W) bool mask}``, the union of each image's boxes. Boxes are
        half-open pixel rectangles ``[x, x + w) x [y, y + h)``, clipped to the image.

    Raises:
        DataError: A file that is neither, missing columns, or a box with negative size.
    """
    boxes = Path(boxes)
    base = boxes.parent
    rows: list[tuple[str, float, float, float, float]] = []
    sizes = dict(sizes or {})
    if boxes.suffix.lower() == ".json":
        try:
            coco = json.loads(boxes.read_text())
            files = {im["id"]: str((base / im["file_name"]).resolve()) for im in coco["images"]}
            for im in coco["images"]:
                sizes.setdefault(files[im["id"]], (int(im["height"]), int(im["width"])))
            rows = [(files[a["image_id"]], *map(float, a["bbox"])) for a in coco["annotations"]]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{boxes}: not a COCO file with images and bbox annotations ({err})") from None
    else:
        table = pd.read_csv(boxes, keep_default_na=False)
        missing = [c for c in BOX_COLUMNS if c not in table]
        if missing:
            raise DataError(f"{boxes}: box CSV lacks columns {missing} (needs path,label,x,y,w,h)")
        rows = [(str((base / r.path).resolve()), float(r.x), float(r.y), float(r.w), float(r.h))
                for r in table.itertuples()]
    out: dict[str, np.ndarray] = {}
    for path, x, y, w, h in rows:
        if w < 0 or h < 0:
            raise DataError(f"{boxes}: box of negative size for {path}")
        if path not in sizes:
            sizes[path] = _size_of(Path(path))
        hh, ww = sizes[path]
        m = out.setdefault(path, np.zeros((hh, ww), bool))
        x0, y0 = int(np.floor(max(x, 0))), int(np.floor(max(y, 0)))
        x1, y1 = int(np.ceil(min(x + w, ww))), int(np.ceil(min(y + h, hh)))
        m[y0:y1, x0:x1] = True
    return out


def mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float | None, list | None, int]:
    """Mean of the finite values, its percentile-bootstrap 95% interval, and how many there were."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None, None, 0
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return float(v.mean()), np.percentile(boots, [2.5, 97.5]).tolist(), int(v.size)


def localisation_table(maps: dict[str, np.ndarray], masks: dict[str, np.ndarray], n_boot: int = 1000,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per method: energy in each mask and pointing on lesions, against a uniform map, with CIs.

    Args:
        maps: ``{method: (N, S, S) non-negative maps}``.
        masks: ``{"lung" | "lesion" | "device": (N, S, S) bool}``; an all-False mask means "none
            drawn on this image" and the image does not count for that mask.
        n_boot: Bootstrap resamples of each mean.
        seed: Seed of the bootstrap.

    Returns:
        ``(summary, per_image)``: one row per method (and a ``uniform`` row), columns
        ``<mask>_energy``, ``<mask>_energy_ci``, ``<mask>_n`` and ``pointing_lesion`` (+ ``_ci``, ``_n``);
        and the per-image values (``method``, ``image``, the same columns).
    """
    any_map = next(iter(maps.values()))
    uniform = np.ones_like(any_map, dtype=np.float32)
    per_image, rows = [], []
    for method, m in {**maps, "uniform": uniform}.items():
        cols = {"method": method, "image": np.arange(len(m))}
        for name, mask in masks.items():
            cols[f"{name}_energy"] = energy_share(m, mask)
        if "lesion" in masks:
            hit = pointing_game(m, masks["lesion"]).astype(float)
            if method == "uniform":  # a flat map has no maximum: its chance is the lesion's area
                hit = masks["lesion"].reshape(len(m), -1).mean(axis=1)
            hit[~masks["lesion"].reshape(len(m), -1).any(axis=1)] = np.nan
            cols["pointing_lesion"] = hit
        table = pd.DataFrame(cols)
        per_image.append(table)
        row = {"method": method}
        for col in [c for c in table.columns if c not in ("method", "image")]:
            row[col], row[f"{col}_ci"], row[f"{col}_n"] = mean_ci(table[col].to_numpy(), n_boot, seed)
        rows.append(row)
    return pd.DataFrame(rows), pd.concat(per_image, ignore_index=True)


def load_annotated(dataset: str | Path, size: int, boxes: str | Path | None = None,
                   exclude_in_dev: bool = True, log: Callable = print) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The annotated images of a dataset manifest and their masks at model size.

    Args:
        dataset: Folder holding ``manifest.csv``, or the manifest itself.
        size: Model input size.
        boxes: Optional box CSV / COCO JSON whose boxes become (or add to) the lesion masks.
        exclude_in_dev: Leave out rows with ``in_dev == 1`` (patients shared with the training database).
        log: Where progress messages go.

    Returns:
        ``(table, masks)``: the kept rows (absolute ``path``) and ``{"lung"|"lesion"|"device": (N, S, S)}``
        for the mask kinds the dataset has.
    """
    src = Path(dataset)
    manifest = src / "manifest.csv" if src.is_dir() else src
    if not manifest.is_file():
        raise DataError(f"{src}: no manifest.csv with mask columns (lung_mask, lesion_mask, device_mask)")
    base = manifest.parent
    table = pd.read_csv(manifest, keep_default_na=False, dtype=str)
    if exclude_in_dev:
        table = drop_in_dev(table, log)
    table = table.reset_index(drop=True)
    table["path"] = [str((base / p).resolve()) for p in table["path"]]
    kinds = {k: c for k, c in MASK_COLUMNS.items() if c in table}
    box = box_masks(boxes) if boxes else {}
    if not kinds and not box:
        raise DataError(f"{manifest}: no mask columns ({', '.join(MASK_COLUMNS.values())}) and no --boxes")
    masks = {kind: load_masks(table[col].tolist(), size, base) for kind, col in kinds.items()}
    if box:
        masks.setdefault("lesion", np.zeros((len(table), size, size), bool))
        for i, path in enumerate(table["path"]):
            if path in box:
                masks["lesion"][i] |= resize_mask(box[path], size)
    return table, masks


def predict_missing_lungs(masks: dict[str, np.ndarray], images: np.ndarray, log: Callable = print) -> dict | None:
    """Fill ``masks["lung"]`` where an image has none with the shipped segmenter's lungs (in place).

    Args:
        masks: ``{"lung"|"lesion"|"device": (N, S, S) bool}`` from :func:`load_annotated`.
        images: ``(N, S, S[, 1])`` 0-255 model-size images.
        log: Where the line naming the segmenter and its held-out Dice goes.

    Returns:
        None when every image had a lung mask (or no segmenter is installed), else the segmenter's
        record (:meth:`~covidxray.lungs.segment.Segmenter.record`) with ``n`` predicted.
    """
    from covidxray.lungs.segment import dice_text, installed_segmenter

    n, size = len(images), images.shape[1]
    lung = masks.get("lung", np.zeros((n, size, size), bool))
    seg = installed_segmenter(log) if not lung.reshape(n, -1).any(axis=1).all() else None
    if seg is None:
        return None
    masks["lung"], predicted = seg.fill_missing(lung, images)
    rec = {**seg.record(), "n": int(len(predicted))}
    log(f"{len(predicted)} image(s) without a lung mask: lungs predicted by {rec['path']} ({dice_text(seg.metrics)})")
    return rec


def interpret_dataset(run_dir: str | Path, dataset: str | Path, methods: Sequence[str], out: str | Path,
                      target: str | None = None, boxes: str | Path | None = None, n_boot: int = 1000,
                      method_options: dict | None = None, batch_size: int = 16,
                      log: Callable = print) -> dict:
    """Explain every annotated image of a dataset with each method and score the maps against its masks.

    Args:
        run_dir: Run folder.
        dataset: Annotated dataset (folder with ``manifest.csv`` or the CSV).
        methods: Explanation methods (names of :data:`covidxray.explain.METHODS`).
        out: Output folder for ``interpret_data.json``, ``localisation_data.csv`` and the gallery.
        target: Class to explain (default: each image's predicted class).
        boxes: Optional boxes (CSV or COCO) that become lesion masks.
        n_boot: Bootstrap resamples of each mean.
        method_options: ``{method: kwargs}`` for :func:`covidxray.explain.registry.explain` (default:
            the run config's ``explain`` options on its CAM layer).
        batch_size: Images per explanation pass.
        log: Where progress messages go.

    Returns:
        The report written to ``interpret_data.json``.
    """
    from covidxray.data.cache import load_for_model
    from covidxray.data.inputs import for_run
    from covidxray.explain.core import resolve_layer
    from covidxray.explain.overlays import gallery_figure
    from covidxray.explain.registry import check_methods, explain
    from covidxray.explain.registry import method_options as registry_options
    from covidxray.runinfo import run_config

    model, meta = runinfo.load_run(run_dir)
    classes, size = list(meta["classes"]), int(meta["image_size"])
    table, masks = load_annotated(dataset, size, boxes, log=log)
    if target is not None and target not in classes:
        raise DataError(f"--target {target!r} is not one of the run's classes {classes}")
    images = np.stack([load_for_model(p, size) for p in table["path"]])
    lungs_from = predict_missing_lungs(masks, images, log)
    model_inputs = for_run(meta)  # the run's normalization / lung field; the masks follow a crop
    if not model_inputs.identity:
        kinds = list(masks)
        images, moved = model_inputs(images, tuple(masks[k] for k in kinds))
        masks = dict(zip(kinds, moved, strict=True))
    t = None if target is None else classes.index(target)
    methods = check_methods(methods)
    if method_options is None:
        cfg = run_config(run_dir)
        method_options = registry_options(cfg, resolve_layer(model, cfg.explain.cam_layer or None, meta))
    opts = method_options
    maps = {m: explain(model, images, m, target=t, batch_size=batch_size, **opts.get(m, {})) for m in methods}
    summary, per_image = localisation_table(maps, masks, n_boot=n_boot, seed=int(meta.get("seed", 0)))
    per_image["path"] = table["path"].to_numpy()[per_image["image"].to_numpy()]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(per_image, out / "localisation_data.csv")
    show = list(range(min(6, len(images))))
    fig = gallery_figure(images[show], {m: maps[m][show] for m in methods},
                         [f"{Path(p).name[:18]} ({lab})" for p, lab in zip(table["path"].iloc[show],
                                                                         table["label"].iloc[show], strict=True)],
                         lung_masks=masks["lung"][show] if "lung" in masks else None)
    with atomic.atomic_path(out / "gallery_data.png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", facecolor="white")
    report = {"run": str(Path(run_dir).resolve()), "dataset": str(Path(dataset).resolve()), "n": int(len(table)),
              "target": target or "predicted class", "masks": {k: int(v.reshape(len(v), -1).any(1).sum())
                                                               for k, v in masks.items()},
              "predicted_lungs": lungs_from,
              "methods": summary.to_dict(orient="records"), "figures": {"gallery": str(out / "gallery_data.png")}}
    atomic.write_json(out / "interpret_data.json", report)
    log(format_table(summary))
    return report


def format_table(summary: pd.DataFrame) -> str:
    """The method rows as text: energy in lungs / lesions / devices and lesion pointing (uniform = chance)."""
    cols = [c for c in ("lung_energy", "lesion_energy", "device_energy", "pointing_lesion") if c in summary]
    lines = ["method".ljust(22) + "".join(c.ljust(24) for c in cols)]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v, ci = r[c], r[f"{c}_ci"]
            cells.append("n/a".ljust(24) if v is None or pd.isna(v) else
                         f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]".ljust(24))
        lines.append(str(r["method"]).ljust(22) + "".join(cells))
    return "\n".join(lines)


def summary_frame(report: dict) -> pd.DataFrame:
    """The method rows of an :func:`interpret_dataset` report as a table (intervals as text)."""
    rows = []
    for r in report["methods"]:
        row = {"method": r["method"]}
        for col in ("lung_energy", "lesion_energy", "device_energy", "pointing_lesion"):
            if col in r:
                ci = r.get(f"{col}_ci")
                row[col] = r[col]
                row[f"{col} 95% CI"] = "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
                row[f"{col} n"] = r.get(f"{col}_n")
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
