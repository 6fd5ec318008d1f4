"""`covidxray interpret`: the trust checks of every explanation method on a run's masked split images."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from covidxray.explain import report as interpret  # noqa: E402
from covidxray.explain.registry import METHODS  # noqa: E402
from helpers_runs import CLASSES, tiny_cnn  # noqa: E402

SIZE = 48
CHECK_KEYS = {"localisation", "faithfulness", "sanity", "cost"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, phantom_dir):
    """A run folder with a tiny untrained CNN, all phantoms as the test split and the smoke config
    with ``explain.cam_layer: conv1`` (run.json names conv2 as the last conv layer)."""
    from covidxray.config import load_config
    from covidxray.data.cache import PREPROCESSING

    run = tmp_path_factory.mktemp("interpret") / "run"
    run.mkdir()
    tiny_cnn(SIZE).save(run / "model.keras")
    (run / "run.json").write_text(json.dumps({"classes": CLASSES, "image_size": SIZE, "preprocessing": PREPROCESSING,
                                              "last_conv_layer": "conv2"}))
    df = pd.read_csv(phantom_dir / "manifest.csv", keep_default_na=False)
    for col in ("path", "lung_mask", "lesion_mask"):
        df[col] = [str(phantom_dir / p) for p in df[col]]
    df.assign(split="test").to_csv(run / "splits.csv", index=False)
    load_config(["smoke"], ["explain.cam_layer=conv1"]).dump(run / "config.yaml")
    return run


def _check_report(rep: dict, methods, out) -> None:
    """Every method has every check with values in range; the JSON on disk has no NaN."""
    assert list(rep["methods"]) == list(methods)
    for m, r in rep["methods"].items():
        assert set(r) == CHECK_KEYS, m
        loc, faith, sanity, cost = (r[k] for k in ("localisation", "faithfulness", "sanity", "cost"))
        for key in ("lung_energy", "lesion_energy", "pointing_lesion", "pointing_lung"):
            assert 0.0 <= loc[key] <= 1.0 or math.isnan(loc[key]), (m, key)
        assert loc["n_lesion"] < loc["n_images"] and loc["n_lung"] <= loc["n_images"]  # NaN: all-zero map
        assert 0.0 <= faith["deletion_auc"] <= 1.0 and 0.0 <= faith["insertion_auc"] <= 1.0
        assert -1.0 <= sanity["spearman"] <= 1.0 and -1.0 <= sanity["ssim"] <= 1.0
        assert isinstance(sanity["flagged"], bool | np.bool_) and len(sanity["curve"]) >= 1
        assert cost["seconds_per_image"] > 0
    assert set(rep["flagged"]) <= set(methods)
    assert 0 < rep["chance"]["lesion_energy"] < rep["chance"]["lung_energy"] < 1
    on_disk = json.loads((out / "interpret.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert set(on_disk["methods"]) == set(methods) and "flagged" in on_disk
    for name in interpret.FIGURES.values():
        assert (out / name).stat().st_size > 1000, name
    per_image = pd.read_csv(out / "localisation.csv")
    assert set(per_image["method"]) == set(methods)


def test_select_images_prefers_masked_rows_and_interleaves_classes():
    table = pd.DataFrame({"path": [f"{c}{i}" for c in "abc" for i in range(4)],
                          "label": [c for c in CLASSES for _ in range(4)],
                          "lung_mask": ["m", "m", "", "m"] * 3, "lesion_mask": [""] * 12})
    rows = interpret.select_images(table, CLASSES, 5, seed=0)
    assert rows["label"].tolist() == CLASSES * 3  # class-balanced prefixes
    assert (rows["lung_mask"] == "m").all()  # the unmasked image is left out while masked ones exist
    no_masks = interpret.select_images(table.assign(lung_mask=""), CLASSES, 2, seed=0)
    assert len(no_masks) == 6 and no_masks["label"].tolist() == CLASSES * 2
    with pytest.raises(ValueError, match="no images"):
        interpret.select_images(table.iloc[:0], CLASSES, 2, seed=0)


def test_report_on_a_tiny_run(tiny_run, tmp_path):
    rep = interpret.report(tiny_run, out=tmp_path / "all")
    _check_report(rep, METHODS, tmp_path / "all")
    assert rep["layer"] == "conv1" and rep["layer_grid"] == [SIZE, SIZE]  # the run config's explain.cam_layer
    assert rep["images"]["n"] == 6 and rep["images"]["lesion_bearing"] == 4  # smoke: 2 per class
    assert rep["methods"]["scorecam"]["cost"]["n_images"] == 3  # expensive: 1 per class
    assert rep["methods"]["gradcam"]["sanity"]["n_images"] == 2
    blocks = [c["block"] for c in rep["methods"]["gradcam"]["sanity"]["curve"]]
    assert blocks == ["probs", "conv2", "conv1"]  # cascading, top first
    table = interpret.format_table(rep)
    assert "conv1" in table and all(m in table for m in METHODS)
    assert rep["ablation"] == {"skipped": "none of explain.ablation_layers ['mixed2', 'mixed5', 'mixed7'] is in "
                                          "the model"} and "lesion ablation: skipped" in table


def test_lesion_ablation_in_the_report(tiny_run, tmp_path):
    rep = interpret.report(tiny_run, methods=["gradcam"], out=tmp_path,
                           overrides=["explain.ablation_layers=[conv1, conv2, nope]"])
    abl = rep["ablation"]
    assert abl["images"] == 4 and abl["method"] == "gradcam"  # COVID-19 and Viral Pneumonia phantoms
    assert [(r["layer"], r["grid"]) for r in abl["layers"]] == [("conv1", SIZE), ("conv2", SIZE // 2)]
    assert all(r["shift_lung_energy"] > 0.8 and r["shift_pointing"] >= 0.75 for r in abl["layers"])  # the
    # activations change where the lesions were; the untrained net's Grad-CAM does not point there
    assert "lesion ablation on 4 phantoms" in interpret.format_table(rep)
    assert json.loads((tmp_path / "interpret.json").read_text())["ablation"]["layers"][1]["layer"] == "conv2"


def test_layer_argument_overrides_the_config(tiny_run, tmp_path):
    rep = interpret.report(tiny_run, methods=["gradcam"], layer="conv2", n_per_class=1, out=tmp_path)
    assert rep["layer"] == "conv2" and rep["layer_grid"] == [SIZE // 2, SIZE // 2]
    assert list(rep["methods"]) == ["gradcam"] and rep["images"]["n"] == 3
    assert interpret.cam_layer(tiny_run) == "conv1" and interpret.cam_layer(tiny_run, "conv2") == "conv2"
    with pytest.raises(ValueError, match="'nope' .* not a spatial layer"):
        interpret.report(tiny_run, methods=["gradcam"], layer="nope", out=tmp_path)


def test_interpret_command_prints_the_table(tiny_run, tmp_path):
    from covidxray.cli import app

    res = CliRunner().invoke(app, ["interpret", str(tiny_run), "-m", "gradcam", "-m", "gradient", "-o",
                                   str(tmp_path), "--set", "explain.randomization_images=1"])
    assert res.exit_code == 0, res.output
    lines = [line.split() for line in res.output.splitlines()]
    header = next(words for words in lines if words[:1] == ["method"])
    assert header == ["method", "lung", "E", "lesion", "E", "pointing", "del", "AUC", "ins", "AUC", "rand",
                              "rho", "flagged", "s/img"]
    rows = {words[0]: words for words in lines if words[:1] in (["gradcam"], ["gradient"])}
    assert set(rows) == {"gradcam", "gradient"} and all(len(r) == 9 for r in rows.values())
    assert "CAM layer conv1" in res.output and (tmp_path / "interpret.json").is_file()
    res = CliRunner().invoke(app, ["interpret", str(tiny_run), "-m", "lime", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "unknown method" in res.output
    res = CliRunner().invoke(app, ["interpret", str(tiny_run), "--split", "val", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "no images in split 'val'" in res.output


def test_explain_command_uses_the_config_layer(tiny_run, tmp_path, monkeypatch):
    from covidxray.cli import app
    from covidxray.explain import overlays

    seen = []

    def fake(*args, **kw):
        seen.append(kw["layer"])
        return overlays.ExplainReport(pd.DataFrame())

    monkeypatch.setattr(overlays, "explain_files", fake)
    image = pd.read_csv(tiny_run / "splits.csv")["path"][0]
    for extra, want in (([], "conv1"), (["--layer", "conv2"], "conv2")):
        res = CliRunner().invoke(app, ["explain", str(tiny_run), image, "-o", str(tmp_path), *extra])
        assert res.exit_code == 0, res.output
        assert seen[-1] == want


@pytest.mark.slow
def test_report_on_the_smoke_run(smoke_run, tmp_path):
    """InceptionV3 at 75 px: the smoke config's CAM layer mixed7 (3x3), 12 randomisation steps."""
    rep = interpret.report(smoke_run, out=tmp_path)
    _check_report(rep, METHODS, tmp_path)
    assert rep["layer"] == "mixed7" and rep["layer_grid"] == [3, 3]
    abl = rep["ablation"]
    assert [(r["layer"], r["grid"]) for r in abl["layers"]] == [("mixed2", 7), ("mixed5", 3), ("mixed7", 3)]
    for r in abl["layers"]:  # an untrained-looking smoke model's Grad-CAM may be all zero: energy NaN
        assert all(0 <= r[k] <= 1 or (k.startswith("gradcam") and math.isnan(r[k])) for k in r if k not in ("layer", "grid"))
        assert all(0 <= r[k] <= 1 for k in ("flip_rate", "shift_pointing", "shift_lung_energy", "shift_lesion_energy"))
    blocks = [c["block"] for c in rep["methods"]["gradcam"]["sanity"]["curve"]]
    assert blocks == ["head", *(f"mixed{i}" for i in range(10, -1, -1))]
