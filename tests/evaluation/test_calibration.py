"""Calibration: ECE, reliability curve, Brier, temperature scaling, thresholds, JSON round-trip."""

import json

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import accuracy_score, brier_score_loss

from covidxray.evaluation.calibration import (
    Calibration,
    apply_temperature,
    brier_score,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
    validate_probs,
)


def calibrated_logits(n, seed, k=3):
    """Logits whose softmax is the true label distribution (labels are drawn from it)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, k))
    p = softmax(logits, axis=1)
    y = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, y


def loop_ece(y, p, n_bins=15):
    """Straightforward reference implementation, one bin at a time."""
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def test_ece_by_hand_and_against_a_reference_loop():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    # bin of 0.9: accuracy 0.5, confidence 0.9; bin of 0.6: accuracy 0.5, confidence 0.6
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    logits, y = calibrated_logits(2000, 0)
    for scale in (1.0, 3.0):
        p = softmax(scale * logits, axis=1)
        assert expected_calibration_error(y, p) == pytest.approx(loop_ece(y, p), abs=1e-12)


def test_reliability_curve_counts_and_empty_bins():
    logits, y = calibrated_logits(500, 1)
    curve = reliability_curve(y, softmax(logits, axis=1), n_bins=15)
    assert curve["bin_edges"].shape == (16,) and curve["counts"].sum() == 500
    assert curve["counts"][:4].sum() == 0  # max probability of 3 classes is >= 1/3
    assert np.isnan(curve["accuracy"][0]) and np.isnan(curve["confidence"][0])
    filled = curve["counts"] > 0
    conf = curve["confidence"][filled]
    edges = curve["bin_edges"]
    assert np.all((conf > edges[:-1][filled]) & (conf <= edges[1:][filled]))


def test_brier_score_matches_definition_and_sklearn():
    y = np.array([0, 1, 2])
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    expected = (0.0 + (0.25 + 0.25) + (0.04 + 0.04 + 0.16)) / 3
    assert brier_score(y, p) == pytest.approx(expected)
    logits, y = calibrated_logits(300, 2)
    p = softmax(logits, axis=1)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p, labels=[0, 1, 2], scale_by_half=False))


def test_temperature_scaling_undoes_overconfidence():
    logits, y = calibrated_logits(4000, 3)
    over = 3.0 * logits
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before = softmax(over, axis=1)
    after = apply_temperature(over, t, from_probs=False)
    assert expected_calibration_error(y, after) < expected_calibration_error(y, before) / 3
    assert accuracy_score(y, after.argmax(axis=1)) == accuracy_score(y, before.argmax(axis=1))
    # log(probs) are valid logits: same temperature, same calibrated probabilities
    assert fit_temperature(before, y, from_probs=True) == pytest.approx(t, rel=1e-4)
    np.testing.assert_allclose(apply_temperature(before, t, from_probs=True), after, atol=1e-9)


def test_choose_threshold_reaches_target_and_is_the_largest():
    rng = np.random.default_rng(4)
    y = rng.random(400) < 0.3
    p = np.clip(np.round(0.35 * y + rng.random(400) * 0.65, 2), 0, 1)  # rounded: many ties
    for target in (0.8, 0.9, 0.95, 1.0):
        t = choose_threshold(y, p, target)
        assert np.mean(p[y] >= t) >= target
        higher = p[y][p[y] > t]
        if higher.size:
            assert np.mean(p[y] >= higher.min()) < target
    y20 = np.array([1] * 20 + [0] * 5)
    p20 = np.r_[np.linspace(0.99, 0.80, 20), np.full(5, 0.1)]
    assert choose_threshold(y20, p20, 0.95) == pytest.approx(p20[18])  # 19 of 20, not 20
    with pytest.raises(ValueError, match="at least one positive"):
        choose_threshold(np.zeros(5), np.linspace(0, 1, 5))


def test_calibration_json_round_trip_and_errors(tmp_path):
    cal = Calibration(
        temperature=1.7,
        threshold=0.31,
        positive_class="COVID-19",
        target_sensitivity=0.95,
        ece_before=0.08,
        ece_after=0.02,
        fitted_on="val",
        n=360,
    )
    path = cal.save(tmp_path / "run" / "calibration.json")
    assert json.loads(path.read_text())["temperature"] == 1.7
    assert Calibration.load(path) == cal
    (tmp_path / "bad.json").write_text('{"temperature": 1.0}')
    with pytest.raises(ValueError, match=r"bad\.json.*lacks fields"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        Calibration.load(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Calibration.load(tmp_path / "missing.json")


def test_validate_probs_names_the_problem():
    with pytest.raises(ValueError, match="not logits"):
        validate_probs([0, 1], [[2.0, -1.0], [0.5, 0.1]])
    with pytest.raises(ValueError, match="lie in 0..1"):
        validate_probs([0, 2], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="shape"):
        validate_probs([0], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(np.zeros((2, 2)), 0.0, from_probs=False)
