"""Input transforms against shortcuts (data.normalize, data.lung_field): what each changes, the cache,
the config checks, and predict applying a run's own settings."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from covidxray.config import load_config
from covidxray.data import cache, inputs, lungsource
from covidxray.errors import ConfigError
from covidxray.runinfo import file_sha256

S = 64


def low_contrast(n: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth images whose gray levels all lie in 100-140."""
    rng = np.random.default_rng(seed)
    x = rng.integers(100, 141, (n, S, S)).astype(np.uint8)
    return np.stack([cv2.GaussianBlur(i, (5, 5), 0) for i in x])


class BoxSegmenter:
    """A stand-in lung segmenter: its file holds a box (fractions of the side) that it predicts for every image."""

    def __init__(self, path):
        self.box = json.loads(open(path).read())["box"]
        self.sha256 = file_sha256(path)
        self.metrics = {"dice": 0.9}

    def predict(self, images):
        n, h, w = images.shape
        r0, r1, c0, c1 = self.box
        out = np.zeros((n, h, w), bool)
        out[:, int(r0 * h):int(r1 * h), int(c0 * w):int(c1 * w)] = True
        return out


@pytest.fixture
def box_segmenter(tmp_path, monkeypatch):
    """A segmenter file predicting rows/cols 25%-75%, with the loader pointed at BoxSegmenter."""
    path = tmp_path / "lungs.keras"
    path.write_text(json.dumps({"box": [0.25, 0.75, 0.25, 0.75]}))
    monkeypatch.setattr(lungsource, "read_segmenter", BoxSegmenter)
    return path


def test_equalize_flattens_the_histogram_and_clahe_stretches_local_contrast():
    x = low_contrast(1)
    eq, _ = inputs.apply(x, inputs.InputSpec(normalize="equalize"))
    assert x.min() >= 100 and x.max() <= 140
    assert eq.min() == 0 and eq.max() == 255
    # a flat histogram: at each output level v, the share of pixels <= v is v/255 (to the lowest bin's share)
    levels = np.unique(eq)
    cdf = np.searchsorted(np.sort(eq.ravel()), levels, side="right") / eq.size
    assert len(levels) > 10 and np.abs(cdf - levels / 255).max() < 0.03
    assert np.array_equal(eq[0], cv2.equalizeHist(x[0]))
    mild, _ = inputs.apply(x, inputs.InputSpec(normalize="clahe", clahe_clip=1.0))
    strong, _ = inputs.apply(x, inputs.InputSpec(normalize="clahe", clahe_clip=8.0))
    assert x.std() < mild.std() < strong.std()
    assert np.array_equal(strong[0], cv2.createCLAHE(8.0, (8, 8)).apply(x[0]))
    same, _ = inputs.apply(x, inputs.InputSpec())
    assert np.array_equal(same, x)


def test_crop_keeps_only_the_lung_box_resized_back():
    x = low_contrast(2)
    x[:, :4, :4] = 255  # a corner marker outside the lungs
    lungs = np.zeros_like(x, bool)
    lungs[:, 20:40, 16:48] = True
    spec = inputs.InputSpec(lung_field="crop", lung_margin=0.0625)  # 4 px at 64
    out, (moved,) = inputs.apply(x, spec, lungs, extra=(lungs,))
    box = inputs.lung_box(lungs[0], 0.0625)
    assert box == (16, 44, 12, 52)
    expected = cv2.resize(np.ascontiguousarray(x[0, 16:44, 12:52]), (S, S), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[0], expected)
    assert out.max() < 200  # the marker is gone
    # the lung mask follows the crop: it fills the box minus the margin
    assert moved[0].mean() == pytest.approx((20 * 32) / (28 * 40), abs=0.06)
    empty = inputs.apply(x, spec, np.zeros_like(lungs))[0]
    assert np.array_equal(empty, x)  # no lungs found: nothing cut


def test_mask_zeroes_outside_the_dilated_lungs_only():
    x = low_contrast(1)
    lungs = np.zeros_like(x, bool)
    lungs[:, 20:40, 20:40] = True
    out, _ = inputs.apply(x, inputs.InputSpec(lung_field="mask", lung_margin=0.0625), lungs)
    grown = inputs.dilate(lungs[0], 0.0625)
    assert grown.sum() > lungs.sum()
    assert (out[0][~grown] == 0).all()
    assert np.array_equal(out[0][grown], x[0][grown])


def test_transformed_cache_has_its_own_key_and_equals_the_transform(tmp_path, phantom_dir):
    files = sorted(str(p) for p in (phantom_dir / "COVID-19").glob("*.png"))[:4]
    base = cache.build_cache(files, S, tmp_path)
    plain = inputs.ModelInputs()
    assert plain.cached(base) is base
    clahe = inputs.ModelInputs(inputs.InputSpec(normalize="clahe"))
    eq = inputs.ModelInputs(inputs.InputSpec(normalize="equalize"))
    a, b = clahe.cached(base), eq.cached(base)
    assert len({base.filename, a.filename, b.filename}) == 3
    assert np.array_equal(a, clahe(np.asarray(base)))
    assert not np.array_equal(a, base) and not np.array_equal(a, b)
    assert cache.build_cache(files, S, tmp_path).filename == base.filename  # the plain cache is untouched


