"""Pieces of training that are not the training loop: seeds, strategies, schedules, callbacks."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from covidxray import atomic


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and TensorFlow from the one config seed."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def get_strategy(name: str):
    """``default`` | ``mirrored`` | ``multiworker`` -> a ``tf.distribute`` strategy.

    ``multiworker`` reads the cluster from the ``TF_CONFIG`` environment variable.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("train.strategy=multiworker needs the TF_CONFIG environment variable "
                             "(cluster and task); see the README's GPU section")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"train.strategy must be default, mirrored or multiworker, got '{name}'")


def cosine_schedule(base_lr: float, epochs: int, warmup: int = 0, floor: float = 0.05):
    """Per-epoch learning rate: linear warm-up, then cosine decay to ``floor * base_lr``.

    A function of the epoch alone, so a resumed run follows the same schedule.
    """

    def lr(epoch: int, _current: float | None = None) -> float:
        if epoch < warmup:
            return base_lr * (epoch + 1) / (warmup + 1)
        t = (epoch - warmup) / max(1, epochs - warmup - 1)
        return float(base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))))

    return lr


class TimeBudgetCosine(keras.callbacks.Callback):
    """Cosine learning rate over a wall-time budget instead of an epoch count.

    The rate is a function of the fraction of ``minutes`` used (counted across resumes), set before
    every batch, so annealing completes by the deadline however fast or busy the machine is
    (budgeted training, Li et al. ICLR 2020). Pair it with :class:`TimeLimit`.
    """

    def __init__(self, base_lr: float, minutes: float, already_s: float = 0.0, warmup: float = 0.03,
                 floor: float = 0.02):
        super().__init__()
        self.base_lr, self.budget, self.warmup, self.floor = base_lr, minutes * 60, warmup, floor
        self.start = time.monotonic() - already_s

    def rate(self, frac: float) -> float:
        if frac < self.warmup:
            return self.base_lr * max(frac / self.warmup, 0.05)
        t = min(1.0, (frac - self.warmup) / (1 - self.warmup))
        return float(self.base_lr * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.rate((time.monotonic() - self.start) / self.budget)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class TimeLimit(keras.callbacks.Callback):
    """Stop training once ``minutes`` of wall time (counted across resumes) have passed."""

    def __init__(self, minutes: float, already_s: float = 0.0):
        super().__init__()
        self.deadline = time.monotonic() + minutes * 60 - already_s if minutes > 0 else math.inf
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() > self.deadline:
            self.model.stop_training = True
            self.stopped = True


class ElapsedLog(keras.callbacks.Callback):
    """Record the stage's wall time after every epoch, so a resumed run keeps its time budget."""

    def __init__(self, path: Path, already_s: float = 0.0):
        super().__init__()
        self.path, self.start = path, time.monotonic() - already_s

    def on_epoch_end(self, epoch, logs=None):
        atomic.write_text(self.path, f"{time.monotonic() - self.start:.1f}\n")


def elapsed_s(run: Path, stage: str) -> float:
    """Wall seconds a stage had used when it was last interrupted (0 for a new stage)."""
    f = run / f"elapsed_{stage}.txt"
    return float(f.read_text()) if f.is_file() else 0.0


class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that writes to a temporary file and replaces the target, keeping the
    previous best as ``*.prev.weights.h5`` (Keras writes the file in place: a kill mid-write left a
    file h5py cannot open)."""

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        if self.save_weights_only:
            save_weights_atomic(self.model, filepath, keep_previous=True)
        else:
            save_model_atomic(self.model, filepath)


def best_so_far(history_csv: Path, monitor: str) -> float | None:
    """Best monitored value already logged (so a resumed run's checkpoint keeps the true best)."""
    if not history_csv.is_file() or history_csv.stat().st_size == 0:
        return None
    hist = pd.read_csv(history_csv)
    if monitor not in hist or hist.empty:
        return None
    vals = hist[monitor].to_numpy(dtype=float)
    return float(np.nanmin(vals) if "loss" in monitor else np.nanmax(vals))


# --- crash safety: atomic checkpoints, a previous good one kept, validation and fallback on resume ---

#: Raised by h5py / Keras on a truncated or otherwise damaged weights file.
_DAMAGE = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError)


def previous_path(path: str | Path) -> Path:
    """Where the previous good copy of a checkpoint is kept: ``best_x.weights.h5`` -> ``best_x.prev.weights.h5``."""
    path = Path(path)
    name = path.name
    suffix = ".weights.h5" if name.endswith(".weights.h5") else path.suffix
    return path.with_name(name[: len(name) - len(suffix)] + ".prev" + suffix)


def save_weights_atomic(model, path: str | Path, keep_previous: bool = False) -> Path:
    """``model.save_weights`` to a temporary file, then moved over ``path`` (never a half-written file).

    With ``keep_previous`` the file being replaced is kept as :func:`previous_path` (a hard link, so
    both names always hold a complete file).
    """
    path = Path(path)
    if keep_previous and path.is_file():
        with atomic.atomic_path(previous_path(path)) as tmp:
            try:
                os.link(path, tmp)
            except OSError:
                shutil.copy2(path, tmp)
    with atomic.atomic_path(path) as tmp:
        model.save_weights(tmp)
    return path


def save_model_atomic(model, path: str | Path) -> Path:
    """``model.save`` (``.keras``) atomically."""
    with atomic.atomic_path(path) as tmp:
        model.save(tmp)
    return Path(path)


def export_atomic(model, folder: str | Path) -> Path:
    """``model.export`` (SavedModel) into a temporary folder, then swapped in."""
    with atomic.atomic_dir(folder) as tmp:
        model.export(str(tmp), verbose=False)
    return Path(folder)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:160]


