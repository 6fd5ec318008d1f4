"""Use a trained run on images: calibrated probabilities and the COVID-19 decision.

Calibration (:func:`calibrate`) is fitted on the run's *validation* split, never on test data:
temperature scaling of ``log(probs)`` and the threshold on the positive-class probability that
reaches ``evaluate.target_sensitivity`` there. It is stored as ``<run>/calibration.json`` and
fitted automatically the first time a run is used for prediction or evaluation.

:func:`predict` output: ``out_csv`` holds one row per image that could be read (``path``,
``p_<class>`` per class, ``prediction`` = argmax of the calibrated probabilities and, when the
run has a threshold, ``p_<positive>_decision`` = ``p_<positive> >= threshold``; ``ood_score`` and
``ood`` = the score is above the run's out-of-distribution threshold, see :mod:`covidxray.evaluation.ood`,
with one warning line naming how many inputs were flagged). Every input
that could not be used is a row ``path,reason`` of ``<out stem>.errors.csv`` (always written,
header only when nothing failed), so a failure is never silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray import atomic, runinfo
from covidxray.config import Config
from covidxray.data import cache
from covidxray.data import pipeline as data
from covidxray.data.files import collect_images
from covidxray.data.imageio import ImageReadError
from covidxray.data.inputs import for_run as run_inputs
from covidxray.evaluation import ood
from covidxray.evaluation.calibration import (
    Calibration,
    apply_temperature,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
)
from covidxray.evaluation.metrics import predict_labels
from covidxray.runinfo import run_config

CHUNK = 256  # images decoded and held in memory at once by predict()


def decision_column(positive: str) -> str:
    """Name of the column holding the decision at the operating point."""
    return f"p_{positive}_decision"


def model_probs(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax outputs of ``model`` for ``(N, S, S)`` uint8 images, through the tf.data pipeline.

    Up to one batch skips the pipeline (the same float32 inputs through the same traced predict
    function, a quarter of the overhead for the viewer's single images).

    Returns:
        ``(N, K)`` float64 probabilities, rows renormalised to sum to 1.
    """
    if 0 < len(images) <= batch_size:
        probs = np.asarray(model.predict_on_batch(data.as_model_batch(images)), dtype=np.float64)
    else:
        ds = data.make_dataset(images, None, model.output_shape[-1], batch_size)
        probs = np.asarray(model.predict(ds, verbose=0), dtype=np.float64)
    return probs / probs.sum(axis=1, keepdims=True)


def fit_calibration(run: Path, model, meta: dict, cfg: Config) -> Calibration:
    """Fit temperature and threshold on the run's validation split.

    Args:
        run: Run folder (its ``splits.csv`` gives the validation images).
        model: The run's model.
        meta: The run's ``run.json``.
        cfg: The run's config (``evaluate.target_sensitivity``, batch size, workers).

    Returns:
        The fitted calibration (not yet saved). ``threshold`` is None when the positive class is
        not one of the run's classes or the validation split has no image of it.

    Raises:
        RunError: Without ``splits.csv`` or validation images.
    """
    classes = list(meta["classes"])
    positive = meta.get("positive_class", cfg.positive_class)
    splits_csv = Path(run) / "splits.csv"
    if not splits_csv.is_file():
        raise runinfo.RunError(f"{run}: splits.csv is missing, so there is no validation split to calibrate on")
    val = data.read_splits(splits_csv, classes).query("split == 'val'")
    if val.empty:
        raise runinfo.RunError(f"{splits_csv}: no validation images to calibrate on")
    y = np.array([classes.index(c) for c in val["label"]])
    raw = model_probs(model, cache.cached_images(list(val["path"]), meta["image_size"], cfg, run_inputs(meta, run)),
                      cfg.train.batch_size)
    temperature = fit_temperature(raw, y, from_probs=True)
    probs = apply_temperature(raw, temperature, from_probs=True)
    target = float(cfg.evaluate.target_sensitivity)
    threshold = None
    if positive in classes and (y == classes.index(positive)).any():
        c = classes.index(positive)
        threshold = choose_threshold(y == c, probs[:, c], target)
    return Calibration(temperature=temperature, threshold=threshold, positive_class=positive,
                       target_sensitivity=target, ece_before=expected_calibration_error(y, raw, cfg.evaluate.ece_bins),
                       ece_after=expected_calibration_error(y, probs, cfg.evaluate.ece_bins), fitted_on="val",
                       n=int(y.size))


def ensure_calibration(run: Path, model, meta: dict, cfg: Config, log: Callable = print) -> Calibration:
    """The run's ``calibration.json``, fitted and written first when missing or for another class."""
    path = Path(run) / "calibration.json"
    if path.is_file():
        try:
            cal = Calibration.load(path)
        except ValueError as err:
            log(f"{err}: fitting it again")
        else:
            if cal.positive_class == meta.get("positive_class", cfg.positive_class):
                return cal
    cal = fit_calibration(run, model, meta, cfg)
    cal.save(path)
    log(f"calibrated on validation (n={cal.n}): temperature {cal.temperature:.3f}, "
        f"ECE {cal.ece_before:.3f} -> {cal.ece_after:.3f}, threshold {cal.threshold}: {path}")
    return cal


