"""Comparing runs' pointing game on the same images (explain/pointing_compare.py)."""

import json

import numpy as np
import pandas as pd
import pytest

from covidxray.explain.pointing_compare import compare_pointing, to_markdown


def _folder(path, hits_gradcam, hits_gradient, accuracy):
    """An interpret output folder: 12 images, the first 10 lesion-bearing (NaN pointing for the rest)."""
    path.mkdir(parents=True)
    rows = []
    for method, hits in (("gradcam", hits_gradcam), ("gradient", hits_gradient)):
        for i in range(12):
            rows.append({"lung_energy": 0.5 + 0.01 * i, "lesion_energy": 0.1 if i < 10 else np.nan,
                         "pointing_lung": 1.0, "pointing_lesion": float(hits[i]) if i < 10 else np.nan,
                         "image": f"img{i}.png", "label": "COVID-19", "method": method})
    pd.DataFrame(rows).to_csv(path / "localisation.csv", index=False)
    (path / "interpret.json").write_text(json.dumps({"images": {"accuracy": accuracy},
                                                     "chance": {"pointing_lesion": 0.05, "lung_energy": 0.4,
                                                                "lesion_energy": 0.05}}))
    return path


def test_pointing_rates_intervals_and_the_paired_test(tmp_path):
    none = [0] * 10
    every = [1] * 10
    a = _folder(tmp_path / "a", none, [1, 0] * 5, 0.9)
    b = _folder(tmp_path / "b", every, [1, 0] * 5, 0.8)
    table = compare_pointing({"without": a, "with": b})
    assert list(table["run"]) == ["without", "without", "with", "with"]
    assert list(table["method"]) == ["gradcam", "gradient"] * 2
    assert table["lesion_images"].tolist() == [10] * 4 and table["images"].tolist() == [12] * 4
    assert table["pointing_lesion"].tolist() == [0.0, 0.5, 1.0, 0.5]
    lo, hi = table.loc[2, "pointing_ci"]
    assert lo == pytest.approx(0.722, abs=1e-3) and hi == 1.0  # Wilson interval of 10/10
    assert np.isnan(table.loc[0, "mcnemar_p"]) and table.loc[0, "paired_images"] == 0
    # 0/10 -> 10/10 on the same images: 10 discordant pairs, exact binomial p = 2 * 0.5**10
    assert table.loc[2, "mcnemar_p"] == pytest.approx(2 * 0.5**10) and table.loc[2, "paired_images"] == 10
    assert table.loc[3, "mcnemar_p"] == 1.0  # identical hits
    assert table.loc[0, "lung_energy"] == pytest.approx(np.mean([0.5 + 0.01 * i for i in range(12)]))
    md = to_markdown(table)
    assert md.count("\n") == 6 and "| with | gradcam | 0.800 | 1.000 [0.722, 1.000] (10) | 0.050 |" in md


def test_a_missing_interpret_output_is_named(tmp_path):
    a = _folder(tmp_path / "a", [0] * 10, [0] * 10, 0.9)
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError, match=r"b/interpret.json: missing"):
        compare_pointing({"a": a, "b": tmp_path / "b"})
