"""Image corruptions: shapes, dtype, determinism, severity 0 = identity, monotone damage, parameters."""

from __future__ import annotations

import numpy as np
import pytest

from covidxray.data.phantoms import make_phantom
from covidxray.robustness.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    contrast,
    corrupt,
    gaussian_blur,
    gaussian_noise,
    resample,
    rotation,
    translation,
)

NAMES = list(CORRUPTIONS)
SEEDED = [n for n, c in CORRUPTIONS.items() if c.seeded]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four 96 px phantoms, one with a burned-in marker (real structure: edges, texture, text)."""
    labels = ("COVID-19", "Normal", "Viral Pneumonia", "Normal")
    return np.stack([make_phantom(np.random.default_rng(i), label, 96, marker=i == 3).image
                     for i, label in enumerate(labels)])


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b) ** 2).mean())


def test_registry_has_the_eight_corruptions_at_five_severities():
    assert NAMES == ["gaussian_noise", "gaussian_blur", "contrast", "gamma", "rotation", "translation", "jpeg",
                     "resample"]
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert all(len(c.values) == 5 for c in CORRUPTIONS.values())


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_identity_at_severity_zero(images, name):
    for sev in range(6):
        out = corrupt(images, name, sev, seed=1)
        assert out.shape == images.shape and out.dtype == np.uint8
        single = corrupt(images[0], name, sev, seed=1)
        assert single.shape == images.shape[1:] and single.dtype == np.uint8
        np.testing.assert_array_equal(single, out[0])  # a single image is the first of a batch
    same = corrupt(images, name, 0)
    np.testing.assert_array_equal(same, images)
    assert same is not images and not np.shares_memory(same, images)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(images, name):
    np.testing.assert_array_equal(corrupt(images, name, 3, seed=5), corrupt(images, name, 3, seed=5))
    if name in SEEDED:
        assert not np.array_equal(corrupt(images, name, 3, seed=5), corrupt(images, name, 3, seed=6))


@pytest.mark.parametrize("name", NAMES)
def test_damage_grows_with_severity(images, name):
    errors = [mse(corrupt(images, name, sev, seed=2), images) for sev in range(6)]
    assert errors[0] == 0.0
    assert all(b > a for a, b in zip(errors, errors[1:], strict=False)), errors


def test_noise_sigma_in_grey_levels():
    flat = np.full((4, 128, 128), 128, np.uint8)
    assert np.std(corrupt(flat, "gaussian_noise", 5).astype(float) - 128) == pytest.approx(20, rel=0.03)
    assert np.std(gaussian_noise(flat, 4.0).astype(float) - 128) == pytest.approx(4, rel=0.05)


def test_contrast_scales_deviations_around_the_mean(images):
    out = contrast(images, 0.4)
    for a, b in zip(images, out, strict=True):
        assert b.std() == pytest.approx(0.4 * a.std(), rel=0.02)
        assert b.mean() == pytest.approx(a.mean(), abs=0.6)


def test_blur_and_resample_keep_flat_images_and_blur_scales_with_size(images):
    flat = np.full((2, 64, 64), 90, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 2.0), flat)
    np.testing.assert_array_equal(resample(flat, 0.25), flat)
    # severity 5 is sigma 2 px at 256 px, so 0.75 px at 96 px
    np.testing.assert_array_equal(corrupt(images, "gaussian_blur", 5), gaussian_blur(images, 2.0 * 96 / 256))


def test_geometric_corruptions_fill_black_and_keep_the_centre():
    flat = np.full((8, 100, 100), 200, np.uint8)
    rotated = rotation(flat, 15.0, seed=0)
    shifted = translation(flat, 0.10, seed=0)
    assert (rotated[:, 0, 0] == 0).all() and (rotated[:, 50, 50] == 200).all()
    # a 10% shift uncovers a band of ~10 px along the shift direction: 10-19% of the area turns black
    black = (shifted == 0).mean(axis=(1, 2))
    assert ((black > 0.08) & (black < 0.2)).all()


def test_bad_input_is_refused_with_a_clear_message(images):
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        corrupt(images, "snow", 1)
    with pytest.raises(ValueError, match="severity must be 0..5"):
        corrupt(images, "jpeg", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(images.astype(np.float32), "jpeg", 1)
