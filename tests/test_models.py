"""Model building: flat backbone, preprocessing inside the model, weights sources, freezing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from covidxray import models
from covidxray.errors import WeightsError

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def inception75():
    model, source = models.build_model(CLASSES, "inceptionv3", 75, "none")
    return model, source


def test_inception_is_flat_with_cam_layer(inception75):
    model, source = inception75
    assert source.startswith("none")
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "backbone must not be nested"
    assert model.get_layer("mixed10") is not None
    assert models.last_conv_layer(model, "inceptionv3") == "mixed10"
    assert model.input_shape == (None, 75, 75, 1) and model.output_shape == (None, 3)


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_preprocessing_layers_match_keras_preprocess_input(name):
    entry = models.get_backbone(name)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Concatenate()([inp, inp, inp])
    x = keras.layers.Rescaling(list(entry.scale), list(entry.offset))(x)
    ours = keras.Model(inp, x)
    gray = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    reference = np.asarray(entry.preprocess_input(np.repeat(gray, 3, axis=-1).copy()))
    np.testing.assert_allclose(ours.predict(gray, verbose=0), reference, rtol=1e-5, atol=1e-4)


def test_raw_pixels_in_probabilities_out(inception75):
    model, _ = inception75
    x = np.random.default_rng(1).uniform(0, 255, (2, 75, 75, 1)).astype("float32")
    p = model.predict(x, verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_set_trainable_stage2_unfreezes_top_blocks_but_not_batchnorm(inception75):
    model, _ = inception75
    models.set_trainable(model, "inceptionv3", 2)
    names = [layer.name for layer in model.layers]
    top = model.layers[names.index("mixed8") + 1 : names.index("gap")]
    below = model.layers[: names.index("mixed8") + 1]
    assert all(not layer.trainable for layer in below)
    assert any(layer.trainable and layer.weights for layer in top)
    assert all(not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))
    assert all(layer.trainable for layer in models.head_layers(model))
    models.set_trainable(model, "inceptionv3", -1)
    assert all(layer.trainable for layer in model.layers)


def test_frozen_weights_stay_frozen_through_training():
    """keras-io transfer_learning check: a fit step changes the head and nothing frozen."""
    model, _ = models.build_model(CLASSES, "inceptionv3", 75, "none")
    models.set_trainable(model, "inceptionv3", 1)
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    frozen = {w.path: w.numpy().copy() for w in model.non_trainable_weights}
    head = {w.path: w.numpy().copy() for w in models.head_layers(model)[-1].weights}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 75, 75, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 8), 3)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for w in model.non_trainable_weights:
        np.testing.assert_array_equal(w.numpy(), frozen[w.path], err_msg=w.path)
    assert any(not np.allclose(w.numpy(), head[w.path]) for w in models.head_layers(model)[-1].weights)


def test_weights_file_loads_exactly(tmp_path):
    src = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    path = tmp_path / "inception_notop.weights.h5"
    src.save_weights(path)
    model, source = models.build_model(CLASSES, "inceptionv3", 75, str(path))
    assert source == f"file {path.resolve()}"
    ours = [w.numpy() for layer in model.layers if layer.name.startswith(("conv2d", "batch_norm"))
            for w in layer.weights]
    theirs = [w.numpy() for layer in src.layers if layer.name.startswith(("conv2d", "batch_norm"))
              for w in layer.weights]
    assert len(ours) == len(theirs) > 300
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_weights_file_errors_are_clear(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        models.build_model(CLASSES, "inceptionv3", 75, str(tmp_path / "missing.h5"))
    other = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(75, 75, 3))
    bad = tmp_path / "mobilenet.weights.h5"
    other.save_weights(bad)
    with pytest.raises(WeightsError, match="does not fit inceptionv3"):
        models.build_model(CLASSES, "inceptionv3", 75, str(bad))


def _offline(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                    "[Errno -3] Temporary failure in name resolution")


def test_imagenet_offline_names_the_way_out(monkeypatch):
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", _offline)
    with pytest.raises(WeightsError, match=r"--weights PATH") as err:
        models.build_model(CLASSES, "inceptionv3", 75, "imagenet")
    assert "Temporary failure in name resolution" in str(err.value)


def test_auto_falls_back_to_scratch_with_visible_warning(monkeypatch):
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", _offline)
    with pytest.warns(UserWarning, match="FROM SCRATCH"):
        _, source = models.build_model(CLASSES, "inceptionv3", 75, "auto")
    assert source == "none (auto: imagenet unavailable)"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        models.get_backbone("vgg")
    with pytest.raises(ValueError, match="image_size >= 75"):
        models.build_model(CLASSES, "inceptionv3", 64, "none")
