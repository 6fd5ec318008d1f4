"""Explanation methods, their checks, figures and the `explain` command, on tiny models."""

from __future__ import annotations

import json
import os
import re
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from covidxray.data import phantoms  # noqa: E402
from covidxray.data.pipeline import DataError  # noqa: E402
from covidxray.explain import (  # noqa: E402  # noqa: E402
    ablation,
    activations,
    core,
    cost,
    faithfulness,
    localisation,
    overlays,
    randomization,
    registry,
)
from helpers_runs import CLASSES, S, square_detector, square_images, tiny_cnn  # noqa: E402


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return tiny_cnn()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, S, S)).astype(np.uint8)


FAST_KW = {"smoothgrad": {"n_samples": 6}, "integrated_gradients": {"steps": 8}, "occlusion": {"patch": 8}}


@pytest.mark.parametrize("method", registry.METHODS)
def test_every_method_shape_range_and_determinism(model, images, method):
    a = registry.explain(model, images, method, batch_size=7, **FAST_KW.get(method, {}))
    b = registry.explain(model, images[..., None], method, batch_size=7, **FAST_KW.get(method, {}))
    assert a.shape == (5, S, S) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    assert np.isclose(a.reshape(5, -1).max(axis=1), 1.0).all()  # min-max normalised, non-constant maps
    np.testing.assert_array_equal(a, b)


def test_target_selection(model, images):
    pred = model.predict(images[..., None].astype(np.float32), verbose=0).argmax(axis=1)
    for method in ("gradient", "gradcam", "occlusion"):
        auto = registry.explain(model, images, method, **FAST_KW.get(method, {}))
        given = registry.explain(model, images, method, target=pred, **FAST_KW.get(method, {}))
        np.testing.assert_allclose(auto, given, atol=1e-6)
    other = (pred + 1) % 3
    assert not np.allclose(registry.explain(model, images, "gradient", target=other), registry.explain(model, images, "gradient"))
    np.testing.assert_allclose(registry.explain(model, images, "gradient", target=2),
                               registry.explain(model, images, "gradient", target=np.full(5, 2)))
    with pytest.raises(ValueError, match="one per image"):
        registry.explain(model, images, "gradient", target=[0, 1])
    with pytest.raises(ValueError, match="target classes must be in 0..2"):
        registry.explain(model, images, "gradient", target=3)
    with pytest.raises(ValueError, match="unknown method"):
        registry.explain(model, images, "lime")
    with pytest.raises(ValueError, match=r"the model takes \(N, 32, 32\)"):
        registry.explain(model, images[:, :16], "gradient")


def test_smoothgrad_seed_and_traced_once(model, images):
    a = registry.explain(model, images, "smoothgrad", n_samples=4, seed=1)
    assert not np.array_equal(a, registry.explain(model, images, "smoothgrad", n_samples=4, seed=2))
    np.testing.assert_array_equal(a, registry.explain(model, images, "smoothgrad", n_samples=4, seed=1))
    fn = core.grad_fn(model, "logit")
    registry.explain(model, images[:3], "gradient", batch_size=2)
    registry.explain(model, images, "gradient", batch_size=4)
    assert core.grad_fn(model, "logit") is fn and fn.experimental_get_tracing_count() == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:The structure of `inputs`:UserWarning")
def test_agrees_with_tf_keras_vis(model, images):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    x = images[..., None].astype(np.float32)
    score = CategoricalScore(list(model.predict(x, verbose=0).argmax(axis=1)))
    sal = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)(score, x, normalize_map=False)
    np.testing.assert_allclose(core.normalize_maps(sal), registry.explain(model, images, "gradient"), atol=1e-5)
    cam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)(
        score, x, penultimate_layer="conv2", seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
    ours = registry.explain(model, images, "gradcam")
    np.testing.assert_allclose(core.normalize_maps(core.upsample(np.asarray(cam), (S, S))), ours, atol=1e-5)
    assert model.layers[-1].activation.__name__ == "softmax"  # the original model was not modified


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "occlusion", "gradient", "activation"])
def test_maximum_on_the_evidence(method):
    model = square_detector()
    imgs, masks = square_images()
    assert (model.predict(imgs[..., None].astype(np.float32), verbose=0).argmax(axis=1) == 0).all()
    maps = registry.explain(model, imgs, method, target=0, **({"patch": 6, "stride": 2} if method == "occlusion" else {}))
    assert np.nanmean(localisation.pointing_game(maps, masks, tolerance=2)) == 1.0
    assert localisation.energy_share(maps, masks).min() > 0.5


