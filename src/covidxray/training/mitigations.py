"""Shortcut counter-measures of a training run, set up from the config and recorded in ``run.json``.

``run.json`` key ``mitigations``: ``input`` (normalization and lung field, applied to every image the
run ever sees, see :mod:`covidxray.data.inputs`), ``lung_segmenter`` (the pinned segmenter copy, see
:mod:`covidxray.data.lungsource`), ``acquisition`` (train-only augmentation, see
:mod:`covidxray.data.acquisition`), ``balance_sources`` and ``attribution_prior``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from covidxray.data import inputs, lungsource


def prepare_inputs(cfg, run: Path, log=print) -> tuple[inputs.ModelInputs, dict]:
    """The run's model inputs (segmenter copied into the run when a lung field is on) and their record.

    Returns:
        ``(model_inputs, record)``; ``record`` starts ``run.json``'s ``mitigations``.
    """
    seg, seg_record = lungsource.install(cfg, run, log)
    model_inputs = inputs.for_config(cfg, seg)
    if cfg["data"]["normalize"] != "none":
        log(f"input normalization: {cfg['data']['normalize']} (train, validation, test and predict alike)")
    return model_inputs, {"input": model_inputs.spec.to_dict(), "lung_segmenter": seg_record}


def balance_sources(cfg, train: pd.DataFrame, labels: np.ndarray, log=print):
    """``data.balance_sources``: the sampling groups for the training dataset (None when off or a no-op).

    Returns:
        ``(groups, record)``: :func:`covidxray.data.pipeline.source_groups` output or None, and the
        ``run.json`` record (``on``, ``applied``, images per class and source).
    """
    from covidxray.data.pipeline import source_groups

    sources = train["source"].tolist() if "source" in train else [""] * len(train)
    counts: dict = {}
    for c, s in zip(train["label"], sources, strict=True):
        s = "" if s != s else str(s)  # NaN: unknown
        counts.setdefault(str(c), {}).setdefault(s, 0)
        counts[str(c)][s] += 1
    record = {"on": bool(cfg["data"]["balance_sources"]), "applied": False, "train_counts": counts}
    if not record["on"]:
        return None, record
    groups = source_groups(labels, sources)
    if groups is None:
        log("data.balance_sources: every class has a single source ("
            + ", ".join(f"{c}: {next(iter(v)) or 'unknown'}" for c, v in counts.items())
            + "); sampling unchanged")
        return None, record
    record["applied"] = True
    log("data.balance_sources: each class's sources drawn equally often ("
        + "; ".join(f"{c}: {len(v)} sources" for c, v in counts.items()) + ")")
    return groups, record
