"""The checks of the maps: localisation, faithfulness, randomisation, cost."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from covidxray.explain import (  # noqa: E402
    core,
    cost,
    faithfulness,
    localisation,
    randomization,
    registry,
)
from helpers_runs import S, square_detector, square_images  # noqa: E402


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
