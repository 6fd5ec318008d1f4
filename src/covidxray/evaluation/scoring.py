"""The one "open a run and score images" sequence that evaluate, the robustness sweep and the probes share.

:func:`open_run` loads a run's config, model and calibration (fitted on validation when missing);
:func:`score_set` turns an evaluation set (:func:`covidxray.evaluation.evaluate.evaluation_set`)
into cached model inputs, true labels, raw and calibrated probabilities and the operating point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class OpenRun:
    """A loaded run: folder, config, classes, model, ``run.json`` and calibration."""

    run: Path
    cfg: object
    classes: list[str]
    model: object
    meta: dict
    cal: object


@dataclass
class Scored:
    """An evaluation set scored by a run.

    Attributes:
        table: The set's rows (index reset).
        images: ``(N, S, S)`` uint8 model inputs (decode-once cache).
        y: ``(N,)`` true class indices.
        raw: ``(N, C)`` uncalibrated probabilities (None when not predicted).
        probs: ``raw`` temperature-scaled with the run's calibration (None when not predicted).
        positive: The calibration's positive class.
        threshold: Its threshold, None when the positive class is not one of the run's classes.
    """

    table: pd.DataFrame
    images: np.ndarray
    y: np.ndarray
    raw: np.ndarray | None
    probs: np.ndarray | None
    positive: str
    threshold: float | None


def open_run(run_dir: str | Path, log: Callable = print) -> OpenRun:
    """Load a run's config, model and calibration (fitting it on validation first when missing)."""
    from covidxray import runinfo
    from covidxray.evaluation.predict import ensure_calibration

    run = Path(run_dir)
    cfg = runinfo.run_config(run)
    model, meta = runinfo.load_run(run)
    return OpenRun(run, cfg, list(meta["classes"]), model, meta, ensure_calibration(run, model, meta, cfg, log))


def score_set(model, meta: Mapping, cal, cfg, chosen: Mapping, classes: list[str], predict: bool = True,
              decoded: bool = False) -> Scored:
    """Model inputs, labels, probabilities and the operating point of an evaluation set.

    Args:
        model: The run's model.
        meta: Its ``run.json`` (``image_size``).
        cal: Its :class:`covidxray.evaluation.calibration.Calibration`.
        cfg: Its config (cache folder, workers, batch size).
        chosen: An evaluation set (``table`` with ``path`` and ``label``).
        classes: The run's classes.
        predict: Also compute the probabilities (the sweep predicts corrupted copies itself).
        decoded: Return the decoded images without the run's input transform (normalization, lung
            field): the sweep corrupts them first. Only with ``predict=False``.
    """
    from covidxray.data.cache import cached_images
    from covidxray.data.inputs import for_run
    from covidxray.evaluation.calibration import apply_temperature
    from covidxray.evaluation.predict import model_probs

    table = chosen["table"].reset_index(drop=True)
    if decoded and predict:
        raise ValueError("decoded images are not the model's inputs: predict them after the run's transform")
    images = cached_images(list(table["path"]), meta["image_size"], cfg, None if decoded else for_run(dict(meta)))
    y = np.array([classes.index(c) for c in table["label"]])
    raw = model_probs(model, images, cfg.train.batch_size) if predict else None
    probs = None if raw is None else apply_temperature(raw, cal.temperature, from_probs=True)
    threshold = cal.threshold if cal.positive_class in classes else None
    return Scored(table, images, y, raw, probs, cal.positive_class, threshold)
