"""Attribution prior: the loss term's value, the training wrapper, and what is saved."""

from __future__ import annotations

import numpy as np
import pytest


def test_outside_share_is_zero_with_a_full_mask_and_positive_otherwise():
    from covidxray.training.prior import outside_share
    from helpers_runs import tiny_cnn

    model = tiny_cnn(32)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (4, 32, 32, 1)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    full = np.ones((4, 32, 32), np.float32)
    share, _ = outside_share(model, x, y, full)
    np.testing.assert_allclose(share.numpy(), 0.0, atol=1e-7)
    half = full.copy()
    half[:, :, 16:] = 0
    share, _ = outside_share(model, x, y, half)
    assert (share.numpy() > 0.05).all() and (share.numpy() < 1).all()
    none = np.zeros_like(full)
    np.testing.assert_allclose(outside_share(model, x, y, none)[0].numpy(), 1.0, atol=1e-5)


def test_prior_trainer_fits_on_masked_batches_and_saves_the_plain_model(tmp_path):
    import keras

    from covidxray.data import pipeline as data
    from covidxray.data.augment import Augmenter
    from covidxray.training.checkpoints import save_weights_atomic
    from covidxray.training.prior import PriorTrainer
    from helpers_runs import tiny_cnn

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (16, 32, 32)).astype(np.uint8)
    labels = rng.integers(0, 3, 16)
    masks = np.zeros((16, 32, 32), bool)
    masks[:, 8:24, 4:28] = True
    aug = Augmenter(rotation=10, translation=0.1, seed=3)
    ds = data.make_dataset(images, labels, 3, 8, shuffle=True, augmenter=aug, seed=2, masks=masks)
    (x, y) = next(iter(ds))
    assert set(x) == {"image", "lungs"} and x["lungs"].shape == (8, 32, 32)
    assert 0 < float(x["lungs"].numpy().mean()) < masks.mean() + 0.05  # warped with the image
    inner = tiny_cnn(32)
    before = [w.copy() for w in inner.get_weights()]
    lam_runs = {}
    for lam in (0.0, 5.0):
        inner.set_weights(before)
        keras.utils.set_random_seed(0)
        wrapper = PriorTrainer(inner, lam)
        wrapper.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        val = data.make_dataset(images, labels, 3, 8)
        hist = wrapper.fit(ds, validation_data=val, epochs=1, verbose=0).history
        assert {"loss", "accuracy", "prior", "val_loss"} <= set(hist) and "val_prior" not in hist
        lam_runs[lam] = hist
    # same batches and weights: the loss differs by lambda x prior (up to the first step's update)
    assert lam_runs[5.0]["loss"][0] > lam_runs[0.0]["loss"][0] + 0.5 * 5.0 * lam_runs[5.0]["prior"][0]
    save_weights_atomic(wrapper, tmp_path / "w.weights.h5")
    fresh = tiny_cnn(32, seed=9)
    fresh.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(fresh.get_weights(), inner.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    inner.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras", compile=False).name == "tiny"


def test_prior_is_zero_by_default_and_range_checked():
    from covidxray.config import load_config
    from covidxray.errors import ConfigError

    assert load_config([]).train.attribution_prior == 0.0
    with pytest.raises(ConfigError, match="attribution_prior"):
        load_config([], ["train.attribution_prior=-1"])


def test_the_prior_moves_input_gradient_energy_into_the_lungs():
    """A cue outside the 'lungs' and one inside, both telling the class: trained with the prior, the
    model's input gradient puts less of its energy outside (measured 0.59 -> 0.44 at lambda 10)."""
    import keras

    from covidxray.data import pipeline as data
    from covidxray.training.prior import PriorTrainer, outside_share
    from helpers_runs import tiny_cnn

    rng = np.random.default_rng(0)
    n, s = 96, 32
    labels = np.arange(n) % 3
    images = rng.integers(60, 90, (n, s, s)).astype(np.uint8)
    for i, c in enumerate(labels):  # class cue: the brightness of a square outside the lungs and of one inside
        images[i, 2:8, 4:28] = 130 + 60 * c
        images[i, 16:24, 10:22] = 130 + 60 * c
    masks = np.zeros((n, s, s), bool)
    masks[:, 12:30, 6:26] = True
    y = np.eye(3, dtype=np.float32)[labels]
    shares = {}
    for lam in (0.0, 10.0):
        inner = tiny_cnn(s)
        wrapper = PriorTrainer(inner, lam)
        wrapper.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
        wrapper.fit(data.make_dataset(images, labels, 3, 16, shuffle=True, seed=1, masks=masks), epochs=30, verbose=0)
        share, probs = outside_share(inner, images[..., None].astype(np.float32), y, masks)
        shares[lam] = float(np.mean(share))
        assert (probs.numpy().argmax(axis=1) == labels).mean() > 0.9  # both learn the task
    assert shares[10.0] < shares[0.0] - 0.1, shares
