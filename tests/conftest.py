"""Shared fixtures: tiny phantom datasets, one smoke run reused across modules, the real sample."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests never need a GPU
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from covidxray import paths  # noqa: E402


@pytest.fixture(autouse=True)
def tmp_cache(monkeypatch, tmp_path_factory):
    """Keep decode-once caches that default to paths.CACHE out of the repository's data/ folder."""
    monkeypatch.setattr(paths, "CACHE", tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(scope="session")
def cxr_dev() -> Path:
    """The real-CXR sample beside the checkout; tests that need it skip when it is absent."""
    found = paths.shared_cxr_dev()
    if found is None:
        pytest.skip("../shared/data/cxr-dev (real CXR sample) is not present on this machine")
    return found


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """20 phantoms per class at 96 px, with masks and manifest (generated once per session)."""
    from covidxray.data.phantoms import generate_dataset

    out = tmp_path_factory.mktemp("phantoms")
    generate_dataset(out, n_per_class=20, size=96, seed=7)
    return out


@pytest.fixture(scope="session")
def smoke_cfg(tmp_path_factory):
    """The smoke config (75 px InceptionV3 from scratch, 2 epochs), caching images in a temp dir."""
    from covidxray.config import load_config

    return load_config(["smoke"], [f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, phantom_dir, smoke_cfg) -> Path:
    """One complete smoke run folder on phantoms, shared by every test that needs a trained model."""
    from covidxray.training.train import train

    out = tmp_path_factory.mktemp("runs") / "smoke"
    return train(smoke_cfg, dataset=phantom_dir, out=out, log=lambda *_: None)