def test_activation_maps_top_k(model, images):
    acts = activations.activation_maps(model, images, ["conv1", "conv2"], k=3)
    maps, channels = acts["conv2"]
    assert maps.shape == (5, 3, S // 2, S // 2) and channels.shape == (5, 3)
    means = maps.mean(axis=(2, 3))
    assert (np.diff(means, axis=1) <= 1e-6).all()
    full = keras.Model(model.input, model.get_layer("conv2").output)(images[..., None].astype(np.float32)).numpy()
    assert np.isclose(means[:, 0], full.mean(axis=(1, 2)).max(axis=1), atol=1e-5).all()
    assert core.block_layers(model) == ["conv2"] and core.default_layer(model) == "conv2"


def test_inceptionv3_layers_and_blocks():
    from covidxray.models import build_model

    model, _ = build_model(CLASSES, image_size=75, weights="none")
    imgs = np.random.default_rng(0).integers(0, 256, (2, 75, 75)).astype(np.uint8)
    assert core.default_layer(model) == "mixed10"
    assert core.block_layers(model) == [f"mixed{i}" for i in range(11)]
    grad = registry.explain(model, imgs, "gradient")
    assert grad.shape == (2, 75, 75) and np.isclose(grad.max(axis=(1, 2)), 1.0).all()
    blocks = randomization.randomization_blocks(model)
    assert [b for b, _ in blocks] == ["head", *[f"mixed{i}" for i in range(10, -1, -1)]]
    assert blocks[0][1] == ["head_dense0", "head_dense1", "probs"]
    listed = [n for _, names in blocks for n in names]
    assert sorted(listed) == sorted(layer.name for layer in model.layers if layer.weights)


def test_energy_share_and_pointing_game_known_numbers():
    heat = np.zeros((3, 4, 4))
    heat[0, 0, 0], heat[0, 3, 3] = 3.0, 1.0  # 3/4 of the energy at (0, 0)
    heat[1, 2, 2] = 1.0
    heat[2] = 1.0
    mask = np.zeros((3, 4, 4), bool)
    mask[0, :2, :2] = True
    mask[1, 0, 0] = True  # maximum at (2, 2): two pixels away
    np.testing.assert_allclose(localisation.energy_share(heat, mask), [0.75, 0.0, np.nan])
    np.testing.assert_array_equal(localisation.pointing_game(heat, mask), [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(localisation.pointing_game(heat, mask, tolerance=2)[:2], [1.0, 0.0])  # disk: (2,2) not within r=2
    np.testing.assert_array_equal(localisation.pointing_game(heat, mask, tolerance=3)[:2], [1.0, 1.0])
    table = localisation.localisation(heat, lung_masks=np.ones_like(mask), lesion_masks=mask)
    assert list(table.columns) == ["lung_energy", "pointing_lung", "lesion_energy", "pointing_lesion"]
    np.testing.assert_allclose(table["lung_energy"], [1.0, 1.0, 1.0])


def test_deletion_insertion_synthetic_aucs():
    def left_half(batch):  # score 0: mean brightness of the left half
        s = batch[:, :, :5, 0].mean(axis=(1, 2)) / 255.0
        return np.stack([s, 1 - s], axis=1)

    img = np.full((1, 10, 10), 255.0)
    good = np.zeros((1, 10, 10))
    good[:, :, :5] = 1.0
    r = faithfulness.deletion_insertion(left_half, img, good, target=0, steps=10, insertion_baseline="black", batch_size=4)
    np.testing.assert_allclose(r.deletion[0, :6], [1, 0.8, 0.6, 0.4, 0.2, 0], atol=1e-12)
    np.testing.assert_allclose([r.deletion_auc[0], r.insertion_auc[0]], [0.25, 0.75])
    bad = faithfulness.deletion_insertion(left_half, img, 1 - good, target=0, steps=10, insertion_baseline="black")
    np.testing.assert_allclose([bad.deletion_auc[0], bad.insertion_auc[0]], [0.75, 0.25])


def test_deletion_insertion_with_model():
    model = square_detector()
    imgs, masks = square_images(3)
    r = faithfulness.deletion_insertion(model, imgs, masks.astype(float), steps=8)
    assert r.deletion.shape == r.insertion.shape == (3, 9)
    prob = model.predict(imgs[..., None].astype(np.float32), verbose=0)[:, 0]
    np.testing.assert_allclose(r.deletion[:, 0], prob, rtol=1e-5)  # nothing deleted yet
    np.testing.assert_allclose(r.insertion[:, -1], prob, rtol=1e-5)  # everything inserted
    np.testing.assert_allclose(r.deletion[:, -1], 0.5, atol=1e-6)  # all black: no evidence either way
    assert (r.deletion_auc < r.insertion_auc).all()


def test_ssim_and_spearman():
    a = np.full((1, 16, 16), 0.2)
    b = np.full((1, 16, 16), 0.6)
    c1 = 0.01**2
    np.testing.assert_allclose(randomization.ssim(a, b), (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))
    rng = np.random.default_rng(0)
    x = rng.random((2, 24, 24))
    np.testing.assert_allclose(randomization.ssim(x, x), 1.0)
    noisy = randomization.ssim(x, np.clip(x + 0.3 * rng.standard_normal(x.shape), 0, 1))
    assert (noisy < 0.8).all()
    np.testing.assert_allclose(randomization.ssim(x, x[:, ::-1]), randomization.ssim(x[:, ::-1], x))
    y = x + 0.5 * rng.random(x.shape)
    np.testing.assert_allclose(randomization.spearman(x, y), [spearmanr(x[i].ravel(), y[i].ravel())[0] for i in range(2)])
    np.testing.assert_array_equal(randomization.spearman(np.stack([x[0], np.zeros((24, 24))]), np.zeros((2, 24, 24))), [0.0, 1.0])


def test_cascading_randomization_flags_an_edge_detector(model, images):
    before = [w.copy() for w in model.get_weights()]

    def the_image(_model, x, _target):  # ignores the model entirely
        return core.normalize_maps(np.asarray(x, np.float32).reshape(len(x), S, S))

    methods = {"gradcam": lambda m, x, t: registry.explain(m, x, "gradcam", target=t), "image": the_image}
    result = randomization.cascading_randomization(model, images, methods, seed=3)
    assert list(result.table["block"].unique()) == ["probs", "conv2", "conv1"]
    assert len(result.table) == 3 * 2
    assert result.flagged == ["image"]
    assert result.summary.loc["image", "spearman"] == pytest.approx(1.0)
    assert result.summary.loc["image", "ssim"] == pytest.approx(1.0)
    assert result.summary.loc["gradcam", "spearman"] < 0.5
    for w0, w1 in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    again = randomization.cascading_randomization(model, images, methods, seed=3)
    pd.testing.assert_frame_equal(result.table, again.table)
    assert len(randomization.plot_randomization(result).axes) == 2


def test_time_methods(model, images):
    t = cost.time_methods(model, images, ["gradient", "smoothgrad"], options={"smoothgrad": {"n_samples": 3}})
    assert list(t.index) == ["gradient", "smoothgrad"] and (t["seconds_per_image"] > 0).all()


def test_figures(tmp_path, model, images):
    maps = {m: registry.explain(model, images[:3], m) for m in ("gradcam", "gradient")}
    lung = np.zeros((S, S), bool)
    lung[8:24, 4:14] = True
    fig = overlays.overlay_figure(images[0], maps["gradcam"][0], lung, "gradcam", save_to=tmp_path / "o.png")
    assert len(fig.axes) == 3 and len(fig.axes[1].collections) == 1  # colour bar; lung contour drawn
    fig = overlays.gallery_figure(images[:3], maps, ["a", "b", "c"], [lung, None, None], save_to=tmp_path / "g.png")
    assert len(fig.axes) == 9
    acts = activations.activation_maps(model, images[:1], ["conv1", "conv2"], k=4)
    fig = overlays.activation_figure(images[0], {k: (v[0][0], v[1][0]) for k, v in acts.items()},
                                     save_to=tmp_path / "a.png")
    assert len(fig.axes) == 2 * 5
    r = faithfulness.deletion_insertion(model, images[:2], maps["gradcam"][:2], steps=4)
    faithfulness.plot_faithfulness({"gradcam": r}, save_to=tmp_path / "f.png")
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("o.png", "g.png", "a.png", "f.png"))


def test_explain_command(tmp_path):
    from typer.testing import CliRunner

    from covidxray.cli import app
    from covidxray.data.cache import PREPROCESSING
    from covidxray.data.phantoms import generate_dataset

    size = 64
    run = tmp_path / "run"
    run.mkdir()
    tiny_cnn(size).save(run / "model.keras")
    (run / "run.json").write_text(json.dumps({"classes": CLASSES, "image_size": size, "preprocessing": PREPROCESSING,
                                              "last_conv_layer": "conv2"}))
    data = tmp_path / "phantoms"
    generate_dataset(data, n_per_class=1, size=size, seed=0)
    (data / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["explain", str(run), str(data / "COVID-19"), str(data / "Normal"),
                                   str(data / "broken.png"), "-m", "gradcam", "-m", "gradient", "-o", str(out)])
    assert res.exit_code == 1, res.output  # one input could not be read: named, not silently dropped
    assert "broken.png" in res.output and "wrote 5 figure(s)" in res.output
    df = pd.read_csv(out / "explain.csv")
    assert len(df) == 4 and set(df["method"]) == {"gradcam", "gradient"}
    assert set(df["label"]) == {"COVID-19", "Normal"}  # labels and masks found through manifest.csv
    assert df["lung_energy"].between(0, 1).all()
    assert df.loc[df["label"] == "COVID-19", "lesion_energy"].notna().all()
    assert df.loc[df["label"] == "Normal", "lesion_energy"].isna().all()
    assert (out / "gallery.png").is_file() and len(list(out.glob("*_gradcam.png"))) == 2
    res = CliRunner().invoke(app, ["explain", str(run), str(data / "Normal"), "-m", "lime", "-o", str(out)])
    assert res.exit_code == 2 and "unknown method" in res.output


def test_activation_shift_finds_the_removed_square():
    model = square_detector()
    imgs, masks = square_images(4, seed=3)
    plain = imgs.copy()
    plain[masks] = 50  # the squares removed: dark like the background
    shift = ablation.activation_shift(model, imgs, plain, ["detect", "pool"])
    assert sorted(shift) == ["detect", "pool"]
    assert all(m.shape == (4, S, S) and m.min() == 0.0 and m.max() == 1.0 for m in shift.values())
    np.testing.assert_array_equal(localisation.pointing_game(shift["detect"], masks), 1.0)
    np.testing.assert_allclose(localisation.energy_share(shift["detect"], masks), 1.0)  # the detector fires only there
    assert not ablation.activation_shift(model, imgs, imgs, ["detect"])["detect"].any()


@pytest.fixture(scope="module")
def twin_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    return root, phantoms.generate_dataset(root, n_per_class=2, size=64, seed=5)


def test_lesion_twins_reproduce_the_files_and_remove_only_the_lesions(twin_set):
    root, manifest = twin_set
    twins = ablation.lesion_twins(manifest, root, 64)
    assert twins.labels == ["COVID-19"] * 2 + ["Viral Pneumonia"] * 2  # Normal has no lesion to remove
    sick = manifest[manifest["label"] != "Normal"]["path"]
    np.testing.assert_array_equal(twins.with_lesions, np.stack([cv2.imread(str(root / p), 0) for p in sick]))
    assert not (twins.lesions & ~twins.lungs).any()
    diff = np.abs(twins.with_lesions.astype(np.float64) - twins.without)
    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0 for m in twins.lesions])
    assert (diff.sum(axis=(1, 2)) > 1000).all()  # the lesions are gone...
    assert ((diff * near).sum(axis=(1, 2)) / diff.sum(axis=(1, 2)) > 0.99).all()  # ...and nothing else changed


