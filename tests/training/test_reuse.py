"""train_or_reuse: a finished run is reused when only what train() itself recorded differs."""

from __future__ import annotations

from covidxray.config import load_config
from covidxray.training.reuse import train_or_reuse


def test_a_run_that_recorded_its_dataset_is_reused_with_the_same_dataset(smoke_run, phantom_dir, smoke_cfg):
    recorded = load_config([smoke_run / "config.yaml"]).data.dataset
    assert recorded != smoke_cfg.data.dataset  # train() wrote the dataset it was given into config.yaml
    messages: list[str] = []
    assert train_or_reuse(smoke_cfg, phantom_dir, smoke_run, log=messages.append) == smoke_run
    assert any("reusing it" in m for m in messages)


def test_another_dataset_is_still_a_difference(smoke_run, smoke_cfg, tmp_path):
    import pytest

    with pytest.raises(ValueError, match="data.dataset"):
        train_or_reuse(smoke_cfg, tmp_path, smoke_run, log=lambda *_: None)
