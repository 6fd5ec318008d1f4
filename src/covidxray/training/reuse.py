"""Train a run, or reuse or resume the one already in its folder (notebooks, shortcut probes)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

#: Config sections that only change how a trained model is scored, never the model.
SCORING_SECTIONS = ("evaluate", "explain", "robustness")


def _flat(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v}
    return out


def config_differences(cfg: Mapping, other: Mapping) -> list[str]:
    """Dotted keys whose values differ between two configs, the scoring sections left out."""
    ours, theirs = (_flat({k: v for k, v in c.items() if k not in SCORING_SECTIONS}) for c in (cfg, other))
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def _same_dataset(recorded: str | Path, dataset: str | Path | None) -> bool:
    """True when the dataset a run's config.yaml records is the one given now (both resolved)."""
    from covidxray import paths

    if dataset is None:
        return False
    return paths.from_config(recorded).resolve() == Path(dataset).resolve()


def train_or_reuse(cfg, dataset: str | Path, run: str | Path, log: Callable = print, replace: bool = False) -> Path:
    """Reuse the finished run in ``run`` trained under ``cfg``, resume an interrupted one, or train.

    Configs are compared without :data:`SCORING_SECTIONS`. A run there that was trained under
    another config is replaced (``replace``: scratch runs such as the shortcut probe's) or refused.

    Args:
        cfg: The resolved config to train with.
        dataset: Dataset folder, manifest or splits CSV (:func:`covidxray.training.train.train`).
        run: The run folder.
        log: Where progress messages go.
        replace: Delete a run trained under another config (else raise).

    Returns:
        The run folder.

    Raises:
        ValueError: Without ``replace``, ``run`` holds a run trained under another config (the keys are named).
    """
    from covidxray.config import load_config
    from covidxray.runinfo import finished_meta
    from covidxray.training.train import train

    run = Path(run)
    saved = run / "config.yaml"
    changed = config_differences(cfg, load_config([saved])) if saved.is_file() else []
    if "data.dataset" in changed and _same_dataset(load_config([saved]).data.dataset, dataset):
        changed.remove("data.dataset")  # train() records the dataset it was given in config.yaml
    if changed and not replace:
        raise ValueError(f"{run} holds a run trained under another config ({', '.join(changed)} differ); "
                         "delete it or set RUN_DIR to another folder")
    if changed:
        log(f"{run}: replacing the run trained with another config ({', '.join(changed[:5])} differ)")
        shutil.rmtree(run)
    if finished_meta(run) is not None:
        log(f"{run} holds a finished run trained with this config: reusing it (delete it to train again)")
        return run
    if saved.is_file() and (run / "splits.csv").is_file():
        log(f"{run}: resuming the interrupted run")
        return train(resume=run, log=log)
    if run.exists() and replace:
        log(f"{run}: replacing what is there (an unfinished run)")
        shutil.rmtree(run)
    return train(cfg, dataset=dataset, out=run, log=log)
