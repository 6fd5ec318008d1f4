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


def prior_masks(cfg, train: pd.DataFrame, model_inputs: inputs.ModelInputs, size: int, log=print):
    """Lung masks of the training images for ``train.attribution_prior`` (None when it is 0).

    The manifest's ``lung_mask`` column when every training image has one (phantoms, annotated
    data), else the lung field's segmenter on the decoded images; either follows a lung-field crop.

    Returns:
        ``((N, S, S) bool masks, source name)`` or None.

    Raises:
        DataError: The prior is on, but there are neither mask files nor a lung segmenter.
    """
    from covidxray.data.cache import cached_images, load_masks
    from covidxray.errors import DataError

    if cfg["train"]["attribution_prior"] <= 0:
        return None
    if "lung_mask" in train and all(isinstance(p, str) and p for p in train["lung_mask"]):
        masks, source = load_masks(list(train["lung_mask"]), size, "/"), "manifest lung_mask"
    elif model_inputs.segmenter is not None:
        masks = model_inputs.lungs(np.asarray(cached_images(list(train["path"]), size, cfg)))
        source = f"segmenter {model_inputs.spec.segmenter_sha256[:12]}"
    else:
        raise DataError("train.attribution_prior needs lung masks: a lung_mask column for every training image "
                        "or data.lung_field crop | mask (its segmenter)")
    if model_inputs.spec.lung_field == "crop":
        raw = np.asarray(cached_images(list(train["path"]), size, cfg))
        masks = model_inputs(raw, (masks,))[1][0]
    log(f"attribution prior: lambda {cfg['train']['attribution_prior']:g} on the input-gradient energy outside "
        f"the lungs ({source}, mean lung area {masks.mean():.1%})")
    return masks, source


def trainer(model, lam: float):
    """The model ``fit`` trains: ``model`` itself, or a :class:`covidxray.training.prior.PriorTrainer`."""
    if lam <= 0:
        return model
    from covidxray.training.prior import PriorTrainer

    return PriorTrainer(model, lam)
