"""Prediction with a run: bad inputs named and skipped, incomplete or mismatched runs refused,
calibration fitted on validation.

Uses the session ``smoke_run`` (conftest.py) through private copies, so nothing is retrained.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from covidxray import cli
from covidxray.data.files import collect_images
from covidxray.evaluation.calibration import Calibration
from covidxray.evaluation.predict import predict
from covidxray.runinfo import RunError
from helpers_runs import copy_run, edit_run_json, write_bad_files

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]
P_COLS = [f"p_{c}" for c in CLASSES]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``covidxray ARGS`` in this process through ``cli.main``; return (status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["covidxray", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def image_folder(phantom_dir, tmp_path):
    """Four good images (one nested), a zero-byte, a truncated and a garbage image, and a text file."""
    folder = tmp_path / "inbox"
    (folder / "nested" / "deeper").mkdir(parents=True)
    good = [sorted((phantom_dir / c).glob("*.png"))[0] for c in CLASSES] + [
        sorted((phantom_dir / "Normal").glob("*.png"))[1]]
    targets = [folder / g.name for g in good[:3]] + [folder / "nested" / "deeper" / "x.png"]
    for src, dst in zip(good, targets, strict=True):
        shutil.copy(src, dst)
    bad = write_bad_files(folder / "nested", good[0])
    (folder / "README.txt").write_text("not an image\n")
    return folder, targets, bad


def test_cli_predict_names_every_bad_file_and_predicts_the_rest(smoke_run, image_folder, tmp_path,
                                                                 monkeypatch, capsys):
    run = copy_run(smoke_run, tmp_path / "run")
    folder, good, bad = image_folder
    out_csv = tmp_path / "out" / "preds.csv"
    status, stdout, _ = run_cli(monkeypatch, capsys, "predict", run, folder, "-o", out_csv)
    assert status == 1  # some inputs failed
    pred = pd.read_csv(out_csv)
    assert sorted(pred["path"]) == sorted(map(str, good))
    assert list(pred.columns) == ["path", *P_COLS, "prediction", "p_COVID-19_decision", "ood_score", "ood"]
    probs = pred[P_COLS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert list(pred["prediction"]) == [CLASSES[i] for i in probs.argmax(axis=1)]  # unrounded argmax
    cal = Calibration.load(run / "calibration.json")  # fitted on the way
    assert cal.temperature > 0
    assert (pred["p_COVID-19_decision"] == (pred["p_COVID-19"] >= cal.threshold)).all()
    errors = pd.read_csv(tmp_path / "out" / "preds.errors.csv")
    reasons = dict(zip(errors["path"], errors["reason"], strict=True))
    assert set(reasons) == {str(p) for p in bad.values()}
    assert reasons[str(bad["zero"])] == "zero-byte file"
    assert reasons[str(bad["truncated"])].startswith("truncated or corrupt image")
    assert reasons[str(bad["garbage"])].startswith("not an image")
    assert "predicted 4 image(s)" in stdout and "3 input(s) failed" in stdout
    for path, reason in reasons.items():
        assert f"{path}: {reason}" in stdout
    assert "ignored 1 non-image file(s)" in stdout and "README.txt" in stdout


def test_collect_images_walks_folders_and_reports_missing_inputs(image_folder, tmp_path):
    folder, good, bad = image_folder
    files, errors, ignored = collect_images([folder, good[0], tmp_path / "nope.png"])
    assert sorted(files) == sorted(map(str, [*good, *bad.values()]))  # good[0] listed once
    assert errors == [(str(tmp_path / "nope.png"), "file not found")]
    assert ignored == [str(folder / "README.txt")]


def test_run_without_run_json_is_refused_with_one_error_line(smoke_run, image_folder, tmp_path,
                                                             monkeypatch, capsys):
    run = copy_run(smoke_run, tmp_path / "run")
    (run / "run.json").unlink()
    with pytest.raises(RunError, match="run.json is missing"):
        predict(run, [image_folder[0]], tmp_path / "p.csv")
    status, stdout, stderr = run_cli(monkeypatch, capsys, "predict", run, image_folder[0], "-o", tmp_path / "p.csv")
    assert status == 2 and stdout == ""
    assert stderr.strip().splitlines() == [f"error: {run}: run.json is missing; without it the class order and "
                                           "input scaling of the model are unknown, so the run cannot be used"]
    assert not (tmp_path / "p.csv").exists()


def test_permuted_class_order_is_refused_when_the_caller_passes_classes(smoke_run, image_folder, tmp_path,
                                                                        monkeypatch, capsys):
    run = copy_run(smoke_run, tmp_path / "run")
    edit_run_json(run, classes=["Normal", "COVID-19", "Viral Pneumonia"])
    with pytest.raises(RunError, match="class order .* does not match the expected"):
        predict(run, [image_folder[0]], tmp_path / "p.csv", classes=CLASSES)
    status, _, stderr = run_cli(monkeypatch, capsys, "predict", run, image_folder[0], "-o", tmp_path / "p.csv",
                                "--classes", ",".join(CLASSES))
    assert status == 2 and stderr.startswith("error: ") and "does not match" in stderr
    assert "Traceback" not in stderr


def test_run_json_with_another_number_of_classes_than_the_model_is_refused(smoke_run, image_folder, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    edit_run_json(run, classes=["COVID-19", "Normal"])
    with pytest.raises(RunError, match="3 outputs"):
        predict(run, [image_folder[0]], tmp_path / "p.csv")


def test_cli_calibrate_meets_the_target_sensitivity_on_validation(smoke_run, tmp_path, monkeypatch, capsys):
    run = copy_run(smoke_run, tmp_path / "run")
    status, stdout, _ = run_cli(monkeypatch, capsys, "calibrate", run)
    assert status == 0 and "temperature" in stdout and "ECE" in stdout
    cal = Calibration.load(run / "calibration.json")
    val = pd.read_csv(run / "splits.csv").query("split == 'val'")
    assert cal.temperature > 0 and cal.fitted_on == "val" and cal.n == len(val)
    assert cal.positive_class == "COVID-19" and 0 < cal.threshold < 1
    pred = predict(run, list(val["path"]), tmp_path / "val.csv", log=lambda *_: None)
    covid = pred["path"].isin(val.loc[val["label"] == "COVID-19", "path"])
    assert pred.loc[covid, "p_COVID-19_decision"].mean() >= cal.target_sensitivity
    scores = np.sort(pred.loc[covid, "p_COVID-19"].to_numpy())[::-1]
    needed = int(np.ceil(cal.target_sensitivity * scores.size))
    assert scores[needed - 1] == pytest.approx(cal.threshold, rel=1e-6)  # the largest such threshold
