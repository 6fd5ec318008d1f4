"""Acquisition augmentation: off by default, each step changes what it should and nothing else."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from covidxray.config import load_config
from covidxray.data import acquisition
from covidxray.data.augment import Augmenter, make_augmenter
from covidxray.errors import ConfigError

S = 96


def images(n: int = 4) -> np.ndarray:
    """Textured mid-gray images (a smooth gradient plus fine detail)."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(60, 190, S)[None, :] + np.linspace(-20, 20, S)[:, None]
    detail = rng.normal(0, 12, (n, S, S))
    return np.clip(ramp + detail, 0, 255).astype(np.uint8)


def only(step: str, lo: float, hi: float) -> acquisition.Acquisition:
    cfg = load_config([], [f"augment.{step}_p=1.0", f"augment.{acquisition.RANGE_KEYS[step][0]}=[{lo}, {hi}]"])
    return acquisition.make_acquisition(cfg.augment)


def sharpness(x: np.ndarray) -> float:
    return float(np.mean([cv2.Laplacian(i, cv2.CV_64F).var() for i in x]))


def test_off_by_default_and_the_augmenter_draws_as_before():
    cfg = load_config([])
    assert not acquisition.make_acquisition(cfg.augment).active
    x = images()
    plain = Augmenter(rotation=10, translation=0.06, zoom=0.1, shear=0.05, contrast=0.2, brightness=0.1, seed=42)
    np.testing.assert_array_equal(make_augmenter(cfg.augment, 42)(x, key=(1, 2)), plain(x, key=(1, 2)))
    assert make_augmenter(load_config([], ["augment.rotation=0", "augment.translation=0", "augment.zoom=0",
                                           "augment.shear=0", "augment.contrast=0", "augment.brightness=0",
                                           "augment.jpeg_p=1.0"]).augment, 0).active


def test_photometric_steps():
    x, rng = images(), np.random.default_rng(0)
    dark = only("gamma", 2.0, 2.0)(x, rng)
    assert dark.mean() < x.mean() - 20
    flat_x, flat_d = x.ravel().astype(int), dark.ravel().astype(int)
    order = np.argsort(flat_x, kind="stable")
    assert (np.diff(flat_d[order]) >= 0).all()  # a monotone map of the gray levels
    assert sharpness(only("blur", 1.5, 1.5)(x, rng)) < 0.3 * sharpness(x)
    assert sharpness(only("sharpen", 1.5, 1.5)(x, rng)) > 1.5 * sharpness(x)
    assert sharpness(only("resample", 0.4, 0.4)(x, rng)) < 0.5 * sharpness(x)
    noisy = only("noise", 8.0, 8.0)(x, rng).astype(float)
    assert (noisy - x).std() == pytest.approx(8.0, rel=0.1)
    bad, good = only("jpeg", 5, 5)(x, rng).astype(float), only("jpeg", 95, 95)(x, rng).astype(float)
    assert np.abs(good - x).mean() < np.abs(bad - x).mean()
    assert np.abs(bad - x).mean() > 2


def test_border_frames_edges_and_keeps_the_middle():
    x = images(8)
    out = only("border", 0.1, 0.1)(x, np.random.default_rng(1))
    n = round(0.1 * S)
    for a, b in zip(out, x, strict=True):
        edges = [a[:n], a[-n:], a[:, :n], a[:, -n:]]
        framed = [e for e in edges if (e == e.flat[0]).all() and e.flat[0] in (0, 255)]
        assert framed
        np.testing.assert_array_equal(a[n:-n, n:-n], b[n:-n, n:-n])
    values = {int(a[:n].flat[0]) for a in out if (a[:n] == a[:n].flat[0]).all()}
    assert values <= {0, 255}


def test_text_marker_is_bright_and_near_an_edge():
    x = np.full((6, S, S), 100, np.uint8)
    out = only("text", 0.4, 0.6)(x, np.random.default_rng(2))
    for a in out:
        changed = a != 100
        assert changed.sum() > 20
        rows = np.flatnonzero(changed.any(axis=1))
        assert rows.max() < S // 4 or rows.min() > S - S // 4 - 2
        assert a[changed].max() >= 200


def test_same_key_same_images_and_config_ranges_are_checked():
    aug = make_augmenter(load_config([], [f"augment.{s}_p=0.5" for s in acquisition.STEPS]).augment, 5)
    x = images()
    np.testing.assert_array_equal(aug(x, key=(3, 4)), aug(x, key=(3, 4)))
    assert not np.array_equal(aug(x, key=(3, 4)), aug(x, key=(3, 5)))
    for bad, match in (("augment.jpeg_p=1.5", "jpeg_p"), ("augment.gamma=[2.0, 1.0]", "augment.gamma"),
                       ("augment.border_width=[0.1, 0.6]", "border_width")):
        with pytest.raises(ConfigError, match=match):
            load_config([], [bad])
