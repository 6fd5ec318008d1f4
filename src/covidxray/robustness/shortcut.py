"""Shortcut probe on phantoms: does a model trained where a burned-in marker predicts COVID-19 learn
the marker instead of the lesions?

Two models are trained with the same config on the same phantoms (same seed, so the same anatomy
and lesions), which differ only in where the text marker is burned in
(:func:`covidxray.phantoms.generate_dataset`, ``confounder="marker"``):

* ``confounded``: marker strength ``robustness.shortcut.strength`` (1.0 = on every COVID-19
  image and on no other);
* ``clean``: strength 0, the marker on a random half of every class, so it carries no class signal.

Both are scored on two test sets drawn with another seed: ``correlated`` (the confounded model's
training distribution) and ``decorrelated`` (strength 0). ``accuracy_drop`` is correlated minus
decorrelated accuracy. On ``robustness.shortcut.energy_images`` decorrelated images that carry the
marker, the share of the COVID-19 attribution energy (``robustness.cam_method`` on
``robustness.cam_layer``, for the positive class: where does the evidence for COVID-19 come from?)
that falls on the marker's box and inside the lungs is reported for both models, beside
``marker_area``, the share a uniform map would put on the box; every method of
``robustness.shortcut.methods`` is scored on the same images, so the report also says which
attribution methods catch the shortcut. ``covid_calls`` gives the share of images called COVID-19
with and without the marker, the behavioural side of the same question. :data:`CHECKS` states when the probe shows the shortcut.

Output in ``out``: ``data/`` (the four phantom sets), ``confounded/`` and ``clean/`` (run
folders; a finished run trained with the same config is reused), ``shortcut.json``,
``shortcut_examples.png`` (image with the marker box outlined, both models' maps) and
``shortcut_summary.png`` (accuracies and energy shares).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covidxray import atomic, paths, runinfo
from covidxray.config import Config
from covidxray.data.cache import load_for_model, resize_mask
from covidxray.data.imageio import read_mask
from covidxray.style import styled as _styled
from covidxray.training.reuse import SCORING_SECTIONS  # noqa: F401 (named in docstrings)

#: The probe shows a shortcut when the confounded model loses at least 20 accuracy points on
#: decorrelated phantoms, the clean model less than 5, and the confounded model puts at least
#: three times the clean model's share of attribution energy on the marker.
CHECKS = {"confounded_drop_min": 0.20, "clean_drop_max": 0.05, "marker_energy_ratio_min": 3.0}
VARIANTS = ("confounded", "clean")
TESTS = ("correlated", "decorrelated")


def make_datasets(cfg: Config, out: Path) -> dict[str, Path]:
    """Write the two training sets (``cfg.seed``) and two test sets (``cfg.seed + 1``) under ``out``.

    Returns:
        ``{"train-confounded", "train-clean", "test-correlated", "test-decorrelated"}`` -> folder.
    """
    from covidxray.data.phantoms import generate_dataset

    ph, sc = cfg.phantoms, cfg.robustness.shortcut
    specs = {"train-confounded": (cfg.seed, sc.strength, ph.n_per_class),
             "train-clean": (cfg.seed, 0.0, ph.n_per_class),
             "test-correlated": (cfg.seed + 1, sc.strength, sc.test_per_class),
             "test-decorrelated": (cfg.seed + 1, 0.0, sc.test_per_class)}
    for name, (seed, strength, n) in specs.items():
        generate_dataset(out / name, n_per_class=n, size=ph.size, seed=seed, difficulty=ph.difficulty,
                         classes=cfg.classes, confounder="marker", confounder_strength=strength)
    return {name: out / name for name in specs}


def train_or_reuse(cfg: Config, dataset: Path, run: Path, log: Callable = print) -> Path:
    """Train on ``dataset`` into ``run`` (replacing what is there), or reuse a finished run there
    whose config equals ``cfg`` with ``data.dataset`` set to ``dataset``, apart from the sections
    that only change the scoring (:data:`SCORING_SECTIONS`)."""
    from covidxray.training.reuse import train_or_reuse as reuse

    cfg = copy.deepcopy(cfg)
    cfg["data"]["dataset"] = str(dataset)
    return reuse(cfg, dataset, run, log, replace=True)


def load_phantom_set(folder: Path, size: int, classes: list[str]) -> dict[str, np.ndarray]:
    """Model inputs, labels, lung masks and marker masks of a generated phantom set, at ``size``."""
    m = pd.read_csv(folder / "manifest.csv", keep_default_na=False)
    return {"images": np.stack([load_for_model(folder / p, size) for p in m["path"]]),
            "y": np.array([classes.index(c) for c in m["label"]]),
            "lung": np.stack([resize_mask(read_mask(folder / p), size) for p in m["lung_mask"]]),
            "marker": np.stack([resize_mask(read_mask(folder / p), size) for p in m["marker_mask"]])}


def attribution(model, images: np.ndarray, rc: Config, batch_size: int = 32, target: int | None = None,
                method: str | None = None) -> np.ndarray:
    """Maps of ``method`` (default ``rc.cam_method``) on ``rc.cam_layer`` (the default layer when the
    model lacks it) for ``target`` (None: the predicted class)."""
    from covidxray.explain.core import resolve_layer
    from covidxray.explain.registry import explain

    layer = resolve_layer(model, rc.cam_layer, strict=False)
    return explain(model, images, method or rc.cam_method, target=target, layer=layer, batch_size=batch_size)


def _rate(called: np.ndarray, group: np.ndarray) -> float | None:
    return float(called[group].mean()) if group.any() else None


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def score_model(model, tests: dict[str, dict], cfg: Config, energy_images: list[int]) -> tuple[dict, ...]:
    """Accuracy on each test set, energy shares and marker-driven COVID-19 calls on the decorrelated set.

    Args:
        energy_images: Indices of the decorrelated images whose maps give the energy shares
            (:func:`energy_indices`).

    Returns:
        ``(result, maps, probs)``: the JSON-ready result, the ``robustness.cam_method`` maps of the
        energy images and the probabilities of all decorrelated images.
    """
    from covidxray.evaluation.predict import model_probs
    from covidxray.explain.localisation import energy_share
    from covidxray.robustness.sweep import point_metrics

    classes, rc = list(cfg.classes), cfg.robustness
    probs = {t: model_probs(model, s["images"], cfg.train.batch_size) for t, s in tests.items()}
    scored = {t: point_metrics(tests[t]["y"], probs[t], classes, cfg.positive_class, None, rc.n_boot, cfg.seed)
              for t in tests}
    dec, positive = tests["decorrelated"], classes.index(cfg.positive_class)
    has = dec["marker"].any(axis=(1, 2))
    images, marker, lung = (dec[k][energy_images] for k in ("images", "marker", "lung"))
    maps = {method: attribution(model, images, rc, cfg.train.batch_size, target=positive, method=method)
            for method in dict.fromkeys([rc.cam_method, *rc.shortcut.methods])}
    energies = {method: {"marker_energy": _nanmean(energy_share(m, marker)),
                         "lung_energy": _nanmean(energy_share(m, lung))} for method, m in maps.items()}
    covid = dec["y"] == positive
    called = probs["decorrelated"].argmax(axis=1) == positive
    result = {
        "accuracy": {t: scored[t]["accuracy"] for t in tests},
        "accuracy_ci95": {t: scored[t]["ci95"]["accuracy"] for t in tests},
        "accuracy_drop": scored["correlated"]["accuracy"] - scored["decorrelated"]["accuracy"],
        **energies[rc.cam_method], "methods": energies, "energy_images": len(energy_images),
        "covid_calls": {"other_class_with_marker": _rate(called, ~covid & has),
                        "other_class_without_marker": _rate(called, ~covid & ~has),
                        "covid_with_marker": _rate(called, covid & has),
                        "covid_without_marker": _rate(called, covid & ~has)},
    }
    return result, maps[rc.cam_method], probs["decorrelated"]


def energy_indices(test: dict, n: int) -> list[int]:
    """The first ``n`` images of a test set that carry the marker, the classes in turn."""
    return example_indices(test["y"], test["marker"].any(axis=(1, 2)), n)


def _ratio(conf: dict, clean: dict) -> float | None:
    ok = conf["marker_energy"] is not None and bool(clean["marker_energy"])
    return conf["marker_energy"] / clean["marker_energy"] if ok else None


def _checks(models: dict) -> dict:
    conf, clean = models["confounded"], models["clean"]
    ratio = _ratio(conf, clean)
    passed = (conf["accuracy_drop"] >= CHECKS["confounded_drop_min"]
              and clean["accuracy_drop"] < CHECKS["clean_drop_max"]
              and ratio is not None and ratio >= CHECKS["marker_energy_ratio_min"])
    by_method = {m: _ratio(conf["methods"][m], clean["methods"][m]) for m in conf["methods"]}
    return {**CHECKS, "marker_energy_ratio": ratio, "marker_energy_ratio_by_method": by_method,
            "passed": bool(passed)}


def run_probe(cfg: Config, out: str | Path | None = None, log: Callable = print) -> dict:
    """Train the confounded and the clean model, score both, write ``shortcut.json`` and figures.

    Args:
        cfg: Resolved config (``configs/shortcut.yaml`` sizes the experiment).
        out: Output folder (default ``models/shortcut``).
        log: Where progress messages go.

    Returns:
        The content of ``shortcut.json``: ``settings``, ``marker_area``, ``models`` (per variant:
        ``run``, ``train_strength``, ``accuracy`` and ``accuracy_ci95`` per test set,
        ``accuracy_drop``, ``marker_energy`` and ``lung_energy`` of ``robustness.cam_method``,
        ``methods`` (the same two shares per compared method), ``energy_images``, ``covid_calls``),
        ``checks`` (with ``marker_energy_ratio_by_method``), ``seconds`` and ``figures``.
    """
    import keras

    out = Path(out) if out else paths.MODELS / "shortcut"
    t0 = time.monotonic()
    sets = make_datasets(cfg, out / "data")
    classes, size = list(cfg.classes), cfg.model.image_size
    tests = {t: load_phantom_set(sets[f"test-{t}"], size, classes) for t in TESTS}
    strengths = {"confounded": float(cfg.robustness.shortcut.strength), "clean": 0.0}
    dec = tests["decorrelated"]
    sub = energy_indices(dec, cfg.robustness.shortcut.energy_images)  # the images every map is made of
    models, maps, probs = {}, {}, {}
    for variant in VARIANTS:
        variant_cfg = copy.deepcopy(cfg)
        variant_cfg["phantoms"].update(confounder="marker", confounder_strength=strengths[variant])
        run = train_or_reuse(variant_cfg, sets[f"train-{variant}"], out / variant, log)
        model, _ = runinfo.load_run(run)
        result, maps[variant], probs[variant] = score_model(model, tests, cfg, sub)
        models[variant] = {"run": str(run), "train_strength": strengths[variant], **result}
        log(f"{variant}: accuracy {models[variant]['accuracy']}, marker energy {models[variant]['marker_energy']}")
        del model
        keras.backend.clear_session()
    has = dec["marker"].any(axis=(1, 2))
    report = {
        "settings": {"n_per_class": cfg.phantoms.n_per_class, "test_per_class": cfg.robustness.shortcut.test_per_class,
                     "phantom_size": cfg.phantoms.size, "difficulty": cfg.phantoms.difficulty, "image_size": size,
                     "backbone": cfg.model.backbone, "weights": cfg.model.weights, "epochs": cfg.train.epochs,
                     "strength": strengths["confounded"], "cam_method": cfg.robustness.cam_method,
                     "cam_layer": cfg.robustness.cam_layer, "cam_target": cfg.positive_class, "seed": cfg.seed},
        "marker_area": float(dec["marker"][has].mean()) if has.any() else None,
        "models": models, "checks": _checks(models),
    }
    shown = {k: v[sub] for k, v in dec.items()}
    picks = list(range(min(len(sub), cfg.robustness.shortcut.figure_images)))
    rc = cfg.robustness
    plot_examples(shown, maps, {v: p[sub] for v, p in probs.items()}, picks, classes,
                  save_to=out / "shortcut_examples.png",
                  title=f"{rc.cam_method} ({rc.cam_layer}) for {cfg.positive_class}; cyan: marker box")
    plot_summary(report, save_to=out / "shortcut_summary.png")
    report.update(seconds=round(time.monotonic() - t0, 1), figures=["shortcut_examples.png", "shortcut_summary.png"])
    atomic.write_text(out / "shortcut.json", json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    """Text summary of :func:`run_probe`'s report: accuracies, drops, energy shares, checks."""
    lines = [f"{'model':<11} {'acc. correlated':>15} {'acc. decorrelated':>17} {'drop':>6} {'marker energy':>13} "
             f"{'lung energy':>11}"]
    for v, m in report["models"].items():
        lines.append(f"{v:<11} {m['accuracy']['correlated']:>15.3f} {m['accuracy']['decorrelated']:>17.3f} "
                     f"{m['accuracy_drop']:>6.3f} {m['marker_energy'] or float('nan'):>13.3f} "
                     f"{m['lung_energy'] or float('nan'):>11.3f}")
    c = report["checks"]
    ratio = "n/a" if c["marker_energy_ratio"] is None else f"{c['marker_energy_ratio']:.1f}"
    lines.append(f"marker box area {report['marker_area'] or float('nan'):.3f}; marker energy ratio {ratio}; "
                 f"shortcut shown: {c['passed']} ({report['seconds']:.0f} s)")
    lines.append("marker energy confounded / clean, per method: " + ", ".join(
        f"{m} {report['models']['confounded']['methods'][m]['marker_energy'] or float('nan'):.3f} / "
        f"{report['models']['clean']['methods'][m]['marker_energy'] or float('nan'):.3f}"
        f" ({'n/a' if r is None else f'{r:.1f}x'})" for m, r in c["marker_energy_ratio_by_method"].items()))
    return "\n".join(lines)