def calibrate(run_dir: str | Path, log: Callable = print) -> Calibration:
    """(Re)fit the run's calibration on its validation split and write ``calibration.json``.

    Args:
        run_dir: Run folder.
        log: Where progress messages go.

    Returns:
        The calibration written.
    """
    run = Path(run_dir)
    model, meta = runinfo.load_run(run)
    cal = fit_calibration(run, model, meta, run_config(run))
    log(f"calibration: {cal.save(run / 'calibration.json')}")
    return cal


def _load(files: list[str], size: int) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]]]:
    ok, images, errors = [], [], []
    for f in files:
        try:
            images.append(cache.load_for_model(f, size))
            ok.append(f)
        except ImageReadError as err:
            errors.append((f, err.reason))
        except Exception as err:  # one odd file must not stop the others
            errors.append((f, f"unreadable: {type(err).__name__}: {err}"))
    return ok, images, errors


def score_images(model, images: np.ndarray, classes: Sequence[str], cal: Calibration,
                 detector: ood.Detector | None, batch_size: int) -> pd.DataFrame:
    """Calibrated probabilities, prediction, decision and OOD score of model-ready images.

    The one scoring step of :func:`predict` (and of the viewer, :mod:`covidxray.viewer`).

    Args:
        images: ``(N, S, S)`` uint8 model inputs (:func:`covidxray.data.cache.load_for_model`).
        classes: The run's class order.
        cal: The run's calibration (temperature, threshold on the positive class).
        detector: The run's OOD detector, or None.
        batch_size: Model inputs per pass.

    Returns:
        One row per image: ``p_<class>``, ``prediction`` and, when the run has them, the decision
        column (:func:`decision_column`), ``ood_score`` and ``ood`` (see the module docstring).
    """
    names = list(classes)
    probs = apply_temperature(model_probs(model, images, batch_size), cal.temperature, from_probs=True)
    frame = pd.DataFrame(probs, columns=[f"p_{c}" for c in names])
    frame["prediction"] = [names[i] for i in predict_labels(probs)]
    if cal.threshold is not None and cal.positive_class in names:
        frame[decision_column(cal.positive_class)] = probs[:, names.index(cal.positive_class)] >= cal.threshold
    if detector is not None:
        frame["ood_score"] = detector.score(model, images, batch_size)
        frame["ood"] = detector.flag(frame["ood_score"])
    return frame


def predict(run_dir: str | Path, inputs: Iterable[str | Path], out_csv: str | Path,
            classes: Sequence[str] | None = None, log: Callable = print) -> pd.DataFrame:
    """Predict every image among ``inputs`` with the run's calibrated model.

    Args:
        run_dir: Run folder.
        inputs: Image files and/or folders (searched recursively).
        out_csv: Predictions CSV to write; failures go to ``<out stem>.errors.csv``.
        classes: When given, the class order the caller relies on; a run with another order
            is refused.
        log: Where progress messages go.

    Returns:
        The predictions (columns as in the module docstring). ``attrs`` holds ``errors`` (a
        ``path,reason`` DataFrame), ``errors_csv`` and ``ignored`` (non-image files skipped).

    Raises:
        RunError: Incomplete run, or a class order that differs from ``classes`` or the model.
    """
    run = Path(run_dir)
    model, meta = runinfo.load_run(run, classes=list(classes) if classes is not None else None)
    cfg = run_config(run)
    cal = ensure_calibration(run, model, meta, cfg, log)
    names, size = list(meta["classes"]), meta["image_size"]
    decide = cal.threshold is not None and cal.positive_class in names
    detector = ood.ensure_ood(run, model, log)
    model_inputs = run_inputs(meta, run)  # the run's own normalization / lung field, never the caller's
    files, errors, ignored = collect_images(inputs)
    if ignored:
        shown = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        log(f"ignored {len(ignored)} non-image file(s) in the folders given: {shown}")
    frames = []
    for start in range(0, len(files), CHUNK):
        ok, images, failed = _load(files[start : start + CHUNK], size)
        errors += failed
        if not ok:
            continue
        frame = score_images(model, model_inputs(np.stack(images)), names, cal, detector, cfg.train.batch_size)
        frame.insert(0, "path", ok)
        frames.append(frame)
    columns = ["path", *(f"p_{c}" for c in names), "prediction"] + [decision_column(cal.positive_class)] * decide
    columns += ["ood_score", "ood"] * (detector is not None)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    if detector is not None and out["ood"].any():
        log(ood.warning_line(int(out["ood"].sum()), len(out)))
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(out, out_csv)
    errors_csv = out_csv.with_name(out_csv.stem + ".errors.csv")
    err_df = pd.DataFrame(errors, columns=["path", "reason"])
    atomic.write_csv(err_df, errors_csv)
    out.attrs.update(errors=err_df, errors_csv=str(errors_csv), ignored=ignored)
    return out
