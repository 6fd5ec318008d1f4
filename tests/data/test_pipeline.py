"""Input pipeline: decode-once cache, tf.data equals eager, augmentation, class weights."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pandas as pd
import pytest

from covidxray.config import load_config
from covidxray.data import cache
from covidxray.data import pipeline as data
from covidxray.data.augment import Augmenter, make_augmenter


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(10):
        f = tmp_path / f"img{i}.png"
        cv2.imwrite(str(f), rng.integers(0, 256, (40 + i, 48), dtype=np.uint8))
        files.append(str(f))
    return files


def test_cache_matches_eager_loading_and_is_memory_mapped(images, tmp_path):
    arr = cache.build_cache(images, 32, root=tmp_path / "c", workers=2, chunk=3)
    assert isinstance(arr, np.memmap) and arr.shape == (10, 32, 32) and arr.dtype == np.uint8
    for i, f in enumerate(images):
        np.testing.assert_array_equal(arr[i], cache.load_for_model(f, 32))


def test_cache_reused_then_rebuilt_when_sources_or_size_change(images, tmp_path):
    root = tmp_path / "c"
    first = cache.build_cache(images, 32, root=root)
    again = cache.build_cache(images, 32, root=root)
    assert again.filename == first.filename
    assert cache.build_cache(images, 24, root=root).filename != first.filename
    cv2.imwrite(images[3], np.full((50, 50), 7, np.uint8) + np.eye(50, dtype=np.uint8))
    os.utime(images[3], ns=(1, 10**18))
    rebuilt = cache.build_cache(images, 32, root=root)
    assert rebuilt.filename != first.filename
    np.testing.assert_array_equal(rebuilt[3], cache.load_for_model(images[3], 32))
    assert len(list(root.iterdir())) == 3


def test_tf_data_gives_exactly_the_eager_pixels(images, tmp_path):
    arr = cache.build_cache(images, 32, root=tmp_path)
    labels = np.arange(10) % 3
    ds = data.make_dataset(arr, labels, 3, batch_size=4)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    eager = np.stack([cache.load_for_model(f, 32) for f in images])[..., None].astype(np.float32)
    np.testing.assert_array_equal(x, eager)
    np.testing.assert_array_equal(y.argmax(1), labels)


def test_model_preprocessing_same_eagerly_and_inside_tf_data(images, tmp_path):
    """big_vision's warning: the same preprocessing eagerly and in tf.data must agree."""
    import keras
    import tensorflow as tf

    from covidxray.models import build_model

    model, _ = build_model(["a", "b", "c"], "inceptionv3", 75, "none")
    pre = keras.Model(model.input, model.get_layer("preprocess_input").output)
    arr = cache.build_cache(images, 75, root=tmp_path)
    eager = pre(np.asarray(arr, np.float32)[..., None]).numpy()
    ds = data.make_dataset(arr, None, 3, batch_size=3).map(lambda x: pre(x))
    graph = np.concatenate([b.numpy() for b in ds])
    np.testing.assert_allclose(graph, eager, rtol=0, atol=1e-6)
    assert graph.min() >= -1.0 and graph.max() <= 1.0
    np.testing.assert_allclose(eager[..., 0], eager[..., 2])
    assert isinstance(ds, tf.data.Dataset)


def test_shuffle_changes_order_each_epoch_but_keeps_pairs(images, tmp_path):
    arr = cache.build_cache(images, 32, root=tmp_path)
    labels = np.arange(10) % 3
    ds = data.make_dataset(arr, labels, 3, batch_size=10, shuffle=True, seed=1)
    epochs = [next(iter(ds)) for _ in range(2)]
    means = {round(float(arr[i].mean()), 3): labels[i] for i in range(10)}
    for x, y in epochs:
        for img, lab in zip(x.numpy(), y.numpy(), strict=True):
            assert means[round(float(img.mean()), 3)] == lab.argmax()
    batches = [set(np.round(x.numpy().mean(axis=(1, 2, 3)), 3)) for x, _ in epochs]
    assert batches[0] == batches[1]


