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

from covidxray.errors import CovidxrayError

SPLITS = ("train", "val", "test")


class DataError(CovidxrayError, ValueError):
    """The dataset cannot be used as given (no images, missing classes, bad splits file)."""


def is_splits_file(path: str | Path) -> bool:
    """True when ``path`` is a CSV with ``path``, ``label`` and ``split`` columns."""
    p = Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return False
    cols = pd.read_csv(p, nrows=0).columns
    return {"path", "label", "split"} <= set(cols)


def read_splits(path: str | Path, classes: Sequence[str]) -> pd.DataFrame:
    """Read and validate a splits CSV (paths relative to the file are made absolute).

    Args:
        path: The splits CSV.
        classes: The configured class order; every label must be one of them.

    Returns:
        The table, with absolute paths.
    """
    p = Path(path)
    df = pd.read_csv(p, keep_default_na=False, dtype={"patient_id": str})
    missing = {"path", "label", "split"} - set(df.columns)
    if missing:
        raise DataError(f"{p}: splits file lacks columns {sorted(missing)}")
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
    from covidxray.data import discover, split

    classes = list(cfg["classes"])
    dataset = Path(dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_splits_file(dataset):
        df = read_splits(dataset, classes)
        log(f"using the splits in {dataset}")
    else:
        found = discover.discover(dataset, classes=classes, min_size=cfg["data"]["min_size"],
                                  workers=cfg["data"]["workers"])
        log(discover.summarize(found))
        if len(found.quarantine):
            found.quarantine.to_csv(out_dir / "quarantine.csv", index=False)
            log(f"{len(found.quarantine)} files quarantined: see {out_dir / 'quarantine.csv'}")
        df = split.make_splits(found.manifest, val=cfg["data"]["val"], test=cfg["data"]["test"],
                               seed=cfg["seed"], near_dup_threshold=cfg["data"]["near_dup_threshold"])
        log(split.format_summary(split.split_summary(df), split.check_leakage(df)))
    empty = [c for c in classes if not ((df["label"] == c) & (df["split"] == "train")).any()]
    if empty:
        raise DataError(f"{dataset}: no training images for classes {empty}")
    df.to_csv(out_dir / "splits.csv", index=False)
    return df


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights ``n / (K * count_k)`` from the training labels."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return {k: float(len(labels) / (n_classes * c)) if c else 0.0 for k, c in enumerate(counts)}


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    n_classes: int,
    batch_size: int,
    shuffle: bool = False,
    augmenter=None,
    seed: int = 0,
    drop_remainder: bool | None = None,
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
        return x[..., None], ys[order]

    def load(idx):
        x, y = tf.numpy_function(gather, [idx], [tf.float32, tf.int32], stateful=False)
        x.set_shape([None, size, size, 1])
        y.set_shape([None])
        return x, y

    ds = tf.data.Dataset.range(n)
    if shuffle:
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
