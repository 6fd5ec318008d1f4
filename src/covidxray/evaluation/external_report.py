"""The external-validation report of a run: ``covidxray evaluate RUN --data EXT`` writes it.

:func:`external_report` scores the run's own test split and an external dataset with the same
model, calibration and operating point, and writes ``external.json`` plus figures into the
evaluation folder. The numbers come from :mod:`covidxray.external`; this module reads the data,
runs the model once per set (probabilities and pooled features together) and writes the files.
Images whose label is not one of the run's classes (another pneumonia, Lung Opacity) are kept and
scored, never quarantined: what the model does with them is part of its external validity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray import atomic, paths, runinfo
from covidxray.config import Config
from covidxray.data import pipeline as data
from covidxray.data.cache import cached_images
from covidxray.data.inputs import for_run
from covidxray.evaluation import external, shift
from covidxray.evaluation.calibration import apply_temperature
from covidxray.evaluation.predict import ensure_calibration
from covidxray.runinfo import run_config

#: Manifest columns the breakdown uses when present (``source`` first); ``age`` becomes ``age_band``.
BREAKDOWN_COLUMNS = ("source", "view", "sex", "age_band")
AGE_BANDS = [(0, 18, "0-17"), (18, 40, "18-39"), (40, 65, "40-64"), (65, 200, "65+")]
_OTHER_LABEL = re.compile(r"(?:unknown label '(.+)'|label '(.+)' not in the configured classes)")


def _age_band(age) -> str:
    try:
        a = float(age)
    except (TypeError, ValueError):
        return ""
    return next((name for lo, hi, name in AGE_BANDS if lo <= a < hi), "")


def load_external(source: str | Path, classes: Sequence[str], cfg: Config, log: Callable = print
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every readable image of a dataset, with its label even when it is not one of ``classes``.

    Args:
        source: Dataset folder or manifest CSV (any layout ``covidxray index`` reads).
        classes: The run's classes.
        cfg: The run's config (``data.min_size``, ``data.workers``).
        log: Where progress messages go.

    Returns:
        ``(table, quarantine)``: the images (path, label, the manifest's other columns, and
        ``age_band`` when there is an ``age`` column) and the files refused for another reason.
    """
    from covidxray.data.discover import discover

    source = paths.resolve(source)
    if not source.exists():
        raise data.DataError(f"dataset '{source}' does not exist")
    found = discover(source, classes=list(classes), min_size=cfg.data.min_size, workers=cfg.data.workers)
    other = sorted({next(g for g in m.groups() if g) for m in
                    (_OTHER_LABEL.fullmatch(r) for r in found.quarantine.get("reason", [])) if m})
    if other:
        log(f"labels outside the run's classes, scored too: {', '.join(other)}")
        found = discover(source, classes=list(classes) + other, min_size=cfg.data.min_size,
                         workers=cfg.data.workers)
    table = found.manifest.reset_index(drop=True)
    if "age" in table and "age_band" not in table:
        table["age_band"] = [_age_band(a) for a in table["age"]]
    if table.empty:
        raise data.DataError(f"{source}: no usable images")
    return table, found.quarantine


