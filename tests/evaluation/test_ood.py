"""Out-of-distribution score: Mahalanobis / energy maths on synthetic features, the threshold's
pass rate, the files a run carries, and the ``ood`` column / flagged share of predict and evaluate.

Trained-model tests use private copies of the session ``smoke_run`` (conftest.py).
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from covidxray import cli
from covidxray.evaluation import ood, ood_images
from covidxray.evaluation.evaluate import evaluate, format_summary
from covidxray.evaluation.predict import predict
from helpers_runs import copy_run

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


def _gaussian(rng, n, d, mean=0.0, sd=1.0):
    return rng.normal(mean, sd, (n, d))


def test_mahalanobis_recovers_known_distances():
    rng = np.random.default_rng(0)
    sd = np.array([1.0, 2.0, 3.0, 1.0, 1.0])
    x = np.concatenate([_gaussian(rng, 20000, 5) * sd, _gaussian(rng, 20000, 5) * sd + [10, 0, 0, 0, 0]])
    y = np.repeat([0, 1], 20000)
    stats = ood.fit_mahalanobis(x, y)
    np.testing.assert_allclose(stats["means"], [[0, 0, 0, 0, 0], [10, 0, 0, 0, 0]], atol=0.05)
    points = np.array([[3.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, -6.0, 0, 0], [10, 0, 0, 0, 2.0]])
    got = ood.mahalanobis(points, stats["means"], stats["precision"])
    np.testing.assert_allclose(got, [3.0, 2.0, 2.0, 2.0], rtol=0.03)
    # exactly the textbook distance with the fitted precision, smallest over the class means
    ref = [min(scipy_mahalanobis(p, m, stats["precision"]) for m in stats["means"]) for p in points]
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_energy_and_msp_scores():
    logits = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [np.log(2.0), 0.0, -np.inf]])
    np.testing.assert_allclose(ood.energy(logits), [-np.log(3), -np.log(np.exp(10) + 2), -np.log(3)])
    np.testing.assert_allclose(ood.msp(logits), [-1 / 3, -np.exp(10) / (np.exp(10) + 2), -2 / 3])


def test_threshold_passes_95_percent_of_held_out_in_distribution_features():
    rng = np.random.default_rng(1)
    d = 32
    train, val, held = (_gaussian(rng, n, d) for n in (3000, 2000, 20000))
    det = ood.fit_features({"gap": train}, None, {"gap": val}, "mahalanobis")
    assert det.val_pass_rate == pytest.approx(0.95, abs=0.002)
    assert np.mean(~det.flag(det.score_features({"gap": held}))) == pytest.approx(0.95, abs=0.015)
    shifted = _gaussian(rng, 1000, d, mean=1.5)
    assert det.flag(det.score_features({"gap": shifted})).mean() > 0.99


def test_combined_method_flags_an_input_that_is_odd_in_one_component_only():
    rng = np.random.default_rng(2)
    feats = {s: {"gap": _gaussian(rng, n, 16), "thumb": _gaussian(rng, n, 8, 0.5, 0.1)}
             for s, n in (("train", 2000), ("val", 1000), ("test", 1000))}
    det = ood.fit_features(feats["train"], rng.integers(0, 3, 2000), feats["val"], "mahalanobis+thumbnail")
    assert det.components == ["mahalanobis:gap", "mahalanobis:thumb"]
    assert np.mean(~det.flag(det.score_features(feats["test"]))) == pytest.approx(0.95, abs=0.025)
    odd_thumb = {"gap": feats["test"]["gap"], "thumb": 1.0 - feats["test"]["thumb"] + 0.3}
    assert det.flag(det.score_features(odd_thumb)).mean() > 0.99


def test_save_load_roundtrip_and_mismatched_files_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    det = ood.fit_features({"gap": _gaussian(rng, 500, 8)}, None, {"gap": _gaussian(rng, 200, 8)}, "mahalanobis")
    det.save(tmp_path)
    back = ood.Detector.load(tmp_path)
    x = {"gap": _gaussian(rng, 50, 8)}
    np.testing.assert_allclose(back.score_features(x), det.score_features(x), rtol=1e-4)
    assert back.threshold == det.threshold and back.method == "mahalanobis"
    (tmp_path / ood.OOD_NPZ).write_bytes(b"not the saved arrays")
    with pytest.raises(ood.OODError, match="fit it again"):
        ood.Detector.load(tmp_path)
    with pytest.raises(ood.OODError, match="no OOD score"):
        ood.Detector.load(tmp_path / "elsewhere")


def test_unknown_method_is_a_clear_error():
    from covidxray.errors import UsageError

    with pytest.raises(UsageError, match="unknown OOD method"):
        ood.fit_features({"gap": np.zeros((4, 2))}, None, {"gap": np.zeros((4, 2))}, "nope")


def test_non_cxr_images_are_deterministic_and_model_sized():
    nat, sources = ood_images.natural_images(12, 64, seed=5)
    assert nat.shape == (12, 64, 64) and nat.dtype == np.uint8 and {"china", "flower"} <= set(sources)
    np.testing.assert_array_equal(nat, ood_images.natural_images(12, 64, seed=5)[0])
    pats, kinds = ood_images.synthetic_patterns(len(ood_images.PATTERNS), 64, seed=5)
    assert pats.shape == (len(kinds), 64, 64) and kinds == list(ood_images.PATTERNS)
    img = np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64)
    np.testing.assert_array_equal(ood_images.inverted(img).astype(int), 255 - img.astype(int))
    assert ood_images.mri_slices(2, 64).shape[1:] == (64, 64)


def test_training_fits_the_ood_score_into_the_run(smoke_run):
    meta = json.loads((smoke_run / "run.json").read_text())
    doc = json.loads((smoke_run / ood.OOD_JSON).read_text())
    assert (smoke_run / ood.OOD_NPZ).is_file()
    assert meta["ood"]["file"] == ood.OOD_JSON and meta["ood"]["method"] == doc["method"] == ood.DEFAULT_METHOD
    assert meta["ood"]["threshold"] == doc["threshold"] and np.isfinite(doc["threshold"])
    assert doc["fitted_on"] == "train" and doc["threshold_on"] == "val" and doc["val_pass_rate"] >= 0.9
    assert "gap" in doc["layers"]


@pytest.fixture
def ood_inputs(phantom_dir, tmp_path):
    """Two phantom CXRs, a uniform-noise image and a checkerboard, as PNG files."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i, src in enumerate(sorted((phantom_dir / "Normal").glob("*.png"))[:2]):
        (folder / f"cxr{i}.png").write_bytes(src.read_bytes())
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "noise.png"), ood_images.pattern("uniform_noise", 96, rng))
    cv2.imwrite(str(folder / "checker.png"), ood_images.pattern("checkerboard", 96, rng))
    return folder


