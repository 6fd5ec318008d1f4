"""Explanation checks on annotated data: boxes to masks, energy against a uniform map, the report."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from covidxray.errors import DataError
from covidxray.explain import annotated


def _write_images(folder, names, shape=(40, 60)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        cv2.imwrite(str(folder / n), np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))


def test_box_csv_and_the_same_boxes_as_coco_give_identical_masks(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png"])
    boxes = [("a.png", 5, 4, 10, 6), ("a.png", 30.5, 20, 40, 30), ("b.png", 0, 0, 1, 1)]
    pd.DataFrame([(p, "COVID-19", x, y, w, h) for p, x, y, w, h in boxes],
                 columns=["path", "label", "x", "y", "w", "h"]).to_csv(tmp_path / "boxes.csv", index=False)
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40},
                       {"id": 2, "file_name": "b.png", "width": 60, "height": 40}],
            "categories": [{"id": 1, "name": "opacity"}],
            "annotations": [{"id": i, "image_id": 1 if p == "a.png" else 2, "category_id": 1, "bbox": [x, y, w, h]}
                            for i, (p, x, y, w, h) in enumerate(boxes)]}
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    from_csv, from_coco = annotated.box_masks(tmp_path / "boxes.csv"), annotated.box_masks(tmp_path / "boxes.json")
    assert sorted(from_csv) == sorted(from_coco) == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    for k in from_csv:
        np.testing.assert_array_equal(from_csv[k], from_coco[k])
    a = from_csv[str(tmp_path / "a.png")]
    assert a.shape == (40, 60)
    assert a[4:10, 5:15].all() and not a[10, 5] and not a[4, 15]
    assert a[20:40, 30:60].all() and a[:, 30:].sum() == 20 * 30  # clipped at the image edge
    assert from_csv[str(tmp_path / "b.png")].sum() == 1


def test_a_box_file_without_box_columns_is_one_clear_error(tmp_path):
    pd.DataFrame({"path": ["a.png"], "label": ["COVID-19"]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="lacks columns"):
        annotated.box_masks(tmp_path / "b.csv")


def test_a_map_equal_to_the_lung_mask_has_all_its_energy_in_the_lungs_and_uniform_has_the_area():
    rng = np.random.default_rng(0)
    lungs = np.zeros((6, 32, 32), bool)
    for i in range(6):
        r = rng.integers(4, 10)
        lungs[i, 6:6 + 2 * r, 4:28] = True
    lesion = np.zeros_like(lungs)
    lesion[:3, 10:14, 10:14] = True                      # half of the images have a lesion
    devices = np.zeros_like(lungs)
    devices[:, 0:3, :] = True
    summary, per_image = annotated.localisation_table({"lungmap": lungs.astype(np.float32)},
                                                      {"lung": lungs, "lesion": lesion, "device": devices},
                                                      n_boot=100)
    rows = summary.set_index("method")
    assert rows.loc["lungmap", "lung_energy"] == pytest.approx(1.0)
    assert rows.loc["lungmap", "device_energy"] == pytest.approx(0.0)
    assert rows.loc["uniform", "lung_energy"] == pytest.approx(lungs.reshape(6, -1).mean(1).mean())
    assert rows.loc["uniform", "device_energy"] == pytest.approx(3 / 32)
    assert rows.loc["uniform", "pointing_lesion"] == pytest.approx(16 / 1024)
    assert rows.loc["uniform", "pointing_lesion_n"] == 3  # images without a lesion do not count
    lo, hi = rows.loc["uniform", "lung_energy_ci"]
    assert lo <= rows.loc["uniform", "lung_energy"] <= hi
    assert len(per_image) == 12


@pytest.mark.slow
def test_interpret_dataset_on_annotated_phantoms_leaves_out_in_dev_rows(smoke_run, phantom_dir, tmp_path):
    man = pd.read_csv(phantom_dir / "manifest.csv", keep_default_na=False)
    man["in_dev"] = [1 if i < 5 else 0 for i in range(len(man))]
    man["device_mask"] = ""
    man.to_csv(phantom_dir / "annotated.csv", index=False)
    messages = []
    rep = annotated.interpret_dataset(smoke_run, phantom_dir / "annotated.csv", ["gradcam", "gradient"],
                                      tmp_path / "out", n_boot=50, log=messages.append)
    assert rep["n"] == len(man) - 5
    assert any("5 image(s) with in_dev=1 left out" in m for m in messages)
    methods = {r["method"]: r for r in rep["methods"]}
    assert set(methods) == {"gradcam", "gradient", "uniform"}
    assert methods["uniform"]["lung_energy"] == pytest.approx(methods["uniform"]["lung_energy"])
    assert 0 < methods["uniform"]["lung_energy"] < 1
    assert (tmp_path / "out" / "gallery_data.png").stat().st_size > 1000
    per = pd.read_csv(tmp_path / "out" / "localisation_data.csv")
    assert set(per["method"]) == {"gradcam", "gradient", "uniform"}
    assert rep["predicted_lungs"] is None  # every phantom has its lung mask
    # the same set without lung masks: the shipped segmenter's lungs, said so with its held-out Dice
    man["lung_mask"] = ""
    man.to_csv(phantom_dir / "annotated_nolungs.csv", index=False)
    messages = []
    pred = annotated.interpret_dataset(smoke_run, phantom_dir / "annotated_nolungs.csv", ["gradient"],
                                       tmp_path / "out2", n_boot=50, log=messages.append)
    assert pred["predicted_lungs"]["n"] == pred["n"] and pred["masks"]["lung"] == pred["n"]
    assert any("lungs predicted by" in m and "held-out Dice 0.9" in m for m in messages)
    uni = {r["method"]: r for r in pred["methods"]}["uniform"]["lung_energy"]
    assert uni == pytest.approx(methods["uniform"]["lung_energy"], abs=0.05)  # predicted ~ drawn lungs