def test_lesion_twins_refuse_files_they_do_not_reproduce(twin_set, tmp_path):
    root, manifest = twin_set
    edited = tmp_path / "edited"
    shutil.copytree(root, edited)
    target = edited / manifest["path"].iloc[0]
    img = cv2.imread(str(target), 0)
    img[0, 0] ^= 1
    cv2.imwrite(str(target), img)
    with pytest.raises(DataError, match=re.escape(str(target))):
        ablation.lesion_twins(manifest, edited, 64)
    with pytest.raises(DataError, match="no lesion-bearing"):
        ablation.lesion_twins(manifest[manifest["label"] == "Normal"], root, 64)


def test_layer_study_table(twin_set):
    root, manifest = twin_set
    study = ablation.layer_study(tiny_cnn(64), ablation.lesion_twins(manifest, root, 64), ["conv1", "conv2"])
    assert study["layer"].tolist() == ["conv1", "conv2"] and study["grid"].tolist() == [64, 32]
    metrics = [f"{m}_{k}" for m in ("gradcam", "shift") for k in ("pointing", "lung_energy", "lesion_energy")]
    assert list(study.columns) == ["layer", "grid", "flip_rate", *metrics]
    assert study[metrics + ["flip_rate"]].apply(lambda c: c.between(0, 1)).all().all()
    # an untrained net's activations still change where the lesions were: the shift map points at them
    np.testing.assert_array_equal(study["shift_pointing"], 1.0)
