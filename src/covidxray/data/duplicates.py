"""Exact and near-duplicate images: content hashes, near-duplicate pairs, duplicate groups.

Held apart from :mod:`covidxray.data.split` because more than the split uses it (the label-conflict
check of :mod:`covidxray.data.integrity`, the data figures); the split builds its groups from here.

* exact duplicates share the decoded-content hash (manifest column ``sha1``);
* near-duplicates have perceptual hashes (column ``phash``, hex from ``imagehash.phash``; 256-bit
  by default, see :func:`covidxray.data.imageio.image_hash`; all rows must have the same length)
  within ``near_dup_threshold`` bits (Hamming distance);
* images with one non-empty ``patient_id`` belong together (:func:`assign_groups`).

All three relations are merged transitively (connected components). Missing hash columns are
computed with :func:`covidxray.data.imageio.image_hash`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from covidxray.errors import DataError

HASH_COLUMNS = ("sha1", "phash")


def as_text(col: pd.Series) -> pd.Series:
    """Cells as stripped strings, missing ones as ``""``."""
    return col.fillna("").astype(str).str.strip()


def ensure_hashes(manifest: pd.DataFrame, root: str | Path | None, recompute: bool = False) -> pd.DataFrame:
    """Return ``manifest`` with non-empty ``sha1``/``phash``, computing missing cells (all cells when
    ``recompute``: columns that cannot be trusted) from the images."""
    df = manifest.copy()
    for col in HASH_COLUMNS:
        df[col] = as_text(df[col]).str.lower() if col in df and not recompute else ""
    todo = df.index[(df["sha1"] == "") | (df["phash"] == "")]
    if len(todo):
        try:
            from covidxray.data.imageio import image_hash, read_image
        except ImportError as err:
            raise ImportError(f"{len(todo)} rows lack sha1/phash and covidxray.data.imageio is unavailable: {err}") from None
        if "path" not in df:
            raise DataError("manifest has no 'path' column, so missing sha1/phash cannot be computed")
        base = Path(root) if root is not None else Path.cwd()
        for i in todo:
            rel = str(df.at[i, "path"])
            if not rel:
                raise DataError(f"row {i}: empty path and no sha1/phash")
            file = Path(rel) if Path(rel).is_absolute() else base / rel
            if not file.is_file():
                raise FileNotFoundError(f"row {i}: image {file} not found (needed to compute sha1/phash)")
            sha1, phash = image_hash(read_image(file))
            df.at[i, "sha1"] = df.at[i, "sha1"] or sha1
            df.at[i, "phash"] = df.at[i, "phash"] or phash
    width = df["phash"].str.len().mode().iat[0] if len(df) else 64
    bad = ~df["phash"].str.fullmatch(r"[0-9a-f]+") | (df["phash"].str.len() != width) | (width % 16 != 0)
    if bad.any():
        i = df.index[bad][0]
        raise DataError(f"row {i} ({df.at[i, 'path'] if 'path' in df else '?'}): phash {df.at[i, 'phash']!r} "
                         f"is not {width} hex digits like the other rows (imagehash.phash); {int(bad.sum())} bad rows")
    return df


def default_threshold(bits: int) -> int:
    """Near-duplicate distance used when none is given: 1/16 of the hash bits (16 of 256, 4 of 64)."""
    return bits // 16


def near_duplicate_pairs(phash: pd.Series | list[str], threshold: int, chunk: int = 1 << 18) -> np.ndarray:
    """All pairs of distinct rows whose perceptual hashes differ in at most ``threshold`` bits.

    Vectorized: each hash becomes a row of uint64 words, and blocks of rows are XORed against all
    later rows and counted with ``np.bitwise_count``, so memory stays near ``chunk`` elements.

    Args:
        phash: Hex strings of one length, a multiple of 16 digits (64 bits).
        threshold: Largest Hamming distance counted as a near duplicate.
        chunk: Approximate number of pair distances computed at once.

    Returns:
        int array of shape (k, 2) with row positions ``i < j``.
    """
    hexes = list(phash)
    words = len(hexes[0]) // 16 if hexes else 1
    h = np.array([[int(x[k : k + 16], 16) for k in range(0, 16 * words, 16)] for x in hexes],
                 dtype=np.uint64).reshape(len(hexes), words)
    n = len(h)
    found = []
    rows = max(1, chunk // max(n * words, 1))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dist = np.bitwise_count(h[start:stop, None, :] ^ h[None, start:, :]).sum(axis=-1, dtype=np.int32)
        i, j = np.nonzero(dist <= threshold)
        i += start
        j += start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.intp)


def _key_pairs(keys: pd.Series) -> np.ndarray:
    """Pairs (first row of key, row) linking rows that share a non-empty key."""
    keys = as_text(keys).to_numpy()
    pos = np.arange(len(keys))
    nonempty = keys != ""
    first = pd.Series(pos[nonempty]).groupby(keys[nonempty]).transform("min").to_numpy()
    return np.stack([first, pos[nonempty]], axis=1)


def _components(n: int, pairs: list[np.ndarray]) -> np.ndarray:
    edges = np.concatenate([p.reshape(-1, 2) for p in pairs])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels)[0]  # ids in order of first row, so they follow the row order


def duplicate_groups(manifest: pd.DataFrame, near_dup_threshold: int | None = None, root: str | Path | None = None) -> pd.Series:
    """Group exact duplicates (same ``sha1``) and near duplicates (``phash`` within the threshold).

    Args:
        manifest: Table with ``sha1`` and ``phash`` (or ``path`` to compute them).
        near_dup_threshold: Largest pHash Hamming distance that counts as a near duplicate
            (None: :func:`default_threshold`).
        root: Folder that relative paths are relative to (default: current directory).

    Returns:
        Integer group id per row (index of ``manifest``); singletons get their own id.
    """
    df = ensure_hashes(manifest, root)
    bits = 4 * (len(df["phash"].iat[0]) if len(df) else 64)
    near_dup_threshold = default_threshold(bits) if near_dup_threshold is None else near_dup_threshold
    if not 0 <= near_dup_threshold < bits:
        raise DataError(f"near_dup_threshold must be in [0, {bits}) bits, got {near_dup_threshold}")
    pairs = [_key_pairs(df["sha1"]), near_duplicate_pairs(df["phash"], near_dup_threshold)]
    return pd.Series(_components(len(df), pairs), index=manifest.index, name="dup_group")


def duplicate_stats(manifest: pd.DataFrame, near_dup_threshold: int | None = None, root: str | Path | None = None) -> dict:
    """Count duplicate groups in a manifest.

    Args:
        manifest: Table with ``sha1``/``phash`` (or ``path``) and optionally ``patient_id``.
        near_dup_threshold: Largest pHash Hamming distance that counts as a near duplicate
            (None: :func:`default_threshold`).
        root: Folder that relative paths are relative to (default: current directory).

    Returns:
        ``exact_groups`` (sha1 values on more than one row), ``near_groups`` (duplicate groups
        joining two or more distinct sha1), ``images_in_dup_groups``, ``multi_image_patients``.
    """
    df = ensure_hashes(manifest, root)
    dup = duplicate_groups(df, near_dup_threshold)
    sizes = dup.value_counts()
    patients = as_text(df["patient_id"]) if "patient_id" in df else pd.Series("", index=df.index)
    return {
        "exact_groups": int((df["sha1"].value_counts() > 1).sum()),
        "near_groups": int((df.groupby(dup)["sha1"].nunique() > 1).sum()),
        "images_in_dup_groups": int(sizes[sizes > 1].sum()),
        "multi_image_patients": int((patients[patients != ""].value_counts() > 1).sum()),
    }


def assign_groups(manifest: pd.DataFrame, near_dup_threshold: int | None = None, root: str | Path | None = None,
                  dup: pd.Series | None = None) -> pd.Series:
    """Final grouping key: union of shared non-empty ``patient_id`` and duplicate groups.

    Args:
        manifest: Table with ``sha1``/``phash`` (or ``path``) and optionally ``patient_id``.
        near_dup_threshold: Largest pHash Hamming distance that counts as a near duplicate
            (None: :func:`default_threshold`).
        root: Folder that relative paths are relative to (default: current directory).
        dup: Precomputed :func:`duplicate_groups` of ``manifest``.

    Returns:
        Integer group id per row (index of ``manifest``).
    """
    dup = (duplicate_groups(manifest, near_dup_threshold, root) if dup is None else dup).to_numpy()
    pairs = [_key_pairs(pd.Series(dup.astype(str)))]
    if "patient_id" in manifest:
        pairs.append(_key_pairs(manifest["patient_id"]))
    return pd.Series(_components(len(manifest), pairs), index=manifest.index, name="group")