def test_config_checks_the_choices_and_old_runs_read_as_none():
    for bad in ("data.lung_field=foo", "data.normalize=histeq", "data.lung_margin=0.7", "data.clahe_clip=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config([], [bad])
    spec = inputs.InputSpec.from_meta({"classes": ["a"], "image_size": 64})
    assert spec == inputs.InputSpec() and spec.identity
    assert inputs.for_run({"image_size": 64}).identity
    with pytest.raises(ConfigError, match="unknown"):
        inputs.InputSpec.from_meta({"mitigations": {"input": {"normalise": "clahe"}}})


def test_predict_applies_the_runs_own_crop(tmp_path, phantom_dir, box_segmenter):
    from covidxray.data.cache import PREPROCESSING
    from covidxray.evaluation.calibration import Calibration
    from covidxray.evaluation.predict import predict
    from helpers_runs import CLASSES, tiny_cnn

    run = tmp_path / "run"
    run.mkdir()
    size = 32
    model = tiny_cnn(size)
    model.save(run / "model.keras")
    cfg = load_config([], [f"data.lung_weights={box_segmenter}", "data.lung_field=crop", "data.normalize=clahe"])
    seg, record = lungsource.install(cfg, run, log=lambda *_: None)
    assert record["sha256"] == file_sha256(run / "lungs.keras") and record["dice"] == 0.9
    spec = inputs.for_config(cfg, seg).spec
    meta = {"classes": CLASSES, "positive_class": CLASSES[0], "image_size": size, "preprocessing": PREPROCESSING,
            "mitigations": {"input": spec.to_dict(), "lung_segmenter": record}}
    (run / "run.json").write_text(json.dumps(meta))
    Calibration(1.0, None, CLASSES[0], None, 0.0, 0.0, "val", 1).save(run / "calibration.json")
    files = sorted((phantom_dir / "Normal").glob("*.png"))[:3]
    out = predict(run, files, tmp_path / "p.csv", log=lambda *_: None)
    raw = np.stack([cache.load_for_model(f, size) for f in files])
    box = inputs.lung_box(seg.predict(raw)[0], spec.lung_margin)
    direct = np.stack([cv2.createCLAHE(2.0, (8, 8)).apply(inputs.crop_box(r, box)) for r in raw])
    want = model.predict(direct[..., None].astype(np.float32), verbose=0)
    got = out[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(got, want / want.sum(1, keepdims=True), atol=1e-5)
    unmodified = model.predict(raw[..., None].astype(np.float32), verbose=0)
    assert np.abs(got - unmodified).max() > 1e-4  # the transform did change what the model saw
    (run / "lungs.keras").write_text(json.dumps({"box": [0.0, 1.0, 0.0, 1.0]}))
    with pytest.raises(lungsource.RunError, match="sha256"):
        predict(run, files, tmp_path / "q.csv", log=lambda *_: None)


def test_training_pins_the_segmenter_and_its_masks_key_the_cache(tmp_path, phantom_dir, box_segmenter):
    from covidxray.training.mitigations import prepare_inputs

    files = sorted(str(p) for p in (phantom_dir / "Normal").glob("*.png"))[:3]
    base = cache.build_cache(files, S, tmp_path / "c")
    cfg = load_config([], [f"data.lung_weights={box_segmenter}", "data.lung_field=mask"])
    run = tmp_path / "run"
    model_inputs, record = prepare_inputs(cfg, run, log=lambda *_: None)
    assert (run / "lungs.keras").read_bytes() == box_segmenter.read_bytes()
    seg = record["lung_segmenter"]
    assert seg["sha256"] == record["input"]["segmenter_sha256"] == file_sha256(box_segmenter)
    assert seg["dice"] == 0.9
    a = model_inputs.cached(base)
    assert (a[:, :S // 4 - 4] == 0).all()  # outside the box grown by the 5% margin (3 px)
    assert (a[:, S // 2, S // 2] == base[:, S // 2, S // 2]).all()
    other = tmp_path / "other.keras"
    other.write_text(json.dumps({"box": [0.1, 0.9, 0.1, 0.9]}))
    b = prepare_inputs(load_config([], [f"data.lung_weights={other}", "data.lung_field=mask"]),
                       tmp_path / "run2", log=lambda *_: None)[0].cached(base)
    assert a.filename != b.filename and not np.array_equal(a, b)
    with pytest.raises(lungsource.RunError, match="not found"):
        prepare_inputs(load_config([], [f"data.lung_weights={tmp_path / 'none.keras'}", "data.lung_field=crop"]),
                       tmp_path / "run3")
