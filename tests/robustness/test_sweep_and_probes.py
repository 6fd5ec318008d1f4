"""Corruption sweep, shortcut probe on phantoms, real-data probes and leave-one-source-out.

The sweep and the real-data probe use private copies of the session ``smoke_run``; the phantom
shortcut probe and leave-one-source-out train their own tiny models (75 px, 1 epoch) and are slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from covidxray import cli
from covidxray.config import load_config
from covidxray.data.pipeline import DataError
from covidxray.robustness import probes
from covidxray.robustness.probes import border_mask, leave_one_source_out, probe_run, source_confounding
from covidxray.robustness.sweep import METRICS, sweep
from helpers_runs import copy_run

CORRUPTIONS = ["gaussian_noise", "rotation"]


@pytest.fixture(scope="module")
def swept(smoke_run, tmp_path_factory):
    """The smoke run swept over two corruptions at every severity, with test-time augmentation."""
    run = copy_run(smoke_run, tmp_path_factory.mktemp("swept") / "run")
    report = sweep(run, corruptions=CORRUPTIONS, tta=True, n_boot=50, log=lambda *_: None)
    return run, report


def in_unit(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_sweep_writes_every_corruption_and_severity(swept):
    run, report = swept
    out = run / "robustness"
    saved = json.loads((out / "robustness.json").read_text())
    assert saved["results"] == report["results"]
    assert list(saved["results"]) == CORRUPTIONS
    n_test = int((pd.read_csv(run / "splits.csv")["split"] == "test").sum())
    assert saved["n"] == n_test and saved["split"] == "test"
    clean = saved["results"][CORRUPTIONS[0]]["0"]
    for name in CORRUPTIONS:
        assert list(saved["results"][name]) == ["0", "1", "2", "3", "4", "5"]
        assert saved["results"][name]["0"] == clean  # severity 0 is the one clean evaluation
        for point in saved["results"][name].values():
            assert set(METRICS) | {"ci95"} == set(point)
            assert all(in_unit(point[m]) for m in METRICS)
            assert point["accuracy"] is not None and point["sensitivity_op"] is not None
    assert saved["corruptions"]["rotation"]["values"] == [3, 6, 9, 12, 15]


def test_sweep_summary_is_the_mean_over_corruptions_and_severities(swept):
    _, report = swept
    for m in METRICS:
        vals = [report["results"][c][str(s)][m] for c in CORRUPTIONS for s in range(1, 6)]
        vals = [v for v in vals if v is not None]
        o = report["summary"]["overall"][m]
        assert o["mean_corrupted"] == pytest.approx(np.mean(vals))
        assert o["drop"] == pytest.approx(o["clean"] - o["mean_corrupted"])
    tta = report["tta"]
    assert list(tta["results"]) == CORRUPTIONS and tta["degrees"] == [-5.0, 5.0]
    for m in METRICS:
        want = tta["summary"]["overall"][m]["mean_corrupted"] - report["summary"]["overall"][m]["mean_corrupted"]
        assert tta["effect"][m] == pytest.approx(want)


def test_sweep_corrupts_the_film_before_the_runs_input_transform(smoke_run, tmp_path, monkeypatch):
    """A run trained on equalized images sees a corrupted film equalized, as predict would show it."""
    from covidxray.data.cache import cached_images
    from covidxray.data.inputs import InputSpec, apply
    from covidxray.data.pipeline import read_splits
    from covidxray.robustness import sweep as sweep_module
    from covidxray.runinfo import run_config

    run = copy_run(smoke_run, tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta.setdefault("mitigations", {})["input"] = {"normalize": "equalize"}
    (run / "run.json").write_text(json.dumps(meta))
    seen, fed = [], []
    real_corrupt, real_predict = sweep_module.corrupt, sweep_module.predict_raw
    monkeypatch.setattr(sweep_module, "corrupt", lambda x, *a: seen.append(np.array(x)) or real_corrupt(x, *a))
    monkeypatch.setattr(sweep_module, "predict_raw", lambda m, x, *a: fed.append(np.array(x)) or real_predict(m, x, *a))
    report = sweep(run, corruptions=["contrast"], severities=[5], n_boot=20, log=lambda *_: None)
    assert report["applied_at"].endswith("before the run's input transform")
    assert report["input_transform"]["normalize"] == "equalize"
    test = read_splits(run / "splits.csv", meta["classes"]).query("split == 'test'")
    raw = np.asarray(cached_images(list(test["path"]), meta["image_size"], run_config(run)))
    # the corruption gets the decoded films (the whole set per point, the first film for the example figure)
    assert sum(np.array_equal(x, raw) for x in seen) == 2 and all(
        np.array_equal(x, raw) or np.array_equal(x, raw[0]) for x in seen), [x.shape for x in seen]
    want, _ = apply(real_corrupt(raw, "contrast", 5, report["seed"]), InputSpec(normalize="equalize"))
    assert np.array_equal(fed[-1].reshape(want.shape), want)  # the model gets them corrupted, then equalized


def test_sweep_figures_at_150_dpi(swept):
    run, report = swept
    assert report["figures"] == [f"robustness_{m}.png" for m in METRICS] + ["corruption_examples.png",
                                                                             "tta_effect.png"]
    for name in report["figures"]:
        with Image.open(run / "robustness" / name) as im:
            assert im.info["dpi"][0] == pytest.approx(150, abs=1)


def test_cli_refuses_an_unknown_corruption(smoke_run, tmp_path):
    result = CliRunner().invoke(cli.app, ["robustness", str(smoke_run), "--corruption", "snow", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown or no corruptions ['snow']" in result.output


def test_border_mask_and_source_confounding():
    band = border_mask(100, 0.12)
    assert band.mean() == pytest.approx(1 - 0.76**2) and band[0, 50] and not band[50, 50]
    labels = pd.Series(["COVID-19", "Normal", "Viral Pneumonia", "Viral Pneumonia"])
    conf = source_confounding(labels, pd.Series(["a", "a", "b", "b"]))
    assert conf["confounded"] and "'b' holds only Viral Pneumonia" in conf["note"]
    assert conf["counts"] == {"a": {"COVID-19": 1, "Normal": 1}, "b": {"Viral Pneumonia": 2}}
    assert not source_confounding(labels, pd.Series(["a", "b", "a", "b"]))["confounded"]


def test_probe_run_with_lung_masks_predicted_lungs_and_the_border_band(smoke_run, tmp_path, monkeypatch):
    run = copy_run(smoke_run, tmp_path / "run")
    masked = probe_run(run, log=lambda *_: None)
    o = masked["outside_lung"]
    assert o["n_lung_masks"] == masked["n"] and o["n_border_band"] == 0
    assert in_unit(o["mean"]) and 0 < o["uniform_baseline"] < 1
    assert (run / "shortcut" / "probe.json").is_file() and (run / "shortcut" / "probe.png").is_file()
    # a manifest without lung masks, where Viral Pneumonia comes from its own source
    test = pd.read_csv(run / "splits.csv").query("split == 'test'")
    manifest = pd.DataFrame({"path": test["path"], "label": test["label"],
                             "source": np.where(test["label"] == "Viral Pneumonia", "repo-vp", "repo-main")})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    # without masks: the shipped segmenter's lungs, named with the Dice it had on unseen patients
    pred = probe_run(run, data=tmp_path / "manifest.csv", out=tmp_path / "pred", log=lambda *_: None)["outside_lung"]
    assert pred["n_predicted_lungs"] == len(test) and pred["n_border_band"] == pred["n_lung_masks"] == 0
    assert pred["lung_segmenter"]["heldout_dice"] > 0.9 and pred["lung_segmenter"]["sha256"]
    assert pred["uniform_baseline"] == pytest.approx(o["uniform_baseline"], abs=0.05)  # the phantoms' own lungs
    # and without a segmenter: the border band
    monkeypatch.setattr(probes, "installed_segmenter", lambda log=print: None)
    rep = probe_run(run, data=tmp_path / "manifest.csv", out=tmp_path / "probe", log=lambda *_: None)
    assert rep["outside_lung"]["n_border_band"] == len(test) and rep["outside_lung"]["n_lung_masks"] == 0
    assert rep["outside_lung"]["lung_segmenter"] is None
    assert rep["outside_lung"]["uniform_baseline"] == pytest.approx(1 - (1 - 2 * 9 / 75) ** 2)  # 9 px of 75
    assert rep["sources"]["confounded"] and "CONFOUNDED" in rep["sources"]["note"]
    assert {k: v["n"] for k, v in rep["per_source"].items()} == manifest["source"].value_counts().to_dict()
    assert all(in_unit(v["accuracy"]) for v in rep["per_source"].values())


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    """CLI arguments of the smoke config shrunk for the probes: 75 px phantoms, 6 per class, one epoch.

    The vanilla gradient replaces Grad-CAM: after one epoch Grad-CAM often finds no positive evidence
    (all-zero maps), which leaves the energy shares undefined.
    """
    cache = tmp_path_factory.mktemp("probe-cache")
    return ["--config", "smoke", "--set", f"data.cache_dir={cache}", "--set", "phantoms.size=75",
            "--set", "phantoms.n_per_class=6", "--set", "train.epochs=1", "--set", "robustness.cam_method=gradient",
            "--set", "robustness.shortcut.test_per_class=4", "--set", "robustness.shortcut.figure_images=2"]


@pytest.mark.slow
def test_shortcut_probe_on_tiny_phantoms(tiny_cfg, tmp_path):
    result = CliRunner().invoke(cli.app, ["shortcut", *tiny_cfg, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "marker energy ratio" in result.output and "confounded" in result.output
    saved = json.loads((tmp_path / "shortcut.json").read_text())
    assert set(saved) == {"settings", "marker_area", "models", "checks", "seconds", "figures"}
    assert saved["settings"]["image_size"] == 75 and saved["settings"]["epochs"] == 1
    for variant, strength in (("confounded", 1.0), ("clean", 0.0)):
        m = saved["models"][variant]
        assert m["train_strength"] == strength
        assert m["accuracy_drop"] == pytest.approx(m["accuracy"]["correlated"] - m["accuracy"]["decorrelated"])
        for key in ("marker_energy", "lung_energy"):
            assert m[key] is not None and 0.0 <= m[key] <= 1.0
        assert list(m["methods"]) == ["gradient", "gradcam", "gradcam++", "scorecam", "occlusion"]
        assert m["methods"]["gradient"]["marker_energy"] == m["marker_energy"]  # the check's method
        marked = pd.read_csv(tmp_path / "data" / "test-decorrelated" / "manifest.csv")["marker"].sum()
        cap = load_config(["smoke"]).robustness.shortcut.energy_images
        assert m["energy_images"] == min(cap, marked) > 0  # decorrelated images that carry the marker
        assert all(v is None or 0.0 <= v <= 1.0 for v in m["covid_calls"].values())
        assert (tmp_path / variant / "run.json").is_file()
    assert 0 < saved["marker_area"] < 0.1 and isinstance(saved["checks"]["passed"], bool)
    assert set(saved["checks"]["marker_energy_ratio_by_method"]) == set(m["methods"])
    assert saved["checks"]["marker_energy_ratio_by_method"]["gradient"] == saved["checks"]["marker_energy_ratio"]
    data = pd.read_csv(tmp_path / "data" / "train-confounded" / "manifest.csv")
    assert data.groupby("label")["marker"].mean().to_dict() == {"COVID-19": 1.0, "Normal": 0.0, "Viral Pneumonia": 0.0}
    assert all((tmp_path / f).is_file() for f in saved["figures"])


def test_train_or_reuse_reuses_only_a_finished_run_with_the_same_config(smoke_run, tmp_path, monkeypatch):
    import covidxray.training.train
    from covidxray.robustness.shortcut import train_or_reuse

    run = copy_run(smoke_run, tmp_path / "run")
    cfg = load_config([run / "config.yaml"])
    assert train_or_reuse(cfg, Path(cfg.data.dataset), run, log=lambda *_: None) == run
    calls = []
    monkeypatch.setattr(covidxray.training.train, "train", lambda cfg, dataset, out, log: calls.append((cfg, out)) or out)
    cfg["train"]["epochs"] = 3
    assert train_or_reuse(cfg, Path(cfg.data.dataset), run, log=lambda *_: None) == run
    assert len(calls) == 1 and calls[0][0].train.epochs == 3 and not run.exists()  # the old run was replaced


def test_leave_one_source_out_refuses_or_skips_without_training(phantom_dir, smoke_cfg, tmp_path):
    manifest = pd.read_csv(phantom_dir / "manifest.csv")
    manifest["path"] = [str(phantom_dir / p) for p in manifest["path"]]
    manifest.drop(columns=["lung_mask", "lesion_mask"]).to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match=">= 2 sources"):
        leave_one_source_out(smoke_cfg, tmp_path / "one.csv", tmp_path / "loso", log=lambda *_: None)
    manifest["source"] = np.where(manifest["label"] == "Viral Pneumonia", "vp-repo", "main-repo")
    manifest.drop(columns=["lung_mask", "lesion_mask"]).to_csv(tmp_path / "two.csv", index=False)
    report = leave_one_source_out(smoke_cfg, tmp_path / "two.csv", tmp_path / "loso", log=lambda *_: None)
    assert report["sources"]["confounded"]
    assert report["folds"]["vp-repo"] == {"skipped": "without 'vp-repo' no training images of ['Viral Pneumonia'] remain"}
    assert "skipped" in report["folds"]["main-repo"] and not (tmp_path / "loso" / "without-main-repo").exists()


@pytest.mark.slow
def test_leave_one_source_out_trains_without_the_source(tiny_cfg, tmp_path):
    from covidxray.data.phantoms import generate_dataset

    overrides = [v for k, v in zip(tiny_cfg, tiny_cfg[1:], strict=False) if k == "--set"]
    cfg = load_config(["smoke"], overrides)
    manifest = generate_dataset(tmp_path / "ph", n_per_class=8, size=75, seed=3)
    manifest["source"] = np.tile(["site-a", "site-b"], len(manifest) // 2)
    manifest.to_csv(tmp_path / "ph" / "manifest.csv", index=False)
    report = leave_one_source_out(cfg, tmp_path / "ph", tmp_path / "loso", sources=["site-a"], log=lambda *_: None)
    assert list(report["folds"]) == ["site-a"] and not report["sources"]["confounded"]
    fold = report["folds"]["site-a"]
    assert fold["n_held_out"] == 12 and fold["n_train_pool"] == 12
    splits = pd.read_csv(tmp_path / "loso" / "without-site-a" / "run" / "splits.csv")
    assert set(splits["source"]) == {"site-b"}  # the held-out source never reaches training
    for key in ("held_out", "in_source_test"):
        assert 0.0 <= fold[key]["accuracy"] <= 1.0 and set(METRICS) <= set(fold[key])
    assert json.loads((tmp_path / "loso" / "loso.json").read_text())["folds"]["site-a"]["n_held_out"] == 12
