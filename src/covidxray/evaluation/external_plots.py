"""Figures of the external-validation report: calibration transfer, per-group results, image statistics."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covidxray import atomic
from covidxray.evaluation.calibration import reliability_curve

_STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
          "grid.alpha": 0.3, "legend.frameon": False, "figure.facecolor": "white"}


def _save(fig: Figure, path: Path) -> str:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", facecolor="white")
    return str(path)


def plot_calibration_transfer(sets: dict[str, tuple], n_bins: int = 15) -> Figure:
    """Reliability curves, one panel per set, before and after the run's temperature.

    Args:
        sets: ``{name: (y, raw_probs, calibrated_probs)}``.
        n_bins: Confidence bins.
    """
    fig = Figure(figsize=(4.2 * len(sets), 4))
    for i, (name, (y, raw, cal)) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), i + 1)
        ax.plot([0, 1], [0, 1], ls="--", c="gray", lw=1)
        for probs, label, color in ((raw, "uncalibrated", "#999999"), (cal, "temperature-scaled", "#D55E00")):
            rc = reliability_curve(y, probs, n_bins)
            ok = rc["counts"] > 0
            ax.plot(rc["confidence"][ok], rc["accuracy"][ok], "o-", c=color, label=label, ms=3)
        ax.set(title=f"{name} (n={len(y)})", xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left")
    return fig


def plot_groups(report: dict) -> Figure:
    """Accuracy and the positive decision's specificity per group, internal and external, with CIs."""
    rows = []
    for side, bd in (("internal", report.get("internal_breakdown")), ("external", report.get("breakdown"))):
        for g in (bd or {}).get("groups", []):
            rows.append((f"{side}: {g['group']}", g["accuracy"], g["accuracy_ci"], g.get("decision_specificity"),
                         g.get("decision_specificity_ci"), g["n"]))
    fig = Figure(figsize=(9, 0.5 * len(rows) + 1.5))
    for j, (title, vi, ci_i) in enumerate((("accuracy", 1, 2), (f"{report.get('positive_class')} decision "
                                                                "specificity", 3, 4))):
        ax = fig.add_subplot(1, 2, j + 1)
        for k, r in enumerate(rows):
            if r[vi] is None:
                continue
            lo, hi = r[ci_i] or (r[vi], r[vi])
            color = "#0072B2" if r[0].startswith("internal") else "#D55E00"
            ax.errorbar(r[vi], k, xerr=[[r[vi] - lo], [hi - r[vi]]], fmt="o", c=color, capsize=3)
        ax.set_yticks(range(len(rows)), [f"{r[0]} (n={r[5]})" for r in rows] if j == 0 else [""] * len(rows))
        ax.set(xlim=(0, 1.02), title=title)
        ax.invert_yaxis()
    return fig


def plot_image_statistics(stats: pd.DataFrame) -> Figure:
    """Mean intensity histogram and border statistics per group (the cues a shortcut could use)."""
    fig = Figure(figsize=(10, 3.8))
    ax = fig.add_subplot(1, 2, 1)
    hist_cols = [c for c in stats.columns if c.startswith("hist_")]
    centers = (np.arange(len(hist_cols)) + 0.5) * 256 / len(hist_cols)
    for _, r in stats.iterrows():
        ax.plot(centers, r[hist_cols].to_numpy(float), "-" if r["group"].startswith("internal") else "--",
                label=f"{r['group']} (n={int(r['n'])})")
    ax.set(xlabel="intensity", ylabel="share of pixels", title="intensity histogram")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    x = np.arange(len(stats))
    for off, col, label in ((-0.25, "border_ratio", "border / centre mean"), (0.0, "border_bright", "bright border share"),
                            (0.25, "edge_density", "edge density")):
        ax.bar(x + off, stats[col], width=0.25, label=label)
    ax.set_xticks(x, stats["group"], rotation=30, ha="right", fontsize=7)
    ax.set(title="border and sharpness cues")
    ax.legend(fontsize=7)
    return fig


def write_figures(folder: Path, report: dict, y_int, raw_int, p_int, y_ext, raw_ext, p_ext,
                  stats: pd.DataFrame) -> dict[str, str]:
    """Write the report's figures into ``folder``; returns name -> path."""
    with mpl.rc_context(_STYLE):
        return {
            "calibration_transfer": _save(plot_calibration_transfer(
                {"internal test": (y_int, raw_int, p_int), "external": (y_ext, raw_ext, p_ext)},
                report["calibration"]["ece_bins"]), folder / "external_calibration.png"),
            "groups": _save(plot_groups(report), folder / "external_groups.png"),
            "image_statistics": _save(plot_image_statistics(stats), folder / "external_image_stats.png"),
        }