def weights_problem(path: str | Path) -> str | None:
    """``None`` when ``path`` is a complete, readable HDF5 weights file, else why it is not.

    Every dataset is read, so a file cut short by a kill or a full disk is caught here rather than
    as an h5py traceback halfway through ``load_weights``.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        with h5py.File(path, "r") as f:
            def read(_name, obj):
                if isinstance(obj, h5py.Dataset):
                    obj[()]

            f.visititems(read)
    except _DAMAGE as err:
        return _reason(err)
    return None


def load_first_good(model, candidates: Sequence[Path], log: Callable = print, root: Path | None = None,
                    none_left: str = "") -> Path | None:
    """Load the first loadable weights file of ``candidates`` into ``model``.

    Missing files are skipped silently; a damaged one is reported with one line
    (``resume: X is damaged (why); using Y``). When nothing loads, the model's weights are left as
    they were and ``none_left`` (what happens instead) is logged when a damaged file was seen.

    Returns:
        The file loaded, or ``None``.
    """
    def name(p: Path) -> str:
        try:
            return str(p.relative_to(root)) if root else p.name
        except ValueError:
            return p.name

    damaged: list[tuple[Path, str]] = []
    snapshot = None
    for path in candidates:
        path = Path(path)
        if not path.is_file():
            continue
        why = weights_problem(path)
        if why is None:
            if snapshot is None:
                snapshot = model.get_weights()
            try:
                model.load_weights(path)
            except _DAMAGE as err:
                model.set_weights(snapshot)
                why = _reason(err)
        if why is not None:
            damaged.append((path, why))
            continue
        for bad, reason in damaged:
            log(f"resume: {name(bad)} is damaged ({reason}); using {name(path)}")
        return path
    for bad, reason in damaged:
        log(f"resume: {name(bad)} is damaged ({reason}); {none_left or 'no earlier copy is left'}")
    return None


_EPOCH_FILE = re.compile(r"^epoch(\d+)\.weights\.h5$")


def backup_candidates(folder: Path) -> list[tuple[int, Path]]:
    """Backups of a stage, newest first: ``(epochs done, weights file)``.

    Includes the in-place files of Keras' ``BackupAndRestore`` (runs made before the atomic backup)."""
    found = []
    if folder.is_dir():
        for f in folder.iterdir():
            m = _EPOCH_FILE.match(f.name)
            if m:
                found.append((int(m.group(1)), f))
        meta = folder / "training_metadata.json"
        if (folder / "latest.weights.h5").is_file() and meta.is_file():
            try:
                import json

                found.append((int(json.loads(meta.read_text())["epoch"]), folder / "latest.weights.h5"))
            except (ValueError, KeyError, TypeError):
                pass
    return sorted(found, key=lambda x: -x[0])


class EpochBackup(keras.callbacks.Callback):
    """Resume point after every epoch, written atomically (replaces ``keras.callbacks.BackupAndRestore``).

    Keras' callback overwrites ``latest.weights.h5`` and ``training_metadata.json`` in place, so a kill
    while it writes leaves a damaged file, or weights and epoch count from different epochs. Here each
    epoch's weights go to ``epoch<NNNN>.weights.h5`` (epochs done in the name, so weights and count
    cannot disagree), atomically; the newest two are kept so a damaged newest one has a fallback.
    Restoring is done before ``fit`` by :func:`restore_backup`, which sets ``start_epoch``.
    When ``fit`` ends, ``fit_done.json`` records it (a kill before the stage is recorded as done must
    not train it again); the caller deletes the folder once the stage is recorded.
    """

    def __init__(self, folder: str | Path, start_epoch: int = 0, keep: int = 2):
        super().__init__()
        self.folder, self.start_epoch, self.keep = Path(folder), start_epoch, keep
        self.epochs_done = start_epoch

    def on_train_begin(self, logs=None):
        self.model._initial_epoch = self.start_epoch  # what BackupAndRestore sets; fit starts there

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done = epoch + 1
        save_weights_atomic(self.model, self.folder / f"epoch{epoch + 1:04d}.weights.h5")
        for _, old in backup_candidates(self.folder)[self.keep:]:
            old.unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        atomic.write_json(self.folder / "fit_done.json", {"epochs_done": self.epochs_done})


