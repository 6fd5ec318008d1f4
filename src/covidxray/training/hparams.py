"""TensorBoard HParams of a run, so that ``tensorboard --logdir models`` compares runs side by side.

:func:`write_hparams` (end of ``train()``) writes ``<run>/tensorboard/hparams/``: one HParams session
(``tensorboard.plugins.hparams.api.hparams``) whose hyperparameters are the resolved config's scalar
values under flattened keys (``train.lr``, ``model.image_size``, ...; lists are left out, the HParams
plugin takes only numbers, booleans and strings) and whose metrics are the final validation scalars
(``val_accuracy``, ``val_loss``, ... of the last epoch of ``history.csv``). Test metrics are not known
at training time: :func:`write_eval_metrics` (end of ``evaluate``) writes them as scalars of the
sub-run ``hparams/eval_<name>``, which the HParams plugin lists as metrics of the same session.
Each folder is written into a temporary folder and swapped in (:func:`covidxray.atomic.atomic_dir`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

HPARAMS_DIR = ("tensorboard", "hparams")


def flat_scalars(cfg: Mapping, prefix: str = "") -> dict[str, bool | int | float | str]:
    """The config's scalar values under dotted keys (nested sections flattened, lists left out).

    Args:
        cfg: A (nested) config mapping.
        prefix: Key prefix of this level.

    Returns:
        ``{"seed": 42, "train.lr": 0.0003, ...}``.
    """
    out: dict[str, bool | int | float | str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat_scalars(value, f"{name}.")
        elif isinstance(value, bool | int | float | str):
            out[name] = value
    return out


def hparams_dir(run: str | Path) -> Path:
    """``<run>/tensorboard/hparams``."""
    return Path(run).joinpath(*HPARAMS_DIR)


def _scalars(folder: Path, metrics: Mapping[str, float], step: int, hparams: Mapping | None = None) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        if hparams is not None:
            from tensorboard.plugins.hparams import api as hp

            hp.hparams(dict(hparams), trial_id=folder.parent.parent.name)
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value), step=step)
    writer.flush()
    writer.close()


def write_hparams(run: str | Path, cfg: Mapping, final: Mapping[str, float], step: int) -> Path:
    """Write the run's HParams session: the config's scalars and the final validation metrics.

    Args:
        run: Run folder.
        cfg: Its resolved config.
        final: Metric name -> value at the end of training (e.g. ``val_accuracy``, ``val_loss``).
        step: The step of the metrics (epochs run).

    Returns:
        The folder written (``<run>/tensorboard/hparams``; earlier ``eval_*`` sub-runs are kept).
    """
    import shutil

    from covidxray import atomic

    target = hparams_dir(run)
    with atomic.atomic_dir(target) as tmp:
        tmp.mkdir(parents=True)
        for sub in target.glob("eval_*") if target.is_dir() else ():
            shutil.copytree(sub, tmp / sub.name)
        _scalars(tmp, final, step, flat_scalars(cfg))
    return target


def write_eval_metrics(run: str | Path, name: str, metrics: Mapping[str, float | None]) -> Path | None:
    """Log an evaluation's metrics as scalars of the sub-run ``hparams/eval_<name>`` (step 0).

    Args:
        run: Run folder.
        name: Evaluation name (``test``, a dataset's name).
        metrics: Metric name -> value; None values are left out.

    Returns:
        The sub-run folder, or None when the run has no HParams session (trained before they existed).
    """
    from covidxray import atomic

    if not hparams_dir(run).is_dir():
        return None
    with atomic.atomic_dir(hparams_dir(run) / f"eval_{name}") as tmp:
        tmp.mkdir(parents=True)
        _scalars(tmp, {k: v for k, v in metrics.items() if v is not None}, 0)
    return hparams_dir(run) / f"eval_{name}"
