"""Compare runs on the same images: ``covidxray compare RUN_A RUN_B ...``.

Every run scores the same evaluation set (:func:`covidxray.evaluation.evaluate.evaluation_set`: the
first run's test split by default, or ``data``), each through its own preprocessing and calibration
(:func:`covidxray.evaluation.scoring.score_set`; runs of different image sizes are fine). Per run and
metric, :data:`METRICS`: the value with its stratified-bootstrap 95% interval, and for the runs after
the first the paired difference to the first run: the same resampled image indices score both runs
(one count matrix, :mod:`covidxray.evaluation.bootstrap`), so the interval reflects the two runs'
correlation on shared images. Sensitivity and specificity are at each run's *own* operating point
(the threshold in its ``calibration.json``). Two tests against the first run:

* DeLong's test of the positive-class (COVID-19 vs rest) AUCs (:mod:`covidxray.evaluation.delong`;
  DeLong et al. 1988, Sun & Xu 2014);
* McNemar's test of the accuracies (McNemar 1947; statsmodels ``mcnemar``), exact binomial when the
  runs disagree on fewer than :data:`EXACT_BELOW` images, else chi-square with continuity correction.

Output (``<first run>/compare/<set name>/`` unless ``out`` is given): ``comparison.csv`` (one row
per run and metric), ``comparison.md`` (the same table), ``comparison.json`` and ``comparison.png``
(one panel per metric, each run's value with its interval).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covidxray import atomic, runinfo
from covidxray.errors import RunError, UsageError
from covidxray.evaluation.bootstrap import bootstrap_indices, percentile_intervals, resample_counts
from covidxray.evaluation.delong import delong_test
from covidxray.evaluation.external import sample_metrics
from covidxray.evaluation.metrics import bootstrap_distributions
from covidxray.style import styled

#: Metric -> label ("{positive}" is the positive class); the keys of the bootstrap distributions.
METRICS = {
    "accuracy": "accuracy",
    "macro_auc": "macro-AUC",
    "per_class.{positive}.auc": "{positive} AUC (vs rest)",
    "operating_point.sensitivity": "{positive} sensitivity at the run's threshold",
    "operating_point.specificity": "{positive} specificity at the run's threshold",
}
EXACT_BELOW = 25  # discordant pairs below which McNemar's test is the exact binomial one
COLUMNS = ["metric", "run", "value", "ci_low", "ci_high", "difference", "difference_ci_low",
           "difference_ci_high", "test", "statistic", "p_value"]


def check_runs(runs: Sequence[Path], same_splits: bool) -> tuple[list[str], list[dict]]:
    """The runs' common class order and their ``run.json``; refuses what cannot be compared.

    Raises:
        UsageError: Fewer than two runs.
        RunError: A class order that differs from the first run's, or (``same_splits``) a run whose
            ``splits_sha256`` differs from the first run's.
    """
    if len(runs) < 2:
        raise UsageError("compare needs at least two runs")
    metas = [runinfo.read_run(r) for r in runs]
    classes = list(metas[0]["classes"])
    for run, meta in zip(runs[1:], metas[1:], strict=True):
        if list(meta["classes"]) != classes:
            raise RunError(f"{run}: class order {meta['classes']} differs from {runs[0]}'s {classes}; "
                           "the runs cannot be scored on the same labels")
        if same_splits and meta.get("splits_sha256") != metas[0].get("splits_sha256"):
            raise RunError(f"{run}: its splits.csv differs from {runs[0]}'s (splits_sha256), so their test "
                           "splits are not the same images; pass --data to score all runs on one dataset")
    return classes, metas


def _names(runs: Sequence[Path]) -> list[str]:
    names = [r.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's test of two classifiers' accuracies on the same images (statsmodels).

    Args:
        correct_a: ``(N,)`` bool, run A right.
        correct_b: ``(N,)`` bool, run B right.

    Returns:
        ``{"table" (2x2: A right/wrong x B right/wrong), "discordant", "exact", "statistic", "p_value"}``.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    discordant = int(table[0, 1] + table[1, 0])
    exact = discordant < EXACT_BELOW
    res = mcnemar(table, exact=exact, correction=True)
    return {"table": table.tolist(), "discordant": discordant, "exact": exact,
            "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def compare_scores(y: np.ndarray, probs: Sequence[np.ndarray], thresholds: Sequence[float | None],
                   names: Sequence[str], classes: Sequence[str], positive: str, n_boot: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """The comparison table of runs' probabilities on the same images.

    Args:
        y: ``(N,)`` true class indices.
        probs: Per run, ``(N, K)`` calibrated probabilities (columns in ``classes`` order).
        thresholds: Per run, its threshold on ``p(positive)`` (None: no operating point).
        names: Run names.
        classes: Class names.
        positive: The class of the AUC, the operating point and DeLong's test.
        n_boot: Stratified bootstrap resamples, shared by every run (paired).
        seed: Seed of the resampling.

    Returns:
        One row per metric and run, columns :data:`COLUMNS`; the first run's difference columns are
        empty, and ``test`` is ``delong`` / ``mcnemar`` (exact or chi2) where one applies.
    """
    c = list(classes).index(positive)
    counts = resample_counts(bootstrap_indices(y, n_boot, seed, stratified=True), y.size)
    keys = [k.format(positive=positive) for k in METRICS]
    dists, points = [], []
    for p, t in zip(probs, thresholds, strict=True):
        op = None if t is None else (c, float(t))
        dists.append(bootstrap_distributions(y, p, counts, classes, op))
        points.append(sample_metrics(y, p, classes, op))
    rows = []
    for key, label in zip(keys, METRICS.values(), strict=True):
        for i, name in enumerate(names):
            point = points[i].get(key)
            ci = percentile_intervals({key: dists[i][key]})[0][key] if key in dists[i] else None
            row = dict(metric=label.format(positive=positive), run=name, value=point,
                       ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None)
            if i and key in dists[i] and key in dists[0]:
                d_ci = percentile_intervals({key: dists[i][key] - dists[0][key]})[0][key]
                base = points[0].get(key)
                row.update(difference=None if point is None or base is None else point - base,
                           difference_ci_low=d_ci[0] if d_ci else None, difference_ci_high=d_ci[1] if d_ci else None)
            if i and key == "accuracy":
                m = mcnemar_test(probs[0].argmax(1) == y, probs[i].argmax(1) == y)
                row.update(test="mcnemar (exact)" if m["exact"] else "mcnemar (chi2)", statistic=m["statistic"],
                           p_value=m["p_value"])
            if i and key == f"per_class.{positive}.auc":
                d = delong_test(y == c, probs[0][:, c], probs[i][:, c])
                row.update(test="delong", statistic=d["z"], p_value=d["p_value"])
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def _fmt(v, digits: int = 3) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.{digits}f}"


def to_markdown(table: pd.DataFrame, header: str) -> str:
    """The comparison table as Markdown: value [95% CI], paired difference [CI], test and p-value."""
    lines = [header, "", "| metric | run | value [95% CI] | difference to the first run [paired 95% CI] | test | p |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table.itertuples(index=False):
        value = f"{_fmt(r.value)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not pd.isna(r.value) else "n/a"
        diff = (f"{r.difference:+.3f} [{r.difference_ci_low:+.3f}, {r.difference_ci_high:+.3f}]"
                if not pd.isna(r.difference) and not pd.isna(r.difference_ci_low) else "")
        test = "" if pd.isna(r.test) else r.test
        p = "" if pd.isna(r.p_value) else f"{r.p_value:.3g}"
        lines.append(f"| {r.metric} | {r.run} | {value} | {diff} | {test} | {p} |")
    return "\n".join(lines) + "\n"


@styled
def plot_comparison(table: pd.DataFrame) -> Figure:
    """One panel per metric: each run's value (dot) with its 95% interval (bar), first run on top."""
    metrics = list(dict.fromkeys(table["metric"]))
    fig = Figure(figsize=(3.2 * len(metrics), 0.5 * table["run"].nunique() + 1.6), layout="constrained")
    for ax, metric in zip(np.atleast_1d(fig.subplots(1, len(metrics), sharey=True)), metrics, strict=True):
        rows = table[table["metric"] == metric].reset_index(drop=True)
        pos = -np.arange(len(rows))
        ok = rows["value"].notna()
        lo = (rows["value"] - rows["ci_low"]).fillna(0).clip(lower=0)
        hi = (rows["ci_high"] - rows["value"]).fillna(0).clip(lower=0)
        ax.errorbar(rows["value"][ok], pos[ok], xerr=[lo[ok], hi[ok]], fmt="o", capsize=3, color="#0072B2")
        ax.set_yticks(pos, rows["run"])
        ax.set_title(metric, fontsize=9)
        ax.set_xlim(max(0.0, float(np.nanmin(rows["ci_low"].fillna(rows["value"]))) - 0.05) if ok.any() else 0, 1.01)
    return fig


