"""Pieces of training that are not the training loop: seeds, strategies, schedules, callbacks.

The crash-safe checkpoint pieces the stage's callbacks use live in :mod:`covidxray.training.checkpoints`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from covidxray import atomic
from covidxray.training.checkpoints import AtomicCheckpoint, EpochBackup


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


def best_so_far(history_csv: Path, monitor: str) -> float | None:
    """Best monitored value already logged (so a resumed run's checkpoint keeps the true best)."""
    if not history_csv.is_file() or history_csv.stat().st_size == 0:
        return None
    hist = pd.read_csv(history_csv)
    if monitor not in hist or hist.empty:
        return None
    vals = hist[monitor].to_numpy(dtype=float)
    return float(np.nanmin(vals) if "loss" in monitor else np.nanmax(vals))


def stage_callbacks(run: Path, stage: str, cfg, lr_fn=None, start_epoch: int = 0, best_valid: bool = True) -> list:
    """Callbacks of one stage: backup for resume, best-weights checkpoint, early stopping, logs.

    Args:
        start_epoch: Epochs already done (from :func:`covidxray.training.checkpoints.restore_backup`).
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
