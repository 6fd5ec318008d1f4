"""Checks on a labelled data set that are not errors of one file: conflicting labels, weak splits.

* :func:`label_conflicts`: one image (exact or near duplicate, see :mod:`covidxray.data.duplicates`) with two
  labels cannot be right for both; :func:`covidxray.data.discover.discover` quarantines every copy, and
  :func:`covidxray.data.split.make_splits` refuses such a manifest, naming the files.
* :func:`split_warnings`: splits that work but should not pass unnoticed (one class, an empty
  fraction, a configured class absent, a tiny training split).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from covidxray.data.tables import shown

#: Fewer training images of a class than this gets a warning.
MIN_TRAIN_PER_CLASS = 10


def label_conflicts(df: pd.DataFrame, groups: pd.Series) -> list[pd.Index]:
    """Duplicate groups whose rows carry more than one label.

    Args:
        df: Table with ``label`` (and ``path`` for messages).
        groups: Duplicate group id per row (:func:`covidxray.data.duplicates.duplicate_groups`), same index.

    Returns:
        One index of rows per conflicting group, largest first.
    """
    labels = df["label"].astype(str).str.strip()
    n_labels = labels.groupby(groups).nunique()
    bad = n_labels.index[n_labels > 1]
    found = [df.index[(groups == g).to_numpy()] for g in bad]
    return sorted(found, key=len, reverse=True)


def describe_conflict(df: pd.DataFrame, rows: pd.Index, limit: int = 4) -> str:
    """``a.png (COVID-19), b.png (Normal)`` for one conflicting group."""
    names = df["path"] if "path" in df else pd.Series(df.index.astype(str), index=df.index)
    items = [f"{shown(names[i])} ({df.at[i, 'label']})" for i in rows[:limit]]
    return ", ".join(items) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def refuse_conflicts(df: pd.DataFrame, groups: pd.Series) -> None:
    """Raise :class:`covidxray.data.DataError` naming the files of up to 3 conflicting groups."""
    from covidxray.errors import DataError

    conflicts = label_conflicts(df, groups)
    if conflicts:
        raise DataError(f"{len(conflicts)} image(s) carry two labels (exact or near duplicates): "
                        + "; ".join(describe_conflict(df, rows) for rows in conflicts[:3])
                        + ("; ..." if len(conflicts) > 3 else "") + ": fix or drop these rows")


def quarantine_conflicts(manifest: pd.DataFrame, quarantine: list, threshold: int | None) -> pd.DataFrame:
    """Move every copy of an image (exact or near duplicate) that carries two labels to ``quarantine``
    (a list of ``(path, reason)``); returns the manifest without them. Needs ``sha1``/``phash``."""
    if len(manifest) < 2 or (manifest["sha1"] == "").any():
        return manifest
    from covidxray.data.duplicates import duplicate_groups

    drop = []
    for rows in label_conflicts(manifest, duplicate_groups(manifest, threshold)):
        text = describe_conflict(manifest, rows)
        quarantine += [(manifest.at[i, "path"], f"conflicting labels: one image (exact or near duplicate) "
                        f"as {text}") for i in rows]
        drop += list(rows)
    return manifest.drop(index=drop)


def split_warnings(splits: pd.DataFrame, val: float, test: float,
                   classes: Sequence[str] | None = None) -> list[str]:
    """Warnings about a split table that is usable but probably not what was meant.

    Args:
        splits: Output of :func:`covidxray.data.split.make_splits`.
        val: The validation fraction asked for.
        test: The test fraction asked for.
        classes: The classes expected (a class with no image at all is named); None: skip.

    Returns:
        One line per warning (empty when all is well).
    """
    out = []
    labels = splits["label"].astype(str)
    present = sorted(set(labels))
    if len(present) < 2:
        out.append(f"only one class ({', '.join(present)}): a classifier cannot be trained on it")
    if classes is not None:
        absent = [c for c in classes if c not in present]
        if absent and set(present) <= set(classes):
            out.append(f"no image of class(es) {', '.join(absent)} (expected {', '.join(classes)}): "
                       "is the manifest complete?")
    for name, frac in (("val", val), ("test", test)):
        if frac == 0:
            out.append(f"{name} fraction is 0: there is no {name} split"
                       + (" (early stopping and calibration need one)" if name == "val" else ""))
    train = labels[splits["split"] == "train"].value_counts()
    small = {c: int(train.get(c, 0)) for c in present if train.get(c, 0) < MIN_TRAIN_PER_CLASS}
    if small:
        out.append(f"the train split has only {int(train.sum())} image(s) ("
                   + ", ".join(f"{c} {n}" for c, n in small.items())
                   + f"; fewer than {MIN_TRAIN_PER_CLASS} per class): results will mean little")
    return out
