"""Shortcut counter-measures of a training run, set up from the config and recorded in ``run.json``.

``run.json`` key ``mitigations``: ``input`` (normalization and lung field, applied to every image the
run ever sees, see :mod:`covidxray.data.inputs`), ``lung_segmenter`` (the pinned segmenter copy, see
:mod:`covidxray.data.lungsource`), ``acquisition`` (train-only augmentation, see
:mod:`covidxray.data.acquisition`), ``balance_sources`` and ``attribution_prior``.
"""

from __future__ import annotations

from pathlib import Path

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
