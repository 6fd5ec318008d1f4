"""External validation: known-answer tests of the report's pieces, and the report on a smoke run."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from covidxray.evaluation import external, shift
from covidxray.evaluation.metrics import compute_metrics

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


def _probs(y: np.ndarray, k: int = 3, p: float = 0.8) -> np.ndarray:
    out = np.full((len(y), k), (1 - p) / (k - 1))
    out[np.arange(len(y)), y] = p
    return out


def test_metric_difference_points_equal_compute_metrics_and_difference_ci_covers_it():
    rng = np.random.default_rng(0)
    y_a, y_b = rng.integers(0, 3, 150), rng.integers(0, 3, 120)
    p_a, p_b = _probs(y_a), _probs(y_b)
    wrong = rng.random(120) < 0.3
    p_b[wrong] = np.roll(p_b[wrong], 1, axis=1)
    d = external.metric_difference(y_a, p_a, y_b, p_b, CLASSES, n_boot=300, operating_point=(0, 0.5))
    ref_a = compute_metrics(y_a, p_a, CLASSES, n_boot=10, threshold=0.5)
    ref_b = compute_metrics(y_b, p_b, CLASSES, n_boot=10, threshold=0.5)
    assert d["accuracy"]["internal"] == pytest.approx(ref_a["accuracy"])
    assert d["accuracy"]["external"] == pytest.approx(ref_b["accuracy"])
    assert d["macro_auc"]["external"] == pytest.approx(ref_b["macro_auc"])
    assert d["operating_point.specificity"]["external"] == pytest.approx(ref_b["operating_point"]["specificity"])
    diff = d["accuracy"]
    assert diff["difference"] == pytest.approx(ref_b["accuracy"] - 1.0)
    lo, hi = diff["difference_ci"]
    assert lo <= diff["difference"] <= hi < 0  # a 30% error rate against none is a real drop


def test_a_source_whose_images_are_all_misclassified_is_exactly_that_row():
    labels = ["Normal"] * 20 + ["Normal"] * 10 + ["COVID-19"] * 15 + ["Pneumonia"] * 4
    source = ["good"] * 20 + ["bad"] * 10 + ["good"] * 15 + ["bad"] * 4
    y = np.array([CLASSES.index(lab) if lab in CLASSES else 1 for lab in labels])
    probs = _probs(y)
    probs[20:30] = _probs(np.zeros(10, int))  # every Normal of source "bad" called COVID-19
    probs[45:49] = _probs(np.zeros(4, int))   # the other pneumonias: COVID-19 too
    bd = external.group_breakdown(labels, probs, CLASSES, source, "COVID-19", threshold=0.5)
    rows = {g["group"]: g for g in bd["groups"]}
    assert rows["bad"]["accuracy"] == 0.0 and rows["good"]["accuracy"] == 1.0
    assert rows["bad"]["n"] == 14 and rows["bad"]["n_in_classes"] == 10
    assert rows["bad"]["decision_specificity"] == 0.0 and rows["good"]["decision_specificity"] == 1.0
    assert rows["bad"]["flag_rate_other"] == 1.0
    lo, hi = rows["bad"]["accuracy_ci"]
    assert lo == 0.0 and 0.2 < hi < 0.35  # Wilson, n = 10: kept, with its interval
    errs = {(e["group"], e["label"]): e for e in bd["errors"]}
    assert errs[("bad", "Normal")]["sentence"] == ("Normal, source bad: 0 of 10 correct, 10 called COVID-19; "
                                                   "the COVID-19 decision fires on 10")
    assert errs[("bad", "Pneumonia")]["called"]["COVID-19"] == 4
    assert [e for e in bd["errors"] if e["group"] == "good" and e["called"][e["label"]] != e["n"]] == []
    text = external.findings({"metrics": {}, "breakdown": bd})
    assert any("source bad: 0 of 10 correct" in s for s in text)


def test_calibration_transfer_says_when_scaling_hurts_externally():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    sharp = _probs(y, p=0.9)
    wrong = rng.random(300) < 0.4
    sharp[wrong] = np.roll(sharp[wrong], 1, axis=1)       # external: 60% accuracy at 0.9 confidence
    soft = _probs(y, p=0.6)
    soft[wrong] = np.roll(soft[wrong], 1, axis=1)
    out = external.calibration_transfer(y, soft, soft, y, soft, sharp)
    assert out["scaling_hurts_external"] and "worse" in out["note"]
    assert out["external"]["calibrated"] == pytest.approx(0.9 - (1 - wrong.mean()))  # one bin: |acc - conf|


def _intensity_features(images: np.ndarray) -> np.ndarray:
    return np.stack([images.reshape(len(images), -1).mean(1), images.reshape(len(images), -1).std(1)], 1)


def test_feature_probe_separates_shifted_sets_and_not_two_halves_of_one(smoke_run, phantom_dir):
    from covidxray import runinfo
    from covidxray.evaluation.external_report import score

    model, meta = runinfo.load_run(smoke_run)
    size = meta["image_size"]
    files = sorted(phantom_dir.glob("*/*.png"))
    imgs = np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (size, size)) for f in files])
    brighter = np.clip(imgs.astype(np.float32) * 0.55 + 110, 0, 255).astype(np.uint8)
    _, feat = score(model, imgs, 16)
    _, feat_b = score(model, brighter, 16)
    shifted = shift.feature_probe(feat, feat_b, n_boot=200)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(feat))
    half = shift.feature_probe(feat[order[::2]], feat[order[1::2]], n_boot=200)
    assert shifted["auc"] > 0.9
    assert half["auc"] < 0.65
    lo, hi = shifted["auc_ci"]
    assert lo <= shifted["auc"] <= hi


def test_image_statistics_see_a_dark_border_and_burned_in_text():
    imgs = np.full((4, 64, 64), 120, np.uint8)
    imgs[2:, :8, :] = 0
    imgs[2:, -8:, :] = 0
    imgs[3, 2:6, 20:40] = 255
    stats = shift.image_statistics(imgs, ["plain", "plain", "framed", "framed"]).set_index("group")
    assert stats.loc["plain", "border_ratio"] == pytest.approx(1.0)
    assert stats.loc["framed", "border_ratio"] < 0.6
    assert stats.loc["framed", "border_bright"] > 0 == stats.loc["plain", "border_bright"]
    assert stats.loc["plain", "n"] == 2


@pytest.mark.slow
def test_external_report_on_a_phantom_external_set(smoke_run, tmp_path):
    from covidxray.data.phantoms import generate_dataset
    from covidxray.evaluation.external_report import external_report

    ext = tmp_path / "ext"
    generate_dataset(ext, n_per_class=6, size=128, seed=99)
    man = pd.read_csv(ext / "manifest.csv")
    for p in man["path"]:
        img = cv2.imread(str(ext / p), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(ext / p), np.clip(img * 0.8 + 40, 0, 255).astype(np.uint8))
    man["source"] = ["hospital-a" if i % 2 else "hospital-b" for i in range(len(man))]
    extra = man.iloc[:3].copy()  # three other pneumonias: a label outside the run's classes
    (ext / "Pneumonia").mkdir()
    for i, p in enumerate(extra["path"]):
        img = cv2.imread(str(ext / p), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(ext / "Pneumonia" / f"other{i}.png"), np.flipud(img))
    extra["path"] = [f"Pneumonia/other{i}.png" for i in range(3)]
    extra["label"] = "Pneumonia"
    pd.concat([man, extra]).to_csv(ext / "manifest.csv", index=False)
    rep = external_report(smoke_run, ext, out=tmp_path / "out", n_boot=50, log=lambda *_: None)
    on_disk = json.loads((tmp_path / "out" / "external.json").read_text())
    assert on_disk["findings"] and list(on_disk)[0] == "findings"
    assert on_disk["n_external"] == rep["n_external"]
    assert {g["group"] for g in rep["breakdown"]["groups"]} == {"hospital-a", "hospital-b"}
    assert rep["labels_external"]["Pneumonia"] == 3
    assert any(e["label"] == "Pneumonia" for e in rep["breakdown"]["errors"])
    assert set(rep["feature_probe"]["per_group"]) == {"hospital-a", "hospital-b"}
    for fig in rep["figures"].values():
        assert (tmp_path / "out" / fig.split("/")[-1]).stat().st_size > 1000
    assert (tmp_path / "out" / "external_predictions.csv").is_file()
    # the runs table reads exactly these numbers back (one row per run, nothing recomputed)
    import shutil

    from covidxray.errors import RunError
    from covidxray.evaluation.runs_table import runs_table, to_markdown

    run = tmp_path / "runA"
    (run / "eval" / "ext").mkdir(parents=True)
    shutil.copy(tmp_path / "out" / "external.json", run / "eval" / "ext" / "external.json")
    table = runs_table({"baseline": run}, "ext")
    row = table.iloc[0]
    assert row["run"] == "baseline"
    assert row["accuracy external"] == rep["metrics"]["accuracy"]["external"]
    assert row["macro-AUC internal_ci"] == rep["metrics"]["macro_auc"]["internal_ci"]
    assert row["COVID-19 specificity external"] == rep["metrics"]["operating_point.specificity"]["external"]
    spec = {g["group"]: g["decision_specificity"] for g in rep["breakdown"]["groups"]
            if g["decision_specificity"] is not None}
    assert spec and all(row[f"specificity {g}"] == v for g, v in spec.items())
    assert row["feature-probe AUC"] == rep["feature_probe"]["auc"]
    md = to_markdown(table)
    assert md.count("\n") == 3 and f"{rep['metrics']['accuracy']['external']:.3f} [" in md
    with pytest.raises(RunError, match="covidxray evaluate"):
        runs_table([run], "other-set")
