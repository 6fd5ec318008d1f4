"""Metrics: agreement with scikit-learn, the rounding-bug regression, bootstrap behaviour."""

import json

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from covidxray.evaluation.bootstrap import (
    auc_from_groups,
    average_precision_from_groups,
    bootstrap_indices,
    resample_counts,
    tie_group_counts,
)
from covidxray.evaluation.metrics import (
    HEADLINE,
    PER_CLASS,
    bootstrap_ci,
    bootstrap_distributions,
    compute_metrics,
    predict_labels,
)

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


def synthetic(n, seed, k=3, signal=1.5, ties=False):
    """Labels and softmax probabilities; with ``ties`` the logits are integers (many tied scores)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    if ties:
        logits = np.round(logits)
    return y, softmax(logits, axis=1)


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, True), (3, False)])
def test_point_estimates_agree_with_sklearn(seed, ties):
    y, p = synthetic(400, seed, ties=ties)
    m = compute_metrics(y, p, CLASSES, n_boot=50, seed=seed)
    pred = p.argmax(axis=1)
    assert m["n"] == 400
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(y, pred)
    for c, name in enumerate(CLASSES):
        pc = m["per_class"][name]
        assert pc["sensitivity"] == pytest.approx(recall[c])
        assert pc["precision"] == pytest.approx(precision[c])
        assert pc["f1"] == pytest.approx(f1[c])
        assert pc["support"] == support[c]
        assert pc["specificity"] == pytest.approx(np.mean(pred[y != c] != c))
        assert pc["auc"] == pytest.approx(roc_auc_score(y == c, p[:, c]))
        assert pc["average_precision"] == pytest.approx(average_precision_score(y == c, p[:, c]))


@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_metrics_on_the_identity_resample_equal_point_estimates(ties):
    y, p = synthetic(300, 5, ties=ties)
    m = compute_metrics(y, p, CLASSES, n_boot=20, threshold=0.4)
    dist = bootstrap_distributions(y, p, np.ones((1, y.size)), CLASSES, operating_point=(0, 0.4))
    for key in HEADLINE:
        assert dist[key][0] == pytest.approx(m[key], abs=1e-12), key
    for name in CLASSES:
        for metric in PER_CLASS:
            assert dist[f"per_class.{name}.{metric}"][0] == pytest.approx(
                m["per_class"][name][metric], abs=1e-12
            )
    for metric in ("sensitivity", "specificity"):
        assert dist[f"operating_point.{metric}"][0] == pytest.approx(m["operating_point"][metric])


@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_auc_and_ap_equal_sklearn_on_resamples(ties):
    y, p = synthetic(250, 7, ties=ties)
    idx = bootstrap_indices(y, 6, seed=3)
    counts = resample_counts(idx, y.size)
    for c in range(3):
        pos, neg = tie_group_counts(counts, p[:, c], y == c)
        auc, ap = auc_from_groups(pos, neg), average_precision_from_groups(pos, neg)
        for b in range(idx.shape[0]):
            yb, sb = y[idx[b]] == c, p[idx[b], c]
            assert auc[b] == pytest.approx(roc_auc_score(yb, sb), abs=1e-12)
            assert ap[b] == pytest.approx(average_precision_score(yb, sb), abs=1e-12)


def test_rounding_bug_regression_uses_argmax_of_raw_probabilities():
    y = np.array([1, 2, 0, 1])
    p = np.array([[0.30, 0.40, 0.30], [0.25, 0.35, 0.40], [0.40, 0.35, 0.25], [0.20, 0.45, 0.35]])
    rounded_accuracy = np.mean(np.round(p).argmax(axis=1) == y)  # the student project's bug
    assert rounded_accuracy == 0.25
    np.testing.assert_array_equal(predict_labels(p), [1, 2, 0, 1])
    assert compute_metrics(y, p, CLASSES, n_boot=20)["accuracy"] == 1.0


def test_output_is_json_and_has_every_interval():
    y, p = synthetic(300, 11)
    m = compute_metrics(y, p, CLASSES, n_boot=100, threshold=0.3)
    json.dumps(m, allow_nan=False)
    expected = set(HEADLINE) | {f"per_class.{c}.{k}" for c in CLASSES for k in PER_CLASS}
    assert set(m["ci95"]) == expected
    assert m["bootstrap"]["n_valid"]["accuracy"] == 100
    op = m["operating_point"]
    assert op["class"] == "COVID-19" and op["threshold"] == 0.3
    assert op["sensitivity"] == pytest.approx(np.mean(p[y == 0, 0] >= 0.3))
    assert op["specificity"] == pytest.approx(np.mean(p[y != 0, 0] < 0.3))
    for metric in ("sensitivity", "specificity"):
        low, high = op["ci95"][metric]
        assert low <= op[metric] <= high


def test_intervals_contain_the_estimate_and_shrink_with_n():
    widths = {}
    for n in (200, 5000):
        y, p = synthetic(n, 21)
        m = compute_metrics(y, p, CLASSES, n_boot=1000, seed=1)
        for key in (
            "accuracy",
            "balanced_accuracy",
            "macro_f1",
            "macro_auc",
            "brier",
            "per_class.COVID-19.sensitivity",
            "per_class.Normal.auc",
        ):
            low, high = m["ci95"][key]
            value = m[key] if "." not in key else m["per_class"][key.split(".")[1]][key.split(".")[2]]
            assert low <= value <= high, (n, key)
            widths[n, key] = high - low
        low, high = m["ci95"]["ece"]
        assert 0 <= low < high
        widths[n, "ece"] = high - low
    for key in ("accuracy", "macro_auc", "brier", "ece", "per_class.COVID-19.sensitivity"):
        assert widths[5000, key] < widths[200, key] / 2.5, key


def test_stratified_bootstrap_keeps_class_counts():
    y = np.repeat([0, 1, 2], [50, 7, 143])
    idx = bootstrap_indices(y, 300, seed=4)
    assert idx.shape == (300, 200)
    counts = np.stack([np.bincount(y[row], minlength=3) for row in idx])
    assert (counts == [50, 7, 143]).all()
    assert len(np.unique(idx[:, 0])) > 1  # rows really differ
    plain = bootstrap_indices(y, 300, seed=4, stratified=False)
    assert len({tuple(np.bincount(y[row], minlength=3)) for row in plain}) > 1


def test_absent_class_gives_none_with_a_note():
    y, p = synthetic(200, 8)
    keep = y != 2
    y, p = y[keep], p[keep]
    m = compute_metrics(y, p, CLASSES, n_boot=100)
    json.dumps(m, allow_nan=False)
    vp = m["per_class"]["Viral Pneumonia"]
    assert vp["auc"] is None and vp["sensitivity"] is None and vp["average_precision"] is None
    assert vp["support"] == 0
    assert m["ci95"]["per_class.Viral Pneumonia.auc"] is None
    assert m["bootstrap"]["n_valid"]["per_class.Viral Pneumonia.auc"] == 0
    aucs = [roc_auc_score(y == c, p[:, c]) for c in (0, 1)]
    assert m["macro_auc"] == pytest.approx(np.mean(aucs))
    assert any("Viral Pneumonia" in note and "AUC undefined" in note for note in m["notes"])
    assert any("macro_auc averages the 2 classes" in note for note in m["notes"])


def test_single_class_data_and_resamples_do_not_crash():
    y, p = np.zeros(30, dtype=int), softmax(np.random.default_rng(0).normal(size=(30, 3)), axis=1)
    m = compute_metrics(y, p, CLASSES, n_boot=50)
    json.dumps(m, allow_nan=False)
    assert m["macro_auc"] is None and m["ci95"]["macro_auc"] is None
    assert m["per_class"]["COVID-19"]["specificity"] is None

    y, p = synthetic(60, 9)
    y[:] = 0
    y[0] = 1  # one "Normal" image: most plain resamples miss it
    boot = bootstrap_ci(y, p, CLASSES, n_boot=400, seed=2, stratified=False)
    n_valid = boot["n_valid"]["per_class.Normal.sensitivity"]
    assert 0 < n_valid < 400
    assert n_valid == pytest.approx(400 * (1 - (59 / 60) ** 60), rel=0.2)
    assert boot["n_valid"]["per_class.Normal.auc"] == n_valid
    assert boot["n_valid"]["accuracy"] == 400


def test_string_labels_and_clear_errors():
    y, p = synthetic(90, 10)
    names = np.array(CLASSES)[y]
    by_name = compute_metrics(names, p, CLASSES, n_boot=30)
    assert by_name["accuracy"] == compute_metrics(y, p, CLASSES, n_boot=30)["accuracy"]
    with pytest.raises(ValueError, match=r"not in classes.*'Pneumonia'|'Pneumonia'.*not in classes"):
        compute_metrics(np.where(y == 0, "Pneumonia", names), p, CLASSES)
    with pytest.raises(ValueError, match="not logits"):
        compute_metrics(y, np.log(p), CLASSES)
    with pytest.raises(ValueError, match="2 classes"):
        compute_metrics(y, p, CLASSES[:2])
    with pytest.raises(ValueError, match="positive class"):
        compute_metrics(y, p, CLASSES, positive="COVID", threshold=0.5)


def test_rounding_bug_accuracy_reproduces_the_student_projects_error():
    from covidxray.evaluation.metrics import rounding_bug_accuracy

    probs = np.array([[0.40, 0.35, 0.25], [0.2, 0.45, 0.35], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])
    y = np.array([0, 1, 2, 2])
    right, rounded = rounding_bug_accuracy(y, probs)
    assert right == 1.0 and rounded == 0.5  # rows 2 and 4 round to all zeros -> class 0
