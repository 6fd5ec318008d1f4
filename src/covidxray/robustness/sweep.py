"""Corruption sweep: how a run's accuracy, macro-AUC and COVID-19 sensitivity degrade under image
corruptions (:mod:`covidxray.corruptions`) at severities 1..5.

:func:`sweep` scores the run's test split (or any dataset :func:`covidxray.evaluate.evaluation_set`
accepts) clean (severity 0) and under every corruption and severity, with the run's calibration
(temperature and the COVID-19 threshold chosen on validation, see :mod:`covidxray.predict`).
Corruptions are applied to the decoded images at the model size, before the run's own input
transform (``data.normalize``, ``data.lung_field``), which follows as it does in ``predict``. Per point it reports accuracy, macro-AUC and the positive class's sensitivity both at the
calibrated operating point and for the argmax decision, each with a stratified-bootstrap 95% CI.

Test-time augmentation (``tta=True``) averages the softmax over the image and a few small
rotations and shifts of it (``robustness.tta_degrees``, ``robustness.tta_shift``) before the
temperature scaling; the sweep is then run both without and with it and the difference of the
mean-corruption summaries is reported. The temperature and threshold were fitted on plain
(un-augmented) validation predictions and are applied unchanged to the averaged ones.

Output (``<run>/robustness/`` unless ``out`` is given): ``robustness.json``, one figure per
metric (``robustness_<metric>.png``: metric vs severity, one line per corruption, clean dashed),
``corruption_examples.png`` and, with TTA, ``tta_effect.png``; all 150 dpi.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from covidxray import atomic, runinfo
from covidxray.data.inputs import for_run
from covidxray.errors import UsageError
from covidxray.evaluation.calibration import apply_temperature
from covidxray.evaluation.evaluate import evaluation_set
from covidxray.evaluation.metrics import compute_metrics
from covidxray.evaluation.predict import ensure_calibration, model_probs
from covidxray.evaluation.scoring import score_set
from covidxray.robustness.corruptions import CORRUPTIONS, SEVERITIES, affine, corrupt
from covidxray.runinfo import run_config
from covidxray.style import styled as _styled

#: Metric key -> axis label ("{positive}" is the run's positive class).
METRICS = {
    "accuracy": "accuracy",
    "macro_auc": "macro-AUC",
    "sensitivity_op": "{positive} sensitivity at the operating point",
    "sensitivity_argmax": "{positive} sensitivity (argmax)",
}
#: Okabe-Ito colours (colour-blind safe) and markers, one per corruption.
_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def tta_views(images: np.ndarray, degrees: Sequence[float], shift: float) -> list[np.ndarray]:
    """The image, a rotation by each of ``degrees`` and diagonal shifts by +/-``shift`` of the side."""
    n, side = len(images), images.shape[2]
    views = [np.asarray(images)]
    views += [affine(images, np.full(n, float(d)), np.zeros((n, 2))) for d in degrees]
    views += [affine(images, np.zeros(n), np.full((n, 2), sign * shift * side)) for sign in (1, -1) if shift]
    return views


def predict_raw(model, images: np.ndarray, batch_size: int, tta: tuple[Sequence[float], float] | None = None
                ) -> np.ndarray:
    """Softmax outputs, averaged over :func:`tta_views` when ``tta = (degrees, shift)`` is given."""
    if tta is None:
        return model_probs(model, images, batch_size)
    return np.mean([model_probs(model, v, batch_size) for v in tta_views(images, *tta)], axis=0)


def point_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str], positive: str, threshold: float | None,
                  n_boot: int, seed: int) -> dict:
    """The :data:`METRICS` of one sweep point, with ``ci95`` (via :func:`covidxray.metrics.compute_metrics`)."""
    m = compute_metrics(y, probs, classes, n_boot=n_boot, seed=seed, positive=positive, threshold=threshold)
    op = m.get("operating_point") or {}
    key = f"per_class.{positive}.sensitivity"
    return {"accuracy": m["accuracy"], "macro_auc": m["macro_auc"], "sensitivity_op": op.get("sensitivity"),
            "sensitivity_argmax": m["per_class"].get(positive, {}).get("sensitivity"),
            "ci95": {"accuracy": m["ci95"].get("accuracy"), "macro_auc": m["ci95"].get("macro_auc"),
                     "sensitivity_op": (op.get("ci95") or {}).get("sensitivity"),
                     "sensitivity_argmax": m["ci95"].get(key)}}


def summarize(results: dict[str, dict[str, dict]]) -> dict:
    """Mean-corruption summary: per metric, clean value, mean over corruptions and severities >= 1,
    ``drop`` (clean - mean) and ``relative`` (mean / clean); and the mean per corruption."""
    clean = next(iter(results.values()))["0"]
    overall, per = {}, {c: {} for c in results}
    for metric in METRICS:
        vals = {c: [p[metric] for s, p in pts.items() if s != "0" and p[metric] is not None]
                for c, pts in results.items()}
        for c, v in vals.items():
            per[c][metric] = float(np.mean(v)) if v else None
        flat = [x for v in vals.values() for x in v]
        mean, base = (float(np.mean(flat)) if flat else None), clean[metric]
        ok = mean is not None and base is not None
        overall[metric] = {"clean": base, "mean_corrupted": mean, "drop": base - mean if ok else None,
                           "relative": mean / base if ok and base else None}
    return {"overall": overall, "per_corruption": per}


def _check(names: Sequence[str], severities: Sequence[int]) -> None:
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise UsageError(f"unknown or no corruptions {unknown}; known: {', '.join(CORRUPTIONS)}")
    if not severities or any(s not in SEVERITIES for s in severities):
        raise UsageError(f"severities must be among {list(SEVERITIES)}, got {list(severities)}")


def sweep(run_dir: str | Path, data: str | Path | None = None, split: str = "test",
          corruptions: Sequence[str] | None = None, severities: Sequence[int] = SEVERITIES, tta: bool = False,
          n_boot: int | None = None, out: str | Path | None = None, log: Callable = print) -> dict:
    """Evaluate a run under every corruption and severity; write JSON and figures.

    Args:
        run_dir: Run folder.
        data: Dataset folder, manifest CSV or splits CSV; None for the run's own splits.
        split: Split to use when the data has splits.
        corruptions: Names from :data:`covidxray.corruptions.CORRUPTIONS` (default
            ``robustness.corruptions`` of the run's config: all eight).
        severities: Severities to run (severity 0, clean, is always scored).
        tta: Also run the sweep with test-time augmentation and report its effect.
        n_boot: Bootstrap resamples per point (default ``robustness.n_boot``).
        out: Output folder (default ``<run>/robustness``).
        log: Where progress messages go.

    Returns:
        The content of ``robustness.json``: settings, ``corruptions`` (parameter values used),
        ``results[corruption][severity]`` (severity ``"0"`` = clean) with :data:`METRICS` and ``ci95``,
        ``summary`` (:func:`summarize`), ``tta`` (same keys plus ``effect`` = TTA minus plain
        mean-corruption value per metric, or None), ``seconds`` (the whole call, model loading
        included) and ``figures``.
    """
    t0 = time.monotonic()
    run = Path(run_dir)
    cfg = run_config(run)
    rc = cfg.robustness
    names, severities = list(corruptions or rc.corruptions), sorted(severities)
    _check(names, severities)
    classes = list(runinfo.read_run(run)["classes"])
    chosen = evaluation_set(run, classes, cfg, data, split, log)
    model, meta = runinfo.load_run(run)
    cal = ensure_calibration(run, model, meta, cfg, log)
    # a corruption happens to the film, before the run's own input transform (normalization, lung
    # field), which predict applies to whatever it is given: corrupt the decoded images, then transform
    s = score_set(model, meta, cal, cfg, chosen, classes, predict=False, decoded=True)
    images, y, positive, threshold = s.images, s.y, s.positive, s.threshold
    inputs = for_run(dict(meta), run)
    seed, n_boot = int(meta.get("seed", cfg.seed)), int(rc.n_boot if n_boot is None else n_boot)
    modes = {"plain": None, **({"tta": (tuple(rc.tta_degrees), float(rc.tta_shift))} if tta else {})}
    results: dict = {mode: {c: {} for c in names} for mode in modes}
    points = [(0, names[0])] + [(s, c) for c in names for s in severities]
    log(f"sweep of {len(images)} images: {len(points)} points x {len(modes)} mode(s)")
    for sev, name in points:
        x = inputs(corrupt(images, name, sev, seed))
        for mode, views in modes.items():
            probs = apply_temperature(predict_raw(model, x, cfg.train.batch_size, views), cal.temperature,
                                      from_probs=True)
            results[mode][name][str(sev)] = point_metrics(y, probs, classes, positive, threshold, n_boot, seed)
    for mode in modes:  # clean is scored once and shared by every corruption's severity 0
        for c in names:
            results[mode][c] = {"0": results[mode][names[0]]["0"], **results[mode][c]}
    size = images.shape[1]
    summary = {mode: summarize(results[mode]) for mode in modes}
    report = {
        "run": str(run.resolve()), "dataset": chosen["dataset"], "split": chosen["split"], "n": int(len(y)),
        "classes": classes, "positive_class": positive, "threshold": threshold, "temperature": cal.temperature,
        "seed": seed, "n_boot": n_boot, "image_size": size, "applied_at": f"decoded image ({size} px)" + (
            "" if inputs.identity else ", before the run's input transform"),
        "input_transform": None if inputs.identity else inputs.spec.to_dict(),
        "metrics": {k: v.format(positive=positive) for k, v in METRICS.items()},
        "corruptions": {c: {"parameter": CORRUPTIONS[c].parameter, "values": list(CORRUPTIONS[c].values)}
                        for c in names},
        "results": results["plain"], "summary": summary["plain"], "tta": None,
    }
    if tta:
        effect = {m: _diff(summary["tta"]["overall"][m]["mean_corrupted"],
                           summary["plain"]["overall"][m]["mean_corrupted"]) for m in METRICS}
        report["tta"] = {"degrees": list(rc.tta_degrees), "shift": rc.tta_shift, "results": results["tta"],
                         "summary": summary["tta"], "effect": effect}
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["figures"] = _write(report, images, Path(out) if out else run / "robustness")
    log(f"sweep done in {report['seconds']:.0f} s")
    return report


def format_summary(report: dict) -> str:
    """Text table of the mean-corruption summary (and the TTA effect) of a :func:`sweep` report."""
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"{report['dataset']} (split {report['split']}), n={report['n']}, {len(report['corruptions'])} corruptions"
             f" x severities {sorted({int(s) for p in report['results'].values() for s in p} - {0})}, "
             f"{report['seconds']:.0f} s", f"{'metric':<44} {'clean':>7} {'mean corr.':>10} {'drop':>7}"
             + ("  TTA effect" if report["tta"] else "")]
    for m, label in report["metrics"].items():
        o = report["summary"]["overall"][m]
        tta = f"  {f(report['tta']['effect'][m]):>10}" if report["tta"] else ""
        lines.append(f"{label:<44} {f(o['clean']):>7} {f(o['mean_corrupted']):>10} {f(o['drop']):>7}{tta}")
    return "\n".join(lines)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _write(report: dict, images: np.ndarray, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    figures = [f"robustness_{m}.png" for m in METRICS] + ["corruption_examples.png"]
    for m in METRICS:
        plot_metric(report, m, save_to=out / f"robustness_{m}.png")
    plot_examples(images[0], list(report["corruptions"]), seed=report["seed"], save_to=out / figures[-1])
    if report["tta"]:
        figures.append("tta_effect.png")
        plot_tta_effect(report, save_to=out / "tta_effect.png")
    atomic.write_text(out / "robustness.json", json.dumps({**report, "figures": figures}, indent=2) + "\n")
    return figures


@_styled
def plot_metric(report: dict, metric: str, mode: str = "plain") -> Figure:
    """One metric vs severity: a line per corruption, the clean value dashed.

    Args:
        report: Output of :func:`sweep`.
        metric: A key of :data:`METRICS`.
        mode: ``"plain"`` or ``"tta"``.
    """
    results = report["results"] if mode == "plain" else report["tta"]["results"]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    clean = next(iter(results.values()))["0"][metric]
    if clean is not None:
        ax.axhline(clean, color="grey", ls="--", lw=1.5, label=f"clean ({clean:.3f})")
    for i, (name, pts) in enumerate(results.items()):
        sev = [int(s) for s in pts if pts[s][metric] is not None]
        ax.plot(sev, [pts[str(s)][metric] for s in sev], marker=_MARKERS[i % 8], color=_COLORS[i % 8], label=name)
    ax.set(xlabel="severity (0 = clean)", ylabel=report["metrics"][metric], ylim=(0, 1.02),
           title=f"{report['metrics'][metric]} under corruption (n={report['n']}{', TTA' if mode == 'tta' else ''})")
    ax.set_xticks(range(0, max(int(s) for s in next(iter(results.values()))) + 1))
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    return fig


@_styled
def plot_tta_effect(report: dict) -> Figure:
    """Mean over corruptions of each metric vs severity, without and with test-time augmentation."""
    fig = Figure(figsize=(4 * len(METRICS), 3.6), layout="constrained")
    for ax, metric in zip(fig.subplots(1, len(METRICS)), METRICS, strict=True):
        for mode, results, style in (("plain", report["results"], "-"), ("TTA", report["tta"]["results"], "--")):
            sev = sorted({int(s) for pts in results.values() for s in pts})
            vals = [np.mean([p[str(s)][metric] for p in results.values() if p[str(s)][metric] is not None] or [np.nan])
                    for s in sev]
            ax.plot(sev, vals, style, marker="o", label=mode)
        ax.set(xlabel="severity", title=report["metrics"][metric], ylim=(0, 1.02))
        ax.legend(fontsize=8)
    return fig


@_styled
def plot_examples(image: np.ndarray, names: Sequence[str] | None = None, seed: int = 0) -> Figure:
    """One image under each corruption (rows) at severities 0..5 (columns)."""
    names = list(names or CORRUPTIONS)
    fig = Figure(figsize=(1.6 * (len(SEVERITIES) + 1), 1.6 * len(names)), layout="constrained")
    axes = np.asarray(fig.subplots(len(names), len(SEVERITIES) + 1, squeeze=False))
    for r, name in enumerate(names):
        for s in range(len(SEVERITIES) + 1):
            ax = axes[r, s]
            ax.imshow(corrupt(image, name, s, seed), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
            if r == 0:
                ax.set_title(f"severity {s}", fontsize=9)
            if s == 0:
                ax.set_ylabel(name, fontsize=9)
    return fig
