"""The explanation methods (through the registry's explain) on tiny models: shapes, targets, references."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from covidxray.explain import (  # noqa: E402
    activations,
    core,
    localisation,
    randomization,
    registry,
)
from helpers_runs import CLASSES, S, square_detector, square_images  # noqa: E402

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
