"""The U-Net builds at several sizes and a few training steps on phantoms reduce its loss."""

from __future__ import annotations

import numpy as np
import pytest

from covidxray.lungs.augment import augment_pair
from covidxray.lungs.data import heldout_patients, phantom_set
from covidxray.lungs.train import LungsTrainConfig, fit
from covidxray.lungs.unet import build_unet, dice_bce_loss


def test_unet_shapes_and_rescaling_inside():
    model = build_unet(64, 4, 3)
    assert model.input_shape == (None, 64, 64, 1) and model.output_shape == (None, 64, 64, 1)
    assert model.layers[1].name == "rescale"
    out = np.asarray(model.predict_on_batch(np.full((2, 64, 64, 1), 255.0, np.float32)))
    assert ((out > 0) & (out < 1)).all()
    with pytest.raises(ValueError):
        build_unet(60, 4, 3)


def test_few_steps_reduce_the_loss_on_phantoms():
    images, masks = phantom_set(12, 64, seed=3)
    x, y = images[..., None].astype(np.float32), masks[..., None].astype(np.float32)
    model = build_unet(64, 4, 2)

    def loss() -> float:  # batch statistics (training mode): moving averages lag after a few steps
        return float(np.asarray(dice_bce_loss(y, model(x, training=True))))

    before = loss()
    cfg = LungsTrainConfig(size=64, epochs=3, steps=4, batch_size=8, base_filters=4, depth=2, lr=5e-3, seed=1)
    history = fit(model, [(images, masks)], [1.0], cfg, log=lambda _: None)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert loss() < before - 0.1


def test_augment_pair_keeps_mask_aligned_and_sizes():
    images, masks = phantom_set(3, 128, seed=5)
    rng = np.random.default_rng(0)
    for i in range(3):
        img, msk = augment_pair(rng, images[i], masks[i], 64)
        assert img.shape == msk.shape == (64, 64) and img.dtype == np.uint8 and msk.dtype == bool
        assert 0.02 < msk.mean() < 0.6


def test_heldout_patients_groups_and_is_seeded():
    ids = [f"p{i // 2}" for i in range(40)]  # 20 patients, 2 films each
    held = heldout_patients(ids, 0.2, seed=1)
    assert len(held) == 4 and held == heldout_patients(ids, 0.2, seed=1)
    assert held != heldout_patients(ids, 0.2, seed=2)
