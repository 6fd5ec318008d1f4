"""Evaluation of a run: metrics.json keys, figures, predictions, calibration, external datasets.

Uses the session ``smoke_run`` (conftest.py) through private copies, so nothing is retrained.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import softmax

from covidxray import cli, paths
from covidxray.data.pipeline import DataError
from covidxray.evaluation.calibration import Calibration, expected_calibration_error
from covidxray.evaluation.evaluate import FIGURES, evaluate
from covidxray.evaluation.metrics import HEADLINE, PER_CLASS
from covidxray.evaluation.predict import predict
from helpers_runs import copy_run, write_bad_files

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]
P_COLS = [f"p_{c}" for c in CLASSES]


@pytest.fixture(scope="module")
def evaluated(smoke_run, tmp_path_factory):
    """The smoke run evaluated on its own test split (calibration fitted on the way)."""
    run = copy_run(smoke_run, tmp_path_factory.mktemp("evaluated") / "run")
    logs: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "CACHE", tmp_path_factory.getbasetemp() / "eval-cache")
        out = evaluate(run, n_boot=50, log=logs.append)
    splits = pd.read_csv(run / "splits.csv")
    return {"run": run, "out": out, "logs": logs, "metrics": json.loads((out / "metrics.json").read_text()),
            "pred": pd.read_csv(out / "predictions.csv"), "splits": splits}


def required_metric_keys(classes: list[str]) -> dict[str, list[str]]:
    """Every key metrics.json must hold, by section."""
    per_class = [*PER_CLASS, "support"]
    return {
        "top": ["n", "classes", *HEADLINE, "confusion_matrix", "per_class", "ci95", "operating_point",
                "ece_uncalibrated", "temperature", "threshold", "run", "dataset", "split"],
        "per_class": [f"{c}.{m}" for c in classes for m in per_class],
        "ci95": [*HEADLINE, *(f"per_class.{c}.{m}" for c in classes for m in PER_CLASS)],
        "operating_point": ["class", "threshold", "sensitivity", "specificity", "ci95.sensitivity",
                            "ci95.specificity"],
    }


def test_metrics_json_holds_every_required_key(evaluated):
    m, run = evaluated["metrics"], evaluated["run"]
    keys = required_metric_keys(CLASSES)
    assert not [k for k in keys["top"] if k not in m]
    assert not [k for k in keys["per_class"] if k.split(".")[1] not in m["per_class"][k.split(".")[0]]]
    assert not [k for k in keys["ci95"] if k not in m["ci95"]]
    op = m["operating_point"]
    assert not [k for k in keys["operating_point"] if k.split(".")[-1] not in (op["ci95"] if "." in k else op)]
    for key in HEADLINE:
        low, high = m["ci95"][key]
        assert low <= high, key
    n_test = int((evaluated["splits"]["split"] == "test").sum())
    assert m["n"] == n_test == np.sum(m["confusion_matrix"])
    assert m["split"] == "test" and m["dataset"] == str(run / "splits.csv")
    assert m["run"] == str(run.resolve()) and m["classes"] == CLASSES
    assert [m["per_class"][c]["support"] for c in CLASSES] == np.sum(m["confusion_matrix"], axis=1).tolist()
    assert op["class"] == "COVID-19" and op["threshold"] == m["threshold"]


def test_every_figure_is_written_at_150_dpi(evaluated):
    for name in FIGURES.values():
        path = evaluated["out"] / name
        assert path.is_file() and path.stat().st_size > 5_000, name
        dpi = Image.open(path).info["dpi"]
        assert dpi == pytest.approx((150, 150), abs=0.5), name


def test_predictions_csv_uses_full_precision_argmax_and_the_threshold(evaluated):
    pred, m = evaluated["pred"], evaluated["metrics"]
    assert list(pred.columns) == ["path", "label", *P_COLS, "prediction", "correct", "p_COVID-19_decision",
                                 "ood_score", "ood"]
    probs = pred[P_COLS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (np.round(probs, 6) != probs).any()  # written unrounded
    assert list(pred["prediction"]) == [CLASSES[i] for i in probs.argmax(axis=1)]
    assert (pred["correct"] == (pred["prediction"] == pred["label"])).all()
    assert pred["correct"].mean() == pytest.approx(m["accuracy"])
    assert (pred["p_COVID-19_decision"] == (pred["p_COVID-19"] >= m["threshold"])).all()
    test_paths = evaluated["splits"].query("split == 'test'")["path"]
    assert sorted(pred["path"]) == sorted(test_paths)


def test_calibration_fitted_on_validation_and_ece_reported_before_and_after(evaluated):
    run, m, pred = evaluated["run"], evaluated["metrics"], evaluated["pred"]
    cal = Calibration.load(run / "calibration.json")
    assert cal.temperature > 0 and cal.fitted_on == "val" and cal.target_sensitivity == 0.95
    assert cal.n == int((evaluated["splits"]["split"] == "val").sum())
    assert any("calibrated on validation" in line for line in evaluated["logs"])
    assert m["temperature"] == cal.temperature and m["threshold"] == cal.threshold
    y = pred["label"].map(CLASSES.index).to_numpy()
    probs = pred[P_COLS].to_numpy()
    assert m["ece"] == pytest.approx(expected_calibration_error(y, probs), abs=1e-9)
    raw = softmax(cal.temperature * np.log(probs), axis=1)  # undo the temperature
    assert m["ece_uncalibrated"] == pytest.approx(expected_calibration_error(y, raw), abs=1e-6)


def test_predict_gives_the_probabilities_that_evaluate_reports(evaluated, tmp_path):
    pred = evaluated["pred"]
    out = predict(evaluated["run"], list(pred["path"]), tmp_path / "p.csv", log=lambda *_: None)
    assert list(out["path"]) == list(pred["path"])
    np.testing.assert_allclose(out[P_COLS].to_numpy(), pred[P_COLS].to_numpy(), atol=1e-5)


def test_cli_evaluate_on_class_folders_without_any_split_file(smoke_run, phantom_dir, tmp_path, capsys, monkeypatch):
    run = copy_run(smoke_run, tmp_path / "run")
    ext = tmp_path / "external"
    for folder, cls in (("covid", "COVID-19"), ("NORMAL", "Normal"), ("Viral Pneumonia", "Viral Pneumonia"),
                        ("Lung Opacity", "Normal")):
        (ext / folder).mkdir(parents=True)
        for src in sorted((phantom_dir / cls).glob("*.png"))[:3]:
            shutil.copy(src, ext / folder / src.name)
    bad = write_bad_files(ext / "NORMAL", next((phantom_dir / "Normal").glob("*.png")))
    assert not list(ext.rglob("*.csv"))
    monkeypatch.setattr(sys, "argv", ["covidxray", "evaluate", str(run), "--data", str(ext), "--n-boot", "20"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    stdout = capsys.readouterr().out
    assert exit_info.value.code == 0
    out = run / "eval" / "external"
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 9 and m["split"] == "all" and m["dataset"] == str(ext)
    assert m["quarantined"] == 6 and m["overlap_with_training"] == 0
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert {str(p) for p in bad.values()} <= set(quarantine["path"])
    assert quarantine["path"].str.contains("Lung Opacity").sum() == 3
    pred = pd.read_csv(out / "predictions.csv")
    assert pred["label"].value_counts().to_dict() == dict.fromkeys(CLASSES, 3)
    for text in ("6 file(s) quarantined", "accuracy", "balanced accuracy", "macro-F1", "macro-AUC",
                 "COVID-19 sensitivity @", "COVID-19 specificity @", "ECE before -> after", str(out)):
        assert text in stdout, text


def test_unknown_split_is_refused_before_loading_the_model(smoke_run, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    with pytest.raises(DataError, match="--split must be one of"):
        evaluate(run, split="testing")
    with pytest.raises(DataError, match="does not exist"):
        evaluate(run, data=tmp_path / "missing")
    assert not (run / "eval").exists()