def restore_backup(model, folder: Path, stage: str, log: Callable = print) -> int:
    """Load the newest good backup of a stage into ``model``; returns the epochs it had done (0: none)."""
    cands = backup_candidates(folder)
    by_path = {p: e for e, p in cands}
    got = load_first_good(model, [p for _, p in cands], log, root=folder.parent.parent,
                          none_left=f"no usable backup left: restarting stage '{stage}' from epoch 0")
    return by_path[got] if got is not None else 0


def repair_history(history_csv: Path, before_epoch: int) -> None:
    """Make a stage's CSV log fit a resume from ``before_epoch``.

    ``CSVLogger`` appends in place, so a kill can leave a partial last line; rows of epochs that will
    be run again are dropped too. Only complete rows of epochs ``< before_epoch`` are kept (atomically).
    """
    if not history_csv.is_file():
        return
    raw = history_csv.read_bytes().decode("utf-8", errors="replace")
    lines = raw.splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):
        history_csv.unlink()
        return
    header = next(csv.reader([lines[0]]))
    keep = [lines[0]]
    ep = header.index("epoch") if "epoch" in header else None
    for line in lines[1:]:
        if not line.endswith("\n"):
            continue
        row = next(csv.reader(io.StringIO(line)), [])
        if len(row) != len(header):
            continue
        try:
            if ep is not None and int(row[ep]) >= before_epoch:
                continue
        except ValueError:
            continue
        keep.append(line)
    text = "".join(keep)
    if text != raw:
        atomic.write_text(history_csv, text)


def stage_callbacks(run: Path, stage: str, cfg, lr_fn=None, start_epoch: int = 0, best_valid: bool = True) -> list:
    """Callbacks of one stage: backup for resume, best-weights checkpoint, early stopping, logs.

    Args:
        start_epoch: Epochs already done (from :func:`restore_backup`).
        best_valid: Whether ``best_<stage>.weights.h5`` holds the best logged epoch; when not, the
            checkpoint does not start from the logged best value.
    """
    t = cfg["train"]
    already = elapsed_s(run, stage)
    monitor = t["monitor"]
    mode = "min" if "loss" in monitor else "max"
    history = run / f"history_{stage}.csv"
    cbs = [
        keras.callbacks.CSVLogger(str(history), append=True),
        AtomicCheckpoint(
            str(run / f"best_{stage}.weights.h5"), monitor=monitor, mode=mode, save_best_only=True,
            save_weights_only=True, initial_value_threshold=best_so_far(history, monitor) if best_valid else None),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=t["patience"]),
        keras.callbacks.TensorBoard(str(run / "tensorboard" / stage), histogram_freq=0),
        TimeLimit(t["max_minutes"], already),
        ElapsedLog(run / f"elapsed_{stage}.txt", already),
        EpochBackup(run / "backup" / stage, start_epoch),
    ]
    if t["schedule"] == "time":
        if t["max_minutes"] <= 0:
            raise ValueError("train.schedule=time needs train.max_minutes > 0 (the budget it anneals over)")
        cbs.insert(0, TimeBudgetCosine(lr_fn(t["warmup_epochs"]), t["max_minutes"], already))
    elif lr_fn is not None:
        cbs.insert(0, keras.callbacks.LearningRateScheduler(lr_fn))
    return cbs


def merge_history(run: Path, stages: list[str]) -> pd.DataFrame:
    """Concatenate the stages' CSV logs into one continuous history (a resumed epoch counts once)."""
    frames = []
    for stage in stages:
        f = run / f"history_{stage}.csv"
        if f.is_file() and f.stat().st_size:
            h = pd.read_csv(f).drop_duplicates("epoch", keep="last")
            h.insert(0, "stage", stage)
            frames.append(h)
    hist = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["stage", "epoch"])
    hist.insert(0, "global_epoch", np.arange(len(hist)))
    atomic.write_csv(hist, run / "history.csv")
    return hist
