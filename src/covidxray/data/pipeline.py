"""Data stage: dataset -> splits CSV -> tf.data pipelines with on-the-fly augmentation.

``prepare_splits`` accepts whatever the user has (a dataset folder in any layout ``covidxray index``
understands, a manifest CSV, or a splits CSV) and returns one leak-free splits table.
``make_dataset`` turns one split into a ``tf.data.Dataset`` over the decode-once cache: per-epoch
shuffle of indices, batched gather from the memory map, augmentation, prefetch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray.errors import DataError

SPLITS = ("train", "val", "test")




def is_splits_file(path: str | Path) -> bool:
    """True when ``path`` is a CSV with ``path``, ``label`` and ``split`` columns."""
    p = Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return False
    try:
        cols = pd.read_csv(p, nrows=0, encoding_errors="surrogateescape").columns
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return False  # not a splits file; the manifest reader names the problem
    return {"path", "label", "split"} <= set(cols)


def read_splits(path: str | Path, classes: Sequence[str]) -> pd.DataFrame:
    """Read and validate a splits CSV (paths relative to the file are made absolute).

    The file is checked by :func:`covidxray.data.tables.read_table`: a truncated one (rows or fields
    missing, or fewer rows than its sidecar records) is refused.

    Args:
        path: The splits CSV.
        classes: The configured class order; every label must be one of them.

    Returns:
        The table, with absolute paths; ``df.attrs["verified"]`` tells whether the package wrote it
        unchanged (its hash columns can be trusted).
    """
    from covidxray.data.tables import read_table

    p = Path(path)
    table = read_table(p, ("path", "label", "split"), "splits file", dtype={"patient_id": str},
                       nonempty=("path", "label", "split"))
    df = table.df
    df.attrs["verified"] = table.verified
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise DataError(f"{p}: unknown split names {bad_split} (expected {list(SPLITS)})")
    bad = sorted(set(df["label"]) - set(classes))
    if bad:
        raise DataError(f"{p}: labels {bad} are not among the configured classes {list(classes)}")
    df["path"] = [str(x if Path(x).is_absolute() else (p.parent / x).resolve()) for x in df["path"]]
    return df


def prepare_splits(cfg: Mapping, dataset: str | Path, out_dir: Path, log=print) -> pd.DataFrame:
    """Produce the splits table for a run and write ``splits.csv`` (and ``quarantine.csv``) to ``out_dir``.

    Args:
        cfg: Resolved config.
        dataset: Dataset folder, manifest CSV or splits CSV.
        out_dir: Run folder.
        log: Where progress messages go.

    Returns:
        The splits table (columns include path, label, split).
    """
    from covidxray import atomic
    from covidxray.data import discover, split, tables
    from covidxray.data.integrity import split_warnings

    classes = list(cfg["classes"])
    dataset = Path(dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    threshold = cfg["data"]["near_dup_threshold"]
    if is_splits_file(dataset):
        df = read_splits(dataset, classes)
        log(f"using the splits in {dataset}; checking them for leakage (hashes recomputed from the images)")
        # the file's own sha1/phash columns may be stale: recompute them, then refuse any leak
        leak = split.check_leakage(df, threshold, recompute=True)
        if not leak.ok:
            shown = "; ".join(tables.shown(d) for d in leak.details[:3])
            raise DataError(f"{dataset}: splits leak between train/val/test ({len(leak.details)} finding(s): "
                            f"{shown}{'; ...' if len(leak.details) > 3 else ''}); re-split with covidxray split")
    else:
        found = discover.discover(dataset, classes=classes, min_size=cfg["data"]["min_size"],
                                  workers=cfg["data"]["workers"], near_dup_threshold=threshold)
        log(discover.summarize(found))
        if len(found.quarantine):
            atomic.write_csv(found.quarantine, out_dir / "quarantine.csv")
            log(f"{len(found.quarantine)} files quarantined: see {out_dir / 'quarantine.csv'}")
        df = split.make_splits(found.manifest, val=cfg["data"]["val"], test=cfg["data"]["test"],
                               seed=cfg["seed"], near_dup_threshold=threshold)
        log(split.format_summary(split.split_summary(df), split.check_leakage(df)))
    empty = [c for c in classes if not ((df["label"] == c) & (df["split"] == "train")).any()]
    if empty:
        raise DataError(f"{dataset}: no training images for classes {empty}")
    for warning in split_warnings(df, float((df["split"] == "val").mean()), float((df["split"] == "test").mean()),
                                  classes):
        log(f"warning: {warning}")
    tables.write_table(df, out_dir / "splits.csv", "covidxray train")
    return df


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights ``n / (K * count_k)`` from the training labels."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return {k: float(len(labels) / (n_classes * c)) if c else 0.0 for k, c in enumerate(counts)}


def as_model_batch(images: np.ndarray) -> np.ndarray:
    """``(N, S, S)`` uint8 images as the model's float32 ``(N, S, S, 1)`` batch, as :func:`make_dataset` yields them."""
    return np.asarray(images).astype(np.float32)[..., None]


