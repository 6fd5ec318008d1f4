"""One row per run, internal test split and an external set side by side, from the runs' own reports.

The mitigation study (README "Shortcut mitigations", ``benchmarks/mitigations.py``) trains one run per
option with the same seed, split and number of epochs, evaluates each on its test split and on an
external set (``covidxray evaluate RUN --data EXT`` writes ``RUN/eval/<EXT name>/external.json``), and
then reads the rows back here: nothing is recomputed, so the table is exactly what the reports say.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from covidxray.errors import RunError

#: (column, key in external.json ``metrics``, which side)
METRICS = [
    ("accuracy", "accuracy"),
    ("macro-AUC", "macro_auc"),
    ("COVID-19 sensitivity", "operating_point.sensitivity"),
    ("COVID-19 specificity", "operating_point.specificity"),
]


def external_json(run_dir: str | Path, dataset: str) -> dict:
    """The external report of ``run_dir`` on the dataset named ``dataset``.

    Args:
        run_dir: Run folder, or an ``external.json`` itself.
        dataset: The external set's folder name (the report lives in ``RUN/eval/<dataset>/``).

    Returns:
        The parsed ``external.json``.

    Raises:
        RunError: When the report does not exist (naming the command that writes it).
    """
    path = Path(run_dir)
    path = path if path.is_file() else path / "eval" / dataset / "external.json"
    if not path.is_file():
        raise RunError(f"{path}: no external report; run `covidxray evaluate {run_dir} --data .../{dataset}`")
    return json.loads(path.read_text())


def _fmt(value, ci) -> str:
    if value is None:
        return "n/a"
    if not ci or ci[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def run_row(run_dir: str | Path, dataset: str, name: str | None = None) -> dict:
    """Numbers of one run: each metric internal and external with its 95% CI, specificity per
    external source, and the feature-probe AUC (how well the features still tell the sets apart).

    Args:
        run_dir: Run folder with ``eval/<dataset>/external.json``.
        dataset: External set name.
        name: Row label (default: the run folder's name).

    Returns:
        A flat dict: ``run``, ``<metric> internal`` / ``<metric> external`` (values), the same with
        ``_ci`` suffixes, ``specificity <source>`` (+ ``_ci``), ``feature-probe AUC`` (+ ``_ci``),
        ``threshold`` and ``epochs``.
    """
    rep = external_json(run_dir, dataset)
    row: dict = {"run": name or Path(run_dir).name, "threshold": rep["threshold"]}
    hist = Path(rep["run"]) / "history.csv"
    row["epochs"] = len(pd.read_csv(hist)) if hist.is_file() else None
    for col, key in METRICS:
        m = rep["metrics"][key]
        for side in ("internal", "external"):
            row[f"{col} {side}"] = m[side]
            row[f"{col} {side}_ci"] = m.get(f"{side}_ci")
    for group in rep["breakdown"]["groups"]:
        if group.get("decision_specificity") is not None:
            row[f"specificity {group['group']}"] = group["decision_specificity"]
            row[f"specificity {group['group']}_ci"] = group["decision_specificity_ci"]
    probe = rep.get("feature_probe") or {}
    row["feature-probe AUC"] = probe.get("auc")
    row["feature-probe AUC_ci"] = probe.get("auc_ci")
    return row


def runs_table(runs: Sequence[str | Path] | dict, dataset: str) -> pd.DataFrame:
    """One row per run (:func:`run_row`), in the given order.

    Args:
        runs: Run folders, or ``{row label: run folder}``.
        dataset: External set name (``RUN/eval/<dataset>/external.json``).

    Returns:
        A DataFrame with the numeric columns and their ``_ci`` companions.
    """
    items = runs.items() if isinstance(runs, dict) else [(None, r) for r in runs]
    return pd.DataFrame([run_row(r, dataset, name) for name, r in items])


def finished(folder: str | Path, dataset: str) -> dict[str, Path]:
    """The runs under ``folder`` (e.g. ``models/mitigations``) that have an external report on ``dataset``.

    Args:
        folder: Folder of run folders (absent: none).
        dataset: External set name.

    Returns:
        ``{run name: run folder}``, sorted by name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "eval" / dataset / "external.json").is_file()}


def to_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, each value with its 95% CI in brackets.

    Args:
        table: From :func:`runs_table`.

    Returns:
        A Markdown table (one row per run).
    """
    cols = [c for c in table.columns if not c.endswith("_ci") and c not in ("run", "threshold", "epochs")]
    lines = ["| run | epochs | " + " | ".join(cols) + " |", "| --- | --- |" + " --- |" * len(cols)]
    for _, r in table.iterrows():
        cells = [_fmt(r[c], r.get(f"{c}_ci")) if pd.notna(r[c]) else "n/a" for c in cols]
        epochs = "" if pd.isna(r["epochs"]) else str(int(r["epochs"]))
        lines.append(f"| {r['run']} | {epochs} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
