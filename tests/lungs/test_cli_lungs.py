"""``covidxray lungs predict / evaluate / figure``, and the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from covidxray.cli import app
from covidxray.errors import WeightsError
from covidxray.lungs.data import heldout_patients, masked_manifest, phantom_set
from covidxray.lungs.evaluate import evaluate_dataset, score_masks
from covidxray.lungs.segment import DEFAULT_WEIGHTS, load_segmenter, metrics_path
from covidxray.lungs.train import shared_annotated
from covidxray.lungs.unet import build_unet

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """An untrained 64 px U-Net saved like the real one (predicts something, fast)."""
    path = tmp_path_factory.mktemp("lungs") / "lungs.keras"
    build_unet(64, 4, 2).save(path)
    return path


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match="covidxray lungs train"):
        load_segmenter(tmp_path / "none.keras")
    res = cli("lungs", "predict", tmp_path, "-o", tmp_path / "out", "--weights", tmp_path / "none.keras")
    assert res.exit_code == 2 and "error: lung segmenter weights not found" in res.output
    assert "Traceback" not in res.output


def test_predict_writes_masks_that_index_pairs(phantom_dir, tiny_weights, tmp_path):
    out = tmp_path / "lungs"
    res = cli("lungs", "predict", phantom_dir, "-o", out, "--weights", tiny_weights)
    assert res.exit_code == 0, res.output
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 60 and list(manifest.columns) == ["path", "label", "patient_id", "source", "lung_mask"]
    assert (manifest["lung_mask"] != "").all()
    assert all((out / m).is_file() for m in manifest["lung_mask"])
    side = json.loads((out / "lungs.json").read_text())
    assert side["weights_sha256"] == load_segmenter(tiny_weights).sha256 and side["n_masks"] == 60
    res = cli("index", out, "-o", tmp_path / "index.csv")
    assert res.exit_code == 0, res.output
    index = pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)
    assert len(index) == 60 and (index["lung_mask"] != "").all()
    assert set(index["label"]) == {"COVID-19", "Normal", "Viral Pneumonia"}


def test_evaluate_writes_per_image_csv_and_summary(phantom_dir, tiny_weights, tmp_path):
    res = cli("lungs", "evaluate", phantom_dir, "-o", tmp_path / "ev", "--weights", tiny_weights)
    assert res.exit_code == 0, res.output
    per_image = pd.read_csv(tmp_path / "ev" / "lungs_eval.csv")
    summary = json.loads((tmp_path / "ev" / "lungs_eval.json").read_text())
    assert len(per_image) == summary["n"] == 60
    assert summary["dice_mean"] == pytest.approx(per_image["dice"].mean(), abs=1e-4)
    assert (per_image[["height", "width"]] == 96).all().all()


def test_figure_is_written(phantom_dir, tiny_weights, tmp_path):
    res = cli("lungs", "figure", phantom_dir, "-o", tmp_path / "fig.png", "--per-source", 2,
              "--weights", tiny_weights)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fig.png").stat().st_size > 5000


def test_shipped_weights_segment_fresh_phantoms():
    seg = load_segmenter()
    assert seg.path == DEFAULT_WEIGHTS and seg.size < 4_000_000 and seg.input_size in (128, 256)
    images, masks = phantom_set(9, 256, seed=4242)  # a stream neither training (42) nor held-out (1042) used
    scores = score_masks(seg.predict(images), masks)
    assert scores["dice"].mean() >= 0.9
    # any input size: masks come back at the image's own size
    small = seg.predict(images[:2, ::2, ::2])
    assert small.shape == (2, 128, 128)


def test_fill_missing_predicts_only_the_images_without_lungs():
    seg = load_segmenter()
    images, masks = phantom_set(3, 128, seed=4242)
    given = masks.copy()
    given[[0, 2]] = False  # images 0 and 2 have no mask; image 1 keeps its own
    given[1, :5, :5] = True  # (a mark no segmenter would draw: proves image 1 was not predicted)
    real = seg.predict
    seg.predict = lambda x, batch_size=32: np.concatenate([real(x[:1]), np.zeros_like(x[1:], bool)])
    filled, predicted = seg.fill_missing(given, images)  # image 2's prediction comes back empty
    assert list(predicted) == [0] and not filled[2].any() and not given[0].any()  # the input is not changed
    assert (filled[1] == given[1]).all()
    assert score_masks(filled[:1], masks[:1])["dice"].iloc[0] > 0.85


def test_shipped_record_has_what_the_card_promises():
    rec = json.loads(metrics_path(DEFAULT_WEIGHTS).read_text())
    assert {"heldout_real", "heldout_phantoms", "heldout_patients", "seed", "command", "training_data"} <= set(rec)
    assert rec["command"].startswith("covidxray lungs train")
    assert rec["heldout_real"]["patients"] == len(rec["heldout_patients"]) > 0


@pytest.mark.data
def test_shipped_heldout_dice_recomputes():
    data = shared_annotated()
    if data is None:
        pytest.skip("../shared/data/cxr-annotated (real lung masks) is not present on this machine")
    seg = load_segmenter()
    cfg = seg.metrics["config"]
    ids = masked_manifest(data)["patient_id"]
    assert heldout_patients(ids, cfg["heldout_fraction"], cfg["seed"]) == seg.metrics["heldout_patients"]
    df = evaluate_dataset(seg, data, heldout=True)
    assert len(df) == seg.metrics["heldout_real"]["n"]
    assert set(df["patient_id"]) <= set(seg.metrics["heldout_patients"])
    assert df["dice"].mean() >= seg.metrics["heldout_real"]["dice_mean"] - 0.005
    assert np.isfinite(df["hd95"]).all()