def compare_runs(runs: Sequence[str | Path], data: str | Path | None = None, split: str = "test",
                 out: str | Path | None = None, n_boot: int | None = None, log: Callable = print) -> dict:
    """Score every run on the same images and write the comparison (see the module docstring).

    Args:
        runs: Run folders; the first is the reference of the differences and tests.
        data: Dataset folder, manifest or splits CSV; None for the first run's own split (then every
            run must have the same ``splits.csv``).
        split: Split to use when the data has splits.
        out: Output folder (default ``<first run>/compare/<set name>``).
        n_boot: Bootstrap resamples (default: the first run's ``evaluate.n_boot``).
        log: Where progress messages go.

    Returns:
        ``{"dataset", "split", "n", "runs", "positive_class", "thresholds", "n_boot", "seed", "table"
        (the rows as dicts), "files"}``, also written as ``comparison.json``.

    Raises:
        UsageError, RunError: See :func:`check_runs`.
    """
    from covidxray.evaluation.evaluate import evaluation_set
    from covidxray.evaluation.scoring import open_run, score_set

    runs = [Path(r) for r in runs]
    classes, _ = check_runs(runs, same_splits=data is None)
    cfg0 = runinfo.run_config(runs[0])
    chosen = evaluation_set(runs[0], classes, cfg0, data, split, log)
    probs, thresholds, positives, y = [], [], [], None
    for run in runs:
        opened = open_run(run, log)
        s = score_set(opened.model, opened.meta, opened.cal, opened.cfg, chosen, classes)
        log(f"{run}: scored {len(s.y)} images at {opened.meta['image_size']} px")
        y = s.y if y is None else y
        probs.append(s.probs), thresholds.append(s.threshold), positives.append(s.positive)
        del opened
    positive = positives[0]
    if positive not in classes:
        raise RunError(f"{runs[0]}: positive class {positive!r} is not one of {classes}")
    thresholds = [t if p == positive else None for t, p in zip(thresholds, positives, strict=True)]
    seed, n_boot = int(cfg0.seed), int(n_boot or cfg0.evaluate.n_boot)
    names = _names(runs)
    table = compare_scores(y, probs, thresholds, names, classes, positive, n_boot, seed)
    out = Path(out) if out else runs[0] / "compare" / chosen["name"]
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Runs compared on {chosen['dataset']} (split: {chosen['split']}), n = {len(y)}; 95% intervals from "
              f"{n_boot} stratified bootstrap resamples of the same images for every run (paired); "
              f"{positive} thresholds: " + ", ".join(f"{n} {_fmt(t)}" for n, t in zip(names, thresholds, strict=True)))
    plot_comparison(table, save_to=out / "comparison.png")
    files = {"csv": atomic.write_csv(table, out / "comparison.csv"),
             "markdown": atomic.write_text(out / "comparison.md", to_markdown(table, header)),
             "figure": out / "comparison.png"}
    report = {"dataset": chosen["dataset"], "split": chosen["split"], "n": int(len(y)), "runs": [str(r) for r in runs],
              "names": names, "positive_class": positive, "thresholds": thresholds, "n_boot": n_boot, "seed": seed,
              "table": json.loads(table.to_json(orient="records")), "files": {k: str(v) for k, v in files.items()}}
    atomic.write_json(out / "comparison.json", report)
    return report
