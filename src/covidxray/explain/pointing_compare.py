"""Compare runs' localisation on the same images: pointing game with intervals and a paired test.

Reads what ``covidxray interpret RUN -o DIR`` writes (``DIR/interpret.json`` and ``DIR/localisation.csv``,
one row per image and method) for several runs explained on the same split images (same split and
seed), e.g. a run trained with ``train.attribution_prior`` against one without
(``benchmarks/prior_pointing.py``). Per run and method: the pointing game on lesion-bearing images with
its Wilson 95% interval, the mean energy shares in the lungs and the lesion beside a uniform map's, and,
against the reference run, McNemar's test of the pointing-game hits on the images both explained.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray.evaluation.compare import mcnemar_test
from covidxray.evaluation.external import wilson


def compare_pointing(runs: Mapping[str, str | Path], reference: str | None = None) -> pd.DataFrame:
    """One row per (run, method) of the interpret folders in ``runs``.

    Args:
        runs: Name -> interpret output folder (``interpret.json`` + ``localisation.csv``).
        reference: The run the others are tested against (default the first).

    Returns:
        Columns ``run``, ``method``, ``accuracy`` (of the explained images), ``images``,
        ``lesion_images``, ``pointing_lesion``, ``pointing_ci``, ``chance_pointing``, ``lung_energy``,
        ``chance_lung``, ``lesion_energy``, ``chance_lesion``, ``mcnemar_p`` (NaN for the reference)
        and ``paired_images``.

    Raises:
        FileNotFoundError: A folder without its ``interpret.json`` or ``localisation.csv`` (named).
    """
    folders = {name: Path(f) for name, f in runs.items()}
    for f in folders.values():
        for name in ("interpret.json", "localisation.csv"):
            if not (f / name).is_file():
                raise FileNotFoundError(f"{f / name}: missing; run covidxray interpret RUN -o {f}")
    reference = reference or next(iter(folders))
    tables = {name: pd.read_csv(f / "localisation.csv") for name, f in folders.items()}
    reps = {name: json.loads((f / "interpret.json").read_text()) for name, f in folders.items()}
    ref = tables[reference]
    rows = []
    for name, table in tables.items():
        chance = reps[name]["chance"]
        for method, g in table.groupby("method", sort=False):
            hits = g.dropna(subset=["pointing_lesion"])
            k, n = int(hits["pointing_lesion"].sum()), len(hits)
            row = {"run": name, "method": method, "accuracy": reps[name]["images"]["accuracy"], "images": len(g),
                   "lesion_images": n, "pointing_lesion": k / n if n else np.nan,
                   "pointing_ci": wilson(k, n) or [np.nan, np.nan], "chance_pointing": chance["pointing_lesion"],
                   "lung_energy": g["lung_energy"].mean(), "chance_lung": chance["lung_energy"],
                   "lesion_energy": g["lesion_energy"].mean(), "chance_lesion": chance["lesion_energy"],
                   "mcnemar_p": np.nan, "paired_images": 0}
            if name != reference:
                base = ref[ref["method"] == method].set_index("image")["pointing_lesion"]
                pair = pd.concat([base, hits.set_index("image")["pointing_lesion"]], axis=1, join="inner").dropna()
                if len(pair):
                    test = mcnemar_test(pair.iloc[:, 0].to_numpy() > 0, pair.iloc[:, 1].to_numpy() > 0)
                    row.update(mcnemar_p=test["p_value"], paired_images=len(pair))
            rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """The table of :func:`compare_pointing` as Markdown (uniform-map values in parentheses)."""
    lines = ["| run | method | accuracy (explained images) | pointing game, lesions [95% CI] (n) | uniform map "
             "| energy in lungs (uniform) | energy in lesion (uniform) | McNemar p vs reference |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table.to_dict("records"):
        lo, hi = r["pointing_ci"]
        p = "" if np.isnan(r["mcnemar_p"]) else f"{r['mcnemar_p']:.3f} ({r['paired_images']} paired)"
        lines.append(f"| {r['run']} | {r['method']} | {r['accuracy']:.3f} | {r['pointing_lesion']:.3f} "
                     f"[{lo:.3f}, {hi:.3f}] ({r['lesion_images']}) | {r['chance_pointing']:.3f} | "
                     f"{r['lung_energy']:.3f} ({r['chance_lung']:.3f}) | {r['lesion_energy']:.3f} "
                     f"({r['chance_lesion']:.3f}) | {p} |")
    return "\n".join(lines) + "\n"
