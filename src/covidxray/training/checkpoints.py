"""Crash-safe checkpoints: atomic saves, a previous good copy kept, validation and fallback on resume.

Held apart from :mod:`covidxray.training.callbacks` (schedules, time budget, the callback list of a
stage) because this is the part a kill or a full disk can break: how weights reach the disk, how a
damaged file is recognised, and how a resumed stage finds the newest good copy and repairs its log.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import keras

from covidxray import atomic

#: Raised by h5py / Keras on a truncated or otherwise damaged weights file.
_DAMAGE = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError)


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
    model = getattr(model, "inner_model", model)  # a training wrapper (training.prior) saves its classifier
    with atomic.atomic_path(path) as tmp:
        model.save_weights(tmp)
    return path


def inference_copy(model):
    """An uncompiled copy of ``model`` (same layers, names and weights), without the optimizer's state.

    ``model.keras`` and the SavedModel are for inference: every reader loads them with
    ``compile=False``, and a resumed run continues from the weights checkpoints, which keep the
    optimizer. AdamW's two moments are twice the size of the weights: InceptionV3's ``model.keras``
    is 90 MB instead of 269 MB. (``keras.models.clone_model`` would compile the copy.)
    """
    bare = model.__class__.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    return bare


def save_model_atomic(model, path: str | Path) -> Path:
    """``model.save`` (``.keras``) atomically (``train`` passes an :func:`inference_copy`)."""
    with atomic.atomic_path(path) as tmp:
        model.save(tmp)
    return Path(path)


def remove_resume_points(run: Path, stages: Sequence[str]) -> list[Path]:
    """Delete what only a resume needs, once a run is finished (``model.keras`` holds its weights).

    Each stage's result and best checkpoints (``<stage>.weights.h5``, ``best_<stage>[.prev].weights.h5``,
    with the optimizer's state: 269 MB each for InceptionV3) and the ``backup/`` folder go: a finished
    run keeps ``model.keras``, the export and its records, about a quarter of what it held.

    Returns:
        The files and folders removed.
    """
    gone = []
    for stage in stages:
        for f in (run / f"{stage}.weights.h5", run / f"best_{stage}.weights.h5",
                  previous_path(run / f"best_{stage}.weights.h5")):
            if f.is_file():
                f.unlink()
                gone.append(f)
    if (run / "backup").is_dir():
        shutil.rmtree(run / "backup")
        gone.append(run / "backup")
    atomic.fsync_dir(run)
    return gone


def export_atomic(model, folder: str | Path) -> Path:
    """``model.export`` (SavedModel) into a temporary folder, then swapped in (``train`` passes an :func:`inference_copy`)."""
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