def score(model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs and pooled (``gap``) features of the images in one pass."""
    import keras

    both = keras.Model(model.input, [model.output, model.get_layer("gap").output])
    ds = data.make_dataset(images, None, model.output_shape[-1], batch_size)
    probs, feats = both.predict(ds, verbose=0)
    probs = np.asarray(probs, np.float64)
    return probs / probs.sum(axis=1, keepdims=True), np.asarray(feats, np.float32)


def breakdown_columns(table: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    """The columns to break down by: the ones asked for, else those of :data:`BREAKDOWN_COLUMNS`
    that the table has with at least two values (``source`` always when present)."""
    if by:
        missing = [c for c in by if c not in table]
        if missing:
            raise data.DataError(f"--by {missing}: not a column of the dataset (columns: {list(table.columns)})")
        return list(by)
    cols = []
    for c in BREAKDOWN_COLUMNS:
        if c in table and (c == "source" or table[c].replace("", np.nan).nunique() > 1):
            cols.append(c)
    return cols


def external_report(run_dir: str | Path, data_path: str | Path, out: str | Path | None = None,
                    by: Sequence[str] | None = None, n_boot: int | None = None, log: Callable = print) -> dict:
    """Internal vs external metrics, per-group breakdown, calibration transfer, feature probe.

    Args:
        run_dir: Run folder.
        data_path: The external dataset (folder or manifest CSV).
        out: Folder for ``external.json`` and figures (default ``<run>/eval/<dataset name>``).
        by: Manifest columns to break down by (default: source, and view / sex / age band when
            present).
        n_boot: Bootstrap resamples (default ``evaluate.n_boot`` of the run's config).
        log: Where progress messages go.

    Returns:
        The report (also written to ``external.json``), with ``findings`` sentences first.
    """
    from covidxray.evaluation import external_plots

    run = Path(run_dir)
    cfg = run_config(run)
    meta = runinfo.read_run(run)
    classes = list(meta["classes"])
    ext, quarantine = load_external(data_path, classes, cfg, log)
    cols = breakdown_columns(ext, by)
    internal = data.read_splits(run / "splits.csv", classes).query("split == 'test'").reset_index(drop=True)
    if internal.empty:
        raise data.DataError(f"{run}/splits.csv: no test split to compare with")
    model, meta = runinfo.load_run(run)
    cal = ensure_calibration(run, model, meta, cfg, log)
    seed, n_boot = int(meta.get("seed", cfg.seed)), int(n_boot or cfg.evaluate.n_boot)
    size, bs = meta["image_size"], cfg.train.batch_size
    model_inputs = for_run(meta, run)  # the run's normalization / lung field
    img_int = cached_images(list(internal["path"]), size, cfg, model_inputs)
    img_ext = cached_images(list(ext["path"]), size, cfg, model_inputs)
    raw_int, feat_int = score(model, img_int, bs)
    raw_ext, feat_ext = score(model, img_ext, bs)
    p_int = apply_temperature(raw_int, cal.temperature, from_probs=True)
    p_ext = apply_temperature(raw_ext, cal.temperature, from_probs=True)
    y_int = np.array([classes.index(c) for c in internal["label"]])
    in_cls = ext["label"].isin(classes).to_numpy()
    y_ext = np.array([classes.index(c) for c in ext.loc[in_cls, "label"]])
    positive = cal.positive_class
    op = (classes.index(positive), float(cal.threshold)) if positive in classes and cal.threshold is not None else None
    log(f"external report: {len(internal)} internal test images, {len(ext)} external "
        f"({int((~in_cls).sum())} of labels outside the run's classes)")
    report = {
        "run": str(run.resolve()), "dataset": str(paths.resolve(data_path)), "classes": classes,
        "n_internal": int(len(internal)), "n_external": int(len(ext)), "n_external_in_classes": int(in_cls.sum()),
        "labels_external": ext["label"].value_counts().to_dict(), "quarantined": int(len(quarantine)),
        "temperature": cal.temperature, "threshold": op[1] if op else None, "positive_class": positive,
        "n_boot": n_boot, "seed": seed,
        "metrics": external.metric_difference(y_int, p_int, y_ext, p_ext[in_cls], classes, n_boot, seed, op),
        "calibration": external.calibration_transfer(y_int, raw_int, p_int, y_ext, raw_ext[in_cls],
                                                     p_ext[in_cls], int(cfg.evaluate.ece_bins)),
    }
    groups = {c: external.group_breakdown(ext["label"], p_ext, classes, ext[c], positive,
                                          op[1] if op else None, by=c) for c in cols}
    internal_groups = (external.group_breakdown(internal["label"], p_int, classes, internal["source"], positive,
                                                op[1] if op else None, by="source")
                       if "source" in internal else None)
    report["breakdown"] = groups.get(cols[0]) if cols else None
    report["breakdowns"] = groups
    report["internal_breakdown"] = internal_groups
    probe_groups = ext[cols[0]] if cols else None
    report["feature_probe"] = shift.feature_probe(feat_int, feat_ext, probe_groups, n_boot=n_boot, seed=seed)
    stat_groups = (["internal: " + str(s) for s in internal.get("source", ["test"] * len(internal))]
                   + ["external: " + str(s) for s in (ext[cols[0]] if cols else ["all"] * len(ext))])
    stats = shift.image_statistics(np.concatenate([img_int, img_ext]), stat_groups)
    if {"width", "height"} <= set(ext.columns) and {"width", "height"} <= set(internal.columns):
        sizes = pd.concat([internal[["width", "height"]], ext[["width", "height"]]]).astype(float)
        stats = stats.merge(sizes.assign(group=stat_groups).groupby("group").median().add_prefix("file_")
                            .reset_index(), on="group", how="left")
    report["image_statistics"] = stats.round(4).to_dict(orient="records")
    report["findings"] = external.findings(report, positive)
    folder = Path(out) if out else run / "eval" / _name(data_path)
    folder.mkdir(parents=True, exist_ok=True)
    report["figures"] = external_plots.write_figures(folder, report, y_int, raw_int, p_int, y_ext,
                                                     raw_ext[in_cls], p_ext[in_cls], stats)
    table = ext[["path", "label"] + cols].copy()
    for c, cls in enumerate(classes):
        table[f"p_{cls}"] = p_ext[:, c]
    table["prediction"] = [classes[i] for i in p_ext.argmax(axis=1)]
    if op:
        table[f"p_{positive}_decision"] = p_ext[:, op[0]] >= op[1]
    atomic.write_csv(table, folder / "external_predictions.csv")
    report = {"findings": report.pop("findings"), **report}
    atomic.write_json(folder / "external.json", report)
    log("\n".join(report["findings"]))
    log(format_groups(report))
    log(f"external report: {folder / 'external.json'}")
    return report


def _name(data_path: str | Path) -> str:
    p = paths.resolve(data_path)
    return p.parent.name if p.is_file() else p.name


def format_groups(report: dict) -> str:
    """The per-group rows of the report's first breakdown as text (one line per group and label)."""
    bd = report.get("breakdown")
    if not bd:
        return "(no group column)"
    lines = [f"by {bd['by']}:"]
    for g in bd["groups"]:
        acc = "n/a" if g["accuracy"] is None else f"{g['accuracy']:.3f}"
        ci = g["accuracy_ci"]
        spec = g.get("decision_specificity")
        lines.append(f"  {g['group']}: n={g['n']}, accuracy {acc}"
                     + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                     + (f", decision specificity {spec:.3f}" if spec is not None else ""))
    lines += [f"  {e['sentence']}" for e in bd["errors"]]
    return "\n".join(lines)


def metrics_frame(report: dict) -> pd.DataFrame:
    """The report's metrics as a table: internal, external and their difference, each with its interval."""
    rows = {}
    for key, r in report["metrics"].items():
        rows[key] = {"internal": r["internal"], "internal 95% CI": _ci_text(r["internal_ci"]),
                     "external": r["external"], "external 95% CI": _ci_text(r["external_ci"]),
                     "difference": r["difference"], "difference 95% CI": _ci_text(r["difference_ci"])}
    return pd.DataFrame(rows).T


def groups_frame(report: dict, which: str = "breakdown") -> pd.DataFrame:
    """One row per group of a breakdown (``breakdown`` or ``internal_breakdown``), intervals as text."""
    bd = report.get(which) or {"groups": []}
    rows = []
    for g in bd["groups"]:
        rows.append({"group": g["group"], "n": g["n"], "accuracy": g["accuracy"],
                     "accuracy 95% CI": _ci_text(g["accuracy_ci"]),
                     "COVID-19 decision sensitivity": g.get("decision_sensitivity"),
                     "sensitivity 95% CI": _ci_text(g.get("decision_sensitivity_ci")),
                     "decision specificity": g.get("decision_specificity"),
                     "specificity 95% CI": _ci_text(g.get("decision_specificity_ci")),
                     "flagged, other labels": g.get("flag_rate_other")})
    return pd.DataFrame(rows).set_index("group") if rows else pd.DataFrame()


def _ci_text(ci) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