def test_augmentation_in_range_and_same_eagerly_and_inside_tf_data(images, tmp_path):
    aug = make_augmenter(load_config().augment, seed=0)
    assert aug.active and aug.geometric and not aug.horizontal_flip  # no flip by default
    arr = cache.build_cache(images, 32, root=tmp_path)
    ds = data.make_dataset(arr, np.zeros(10, int), 3, batch_size=10, augmenter=aug, seed=3)
    x = next(iter(ds))[0].numpy()
    assert x.shape == (10, 32, 32, 1) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255
    assert not np.allclose(x[..., 0], arr)
    # the draw depends on (augmenter seed, dataset seed, image indices) only: eager call == tf.data
    np.testing.assert_array_equal(x[..., 0], aug(np.asarray(arr), key=(3, *range(10))))
    assert not np.array_equal(x[..., 0], aug(np.asarray(arr), key=(4, *range(10))))
    off = make_augmenter({k: 0 for k in load_config().augment}, seed=0)
    assert not off.active
    np.testing.assert_array_equal(next(iter(data.make_dataset(arr, None, 3, 10, augmenter=off)))[..., 0], arr)


def test_class_weights_are_inverse_frequency():
    w = data.class_weights(np.array([0, 0, 0, 1]), 3)
    assert w == {0: pytest.approx(4 / 9), 1: pytest.approx(4 / 3), 2: 0.0}


def test_read_splits_rejects_unknown_labels(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("path,label,split\na.png,Tuberculosis,train\n")
    with pytest.raises(data.DataError, match=r"labels \['Tuberculosis'\] are not among"):
        data.read_splits(f, ["COVID-19", "Normal"])
    f.write_text("path,label,split\na.png,Normal,holdout\n")
    with pytest.raises(data.DataError, match="unknown split names"):
        data.read_splits(f, ["COVID-19", "Normal"])


def test_affine_identity_translation_and_range():
    x = np.zeros((8, 64, 64), np.uint8)
    x[:, 28:36, 28:36] = 255
    np.testing.assert_array_equal(Augmenter(seed=1)(x), x)
    shifted = Augmenter(translation=0.2, seed=2)(x)
    ys, xs = np.indices((64, 64))
    for img in shifted:
        cy, cx = (ys * img).sum() / img.sum(), (xs * img).sum() / img.sum()
        assert abs(cy - 31.5) <= 0.2 * 64 + 1 and abs(cx - 31.5) <= 0.2 * 64 + 1
    assert len({round(float((xs * i).sum() / i.sum()), 1) for i in shifted}) > 4  # shifts differ per image
    ramp = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    flipped = Augmenter(horizontal_flip=True, seed=0)(np.repeat(ramp[None], 16, 0))
    mirrored = [np.array_equal(f, ramp[:, ::-1]) for f in flipped]
    assert all(m or np.array_equal(f, ramp) for f, m in zip(flipped, mirrored, strict=True))  # exact mirror
    assert 0 < sum(mirrored) < 16


def test_warp_matches_keras_affine_transform():
    """Same inverse map and pixel-centre convention as keras.ops.image.affine_transform."""
    import keras

    rng = np.random.default_rng(0)
    x = cv2.GaussianBlur(rng.integers(0, 256, (6, 96, 96), dtype=np.uint8), (0, 0), 1.5)
    aug = Augmenter(rotation=10, translation=0.1, zoom=0.1, shear=0.1, seed=5)
    mats = aug.transforms(np.random.default_rng([5, 1]), 6, 96, 96)
    ours = aug(x, key=(1,))
    flat = np.concatenate([mats.reshape(6, 6), np.zeros((6, 2))], axis=1).astype(np.float32)
    ref = keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
        x[..., None].astype(np.float32), flat, interpolation="bilinear", fill_mode="constant"))[..., 0]
    inner = (slice(None), slice(20, 76), slice(20, 76))
    assert np.abs(ours - ref)[inner].mean() < 0.6 and np.abs(ours - ref)[inner].max() <= 3


def test_contrast_and_brightness_equal_keras_layers():
    """The lookup table reproduces RandomContrast then RandomBrightness for the same factors."""
    import keras

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5, 40, 40), dtype=np.uint8)
    aug = Augmenter(contrast=0.4, brightness=0.3, seed=9)
    c, d = aug.factors(np.random.default_rng([9, 7]), 5)
    ours = aug(x, key=(7,))
    xf = x[..., None].astype(np.float32)
    L = keras.layers
    ref = L.RandomContrast(0.4, value_range=(0, 255)).transform_images(
        xf, {"contrast_factor": c.reshape(5, 1, 1, 1).astype(np.float32)})
    ref = L.RandomBrightness(0.3, value_range=(0, 255)).transform_images(
        ref, {"rgb_delta": (d.reshape(5, 1, 1, 1)).astype(np.float32)})
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(ref)[..., 0], atol=1e-3)
    assert len(set(np.round(c, 3))) == 5 and np.abs(d).max() <= 0.3 * 255


