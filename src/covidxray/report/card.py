"""The model card of a run: ``covidxray card RUN`` writes ``RUN/MODEL_CARD.md``.

The sections follow Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): model details,
intended use and out-of-scope uses, training data (with its sources and their known confounds),
evaluation data, metrics with 95% intervals, calibration, operating point, the results of every check
the run has had (:mod:`covidxray.report.checks`), and the caveats they imply. Everything is read from
the run folder (``run.json``, ``config.yaml``, ``splits.csv``, ``calibration.json``, ``eval/``,
``interpret/``, ``robustness/``, ``shortcut/``, ``ood.json``) and from the dataset's ``SOURCES.txt``
when the recorded dataset folder has one; the model is never loaded. Sources are described from
:data:`covidxray.data.datasets.KNOWN_SOURCES`, and source-class confounding is computed from the
run's own split file (:func:`covidxray.robustness.probes.source_confounding`). Figures are linked
relative to the run folder.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from covidxray import atomic, paths
from covidxray.data.datasets import KNOWN_SOURCES
from covidxray.errors import RunError
from covidxray.report import checks
from covidxray.report.checks import ci, link, not_measured, num
from covidxray.robustness.probes import source_confounding

CARD = "MODEL_CARD.md"
#: The test-split metrics table: label -> key of metrics.json (``ci95`` has the same key).
METRIC_ROWS = {"accuracy": "accuracy", "balanced accuracy": "balanced_accuracy", "macro-F1": "macro_f1",
               "macro-AUC": "macro_auc", "Brier score": "brier"}
INTENDED = ("Research and teaching: how a chest X-ray classifier is trained, evaluated with uncertainty, "
            "calibrated and checked for shortcut learning. Inputs: frontal (PA/AP) chest radiographs, "
            "8-bit grayscale, of the kind and population described under Training data.")
OUT_OF_SCOPE = ("Any clinical use: diagnosis, triage or screening of patients (the model is not validated "
                "for that, and the data carry the source confounds below). Lateral views, CT, other body "
                "parts, photographs of films, and populations or hospitals unlike the training data (see the "
                "external evaluations and the out-of-distribution score).")


def _read(run: Path, name: str) -> dict | None:
    f = run / name
    return json.loads(f.read_text()) if f.is_file() else None


def _dataset_folder(run: Path, cfg: dict, splits: pd.DataFrame | None) -> Path | None:
    """The dataset folder the run recorded (config.yaml ``data.dataset``), else where its images lie."""
    dataset = (cfg.get("data") or {}).get("dataset")
    cand = [paths.from_config(dataset)] if dataset else []
    if splits is not None and len(splits):
        cand.append(Path(str(splits["path"].iloc[0])).parents[1])
    for c in cand:
        folder = c if c.is_dir() else c.parent
        if (folder / "SOURCES.txt").is_file():
            return folder
    return cand[0] if cand else None


def _details(run: Path, meta: dict, cfg: dict) -> list[str]:
    pk = meta.get("packages", {})
    return [f"- Architecture: {meta.get('backbone')} at {meta['image_size']} x {meta['image_size']} px, "
            f"head {cfg.get('model', {}).get('head_units')}; input: {meta.get('input')}",
            f"- Weights: {meta.get('weights_source')}; stages {meta.get('stages')}, {meta.get('epochs_run')} epochs, "
            f"{num(meta.get('wall_s', 0) / 60, 1)} min of training ({meta.get('status')})",
            f"- Classes (output order): {', '.join(meta['classes'])}; positive class {meta.get('positive_class')}",
            f"- Trained {meta.get('started', '?')[:19]} to {str(meta.get('finished', '?'))[:19]} (UTC), seed "
            f"{meta.get('seed')}, git {meta.get('git_sha')}, TensorFlow {pk.get('tensorflow')}, Keras {pk.get('keras')}",
            f"- Resolved config: `config.yaml`; splits: `splits.csv` (SHA-256 {str(meta.get('splits_sha256'))[:12]}...)"]


def _training_data(run: Path, meta: dict, cfg: dict, splits: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    dataset = (cfg.get("data") or {}).get("dataset")
    lines = [f"Dataset: `{dataset}` (config.yaml `data.dataset`)."]
    counts = pd.DataFrame(meta.get("counts", {})).fillna(0).astype(int)
    if not counts.empty:
        lines += ["", "| class | " + " | ".join(counts.index) + " |", "| --- |" + " --- |" * len(counts.index)]
        lines += [f"| {c} | " + " | ".join(str(counts.loc[s, c]) for s in counts.index) + " |" for c in counts.columns]
    caveats = []
    if splits is None or "source" not in splits or splits["source"].astype(str).str.strip().eq("").all():
        return lines + ["", "The split file records no image sources, so source confounds cannot be checked."], caveats
    src = splits["source"].astype(str)
    lines += ["", "Sources (manifest `source` / `source_repo`), images per class over all splits:", "",
              "| source | " + " | ".join(meta["classes"]) + " | origin | population | known confounds |",
              "| --- |" + " --- |" * (len(meta["classes"]) + 3)]
    table = pd.crosstab(src, splits["label"]).reindex(columns=meta["classes"], fill_value=0)
    for s, row in table.iterrows():
        info = KNOWN_SOURCES.get(s)
        described = (info.origin, info.population, info.confounds) if info else ("not documented",) * 3
        lines.append(f"| {s} | " + " | ".join(str(v) for v in row) + " | " + " | ".join(described) + " |")
    conf = source_confounding(splits["label"], src)
    lines += ["", conf["note"]]
    for s, row in table.iterrows():
        held = [c for c in meta["classes"] if row[c] > 0]
        if conf["confounded"] and len(held) == 1:
            info = KNOWN_SOURCES.get(s)
            others = sorted(set(table.index) - {s})
            caveats.append(f"Source confound: every {held[0]} image comes from `{s}`"
                           + (f" ({info.population})" if info else "") + f", which holds no other class; the other "
                           f"classes come from {', '.join(f'`{o}`' for o in others)}. The source alone (age, hospital, "
                           f"scanner, processing) predicts {held[0]}, so its sensitivity and AUC may measure recognition "
                           "of the source rather than of the disease.")
    folder = _dataset_folder(run, cfg, splits)
    if folder is not None and (folder / "SOURCES.txt").is_file():
        lines += ["", f"<details><summary>{folder.name}/SOURCES.txt</summary>", "", "```",
                  (folder / "SOURCES.txt").read_text().rstrip(), "```", "</details>"]
    return lines, caveats


def _metrics(run: Path, m: dict | None) -> list[str]:
    if m is None:
        return not_measured(f"covidxray evaluate {run}")
    c95 = m.get("ci95", {})
    lines = [f"Test split, n = {m['n']} ({m['bootstrap']['n_boot']} stratified bootstrap resamples for the 95% "
             "intervals; argmax of the calibrated probabilities).", "", "| metric | value | 95% CI |",
             "| --- | --- | --- |"]
    lines += [f"| {label} | {num(m.get(k))} | {ci(c95.get(k))} |" for label, k in METRIC_ROWS.items()]
    for c, pc in m["per_class"].items():
        for stat in ("sensitivity", "specificity", "auc"):
            lines.append(f"| {c} {stat} | {num(pc.get(stat))} | {ci(c95.get(f'per_class.{c}.{stat}'))} |")
    lines += ["", link(run, run / "eval" / "test" / "confusion_counts.png", "confusion matrix, test split"),
              link(run, run / "eval" / "test" / "roc.png", "ROC curves, test split")]
    return lines


def _calibration(run: Path, cal: dict | None, m: dict | None) -> tuple[list[str], list[str]]:
    if cal is None:
        return not_measured(f"covidxray calibrate {run}"), []
    lines = [f"Temperature scaling fitted on the validation split (n = {cal['n']}): T = {num(cal['temperature'])}; "
             f"validation ECE {num(cal['ece_before'])} -> {num(cal['ece_after'])}."]
    if m is not None:
        lines.append(f"Test split: ECE {num(m.get('ece_uncalibrated'))} uncalibrated, {num(m.get('ece'))} "
                     f"{ci(m.get('ci95', {}).get('ece'))} with the temperature ({m.get('ece_bins')} bins).")
        lines.append(link(run, run / "eval" / "test" / "reliability.png", "reliability diagram, test split"))
    return lines, []


def _operating_point(run: Path, cal: dict | None, m: dict | None) -> list[str]:
    if cal is None or cal.get("threshold") is None:
        return not_measured(f"covidxray calibrate {run}")
    lines = [f"{cal['positive_class']} if p({cal['positive_class']}) >= {cal['threshold']:.4f}, the largest "
             f"threshold reaching sensitivity {cal['target_sensitivity']} on validation."]
    op = (m or {}).get("operating_point")
    if op:
        lines += ["", "| test split | value | 95% CI |", "| --- | --- | --- |",
                  f"| sensitivity at the threshold | {num(op['sensitivity'])} | {ci(op['ci95'].get('sensitivity'))} |",
                  f"| specificity at the threshold | {num(op['specificity'])} | {ci(op['ci95'].get('specificity'))} |"]
    return lines


def card_markdown(run_dir: str | Path) -> str:
    """The model card of a run as Markdown (see the module docstring).

    Args:
        run_dir: Run folder.

    Returns:
        The card's text.

    Raises:
        RunError: Without a run folder or its ``run.json``.
    """
    run = Path(run_dir)
    meta = _read(run, "run.json")
    if meta is None:
        raise RunError(f"{run}: run.json is missing; a model card needs the run's metadata")
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    splits = pd.read_csv(run / "splits.csv", keep_default_na=False) if (run / "splits.csv").is_file() else None
    m, cal = _read(run, "eval/test/metrics.json"), _read(run, "calibration.json")
    data_lines, caveats = _training_data(run, meta, cfg, splits)
    cal_lines, _ = _calibration(run, cal, m)
    test_n = "" if splits is None else f" ({int((splits['split'] == 'test').sum())} images)"
    sections = [
        ("Model details", _details(run, meta, cfg)),
        ("Intended use", [INTENDED]), ("Out-of-scope uses", [OUT_OF_SCOPE]),
        ("Training data", data_lines),
        ("Evaluation data", [f"The run's held-out test split{test_n}: same sources as the training data, split by "
                             "patient and near-duplicate group, never read during training. External sets are listed "
                             "under External evaluations."]),
        ("Metrics", _metrics(run, m)), ("Calibration", cal_lines),
        ("Operating point", _operating_point(run, cal, m)),
    ]
    for title, fn in (("External evaluations", checks.external), ("Explanation checks", checks.explanations),
                      ("Robustness to image corruptions", checks.robustness), ("Shortcut probes", checks.shortcuts),
                      ("Out-of-distribution inputs", checks.ood)):
        lines, found = fn(run)
        sections.append((title, lines))
        caveats += found
    missing = [t for t, lines in sections if lines and lines[0].startswith("Not measured yet")]
    caveats += [f"Not measured yet: {', '.join(missing)} (commands in those sections)."] if missing else []
    out = [f"# Model card: {run.name}", "",
           f"Written by `covidxray card` from the run folder on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC; "
           "sections after Mitchell et al., Model Cards for Model Reporting (FAT* 2019). Numbers are copied from the "
           "run's result files; 95% intervals are stratified-bootstrap percentile intervals unless stated."]
    for title, lines in sections:
        out += ["", f"## {title}", ""] + [ln for ln in lines if ln is not None]
    out += ["", "## Caveats and recommendations", ""] + [f"- {c}" for c in caveats or ["None recorded."]]
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


def write_card(run_dir: str | Path) -> Path:
    """Write ``<run>/MODEL_CARD.md`` atomically.

    Args:
        run_dir: Run folder.

    Returns:
        The card's path.
    """
    run = Path(run_dir)
    return atomic.write_text(run / CARD, card_markdown(run))