def source_groups(labels: np.ndarray, sources: Sequence) -> tuple[np.ndarray, dict[int, float]] | None:
    """Sampling groups for ``data.balance_sources``: one per (class, source), None when no class has two sources.

    Each group's weight is its class's share of the images divided by the number of sources of that
    class, so classes keep their frequencies and each source of a class is drawn equally often.

    Args:
        labels: ``(N,)`` class indices.
        sources: ``(N,)`` source names (empty / NaN = one "unknown" source).

    Returns:
        ``(groups, weights)``: ``(N,)`` group ids and id -> sampling weight; or None.
    """
    src = np.array(["" if s is None or s != s else str(s) for s in sources], dtype=object)
    pairs = list(zip(np.asarray(labels).tolist(), src.tolist(), strict=True))
    keys = sorted(set(pairs))
    per_class = {c: sum(1 for k in keys if k[0] == c) for c, _ in keys}
    if max(per_class.values(), default=1) < 2:
        return None
    ids = {k: i for i, k in enumerate(keys)}
    groups = np.array([ids[p] for p in pairs], np.int64)
    n = len(pairs)
    share = {c: sum(1 for p in pairs if p[0] == c) / n for c in per_class}
    return groups, {ids[k]: share[k[0]] / per_class[k[0]] for k in keys}


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    n_classes: int,
    batch_size: int,
    shuffle: bool = False,
    augmenter=None,
    seed: int = 0,
    drop_remainder: bool | None = None,
    groups: tuple[np.ndarray, dict[int, float]] | None = None,
    masks: np.ndarray | None = None,
):
    """A ``tf.data.Dataset`` of ``(float32 images (B,S,S,1) in 0-255, one-hot labels)``.

    Shuffling permutes indices (exact, bounded memory); each batch is one sorted gather from the
    memory map, augmented on uint8 and converted to float32 in the same NumPy call (one hop out of
    the graph per batch, run in parallel); batches are prefetched. A shuffled (training) dataset
    drops its last partial batch.

    Args:
        images: ``(N, S, S)`` uint8 array or memory map.
        labels: ``(N,)`` int class indices, or None for images only.
        n_classes: Width of the one-hot labels.
        batch_size: Batch size.
        shuffle: Reshuffle every epoch.
        augmenter: A :class:`covidxray.augment.Augmenter` (None: no augmentation). Its random draw
            depends on its seed, ``seed`` and the batch's image indices only.
        seed: Shuffle seed.
        drop_remainder: Drop the last partial batch (default: when shuffling and ``n >= batch_size``).
        groups: :func:`source_groups` output: with ``shuffle``, an epoch is ``N`` draws by
            ``tf.data.Dataset.sample_from_datasets`` over the groups (each a reshuffled, repeated index
            stream) with the groups' weights, so images of a rare source repeat within an epoch.
        masks: ``(N, S, S)`` bool lung masks: the dataset yields ``({"image", "lungs"}, labels)``, the
            masks warped like their images (the attribution prior, :mod:`covidxray.training.prior`).

    Returns:
        The dataset.
    """
    import tensorflow as tf

    n, size = len(images), images.shape[1]
    ys = np.zeros(n, np.int32) if labels is None else np.asarray(labels, np.int32)
    augment = augmenter if augmenter is not None and augmenter.active else None

    def gather(idx: np.ndarray):
        order = np.sort(idx)
        x = images[order]
        x = augment(x, key=(seed, *order)) if augment else x.astype(np.float32)
        if masks is None:
            return x[..., None], ys[order]
        m = masks[order]
        m = augment.warp_masks(m, key=(seed, *order)) if augment else m
        return x[..., None], ys[order], m.astype(np.float32)

    def load(idx):
        outs = [tf.float32, tf.int32] + [tf.float32] * (masks is not None)
        x, y, *m = tf.numpy_function(gather, [idx], outs, stateful=False)
        x.set_shape([None, size, size, 1])
        y.set_shape([None])
        if m:
            m[0].set_shape([None, size, size])
            return {"image": x, "lungs": m[0]}, y
        return x, y

    ds = tf.data.Dataset.range(n)
    if shuffle and groups is not None:
        ids, weights = np.asarray(groups[0]), groups[1]
        keys = sorted(weights)
        parts = [tf.data.Dataset.from_tensor_slices(np.flatnonzero(ids == g).astype(np.int64))
                 .shuffle(int((ids == g).sum()), seed=seed + 1 + i, reshuffle_each_iteration=True).repeat()
                 for i, g in enumerate(keys)]
        ds = tf.data.Dataset.sample_from_datasets(parts, weights=[weights[g] for g in keys], seed=seed,
                                                  rerandomize_each_iteration=True).take(n)
    elif shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    # training drops the last partial batch: under a distribution strategy it could leave a replica
    # with no examples, and tiny batches give noisy BatchNorm statistics
    if drop_remainder is None:
        drop_remainder = shuffle and n >= batch_size
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if labels is None:
        ds = ds.map(lambda x, y: x)
    else:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, n_classes)))
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opts).prefetch(tf.data.AUTOTUNE)


def resolve_dataset(cfg: Mapping, dataset: str | Path | None = None, log=print) -> Path:
    """The dataset to use: the argument, else ``data.splits`` (a splits CSV used as is) when set, else
    ``data.dataset``; the default phantoms are generated on first use so that every command works
    on a fresh machine.

    Raises:
        DataError: The dataset does not exist.
    """
    from covidxray import paths

    p = paths.resolve(dataset) if dataset else paths.from_config(cfg["data"].get("splits") or cfg["data"]["dataset"])
    if p.exists():
        return p
    if p == paths.PHANTOMS.resolve():
        from covidxray.data.phantoms import generate_dataset

        ph = cfg["phantoms"]
        log(f"{p} does not exist: generating the phantom dataset there ({ph['n_per_class']} per class)")
        generate_dataset(p, n_per_class=ph["n_per_class"], size=ph["size"], seed=cfg["seed"],
                         difficulty=ph["difficulty"], classes=cfg["classes"],
                         confounder=None if ph["confounder"] == "none" else ph["confounder"],
                         confounder_strength=ph["confounder_strength"], workers=cfg["data"]["workers"])
        return p
    raise DataError(f"dataset '{p}' does not exist (data.dataset / data.splits / --data)")
