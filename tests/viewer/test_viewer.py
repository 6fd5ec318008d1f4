"""The viewer's functions without a browser: bad uploads, input warnings, the default method, no retracing."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
from PIL import Image

import fixtures_images as fx
from covidxray.data.imageio import ImageReadError, read_image
from covidxray.explain.registry import METHODS, NAMES
from covidxray.viewer import app, card, choice
from covidxray.viewer.inputs import Reference, Upload, input_warnings, read_upload

BAD = {"text.png": fx.write_text_as_png, "truncated.png": fx.write_truncated_png, "tiny.png": fx.write_tiny,
       "empty.dcm": fx.write_dicom_no_pixels, "zero.png": fx.write_zero_byte}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_upload_shows_the_readers_reason(viewer, tmp_path, name):
    path = BAD[name](tmp_path / name)
    with pytest.raises(ImageReadError) as err:
        read_image(path)  # what `covidxray index` quarantines the file with
    probs, image, status = app.handler(viewer)(str(path), None)
    assert image is None and "span class='prob'" not in probs
    assert status == f"**cannot use {name}: {err.value.reason}**"
    assert "Traceback" not in status


def test_converted_uploads_say_how(viewer, tmp_path):
    """16-bit and CMYK files are read as `index` reads them, and the page says how they were converted."""
    a16 = viewer.analyse(fx.write_png16(tmp_path / "film16.png"))
    assert any("16-bit" in n and "min-max" in n for n in a16.notes)
    cmyk = viewer.analyse(fx.write_jpeg_cmyk(tmp_path / "film.jpg"))
    assert any("CMYK" in n for n in cmyk.notes)
    for a in (a16, cmyk):
        assert abs(sum(a.probs.values()) - 1) < 1e-6 and a.overlay.shape == (384, 384, 3)
    # no dataset mask for these files: the shipped lung segmenter draws the contour, and the page says so
    assert a16.lungs.startswith("lung contour predicted by the lung segmenter (held-out Dice 0.9")


def test_analysis_of_a_test_image(viewer, viewer_run):
    path = viewer.examples[0]
    a = viewer.analyse(path, "gradcam")
    assert list(a.probs) == viewer.classes and abs(sum(a.probs.values()) - 1) < 1e-6
    p = a.probs[viewer.cal.positive_class]
    assert a.flagged == (p >= viewer.cal.threshold) and ("FLAG FOR REVIEW" in a.decision) == a.flagged
    assert a.heatmap.shape == (64, 64) and 0 <= a.heatmap.min() and a.heatmap.max() <= 1
    assert a.lungs == "lung contour from the dataset's mask"  # found by pixel hash in splits.csv
    assert a.ood_score is not None and a.method == "gradcam"
    train = viewer.table.query("split == 'train'")["path"].iloc[0]
    assert any("train split" in w for w in viewer.analyse(train).warnings)


def test_several_images_do_not_retrace(viewer):
    """The model's traced functions are built on the first image and reused (counted by TensorFlow)."""
    from covidxray.evaluation import ood
    from covidxray.explain.core import grad_fn

    viewer.analyse(viewer.examples[0], "gradcam")
    fns = {"predict": viewer.model.predict_function, "cam": grad_fn(viewer.model, "logit", viewer.layer, "gradcam")}
    fns.update({f"ood{i}": m.predict_function for i, m in enumerate(ood._FEATURE_MODELS[viewer.model].values())})
    before = {k: f.experimental_get_tracing_count() for k, f in fns.items()}
    assert all(v >= 1 for v in before.values()) and len(fns) == 3
    for path in viewer.examples[1:5]:
        viewer.analyse(path, "gradcam")
    assert {k: f.experimental_get_tracing_count() for k, f in fns.items()} == before


def _up(image: np.ndarray, saturation: float = 0.0) -> Upload:
    from covidxray.data.cache import resize_for_model

    return Upload("x.png", image, resize_for_model(image, 64), saturation)


def test_input_warnings():
    def ramp(h, w, lo=40, hi=200):  # smooth, so resizing keeps its mean and contrast
        return np.tile(np.linspace(lo, hi, w), (h, 1)).astype(np.uint8)

    film = ramp(128, 128)
    ref = Reference(aspect=(0.95, 1.05), mean=(120.0, 10.0), contrast=(float(film.std()), 5.0), n=50)
    assert input_warnings(_up(film), ref, 64) == []
    assert [w.split(" ")[0] for w in input_warnings(_up(ramp(100, 200)), ref, 64)] == ["aspect"]
    assert "smaller than the model input (40x40 px < 64 px)" in input_warnings(_up(ramp(40, 40)), ref, 64)[0]
    assert input_warnings(_up(film, saturation=0.5), ref, 64)[0].startswith("not grayscale-like")
    bright = ramp(128, 128, 230, 250)
    far = input_warnings(_up(bright), ref, 64)
    assert len(far) == 2 and far[0].startswith("mean grey level 240 is far outside the training range (120 +/- 10")
    assert far[1].startswith("contrast (std) 6 is far outside the training range")
    ood = input_warnings(_up(film), ref, 64, ood_score=5.0, ood_threshold=3.0)
    assert len(ood) == 1 and "out-of-distribution score 5.00 > the run's threshold 3.00" in ood[0]
    assert input_warnings(_up(film), ref, 64, ood_score=2.0, ood_threshold=3.0) == []


