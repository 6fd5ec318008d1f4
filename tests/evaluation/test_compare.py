"""covidxray compare: runs scored on the same images, paired differences, DeLong and McNemar."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from covidxray import cli, paths
from covidxray.errors import RunError
from covidxray.evaluation.compare import COLUMNS, compare_runs, compare_scores, mcnemar_test
from covidxray.evaluation.evaluate import evaluate
from helpers_runs import CLASSES, copy_run, edit_run_json, tiny_model_run


@pytest.fixture(scope="module")
def compared(smoke_run, tmp_path_factory):
    """The smoke run (75 px, evaluated) against a tiny CNN at 32 px on the smoke run's test split."""
    root = tmp_path_factory.mktemp("compare")
    a = copy_run(smoke_run, root / "smoke")
    b = tiny_model_run(smoke_run, root / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "CACHE", tmp_path_factory.getbasetemp() / "compare-cache")
        metrics = json.loads((evaluate(a, n_boot=50, log=lambda *_: None) / "metrics.json").read_text())
        report = compare_runs([a, b], n_boot=100, log=lambda *_: None)
    return {"a": a, "b": b, "metrics": metrics, "report": report,
            "table": pd.read_csv(report["files"]["csv"])}


def _row(table, metric, run):
    return table[(table["metric"] == metric) & (table["run"] == run)].iloc[0]


def test_each_run_scores_as_its_own_evaluation(compared):
    t, m = compared["table"], compared["metrics"]
    assert list(t.columns) == COLUMNS and len(t) == 10 and compared["report"]["n"] == m["n"]
    op = m["operating_point"]
    for metric, value in (("accuracy", m["accuracy"]), ("macro-AUC", m["macro_auc"]),
                          ("COVID-19 AUC (vs rest)", m["per_class"]["COVID-19"]["auc"]),
                          ("COVID-19 sensitivity at the run's threshold", op["sensitivity"]),
                          ("COVID-19 specificity at the run's threshold", op["specificity"])):
        row = _row(t, metric, "smoke")
        assert row["value"] == pytest.approx(value), metric
        assert row["ci_low"] <= row["value"] + 1e-9 and row["ci_high"] >= row["value"] - 1e-9
        assert pd.isna(row["difference"])
    thresholds = compared["report"]["thresholds"]
    assert thresholds[0] == pytest.approx(op["threshold"])
    tiny_cal = json.loads((compared["b"] / "calibration.json").read_text())  # its own operating point
    assert thresholds[1] == pytest.approx(tiny_cal["threshold"])


def test_differences_and_tests_against_the_first_run(compared):
    t, a, b = compared["table"], compared["a"], compared["b"]
    for metric in t["metric"].unique():
        ra, rb = _row(t, metric, "smoke"), _row(t, metric, "tiny")
        assert rb["difference"] == pytest.approx(rb["value"] - ra["value"])
    acc = _row(t, "accuracy", "tiny")
    assert acc["test"] == "mcnemar (exact)" and 0 <= acc["p_value"] <= 1  # a few dozen images
    auc = _row(t, "COVID-19 AUC (vs rest)", "tiny")
    assert auc["test"] == "delong" and 0 <= auc["p_value"] <= 1
    md = (compared["report"]["files"]["markdown"])
    text = open(md).read()
    assert "| accuracy | tiny |" in text and "paired" in text
    assert (a / "compare" / "test" / "comparison.png").is_file()
    assert not (b / "compare").exists()


def test_paired_bootstrap_gives_a_zero_width_interval_for_identical_runs():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    p = rng.dirichlet(np.ones(3), 60)
    p[np.arange(60), y] += 0.5
    p /= p.sum(1, keepdims=True)
    t = compare_scores(y, [p, p.copy()], [0.3, 0.3], ["a", "b"], CLASSES, "COVID-19", n_boot=200)
    b = t[t["run"] == "b"]
    assert (b["difference"] == 0).all()
    assert (b["difference_ci_low"] == 0).all() and (b["difference_ci_high"] == 0).all()
    acc = b[b["metric"] == "accuracy"].iloc[0]
    assert acc["ci_high"] > acc["ci_low"]  # each run alone does vary
    # a second run at another threshold: only the operating-point rows differ
    t2 = compare_scores(y, [p, p], [0.3, 0.6], ["a", "b"], CLASSES, "COVID-19", n_boot=200)
    moved = t2[(t2["run"] == "b") & (t2["difference"] != 0)]["metric"].tolist()
    assert moved and all("threshold" in m for m in moved)


def test_mcnemar_counts_the_discordant_pairs():
    a = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 1, 0, 1, 0], bool)
    m = mcnemar_test(a, b)
    assert m["table"] == [[2, 3], [1, 2]] and m["discordant"] == 4 and m["exact"]
    assert m["p_value"] == pytest.approx(0.625)  # two-sided binomial: 2 * P(X <= 1 | n=4, p=1/2)


def test_class_order_and_split_mismatches_are_refused(smoke_run, tmp_path, monkeypatch, capsys):
    a = copy_run(smoke_run, tmp_path / "a")
    b = copy_run(smoke_run, tmp_path / "b")
    edit_run_json(b, splits_sha256="0" * 64)
    with pytest.raises(RunError, match="splits"):
        compare_runs([a, b])
    edit_run_json(b, classes=CLASSES[::-1])
    monkeypatch.setattr(sys, "argv", ["covidxray", "compare", str(a), str(b), "--data", str(a / "splits.csv")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "class order" in err
    assert len(err.strip().splitlines()) == 1
