"""The overlay figures and the `covidxray explain` command."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from covidxray.explain import (  # noqa: E402
    activations,
    faithfulness,
    overlays,
    registry,
)
from helpers_runs import CLASSES, S, tiny_cnn  # noqa: E402


def test_figures(tmp_path, model, images):
    maps = {m: registry.explain(model, images[:3], m) for m in ("gradcam", "gradient")}
    lung = np.zeros((S, S), bool)
    lung[8:24, 4:14] = True
    fig = overlays.overlay_figure(images[0], maps["gradcam"][0], lung, "gradcam", save_to=tmp_path / "o.png")
    assert len(fig.axes) == 3 and len(fig.axes[1].collections) == 1  # colour bar; lung contour drawn
    fig = overlays.gallery_figure(images[:3], maps, ["a", "b", "c"], [lung, None, None], save_to=tmp_path / "g.png")
    assert len(fig.axes) == 9
    acts = activations.activation_maps(model, images[:1], ["conv1", "conv2"], k=4)
    fig = overlays.activation_figure(images[0], {k: (v[0][0], v[1][0]) for k, v in acts.items()},
                                     save_to=tmp_path / "a.png")
    assert len(fig.axes) == 2 * 5
    r = faithfulness.deletion_insertion(model, images[:2], maps["gradcam"][:2], steps=4)
    faithfulness.plot_faithfulness({"gradcam": r}, save_to=tmp_path / "f.png")
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("o.png", "g.png", "a.png", "f.png"))


def test_explain_command(tmp_path):
    from typer.testing import CliRunner

    from covidxray.cli import app
    from covidxray.data.cache import PREPROCESSING
    from covidxray.data.phantoms import generate_dataset

    size = 64
    run = tmp_path / "run"
    run.mkdir()
    tiny_cnn(size).save(run / "model.keras")
    (run / "run.json").write_text(json.dumps({"classes": CLASSES, "image_size": size, "preprocessing": PREPROCESSING,
                                              "last_conv_layer": "conv2"}))
    data = tmp_path / "phantoms"
    generate_dataset(data, n_per_class=1, size=size, seed=0)
    (data / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["explain", str(run), str(data / "COVID-19"), str(data / "Normal"),
                                   str(data / "broken.png"), "-m", "gradcam", "-m", "gradient", "-o", str(out)])
    assert res.exit_code == 1, res.output  # one input could not be read: named, not silently dropped
    assert "broken.png" in res.output and "wrote 5 figure(s)" in res.output
    df = pd.read_csv(out / "explain.csv")
    assert len(df) == 4 and set(df["method"]) == {"gradcam", "gradient"}
    assert set(df["label"]) == {"COVID-19", "Normal"}  # labels and masks found through manifest.csv
    assert df["lung_energy"].between(0, 1).all()
    assert df.loc[df["label"] == "COVID-19", "lesion_energy"].notna().all()
    assert df.loc[df["label"] == "Normal", "lesion_energy"].isna().all()
    assert (out / "gallery.png").is_file() and len(list(out.glob("*_gradcam.png"))) == 2
    res = CliRunner().invoke(app, ["explain", str(run), str(data / "Normal"), "-m", "lime", "-o", str(out)])
    assert res.exit_code == 2 and "unknown method" in res.output
