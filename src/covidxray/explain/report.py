"""How far a run's explanations can be trusted: ``covidxray interpret`` and notebook 05.

:func:`report` explains a run's split images that carry lung/lesion masks (phantoms always do;
without any mask it uses all images and skips localisation) with each method of
:mod:`covidxray.explain`, and checks every method four ways (see :mod:`covidxray.explain_checks`):

* localisation: mean share of attribution energy inside the lungs, inside the lesion
  (lesion-bearing images), and the pointing game on lesion-bearing images, each with its count;
  ``chance`` gives a uniform map's values (the masks' mean area fractions; the pointing game's
  chance is the lesion's area fraction when ``tolerance`` is 0);
* faithfulness: mean deletion and insertion AUCs of the target-class probability;
* sanity: cascading randomisation: Spearman and SSIM between the trained and the fully randomised
  model's maps, and the curve over the randomised blocks; methods whose maps barely change are flagged;
* cost: seconds per image (after one untimed call that traces the model);
* lesion ablation (phantoms only, :mod:`covidxray.ablation`): per layer of ``explain.ablation_layers``,
  Grad-CAM's localisation beside that of the map of where the layer's activations change when the
  lesions are removed from the same phantoms, and how often that flips the prediction.

The ``explain:`` section of the run's ``config.yaml`` (plus ``overrides``) sizes every check. Images
are drawn per class with the run's seed and interleaved by class, so each check's subset (the first
few images) is class-balanced; the expensive methods explain only the first ``n_per_class_expensive``
per class. Results go to ``<run>/interpret/<split>/``: ``interpret.json``, ``localisation.csv`` (per
image and method) and the figures of :data:`FIGURES`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covidxray import atomic
from covidxray.data.cache import load_masks
from covidxray.errors import UsageError
from covidxray.runinfo import run_config
from covidxray.style import styled as _styled

FIGURES = {"gallery": "gallery.png", "localisation": "localisation.png", "faithfulness": "faithfulness.png",
           "randomization": "randomization.png", "activations": "activations.png"}
TABLE_COLUMNS = {"lung_energy": "lung E", "lesion_energy": "lesion E", "pointing_lesion": "pointing",
                 "deletion_auc": "del AUC", "insertion_auc": "ins AUC", "spearman": "rand rho",
                 "flagged": "flagged", "seconds_per_image": "s/img"}


def cam_layer(run_dir: str | Path, layer: str | None = None) -> str | None:
    """The CAM layer for a run: ``layer``, else the run config's ``explain.cam_layer``, else None
    (meaning run.json's ``last_conv_layer``)."""
    return layer or run_config(run_dir).explain.cam_layer or None


def resolve_layer(model, meta: Mapping, layer: str | None) -> str:
    """Check ``layer`` (default run.json ``last_conv_layer``, else the model's default) against the model."""
    from covidxray.explain.core import resolve_layer as _resolve

    return _resolve(model, layer, meta)


def select_images(table: pd.DataFrame, classes: Sequence[str], n_per_class: int, seed: int) -> pd.DataFrame:
    """Up to ``n_per_class`` rows per class (those with a mask when any has one), interleaved by class."""
    has = np.zeros(len(table), bool)
    for col in ("lung_mask", "lesion_mask"):
        if col in table:
            has |= table[col].astype(str).str.len().to_numpy() > 0
    pool = table[has] if has.any() else table
    picks = []
    for k, c in enumerate(classes):
        g = pool[pool["label"] == c]
        g = g.sample(min(n_per_class, len(g)), random_state=seed)
        picks.append(g.assign(_rank=np.arange(len(g)), _cls=k))
    if not sum(map(len, picks)):
        raise UsageError(f"no images of the classes {list(classes)} in this split")
    order = pd.concat(picks).sort_values(["_rank", "_cls"])
    return order.drop(columns=["_rank", "_cls"]).reset_index(drop=True)


def method_options(ex: Mapping, layer: str, seed: int) -> dict[str, dict]:
    """Keyword options of :func:`covidxray.explain.explain` per method, from the ``explain:`` config."""
    from covidxray.explain.registry import method_options as options

    return options({"explain": ex, "seed": seed}, layer)


def _explain_method(model, x, t, lungs, lesions, method, opts, ex, keep):
    """Maps in chunks: per-image localisation, the first ``keep`` maps, seconds per image."""
    from covidxray.explain.localisation import localisation
    from covidxray.explain.registry import explain

    rows, kept, seconds, n = [], [], 0.0, len(x)
    for start, stop in [(0, 1), *[(s, min(n, s + ex["chunk"])) for s in range(1, n, ex["chunk"])]]:
        tic = time.perf_counter()
        maps = explain(model, x[start:stop], method, target=t[start:stop], batch_size=ex["batch_size"],
                       **opts[method])
        seconds += (time.perf_counter() - tic) if start or n == 1 else 0.0  # the first call traces: untimed
        rows.append(localisation(maps, lungs[start:stop], lesions[start:stop], ex["tolerance"]))
        kept.append(maps[: max(0, keep - start)])
    return pd.concat(rows, ignore_index=True), np.concatenate(kept), seconds / max(1, n - 1)


def _sanity(model, x, t, methods, opts, ex, seed):
    """Cascading randomisation, the expensive methods on fewer images; returns one Randomization."""
    from covidxray.explain.randomization import Randomization, cascading_randomization

    n_of = {m: ex["randomization_images_expensive" if m in ex["expensive"] else "randomization_images"]
            for m in methods}
    parts = [cascading_randomization(model, x[:n], [m for m in methods if n_of[m] == n], target=t[:n], seed=seed,
                                     threshold=ex["randomization_threshold"], batch_size=ex["batch_size"],
                                     options=opts)
             for n in sorted(set(n_of.values()), reverse=True) if n > 0]  # one model clone per image count
    if not parts:
        return Randomization(pd.DataFrame(columns=["step", "block", "method", "spearman", "ssim"]),
                             pd.DataFrame(columns=["spearman", "ssim", "flagged"]))
    return Randomization(pd.concat([p.table for p in parts], ignore_index=True),
                         pd.concat([p.summary for p in parts]))


@dataclass
class Sample:
    """The images a report explains (interleaved by class) with their masks, labels and targets.

    Attributes:
        rows: Their rows of the run's ``splits.csv``.
        x: ``(N, S, S)`` uint8 model inputs.
        lungs: ``(N, S, S)`` bool lung masks (all False where unknown).
        lesions: ``(N, S, S)`` bool lesion masks (all False for Normal images or where unknown).
        probs: ``(N, C)`` softmax outputs.
        y: ``(N,)`` true class indices.
        t: ``(N,)`` explained class indices (``y`` or the predicted classes, see ``explain.target``).
    """

    rows: pd.DataFrame
    x: np.ndarray
    lungs: np.ndarray
    lesions: np.ndarray
    probs: np.ndarray
    y: np.ndarray
    t: np.ndarray


def load_sample(run_dir: str | Path, model, classes: Sequence[str], split: str, n_per_class: int, seed: int,
                target: str = "label", batch_size: int = 32) -> Sample:
    """Draw up to ``n_per_class`` images per class of a run's split (see :func:`select_images`).

    Raises:
        DataError: An unknown or empty split. ImageReadError: An unreadable image or mask (named).
    """
    from covidxray.data.files import model_inputs
    from covidxray.data.inputs import for_run
    from covidxray.data.pipeline import SPLITS, DataError, read_splits
    from covidxray.explain.core import class_scores

    if split not in SPLITS or target not in ("label", "predicted"):
        raise DataError(f"split must be one of {' | '.join(SPLITS)} (got {split!r}) and explain.target "
                        f"label | predicted (got {target!r})")
    run, classes = Path(run_dir), list(classes)
    table = read_splits(run / "splits.csv", classes)
    if not (table["split"] == split).any():
        raise DataError(f"{run / 'splits.csv'}: no images in split '{split}'")
    rows = select_images(table[table["split"] == split], classes, n_per_class, seed)
    size = int(model.input_shape[1])
    x = model_inputs(rows["path"], size)
    lungs, lesions = (load_masks(rows[c].tolist() if c in rows else [""] * len(rows), size, run)
                      for c in ("lung_mask", "lesion_mask"))
    run_inputs = for_run(json.loads((run / "run.json").read_text()), run)  # the run's normalization / lung field
    if not run_inputs.identity:
        x, (lungs, lesions) = run_inputs(x, (lungs, lesions))
    probs = class_scores(model, x, "prob", batch_size)
    y = rows["label"].map(classes.index).to_numpy(np.int32)
    t = y if target == "label" else probs.argmax(axis=1).astype(np.int32)
    return Sample(rows, x, lungs, lesions, probs, y, t)


def _mean(s: pd.Series) -> float:
    return float(s.mean()) if s.notna().any() else float("nan")


def _check_method(model, s: Sample, method: str, n: int, opts: Mapping, ex: Mapping, keep: int):
    """Localisation, faithfulness and cost of one method on the first ``n`` images."""
    from covidxray.explain.faithfulness import deletion_insertion

    first = slice(0, n)
    loc, maps, sec = _explain_method(model, s.x[first], s.t[first], s.lungs[first], s.lesions[first], method,
                                     opts, ex, keep)
    k = min(ex["faithfulness_images"], n)
    faith = deletion_insertion(model, s.x[:k], maps[:k], target=s.t[:k], steps=ex["faithfulness_steps"],
                               batch_size=ex["batch_size"])
    result = {"localisation": {"n_images": n, **{c: _mean(loc[c]) for c in loc.columns},
                               "n_lung": int(loc["lung_energy"].notna().sum()),
                               "n_lesion": int(loc["lesion_energy"].notna().sum())},
              "faithfulness": {"n_images": k, "deletion_auc": float(faith.deletion_auc.mean()),
                               "insertion_auc": float(faith.insertion_auc.mean())},
              "cost": {"n_images": n, "seconds_per_image": sec}}
    return result, loc.assign(image=s.rows["path"][:n].values, label=s.rows["label"][:n].values,
                              method=method), maps, faith


def report(run_dir: str | Path, split: str = "test", methods: Sequence[str] | None = None,
           n_per_class: int | None = None, layer: str | None = None, out: str | Path | None = None,
           overrides: Sequence[str] = (), log: Callable[[str], None] = lambda _: None, model=None) -> dict:
    """Localisation, faithfulness, sanity and cost of each explanation method on a run's split.

    Args:
        run_dir: Run folder (``model.keras``, ``run.json``, ``splits.csv``, ``config.yaml``).
        split: ``train``, ``val`` or ``test``.
        methods: Methods of :func:`covidxray.explain.explain`; default ``explain.methods``.
        n_per_class: Images per class; default ``explain.n_per_class``.
        layer: CAM layer; default ``explain.cam_layer``, else run.json's ``last_conv_layer``.
        out: Output folder; default ``<run>/interpret/<split>``.
        overrides: ``dotted.key=value`` changes to the run's config (e.g. ``explain.ig_steps=8``).
        log: Progress callback.
        model: The run's model when already loaded (:func:`covidxray.runinfo.load_run`), to skip loading it.

    Returns:
        The report, also written to ``out/interpret.json`` (NaN written as null): ``layer``,
        ``layer_grid``, ``images`` (counts, accuracy), ``chance``, ``methods`` (per method
        ``localisation``, ``faithfulness``, ``sanity`` with its ``curve``, ``cost``), ``flagged``, ``ablation``,
        ``figures``, ``settings`` (the ``explain:`` section used).
    """
    from covidxray.explain.registry import check_methods
    from covidxray.runinfo import load_run, read_run

    run = Path(run_dir)
    cfg = run_config(run, overrides)
    ex = dict(cfg.explain.to_dict(), n_per_class=n_per_class or cfg.explain.n_per_class)
    methods = check_methods(methods or ex["methods"])
    model, meta = (model, read_run(run)) if model is not None else load_run(run)
    classes = list(meta["classes"])
    layer = ex["cam_layer"] = resolve_layer(model, meta, layer or ex["cam_layer"])
    s = load_sample(run, model, classes, split, ex["n_per_class"], cfg.seed, ex["target"], ex["batch_size"])
    log(f"{len(s.x)} {split} images ({s.lesions.any(axis=(1, 2)).sum()} with lesions), CAM layer {layer}")
    n_exp = int(sum(min(ex["n_per_class_expensive"], c) for c in s.rows["label"].value_counts()))
    opts, results, per_image, kept, faith = method_options(ex, layer, cfg.seed), {}, [], {}, {}
    for m in methods:
        n = n_exp if m in ex["expensive"] else len(s.x)
        results[m], loc, kept[m], faith[m] = _check_method(model, s, m, n, opts, ex,
                                                           keep=max(ex["faithfulness_images"], len(classes)))
        per_image.append(loc)
        log(f"{m}: {n} images, {results[m]['cost']['seconds_per_image']:.3f} s/image")
    log("cascading randomisation")
    rand = _sanity(model, s.x, s.t, methods, opts, ex, cfg.seed)
    nan = {"spearman": float("nan"), "ssim": float("nan"), "flagged": False}
    for m in methods:
        n = ex["randomization_images_expensive" if m in ex["expensive"] else "randomization_images"]
        curve = rand.table.loc[rand.table["method"] == m, ["block", "spearman", "ssim"]]
        results[m]["sanity"] = {"n_images": min(n, len(s.x)), **(rand.summary.loc[m].to_dict() if m in
                                                                  rand.summary.index else nan),
                                "curve": curve.to_dict("records")}
    log("lesion ablation")
    ablation = _ablation(model, s, run, ex)
    lung_area, lesion_area = (pd.Series(a.mean(axis=(1, 2))) for a in (s.lungs, s.lesions))
    rep = {"run": str(run), "split": split, "layer": layer, "target": ex["target"], "classes": classes,
           "layer_grid": list(model.get_layer(layer).output.shape[1:3]), "image_size": meta["image_size"],
           "images": {"n": len(s.x), "per_class": s.rows["label"].value_counts().to_dict(),
                      "with_lung_mask": int((lung_area > 0).sum()),
                      "lesion_bearing": int((lesion_area > 0).sum()),
                      "accuracy": float((s.probs.argmax(axis=1) == s.y).mean())},
           "chance": {"lung_energy": _mean(lung_area[lung_area > 0]),
                      "lesion_energy": _mean(lesion_area[lesion_area > 0]),
                      "pointing_lesion": _mean(lesion_area[lesion_area > 0])},
           "methods": results, "flagged": rand.flagged, "ablation": ablation, "settings": ex}
    out = Path(out) if out else run / "interpret" / split
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(pd.concat(per_image, ignore_index=True), out / "localisation.csv")
    rep["figures"] = _figures(out, model, s, kept, faith, rand, rep, ex)
    atomic.write_text(out / "interpret.json", json.dumps(_jsonable(rep), indent=2))
    return rep


def _ablation(model, s: Sample, run: Path, ex: Mapping) -> dict:
    """Grad-CAM against the activation shift, per layer of ``explain.ablation_layers``, on the sample's
    lesion-bearing phantoms (:mod:`covidxray.ablation`); ``{"skipped": reason}`` where it cannot run."""
    from covidxray.data.pipeline import DataError
    from covidxray.explain.ablation import layer_study, lesion_twins

    names = {lyr.name for lyr in model.layers}
    layers = [n for n in ex["ablation_layers"] if n in names]
    rows = s.rows[s.lesions.any(axis=(1, 2))]
    if not layers:
        return {"skipped": f"none of explain.ablation_layers {list(ex['ablation_layers'])} is in the model"}
    if rows.empty or not {"seed", "difficulty", "marker", "source"} <= set(rows) or (rows["source"] != "phantom").any():
        return {"skipped": "needs lesion-bearing phantoms (their seed, difficulty and marker in the manifest)"}
    try:
        twins = lesion_twins(rows, run, int(model.input_shape[1]))
    except DataError as err:
        return {"skipped": str(err)}
    study = layer_study(model, twins, layers, "gradcam", ex["batch_size"])
    return {"images": len(twins.labels), "method": "gradcam", "layers": study.to_dict("records")}


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def _figures(out: Path, model, s: Sample, kept, faith, rand, rep: Mapping, ex: Mapping) -> dict[str, str]:
    from covidxray.explain.activations import activation_maps
    from covidxray.explain.core import block_layers
    from covidxray.explain.faithfulness import plot_faithfulness
    from covidxray.explain.overlays import activation_figure, caption, gallery_figure
    from covidxray.explain.randomization import plot_randomization

    f, classes, labels = {k: out / v for k, v in FIGURES.items()}, rep["classes"], s.rows["label"]
    first = [int(np.flatnonzero(labels == c)[0]) for c in classes if (labels == c).any()]
    first = [i for i in first if all(i < len(v) for v in kept.values())]
    gallery_figure(s.x[first], {m: v[first] for m, v in kept.items()},
                   [f"{labels[i]}\n{caption(classes, s.probs[i])}" for i in first], list(s.lungs[first]),
                   save_to=f["gallery"])
    plot_localisation(rep, save_to=f["localisation"])
    plot_faithfulness(faith, save_to=f["faithfulness"])
    plot_randomization(rand, ex["randomization_threshold"], save_to=f["randomization"])
    names = [layer.name for layer in model.layers]
    layers = [b for b in ex["activation_blocks"] if b in names] or block_layers(model)[-3:]
    acts = activation_maps(model, s.x[:1], layers, k=6)
    activation_figure(s.x[0], {n: (m[0], c[0]) for n, (m, c) in acts.items()},
                      f"{labels[0]}: strongest channels per block", save_to=f["activations"])
    return {k: str(v) for k, v in f.items()}


def summary_table(rep: Mapping) -> pd.DataFrame:
    """One row per method: lung/lesion energy, pointing game, deletion/insertion AUC, randomisation
    Spearman, flagged, seconds per image (columns named as in :data:`TABLE_COLUMNS`)."""
    rows = {m: {**r["localisation"], **r["faithfulness"], **r["sanity"], **r["cost"]}
            for m, r in rep["methods"].items()}
    df = pd.DataFrame.from_dict(rows, orient="index")[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    return df.rename_axis("method")


def format_table(rep: Mapping) -> str:
    """The summary table as text, with the images it rests on and the chance levels."""
    table = summary_table(rep).astype({"flagged": bool}).reset_index()
    text = table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")
    im = rep["images"]
    chance = ", ".join(f"{TABLE_COLUMNS[k]} " + ("-" if v is None or v != v else f"{v:.3f}")
                       for k, v in rep["chance"].items())
    grid = "x".join(map(str, rep["layer_grid"]))
    abl = rep.get("ablation") or {"skipped": "not run"}
    abl_text = f"lesion ablation: skipped ({abl['skipped']})" if "skipped" in abl else (
        f"lesion ablation on {abl['images']} phantoms (pointing game / energy in lungs), Grad-CAM vs where the "
        "layer's activations change when the lesions are removed:\n" + pd.DataFrame(abl["layers"]).to_string(
            index=False, float_format=lambda v: f"{v:.3f}",
            columns=["layer", "grid", "flip_rate", "gradcam_pointing", "gradcam_lung_energy", "shift_pointing",
                     "shift_lung_energy"]))
    return (f"{rep['split']}: {im['n']} images ({im['lesion_bearing']} with lesions), model accuracy on them "
            f"{im['accuracy']:.3f}; CAM layer {rep['layer']} ({grid}); explaining the {rep['target']} class\n"
            f"{text}\nchance (uniform map): {chance}; flagged: {', '.join(rep['flagged']) or 'none'}\n{abl_text}")


@_styled
def plot_localisation(rep: Mapping) -> Figure:
    """Bars per method: lung energy, lesion energy, pointing game; dashed lines at a uniform map's values."""
    df = summary_table(rep)
    fig = Figure(figsize=(1.1 * len(df) + 3, 4), layout="constrained")
    ax = fig.add_subplot()
    pos = np.arange(len(df))
    for j, (col, key, label) in enumerate((("lung E", "lung_energy", "energy in lungs"),
                                           ("lesion E", "lesion_energy", "energy in lesion"),
                                           ("pointing", "pointing_lesion", "pointing game (lesion)"))):
        bars = ax.bar(pos + (j - 1) * 0.27, df[col].astype(float).fillna(0), 0.27, label=label)
        chance = rep["chance"][key]
        if chance is not None and chance == chance:
            ax.axhline(chance, color=bars.patches[0].get_facecolor(), ls="--", lw=1)
    ax.set_xticks(pos, labels=df.index, rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="mean over images", title=f"Localisation ({rep['split']}, "
           f"{rep['images']['n']} images; dashed: uniform map)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
