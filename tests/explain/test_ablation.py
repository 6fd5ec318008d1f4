"""Lesion ablation on phantoms: lesion twins, activation shift, the layer study."""

from __future__ import annotations

import os
import re
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from covidxray.data import phantoms  # noqa: E402
from covidxray.data.pipeline import DataError  # noqa: E402
from covidxray.explain import (  # noqa: E402
    ablation,
    localisation,
)
from helpers_runs import S, square_detector, square_images, tiny_cnn  # noqa: E402


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
