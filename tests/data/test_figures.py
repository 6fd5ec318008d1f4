"""Notebook figures and tables: right numbers, right structure, saved PNGs; and the notebook plumbing."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from covidxray import architecture, notebook, paths
from covidxray.config import load_config
from covidxray.data import augment_figures, discover, figures, files, image_stats, split
from covidxray.data.pipeline import DataError
from covidxray.style import class_color

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _smooth(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A random smooth image (distinct ones are far apart in pHash)."""
    coarse = rng.uniform(0, 255, (6, 6)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def manifest(phantom_dir) -> pd.DataFrame:
    return discover.discover(phantom_dir).manifest


@pytest.fixture(scope="module")
def model():
    from covidxray.models import build_model

    return build_model(CLASSES, "inceptionv3", 75, "none")[0]


def saved(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_class_order_and_pick_examples(manifest):
    assert figures.class_order(["Viral Pneumonia", "Other", "COVID-19", "Lung Opacity"]) == [
        "COVID-19", "Viral Pneumonia", "Lung Opacity", "Other"]
    picked = figures.pick_examples(manifest, 3, seed=1)
    assert list(picked["label"]) == ["COVID-19"] * 3 + ["Normal"] * 3 + ["Viral Pneumonia"] * 3
    assert picked.equals(figures.pick_examples(manifest, 3, seed=1))
    assert not picked.equals(figures.pick_examples(manifest, 3, seed=2))
    assert len(figures.pick_examples(manifest, 100)) == 60


def test_sample_grid(manifest, phantom_dir, tmp_path):
    fig = figures.sample_grid(manifest, 3, seed=0, save_to=tmp_path / "grid.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 9 and saved(tmp_path / "grid.png")
    rows = [fig.axes[i] for i in (0, 3, 6)]
    assert [ax.get_ylabel() for ax in rows] == CLASSES
    assert [to_hex(ax.yaxis.label.get_color()) for ax in rows] == [class_color(c).lower() for c in CLASSES]
    contours = [len(ax.collections) for ax in fig.axes]
    assert contours[3:6] == [1, 1, 1]  # Normal: lung outline only
    assert all(n == 2 for n in contours[:3] + contours[6:])  # lung + lesion
    assert len(fig.legends) == 1
    relative = pd.read_csv(phantom_dir / "manifest.csv")  # relative paths, resolved with root
    plain = figures.sample_grid(relative, 2, contours=False, root=phantom_dir)
    assert len(plain.axes) == 6 and all(not ax.collections for ax in plain.axes) and not plain.legends


def _write_images(folder, specs) -> pd.DataFrame:
    rows = []
    for i, (label, img) in enumerate(specs):
        path = folder / label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
        rows.append({"path": str(path), "label": label})
    return pd.DataFrame(rows)


def test_image_size_stats(tmp_path, manifest):
    sizes = image_stats.image_size_stats(manifest)
    assert list(sizes.index) == CLASSES and (sizes["images"] == 20).all()
    assert (sizes[["min_side", "max_side"]] == 96).all().all() and (sizes["most_common"] == "96×96").all()
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    specs = [("Normal", ramp[:100, :100]), ("Normal", ramp[:100, :100]), ("Normal", ramp[:80, :120]),
             ("COVID-19", ramp[:200, :150])]
    table = image_stats.image_size_stats(_write_images(tmp_path, specs))  # no height/width: decoded
    assert list(table.index) == ["COVID-19", "Normal"]
    normal = table.loc["Normal"]
    assert normal["distinct_sizes"] == 2 and normal["most_common"] == "100×100"
    assert normal["min_side"] == 80 and normal["max_side"] == 120
    assert normal["square_share"] == pytest.approx(2 / 3)
    assert table.loc["COVID-19", "most_common"] == "150×200"


def test_intensity_stats_numbers(tmp_path):
    half = np.zeros((64, 64), np.uint8)
    half[:, 32:] = 200
    stats = image_stats.intensity_stats(_write_images(tmp_path, [("Normal", half)]))
    row = stats.iloc[0]
    assert (row["mean"], row["std"], row["p05"], row["p95"], row["dark_frac"]) == (100.0, 100.0, 0.0, 200.0, 0.5)
    assert (row["height"], row["width"]) == (64, 64)


def test_shortcut_table_flags_only_clear_separation():
    rng = np.random.default_rng(0)
    labels = np.repeat(CLASSES, 100)
    stats = pd.DataFrame({"label": labels, "source": np.where(labels == "Viral Pneumonia", 10.0, 50.0)
                          + rng.normal(0, 1, 300), "noise": rng.normal(0, 1, 300)})
    table = image_stats.shortcut_table(stats, ["source", "noise"])
    assert table.loc["source", "Viral Pneumonia"] == 1.0 and table.loc["source", "class"] == "Viral Pneumonia"
    assert table.loc["source", "flag"] and not table.loc["noise", "flag"]
    assert table.loc["noise", "max"] < 0.62
    tiny = stats.groupby("label").head(3)  # perfect separation on 3 images per class is not evidence
    assert not image_stats.shortcut_table(tiny, ["source"]).loc["source", "flag"]


def test_plot_intensity_stats(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(CLASSES, 60)
    stats = pd.DataFrame({"label": labels, **{f: rng.normal(0, 1, 180) for f in image_stats.INTENSITY_FEATURES}})
    stats.loc[stats["label"] == "Normal", "p95"] += 5
    fig = image_stats.plot_intensity_stats(stats, save_to=tmp_path / "i.png")
    assert len(fig.axes) == len(image_stats.INTENSITY_FEATURES) and saved(tmp_path / "i.png")
    titles = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    assert "AUC 1.00 (Normal vs rest)" in titles["95th percentile"].get_title()
    red = [name for name, ax in titles.items() if to_hex(ax.title.get_color()) == "#c00000"]
    assert red == ["95th percentile"]
    assert len(fig.axes[0].collections) == 3  # one scatter per class


def test_plot_class_balance(manifest, tmp_path):
    fig = figures.plot_class_balance(manifest.iloc[:50], save_to=tmp_path / "b.png")
    ax = fig.axes[0]
    assert [int(b.get_height()) for b in ax.patches] == [20, 20, 10] and saved(tmp_path / "b.png")
    assert ax.texts[2].get_text() == "10\n(20%)"
    splits = split.make_splits(manifest, 0.2, 0.2, seed=0)
    stacked = figures.plot_class_balance(splits).axes[0]
    assert len(stacked.containers) == 3
    heights = np.array([[b.get_height() for b in c] for c in stacked.containers])
    expected = pd.crosstab(splits["split"], splits["label"]).loc[["train", "val", "test"], CLASSES].to_numpy()
    assert (heights == expected).all()
    assert [t.get_text() for t in stacked.get_legend().get_texts()] == ["train", "val", "test"]


def test_plot_split_summary(manifest, tmp_path):
    splits = split.make_splits(manifest, 0.2, 0.2, seed=0)
    fig = figures.plot_split_summary(splits, split.check_leakage(splits), save_to=tmp_path / "s.png")
    left, right = fig.axes
    assert saved(tmp_path / "s.png") and fig.get_suptitle().startswith("Leakage check: no patient")
    counts = pd.crosstab(splits["label"], splits["split"]).loc[CLASSES, ["train", "val", "test"]].to_numpy()
    assert (np.array([[b.get_height() for b in c] for c in left.containers]) == counts).all()
    shares = np.array([p.get_width() for p in right.patches]).reshape(3, 3)  # class x split
    assert np.allclose(shares.sum(axis=0), 1.0)
    leaky = splits.assign(patient_id="p0")  # one patient everywhere
    report = split.check_leakage(leaky)
    bad = figures.plot_split_summary(leaky, report)
    assert "LEAKAGE" in bad.get_suptitle() and to_hex(bad._suptitle.get_color()) == "#c00000"


def test_duplicates(tmp_path):
    rng = np.random.default_rng(3)
    imgs = [_smooth(rng) for _ in range(4)]
    brighter = np.clip(imgs[1].astype(int) + 3, 0, 255).astype(np.uint8)
    specs = [("COVID-19", imgs[0]), ("Normal", imgs[0]), ("Normal", imgs[1]), ("Normal", brighter),
             ("Viral Pneumonia", imgs[2]), ("Viral Pneumonia", imgs[3])]
    table = figures.duplicate_table(_write_images(tmp_path, specs))
    assert len(table) == 4 and table["dup_group"].nunique() == 2
    first, second = table.iloc[0], table.iloc[2]
    assert (first["kind"], first["labels"]) == ("exact", "mixed")  # mixed-label groups first
    assert (second["kind"], second["labels"]) == ("near", "same")
    fig = figures.duplicate_examples(_write_images(tmp_path, specs), per_group=3, save_to=tmp_path / "d.png")
    assert len(fig.axes) == 6 and saved(tmp_path / "d.png")
    assert fig.axes[0].get_ylabel() == "exact, 2 images\nlabels: mixed"
    assert "(Δ0 bits)" in fig.axes[1].get_title()
    none = figures.duplicate_examples(_write_images(tmp_path / "u", [("Normal", i) for i in imgs]))
    assert len(none.axes) == 1
    assert none.axes[0].texts[0].get_text().startswith("No exact or near duplicates among 4")


def test_augment_descriptions():
    aug = load_config().augment
    assert augment_figures.describe_augment(aug) == ("rotation ±10°, translation ±6%, zoom ±10%, shear ±0.05, contrast ±20%, "
                                         "brightness ±10%, horizontal flip off")
    configs = augment_figures.single_layer_configs({**aug, "zoom": 0.0, "horizontal_flip": True})
    assert list(configs) == ["rotation", "translation", "shear", "contrast", "brightness", "horizontal_flip",
                             "full pipeline"]
    layer = configs["rotation"]
    assert {k: layer[k] for k in ("rotation", "translation", "zoom", "shear", "contrast", "brightness",
                                  "horizontal_flip")} == {"rotation": 10.0, "translation": 0.0, "zoom": 0.0, "shear": 0.0,
                                                          "contrast": 0.0, "brightness": 0.0, "horizontal_flip": False}
    steps = [k for k in layer if k.endswith("_p")]  # the acquisition steps: present, and off
    assert len(steps) == 8 and all(layer[k] == 0.0 for k in steps) and layer["gamma"] == aug["gamma"]
    assert configs["horizontal_flip"]["horizontal_flip"] and configs["full pipeline"]["zoom"] == 0.0


def test_augmentation_figures(manifest, tmp_path):
    from covidxray.data.augment import make_augmenter

    aug = load_config().augment
    rows = figures.pick_examples(manifest, 1, seed=0)
    images = files.model_inputs(rows["path"], 75)
    assert images.shape == (3, 75, 75) and images.dtype == np.uint8
    out = augment_figures.augment_images(images, make_augmenter(aug, 0), 3)
    assert out.shape == (3, 3, 75, 75) and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out[0, 0], out[0, 1])  # independent draws
    grid = augment_figures.augmentation_grid(images, make_augmenter(aug, 0), 3, labels=CLASSES, save_to=tmp_path / "g.png")
    assert len(grid.axes) == 12 and saved(tmp_path / "g.png")
    assert [grid.axes[i].get_ylabel() for i in (0, 4, 8)] == CLASSES
    assert np.array_equal(grid.axes[0].images[0].get_array(), images[0])
    layers = augment_figures.augmentation_by_layer(images[0], aug, n_aug=2, seed=0)
    assert len(layers.axes) == 7 * 3  # six layers alone + full pipeline
    assert [layers.axes[i].get_ylabel() for i in (0, 18)] == ["rotation\n±10°", "full pipeline"]
    assert "horizontal flip off" in layers.get_suptitle()
    kept = augment_figures.augmentation_detail(images, aug, n_aug=2, seed=0)
    assert list(kept.index) == list(augment_figures.single_layer_configs(aug))
    geometric = kept[["rotation", "translation", "zoom", "shear"]]
    # each resample blurs; composed into one affine warp, the full pipeline does not compound it
    assert (geometric < 0.95).all() and kept["full pipeline"] >= 0.9 * geometric.mean()
    flip = augment_figures.flip_figure(images[0])
    assert np.array_equal(flip.axes[1].images[0].get_array(), images[0][:, ::-1])


def test_architecture_table(model):
    table = architecture.architecture_table(model)
    names = list(table["block"])
    assert names == (["image", "gray_to_rgb", "preprocess_input", "stem"] + [f"mixed{i}" for i in range(11)]
                     + ["gap", "head_dense0", "head_dropout0", "head_dense1", "head_dropout1", "probs"])
    assert table["layers"].sum() == len(model.layers)
    assert table["params"].sum() == model.count_params()
    shapes = dict(zip(table["block"], table["output_shape"], strict=True))
    assert (shapes["image"], shapes["stem"], shapes["mixed10"], shapes["probs"]) == ("75×75×1", "7×7×192",
                                                                                    "1×1×2048", "3")
    assert table.set_index("block").at["probs", "params"] == 128 * 3 + 3


def test_architecture_follows_trainable(model, tmp_path):
    from covidxray.models import set_trainable

    set_trainable(model, "inceptionv3", 2)
    try:
        table = architecture.architecture_table(model).set_index("block")
        assert table.loc["mixed8", "trainable_params"] == 0 and table.loc["mixed9", "trainable_params"] > 0
        assert table.loc["mixed9", "trainable_params"] < table.loc["mixed9", "params"]  # BatchNorm stays frozen
        fig = architecture.architecture_figure(model, unfreeze_blocks=2, save_to=tmp_path / "a.png")
    finally:
        set_trainable(model, "inceptionv3", -1)
    diagram = fig.axes[0]
    assert len(diagram.patches) == len(table) and saved(tmp_path / "a.png")
    dark = [p for p in diagram.patches if to_hex(p.get_facecolor()) == "#8db9de"]
    assert len(dark) == 2
    assert "22.4 M parameters" in fig.get_suptitle()


def test_notebook_context(phantom_dir, tmp_path):
    ctx = notebook.notebook_context("smoke", {"train.epochs": 5, "data.cache_dir": "tmp-cache"}, seed=7,
                               data_dir=phantom_dir, figures_dir=tmp_path / "fig", log=lambda *_: None)
    assert (ctx.cfg.seed, ctx.cfg.train.epochs, ctx.cfg.model.image_size) == (7, 5, 75)
    assert ctx.cfg.data.cache_dir == str(paths.ROOT / "tmp-cache")  # relative = against the repository root
    assert ctx.dataset == phantom_dir and ctx.derived == phantom_dir  # our phantoms: tables beside them
    assert ctx.run_dir == paths.MODELS / "notebook-smoke" and ctx.figure("x.png") == tmp_path / "fig" / "x.png"
    with pytest.raises(DataError, match="does not exist"):
        notebook.notebook_context("smoke", data_dir=tmp_path / "missing", log=lambda *_: None)


def test_output_data_dir_keeps_other_datasets_read_only(tmp_path):
    real = tmp_path / "cxr"
    real.mkdir()
    pd.DataFrame({"path": ["a.png"], "label": ["Normal"], "source": ["kaggle"]}).to_csv(real / "manifest.csv")
    assert notebook.output_data_dir(real) == paths.DATA / "derived" / "cxr"
    assert notebook.output_data_dir(real / "manifest.csv") == paths.DATA / "derived" / "cxr"


def test_write_tables_and_training_examples(phantom_dir, tmp_path):
    data = tmp_path / "ph"
    shutil.copytree(phantom_dir, data)
    ctx = notebook.notebook_context("smoke", data_dir=data, log=lambda *_: None)
    found = discover.discover(data)
    splits = split.make_splits(found.manifest, 0.2, 0.2, seed=0)
    written = notebook.write_data_tables(ctx, found, splits)
    assert set(written) == {"index", "splits"} and written["splits"] == ctx.splits_csv  # no quarantine: no file
    assert len(pd.read_csv(written["index"])) == 60
    rows, images = notebook.training_examples(ctx, n_per_class=2, seed=0)
    assert images.shape == (6, 75, 75) and set(rows["split"]) == {"train"}
    assert list(rows["label"]) == [c for c in CLASSES for _ in range(2)]


def test_run_essentials_and_reuse(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    meta = {"status": "finished", "backbone": "inceptionv3", "image_size": 75, "classes": CLASSES,
            "counts": {"COVID-19": {"train": 10, "val": 2}, "Normal": {"train": 10, "val": 2},
                       "Viral Pneumonia": {"train": 9, "val": 3}},
            "epochs_run": 3, "packages": {"tensorflow": "2.21.0"}}
    (run / "run.json").write_text(json.dumps(meta))
    pd.DataFrame({"epoch": [0, 1, 2], "val_loss": [1.0, 0.5, 0.7],
                  "val_accuracy": [0.3, 0.8, 0.7]}).to_csv(run / "history.csv", index=False)
    info = notebook.run_essentials(run)
    assert info["images per split"] == {"train": 29, "val": 7}
    assert (info["best val_loss"], info["val accuracy there"], info["tensorflow"]) == (0.5, 0.8, "2.21.0")
    cfg = load_config(["smoke"])
    cfg.dump(run / "config.yaml")
    ctx = notebook.NotebookContext(cfg, tmp_path, tmp_path, run, tmp_path)
    messages = []
    assert notebook.train_or_reuse(ctx, log=messages.append) == run  # finished: reused, not retrained
    assert "reusing" in messages[0]
    other = notebook.NotebookContext(load_config(["smoke"], ["train.epochs=9", "seed=1"]), tmp_path, tmp_path, run, tmp_path)
    with pytest.raises(ValueError, match=r"another config \(seed, train.epochs differ\)"):
        notebook.train_or_reuse(other)
