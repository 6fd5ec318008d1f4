"""Leak-free, stratified train/val/test splits, their leakage check and summary.

Images are grouped so that no patient and no duplicate ever spans two splits: the groups of
:func:`covidxray.data.duplicates.assign_groups` (exact and near duplicates and shared
``patient_id``, merged transitively). Groups are then assigned to splits by a seeded greedy that
matches the per-class target counts (see :func:`make_splits`). Missing hash columns are computed
with :func:`covidxray.data.imageio.image_hash`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray import DEFAULT_CLASSES
from covidxray.data.duplicates import (
    as_text,
    assign_groups,
    default_threshold,
    duplicate_groups,
    ensure_hashes,
    near_duplicate_pairs,
)
from covidxray.data.integrity import refuse_conflicts
from covidxray.errors import DataError

SPLITS = ("train", "val", "test")


def _read_splits(splits: pd.DataFrame | str | Path) -> tuple[pd.DataFrame, Path | None, bool]:
    """The split table, the folder its relative paths refer to (the CSV's; None for a DataFrame), and
    whether its hash columns can be trusted (a DataFrame, or a CSV the package wrote unchanged)."""
    folder, trusted = None, True
    if not isinstance(splits, pd.DataFrame):
        from covidxray.data.tables import read_table

        folder = Path(splits).parent
        if not Path(splits).is_file():
            raise FileNotFoundError(f"{splits}: split CSV not found")
        table = read_table(splits, ("label", "split"), "splits file", nonempty=("label", "split"))
        splits, trusted = table.df, table.verified
    missing = {"label", "split"} - set(splits.columns)
    if missing:
        raise DataError(f"split table lacks column(s) {sorted(missing)}")
    return splits, folder, trusted


def _classes(labels: pd.Series) -> list[str]:
    order = {c: i for i, c in enumerate(DEFAULT_CLASSES)}
    return sorted(set(labels), key=lambda c: (order.get(c, len(order)), c))


def _greedy_assign(counts: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Assign groups (rows of a groups x classes count matrix) to splits, matching class targets.

    Groups are shuffled by ``seed`` and visited largest first. First, each split with a positive
    fraction gets the smallest unvisited group of every class it lacks (rarest class first); then
    each remaining group goes to the split where it most reduces the chi-square-like gap
    sum((achieved - target)**2 / target), i.e. roughly to the split with the largest relative
    deficit, so multi-image groups spread over all splits in proportion.
    """
    n_groups = len(counts)
    target = fractions[:, None] * counts.sum(axis=0)[None, :]
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    split = np.full(n_groups, -1)
    current = np.zeros_like(target)
    active = np.flatnonzero(fractions > 0)
    for c in np.argsort((counts > 0).sum(axis=0), kind="stable"):
        for s in active:
            if current[s, c] == 0:
                free = [g for g in order[::-1] if split[g] < 0 and counts[g, c] > 0]
                if free:
                    split[free[0]] = s
                    current[s] += counts[free[0]]
    for g in order:
        if split[g] < 0:
            cost = ((2 * (current[active] - target[active]) + counts[g]) * counts[g] / target[active]).sum(axis=1)
            split[g] = active[int(np.argmin(cost))]
            current[split[g]] += counts[g]
    return split


def make_splits(manifest: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0,
                near_dup_threshold: int | None = None, root: str | Path | None = None,
                allow_empty: bool = False) -> pd.DataFrame:
    """Stratified train/val/test split that keeps every patient and duplicate group in one split.

    Rows are sorted first (by path, label, hashes), so the result depends only on the set of
    rows and the seed, not on their order. Groups come from :func:`assign_groups`; a seeded
    greedy (see ``_greedy_assign``) matches per-class targets ``val`` and ``test`` to within
    about one group per class and split (unlike ``StratifiedGroupKFold``, whose folds are
    ``1/k`` of the data). Train gets the rest.

    Args:
        manifest: Table with ``label`` and ``sha1``/``phash`` (or ``path`` to compute them).
        val: Fraction for validation, in [0, 1).
        test: Fraction for test, in [0, 1); ``val + test < 1``.
        seed: Random seed; one seed gives one split.
        near_dup_threshold: Largest pHash Hamming distance that counts as a near duplicate
            (None: :func:`default_threshold`).
        root: Folder that relative paths are relative to (default: current directory).
        allow_empty: Allow a split with a positive fraction to get no image of some class
            (tiny data sets); otherwise that is a DataError naming the class.

    Returns:
        The manifest (hash columns filled) with ``group`` and ``split`` columns, in input order.

    Raises:
        DataError: Bad fractions, empty or unlabelled manifest, one image (exact or near duplicate)
            with two labels (the files are named), or a split left without a class.
    """
    for name, frac in (("val", val), ("test", test)):
        if not 0 <= frac < 1:  # also refuses NaN
            raise DataError(f"{name} fraction must be in [0, 1), got {frac}")
    if val + test >= 1:
        raise DataError(f"val + test must be < 1 so train is not empty, got {val} + {test} = {val + test}")
    if "label" not in manifest or manifest.empty:
        raise DataError("manifest must be non-empty and have a 'label' column")
    unlabeled = as_text(manifest["label"]) == ""
    if unlabeled.any():
        raise DataError(f"{int(unlabeled.sum())} manifest rows have no label (first: row {manifest.index[unlabeled][0]})")
    df = ensure_hashes(manifest.reset_index(drop=True), root)
    df["label"] = as_text(df["label"])
    keys = [c for c in ("path", "label", "sha1", "phash", "patient_id") if c in df]
    df = df.sort_values(keys, kind="stable")
    dup = duplicate_groups(df, near_dup_threshold, root)
    refuse_conflicts(df, dup)
    df["group"] = assign_groups(df, near_dup_threshold, root, dup=dup).to_numpy()
    classes = _classes(df["label"])
    counts = pd.crosstab(df["group"], df["label"]).reindex(columns=classes).to_numpy()
    fractions = np.array([1 - val - test, val, test])
    df["split"] = np.array(SPLITS)[_greedy_assign(counts, fractions, seed)[df["group"].to_numpy()]]
    if not allow_empty:
        got = pd.crosstab(df["split"], df["label"]).reindex(index=list(SPLITS), columns=classes, fill_value=0)
        for s, frac in zip(SPLITS, fractions, strict=True):
            for c in classes:
                if frac > 0 and got.at[s, c] == 0:
                    n_groups = int((counts[:, classes.index(c)] > 0).sum())
                    raise DataError(f"class '{c}' has only {n_groups} independent group(s) "
                                     f"({int(got[c].sum())} images): split '{s}' gets none of them; "
                                     "add data, set that fraction to 0, or allow it (allow_empty=True, "
                                    "covidxray split --allow-empty)")
    return df.sort_index().set_axis(manifest.index)


@dataclass
class LeakageReport:
    """What two or more splits share (all counts 0 means no leakage)."""

    n_patients_shared: int
    n_groups_shared: int
    n_exact_dups_shared: int
    n_near_dups_shared: int
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is shared between splits."""
        return not (self.n_patients_shared or self.n_groups_shared or self.n_exact_dups_shared
                    or self.n_near_dups_shared)


def _spanning(df: pd.DataFrame, key: pd.Series) -> pd.Series:
    """Split names per key value, for key values (non-empty) found in more than one split."""
    key = as_text(key)
    mask = key != ""
    per_key = df.loc[mask, "split"].groupby(key[mask]).agg(lambda s: sorted(set(s)))
    return per_key[per_key.map(len) > 1]


def check_leakage(splits: pd.DataFrame | str | Path, near_dup_threshold: int | None = None,
                  root: str | Path | None = None, recompute: bool | None = None) -> LeakageReport:
    """Check a split table for patients and duplicates shared between splits.

    Duplicate groups are recomputed from ``sha1``/``phash`` (the ``group`` column is not trusted),
    and so are those hashes, from the images, unless the table can be trusted: a DataFrame made in
    this process, or a CSV whose sidecar shows the package wrote it unchanged (a stale column in
    an edited file would hide an exact copy).

    Args:
        splits: DataFrame or CSV path with a ``split`` column (paths relative to the CSV's folder).
        near_dup_threshold: Largest pHash Hamming distance that counts as a near duplicate
            (None: :func:`default_threshold`).
        root: Folder for relative paths when ``splits`` is a DataFrame.
        recompute: Recompute ``sha1``/``phash`` from the images (None: see above).

    Returns:
        Counts of shared patients, groups (patient + duplicate components), exact-duplicate hashes
        and near-duplicate pairs (different ``sha1``), with one line of detail per finding.
    """
    df, csv_dir, trusted = _read_splits(splits)
    recompute = not trusted if recompute is None else recompute
    df = ensure_hashes(df.reset_index(drop=True), root if root is not None else csv_dir, recompute)
    details = []
    patients = _spanning(df, df["patient_id"]) if "patient_id" in df else pd.Series(dtype=object)
    details += [f"patient {p} in {', '.join(s)}" for p, s in patients.items()]
    exact = _spanning(df, df["sha1"])
    name = df["path"].astype(str) if "path" in df else pd.Series(df.index.astype(str), index=df.index)
    details += [f"exact duplicate sha1 {h[:12]} in {', '.join(s)}: {', '.join(name[df['sha1'] == h][:4])}"
                for h, s in exact.items()]
    if near_dup_threshold is None:
        near_dup_threshold = default_threshold(4 * (len(df["phash"].iat[0]) if len(df) else 64))
    pairs = near_duplicate_pairs(df["phash"], near_dup_threshold)
    split, sha1 = df["split"].to_numpy(), df["sha1"].to_numpy()
    pairs = pairs[(split[pairs[:, 0]] != split[pairs[:, 1]]) & (sha1[pairs[:, 0]] != sha1[pairs[:, 1]])]
    name = name.to_numpy()
    details += [f"near duplicates {name[i]} ({split[i]}) ~ {name[j]} ({split[j]})" for i, j in pairs]
    groups = _spanning(df, assign_groups(df, near_dup_threshold).astype(str))
    return LeakageReport(len(patients), len(groups), len(exact), len(pairs), details)


def split_summary(splits: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Images per class, images, groups and patients per split (plus a ``total`` row).

    Args:
        splits: DataFrame or CSV path with ``label`` and ``split`` (``group``/``patient_id`` optional).

    Returns:
        DataFrame indexed by split name; the ``total`` row counts distinct groups/patients overall.
    """
    df, _, _ = _read_splits(splits)
    df = df.assign(label=as_text(df["label"]), split=as_text(df["split"]))
    classes = _classes(df["label"])
    names = [s for s in SPLITS if s in set(df["split"])] + sorted(set(df["split"]) - set(SPLITS))
    table = pd.crosstab(df["split"], df["label"]).reindex(index=names, columns=classes, fill_value=0)
    table["images"] = table.sum(axis=1)
    pid = as_text(df["patient_id"]) if "patient_id" in df else pd.Series("", index=df.index)
    for col, key in (("groups", df["group"].astype(str) if "group" in df else None), ("patients", pid)):
        if key is not None:
            key = key.where(key != "")
            table[col] = key.groupby(df["split"]).nunique().reindex(names, fill_value=0)
            table.loc["total", col] = key.nunique()
    table.loc["total", classes + ["images"]] = table.loc[names, classes + ["images"]].sum()
    return table.astype(int)


def format_summary(summary: pd.DataFrame, leakage: LeakageReport | None = None,
                   duplicates: dict | None = None) -> str:
    """Printable split table: counts, each split's share of every class, duplicates, leakage verdict.

    Args:
        summary: Output of :func:`split_summary`.
        leakage: Optional :func:`check_leakage` result to append.
        duplicates: Optional :func:`duplicate_stats` result to append.

    Returns:
        Multi-line text.
    """
    classes = [c for c in summary.columns if c not in ("images", "groups", "patients")]
    shares = summary.drop(index="total")[classes + ["images"]] / summary.loc["total", classes + ["images"]]
    lines = [summary.to_string(), "", "share of each class per split:", shares.map("{:.1%}".format).to_string()]
    if duplicates is not None:
        lines += ["", "duplicates: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in duplicates.items())]
    if leakage is not None:
        verdict = "OK (no patient or duplicate shared between splits)" if leakage.ok else "LEAKAGE"
        lines += ["", f"leakage: {verdict}: patients {leakage.n_patients_shared}, groups "
                  f"{leakage.n_groups_shared}, exact dups {leakage.n_exact_dups_shared}, "
                  f"near-dup pairs {leakage.n_near_dups_shared}"]
        lines += [f"  {d}" for d in leakage.details[:20]]
        if len(leakage.details) > 20:
            lines.append(f"  ... and {len(leakage.details) - 20} more")
    return "\n".join(lines)