def test_one_resample_keeps_more_detail_than_chained_keras_layers():
    """Four Keras geometric layers resample four times; the augmenter once (same ranges)."""
    import keras

    rng = np.random.default_rng(0)
    x = np.repeat(rng.integers(0, 256, (1, 64, 64), dtype=np.uint8), 16, axis=0)
    L = keras.layers
    chain = keras.Sequential([L.RandomRotation(5 / 360, seed=1), L.RandomTranslation(0.05, 0.05, seed=2),
                              L.RandomZoom(0.05, seed=3), L.RandomShear(0.03, 0.03, seed=4)])

    def detail(batch):
        return float(np.abs(cv2.Laplacian(np.asarray(batch, np.float32)[:, 16:48, 16:48].transpose(1, 2, 0),
                                          cv2.CV_32F)).mean())

    ours = detail(Augmenter(rotation=5, translation=0.05, zoom=0.05, shear=0.03, seed=1)(x))
    keras_chain = detail(chain(x[..., None].astype(np.float32), training=True).numpy()[..., 0])
    assert ours > 1.2 * keras_chain


# --- issue 11 -------------------------------------------------------------------------------------


def _user_splits(tmp_path):
    """A user splits CSV over 12 noise PNGs whose own sha1/phash columns are stale."""
    import shutil

    from fixtures_images import write_class_folders

    root = write_class_folders(tmp_path / "data", 3)
    paths = sorted(root.rglob("*.png"))
    df = pd.DataFrame({"path": [str(p.relative_to(tmp_path)) for p in paths],
                       "label": [p.parent.name for p in paths], "split": ["train", "val", "test"] * 3})
    shutil.copy(paths[0], root / "COVID-19" / "copy.png")  # an exact copy of a train image, in test
    df.loc[len(df)] = ["data/COVID-19/copy.png", "COVID-19", "test"]
    df["sha1"] = [f"{i:040x}" for i in range(len(df))]
    df["phash"] = [f"{i:064x}" for i in range(len(df))]
    df.to_csv(tmp_path / "splits.csv", index=False)
    return tmp_path / "splits.csv"


def test_prepare_splits_refuses_a_leaking_user_splits_file(tmp_path):
    """Item 8: a splits file given to `train --data` is leakage-checked with hashes recomputed."""
    from covidxray.config import load_config

    csv = _user_splits(tmp_path)
    with pytest.raises(data.DataError, match=r"splits leak .*exact duplicate sha1 \w+ in test, train: .*covid-19-000.png, .*copy.png"):
        data.prepare_splits(load_config(), csv, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run" / "splits.csv").exists()
    df = pd.read_csv(csv)
    df[df["path"] != "data/COVID-19/copy.png"].to_csv(csv, index=False)  # without the copy: accepted
    out = data.prepare_splits(load_config(), csv, tmp_path / "run", log=lambda *_: None)
    assert len(out) == 9 and (tmp_path / "run" / "splits.csv.meta.json").is_file()


def test_read_splits_refuses_a_truncated_splits_file(tmp_path):
    """Item 3: rows missing against the sidecar, a short row, or an empty split are refused."""
    from covidxray.data.tables import write_table

    df = pd.DataFrame({"path": [f"{i}.png" for i in range(6)], "label": "Normal",
                       "split": ["train", "val", "test"] * 2})
    f = write_table(df, tmp_path / "s.csv", "covidxray split")
    lines = f.read_text().splitlines(keepends=True)
    f.write_text("".join(lines[:4]))
    with pytest.raises(data.DataError, match="3 rows but covidxray split wrote 6"):
        data.read_splits(f, ["Normal"])
    (tmp_path / "s.csv.meta.json").unlink()
    f.write_text("".join(lines[:4]) + "4.png,Normal\n")
    with pytest.raises(data.DataError, match="row 4 has 2 of 3 fields"):
        data.read_splits(f, ["Normal"])
    f.write_text("".join(lines[:4]) + "4.png,Normal,\n")
    with pytest.raises(data.DataError, match="empty 'split'"):
        data.read_splits(f, ["Normal"])


def test_prepare_splits_warns_about_val_0_and_a_tiny_train_split(tmp_path):
    from covidxray.config import load_config
    from fixtures_images import write_class_folders

    root = write_class_folders(tmp_path / "data", 3)
    logged: list[str] = []
    cfg = load_config([], ["data.val=0", "data.test=0.3", "data.workers=1"])
    data.prepare_splits(cfg, root, tmp_path / "run", log=logged.append)
    warnings = [m for m in logged if m.startswith("warning:")]
    assert any("val fraction is 0" in w for w in warnings)
    assert any("the train split has only 6 image(s)" in w for w in warnings)