def test_colour_photo_is_not_grayscale_like(viewer, tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    rgb[..., 0] = 250
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    up = read_upload(tmp_path / "photo.png", 64)
    assert up.saturation > 0.3
    assert any(w.startswith("not grayscale-like") for w in viewer.analyse(tmp_path / "photo.png").warnings)


def _write(run, rel, doc):
    (run / rel).parent.mkdir(parents=True, exist_ok=True)
    (run / rel).write_text(json.dumps(doc))


def _split_doc(flagged, lung):
    return {"chance": {"lung_energy": 0.3, "lesion_energy": 0.05}, "flagged": flagged,
            "methods": {m: {"localisation": {"lung_energy": v, "lesion_energy": 0.05},
                            "sanity": {"spearman": 0.6 if m in flagged else 0.1, "flagged": m in flagged}}
                        for m, v in lung.items()}}


def test_default_method_from_the_runs_checks(tmp_path):
    slow = [m for m in NAMES if METHODS[m].expensive]
    assert choice.default_method(tmp_path, NAMES, slow)[0] == "gradcam"
    assert "no explanation checks" in choice.default_method(tmp_path, NAMES, slow)[1]
    # gradient localises best but fails the randomisation check; gradcam++ beats chance, gradcam does not
    _write(tmp_path, "interpret/test/interpret.json",
           _split_doc(["gradient"], {"gradient": 0.6, "gradcam": 0.25, "gradcam++": 0.4, "occlusion": 0.55}))
    method, reason = choice.default_method(tmp_path, NAMES, slow)
    assert method == "gradcam++"
    assert "Spearman 0.10" in reason and "0.40 of its energy in the lungs vs 0.30" in reason
    assert "better but slow" in reason and "occlusion" in reason
    # an annotated-data report where gradcam++ falls below a uniform map: it no longer passes
    _write(tmp_path, "interpret/data-x/interpret_data.json",
           {"methods": [{"method": "gradcam++", "lung_energy": 0.2}, {"method": "uniform", "lung_energy": 0.35}]})
    method, reason = choice.default_method(tmp_path, NAMES, slow)
    assert method == "gradcam" and "no method passed" in reason and "flagged: gradient" in reason


def test_model_card_panel(viewer_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(viewer_run / "run.json", run / "run.json")
    text = card.model_card(run)
    assert f"`covidxray card {run}` saves it as MODEL_CARD.md" in text and "## Intended use" in text
    assert "COVID-19, Normal, Viral Pneumonia" in text
    (run / "MODEL_CARD.md").write_text("# Model card\nintended use: research\n")
    assert card.model_card(run) == "# Model card\nintended use: research\n"
    assert f"`covidxray evaluate {run}` writes" in card.test_operating_point(run)
    (run / "eval" / "test").mkdir(parents=True)
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps(
        {"n": 30, "operating_point": {"sensitivity": 0.9, "specificity": 0.8,
                                      "ci95": {"sensitivity": [0.7, 1.0], "specificity": [0.6, 0.95]}}}))
    assert card.test_operating_point(run) == ("on the run's test split (n = 30) this threshold had sensitivity 0.900 "
                                             "[0.700, 1.000] and specificity 0.800 [0.600, 0.950] (95% CI)")


def test_predicted_lung_contour_when_a_segmenter_exists(viewer_run, monkeypatch, tmp_path):
    """With covidxray.lungs.segment importable, images without a known mask get its contour and its Dice."""
    from covidxray.viewer.session import Viewer

    class Seg:
        metrics = {"heldout_real": {"n": 12, "dice_mean": 0.9432}, "heldout_phantoms": {"n": 60, "dice_mean": 0.99}}

        def predict(self, x):
            out = np.zeros(x.shape, bool)
            out[:, 10:50, 8:30] = True
            return out

    from covidxray.lungs.segment import dice_text

    fake = types.ModuleType("covidxray.lungs.segment")
    fake.installed_segmenter, fake.dice_text = (lambda log=print: Seg()), dice_text
    monkeypatch.setitem(sys.modules, "covidxray.lungs", types.ModuleType("covidxray.lungs"))
    monkeypatch.setitem(sys.modules, "covidxray.lungs.segment", fake)
    v = Viewer(viewer_run, log=lambda *_: None)
    shutil.copy(v.examples[0], tmp_path / "copy.png")
    a = v.analyse(fx.write_png16(tmp_path / "unknown.png"))
    assert a.lungs == "lung contour predicted by the lung segmenter (held-out Dice 0.943 on 12 real films of unseen patients, 0.990 on 60 phantoms)"
    assert v.analyse(tmp_path / "copy.png").lungs == "lung contour from the dataset's mask"


def test_serve_refuses_a_missing_run(tmp_path):
    from typer.testing import CliRunner

    from covidxray.cli import app as cli

    res = CliRunner().invoke(cli, ["serve", str(tmp_path / "nope")])
    assert res.exit_code == 2 and res.output.strip().startswith("error:") and "Traceback" not in res.output
