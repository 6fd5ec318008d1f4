"""``data.splits``: a splits CSV used as is, in place of ``data.dataset`` (an explicit dataset still wins)."""

from __future__ import annotations

from covidxray.config import load_config
from covidxray.data.pipeline import resolve_dataset


def test_data_splits_is_used_instead_of_data_dataset(tmp_path):
    splits = tmp_path / "splits.csv"
    splits.write_text("path,label,split\n")
    other = tmp_path / "other"
    other.mkdir()
    cfg = load_config([], [f"data.splits={splits}", f"data.dataset={other}"])
    assert resolve_dataset(cfg, log=lambda *_: None) == splits
    assert resolve_dataset(cfg, other, log=lambda *_: None) == other
    assert resolve_dataset(load_config([], [f"data.dataset={other}"]), log=lambda *_: None) == other
