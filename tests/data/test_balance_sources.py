"""data.balance_sources: each class's sources drawn equally often, class shares kept; a no-op with one source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidxray.config import load_config
from covidxray.data import pipeline as data
from covidxray.training.mitigations import balance_sources


def epoch_indices(ds) -> np.ndarray:
    """Image ids of one epoch (each image's pixels hold its index)."""
    return np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in ds]).astype(int)


def test_sources_are_balanced_within_a_class_and_class_shares_kept():
    # class 0: 80 images of source A, 10 of source B; class 1: 30 images of source C
    labels = np.array([0] * 90 + [1] * 30)
    sources = ["A"] * 80 + ["B"] * 10 + ["C"] * 30
    images = np.tile(np.arange(120, dtype=np.uint8)[:, None, None], (1, 4, 4))
    groups = data.source_groups(labels, sources)
    assert groups is not None
    ds = data.make_dataset(images, labels, 2, 20, shuffle=True, seed=1, groups=groups)
    ids = np.concatenate([epoch_indices(ds) for _ in range(5)])
    assert len(ids) == 5 * 120
    src = np.array(sources)[ids]
    assert (labels[ids] == 0).mean() == pytest.approx(0.75, abs=0.05)
    assert (src == "B").sum() / (labels[ids] == 0).sum() == pytest.approx(0.5, abs=0.06)  # was 1/9
    plain = data.make_dataset(images, labels, 2, 20, shuffle=True, seed=1)
    assert sorted(epoch_indices(plain)) == list(range(120))  # without groups: a permutation, as before
    assert not np.array_equal(epoch_indices(ds), epoch_indices(ds))  # redrawn every epoch


def test_one_source_per_class_is_a_logged_no_op():
    cfg = load_config([], ["data.balance_sources=true"])
    train = pd.DataFrame({"label": ["COVID-19", "Normal", "Normal"], "source": ["x", "y", "y"]})
    lines = []
    groups, record = balance_sources(cfg, train, np.array([0, 1, 1]), lines.append)
    assert groups is None and record["on"] and not record["applied"]
    assert "single source" in lines[0] and "sampling unchanged" in lines[0]
    assert data.source_groups(np.array([0, 1, 1]), ["x", "y", "y"]) is None
    groups, record = balance_sources(load_config([]), train, np.array([0, 1, 1]), lines.append)
    assert groups is None and not record["on"] and len(lines) == 1
    two = pd.DataFrame({"label": ["Normal", "Normal"], "source": ["x", float("nan")]})
    groups, record = balance_sources(cfg, two, np.array([1, 1]), lines.append)
    assert groups is not None and record["applied"] and record["train_counts"] == {"Normal": {"x": 1, "": 1}}


@pytest.mark.data
def test_cxr_dev_has_one_source_per_class(cxr_dev):
    m = pd.read_csv(cxr_dev / "manifest.csv")  # the index reads source_repo as the source
    labels = pd.factorize(m["label"])[0]
    assert data.source_groups(labels, m["source_repo"].tolist()) is None
