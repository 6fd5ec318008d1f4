"""DeLong's test against an independent O(m n) implementation and a case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from covidxray.evaluation.delong import delong_components, delong_covariance, delong_test


def _pairwise(positive, scores):
    """DeLong 1988 straight from the definition: psi(x, y) = 1 if x > y, 1/2 if tied, 0 otherwise."""
    x, y = scores[positive], scores[~positive]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def _pairwise_test(positive, a, b):
    auc_a, v10a, v01a = _pairwise(positive, a)
    auc_b, v10b, v01b = _pairwise(positive, b)
    m, n = v10a.size, v01a.size
    s10, s01 = np.cov(np.vstack([v10a, v10b])), np.cov(np.vstack([v01a, v01b]))
    s = s10 / m + s01 / n
    z = (auc_b - auc_a) / np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return auc_a, auc_b, z, 2 * norm.sf(abs(z))


def test_hand_computed_case():
    # positives 0.9, 0.4 / negatives 0.5, 0.1 under A (3 of 4 pairs ordered), B perfect:
    # V10_A = [1, 0.5], V01_A = [0.5, 1], B's components constant; Var = 0.125/2 + 0.125/2
    positive = np.array([True, True, False, False])
    a, b = np.array([0.9, 0.4, 0.5, 0.1]), np.array([0.8, 0.7, 0.2, 0.3])
    auc, v10, v01 = delong_components(positive, np.column_stack([a, b]))
    np.testing.assert_allclose(auc, [0.75, 1.0])
    np.testing.assert_allclose(v10, [[1.0, 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(v01, [[0.5, 1.0], [1.0, 1.0]])
    r = delong_test(positive, a, b)
    assert r["se"] == pytest.approx(np.sqrt(0.125))
    assert r["z"] == pytest.approx(0.25 / np.sqrt(0.125))
    assert r["p_value"] == pytest.approx(0.4795001, abs=1e-6)
    assert r["difference"] == pytest.approx(0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(80) < 0.4
    a = np.round(positive * 0.8 + rng.normal(0, 0.7, 80), 1)  # rounded: many ties
    b = np.round(positive * 1.2 + 0.5 * a + rng.normal(0, 0.7, 80), 1)  # correlated with a
    auc_a, auc_b, z, p = _pairwise_test(positive, a, b)
    r = delong_test(positive, a, b)
    assert r["auc_a"] == pytest.approx(auc_a) and r["auc_b"] == pytest.approx(auc_b)
    assert r["z"] == pytest.approx(z) and r["p_value"] == pytest.approx(p)
    from sklearn.metrics import roc_auc_score

    assert r["auc_a"] == pytest.approx(roc_auc_score(positive, a))


def test_identical_scores_have_no_difference():
    positive = np.array([1, 0, 1, 0, 1], bool)
    s = np.array([0.9, 0.2, 0.3, 0.4, 0.8])
    r = delong_test(positive, s, s)
    assert r["difference"] == 0 and r["z"] is None and r["p_value"] == 1.0
    _, cov = delong_covariance(positive, np.column_stack([s, s]))
    assert cov[0, 0] == pytest.approx(cov[0, 1])


def test_needs_both_classes():
    with pytest.raises(ValueError, match="positive and negative"):
        delong_test(np.ones(3, bool), np.arange(3.0), np.arange(3.0))