def _set_threshold(run, value):
    doc = json.loads((run / ood.OOD_JSON).read_text())
    doc["threshold"] = value
    (run / ood.OOD_JSON).write_text(json.dumps(doc))


def test_predict_writes_ood_columns_and_warns(smoke_run, ood_inputs, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    logs: list[str] = []
    df = predict(run, [ood_inputs], tmp_path / "p.csv", log=logs.append)
    written = pd.read_csv(tmp_path / "p.csv")
    assert list(written.columns[-2:]) == ["ood_score", "ood"] and written["ood"].dtype == bool
    np.testing.assert_allclose(written["ood_score"], df["ood_score"])
    flagged = df.set_index(df["path"].str.rsplit("/", n=1).str[-1])["ood"]
    # uniform noise is far from every phantom in the early-layer features, whatever the smoke model learnt
    assert flagged["noise.png"]
    warnings = [line for line in logs if "look unlike the training images" in line]
    assert warnings == [ood.warning_line(int(df["ood"].sum()), 4)]
    _set_threshold(run, 1e9)  # nothing flagged: no warning
    logs.clear()
    assert not predict(run, [ood_inputs], tmp_path / "q.csv", log=logs.append)["ood"].any()
    assert not any("look unlike" in line for line in logs)


def test_evaluate_reports_the_flagged_share(smoke_run, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    _set_threshold(run, -1e9)  # everything flagged
    logs: list[str] = []
    out = evaluate(run, n_boot=20, log=logs.append)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ood"]["flagged_share"] == 1.0 and metrics["ood"]["flagged"] == metrics["n"]
    assert "flagged out-of-distribution: 100.0%" in format_summary(metrics)
    assert pd.read_csv(out / "predictions.csv")["ood"].all()
    assert any("look unlike the training images" in line for line in logs)


def test_run_without_ood_files_gets_them_fitted_on_demand(smoke_run, phantom_dir, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    for name in (ood.OOD_JSON, ood.OOD_NPZ):
        (run / name).unlink()
    meta = json.loads((run / "run.json").read_text())
    del meta["ood"]
    (run / "run.json").write_text(json.dumps(meta))
    logs: list[str] = []
    df = predict(run, [sorted((phantom_dir / "COVID-19").glob("*.png"))[0]], tmp_path / "p.csv", log=logs.append)
    assert "ood" in df.columns and (run / ood.OOD_JSON).is_file()
    assert any(line.startswith("OOD score") for line in logs)
    assert json.loads((run / "run.json").read_text())["ood"]["method"] == ood.DEFAULT_METHOD


def test_run_that_cannot_be_fitted_keeps_working_without_ood(smoke_run, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    for name in (ood.OOD_JSON, ood.OOD_NPZ, "splits.csv"):
        (run / name).unlink()
    logs: list[str] = []
    assert ood.ensure_ood(run, model=object(), log=logs.append) is None
    assert "inputs are not checked" in logs[-1]


def test_cli_ood_refits_a_run(smoke_run, tmp_path, monkeypatch, capsys):
    run = copy_run(smoke_run, tmp_path / "run")
    monkeypatch.setattr(sys, "argv", ["covidxray", "ood", str(run), "--method", "energy"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code in (0, None)
    assert "OOD score (energy)" in capsys.readouterr().out
    assert json.loads((run / ood.OOD_JSON).read_text())["method"] == "energy"
