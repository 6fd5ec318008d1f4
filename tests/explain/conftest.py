"""Fixtures of the explanation tests: a tiny CNN with our model's layout and a few random images."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers_runs import S, tiny_cnn  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, S, S)).astype(np.uint8)