def example_indices(y: np.ndarray, has_marker: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` images with a marker, taking the classes in turn (first images of each)."""
    queues = [list(np.flatnonzero(has_marker & (y == k))) for k in np.unique(y)]
    picks: list[int] = []
    while len(picks) < n and any(queues):
        picks += [int(q.pop(0)) for q in queues if q][: n - len(picks)]
    return picks


@_styled
def plot_examples(test: dict, maps: dict[str, np.ndarray], probs: dict[str, np.ndarray], picks: list[int],
                  classes: list[str], title: str | None = None) -> Figure:
    """Rows of decorrelated images: the image with the marker box outlined, then each model's map."""
    from covidxray.explain.overlays import draw_overlay

    fig = Figure(figsize=(3 * (1 + len(maps)), 3 * max(1, len(picks))), layout="constrained")
    axes = np.asarray(fig.subplots(max(1, len(picks)), 1 + len(maps), squeeze=False))
    for r, i in enumerate(picks):
        draw_overlay(axes[r, 0], test["images"][i], title=f"true {classes[test['y'][i]]}")
        for c, (name, m) in enumerate(maps.items(), start=1):
            p = probs[name][i]
            draw_overlay(axes[r, c], test["images"][i], m[i], title=f"{name}: {classes[p.argmax()]} ({p.max():.2f})")
        for ax in axes[r]:
            ax.contour(test["marker"][i].astype(np.float32), levels=[0.5], colors="cyan", linewidths=1.2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


@_styled
def plot_summary(report: dict) -> Figure:
    """Accuracy on correlated vs decorrelated phantoms, energy shares of ``cam_method``, and the
    marker energy of every compared method, per model."""
    fig = Figure(figsize=(15, 4), layout="constrained")
    ax_acc, ax_en, ax_m = fig.subplots(1, 3)
    x, w = np.arange(len(VARIANTS)), 0.35
    for j, t in enumerate(TESTS):
        vals = [report["models"][v]["accuracy"][t] for v in VARIANTS]
        ax_acc.bar(x + (j - 0.5) * w, vals, w, label=f"{t} test")
    ax_acc.set(xticks=x, xticklabels=VARIANTS, ylim=(0, 1), ylabel="accuracy", title="Accuracy")
    for j, (key, label) in enumerate((("marker_energy", "on the marker box"), ("lung_energy", "inside the lungs"))):
        vals = [report["models"][v][key] or 0.0 for v in VARIANTS]
        ax_en.bar(x + (j - 0.5) * w, vals, w, label=label)
    if report["marker_area"] is not None:
        ax_en.axhline(report["marker_area"], color="grey", ls="--", lw=1, label="marker box area (uniform map)")
    ax_en.set(xticks=x, xticklabels=VARIANTS, ylim=(0, 1), ylabel="share of attribution energy",
              title=f"{report['settings']['cam_method']} energy (decorrelated test)")
    methods = list(report["models"]["confounded"]["methods"])
    xm = np.arange(len(methods))
    for j, v in enumerate(VARIANTS):
        vals = [report["models"][v]["methods"][m]["marker_energy"] or 0.0 for m in methods]
        ax_m.bar(xm + (j - 0.5) * w, vals, w, label=f"{v} model")
    if report["marker_area"] is not None:
        ax_m.axhline(report["marker_area"], color="grey", ls="--", lw=1, label="marker box area")
    ax_m.set(xticks=xm, xticklabels=methods, ylabel="share on the marker box",
             title="Marker energy by attribution method")
    for ax in (ax_acc, ax_en, ax_m):
        ax.legend(fontsize=8)
    return fig
