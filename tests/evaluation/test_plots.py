"""Plots: each returns a Figure with the expected axes, lines and labels, and saves a PNG."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from scipy.special import softmax

from covidxray.evaluation import plots
from covidxray.style import CLASS_COLORS, class_color

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    logits = rng.normal(size=(240, 3))
    logits[np.arange(240), y] += 1.5
    return y, softmax(2.5 * logits, axis=1)


def saved(path):
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_palette_is_fixed_and_distinct():
    assert set(CLASS_COLORS) == {"COVID-19", "Normal", "Viral Pneumonia", "Lung Opacity"}
    assert len(set(CLASS_COLORS.values())) == 4
    assert class_color("Other") == class_color("Other")


def test_confusion(tmp_path):
    cm = [[50, 3, 2], [4, 40, 6], [1, 2, 60]]
    fig = plots.plot_confusion(cm, CLASSES, normalize=True, save_to=tmp_path / "cm.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heat map + colour bar
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and texts[0] == "90.9%\n(50)"
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert ax.get_xlabel() == "Predicted class" and ax.get_ylabel() == "True class"
    assert saved(tmp_path / "cm.png")
    counts = plots.plot_confusion(cm, CLASSES, normalize=False)
    assert [t.get_text() for t in counts.axes[0].texts][:2] == ["50", "3"]
    with pytest.raises(ValueError, match="shape"):
        plots.plot_confusion(cm, CLASSES[:2])


def test_roc(tmp_path, data):
    y, p = data
    fig = plots.plot_roc(y, p, CLASSES, n_boot=50, seed=1, save_to=tmp_path / "roc.png")
    (ax,) = fig.axes
    assert len(ax.lines) == 5  # 3 classes, macro, chance
    assert len(ax.collections) == 4  # one bootstrap band per class and for the macro curve
    labels = legend_texts(ax)
    assert labels[0].startswith("COVID-19  AUC ") and labels[3].startswith("macro average  AUC ")
    assert to_hex(ax.lines[0].get_color()) == CLASS_COLORS["COVID-19"].lower()
    assert "False positive rate" in ax.get_xlabel()
    assert saved(tmp_path / "roc.png")


def test_pr(tmp_path, data):
    y, p = data
    fig = plots.plot_pr(y, p, CLASSES, save_to=tmp_path / "pr.png")
    (ax,) = fig.axes
    assert len(ax.lines) == 6  # curve and prevalence line per class
    assert [label.split("  ")[0] for label in legend_texts(ax)] == CLASSES
    assert "AP " in legend_texts(ax)[0]
    assert to_hex(ax.lines[2].get_color()) == CLASS_COLORS["Normal"].lower()
    assert saved(tmp_path / "pr.png")


def test_reliability(tmp_path, data):
    y, p = data
    after = softmax(np.log(p) / 2.0, axis=1)
    fig = plots.plot_reliability(y, p, after, save_to=tmp_path / "rel.png")
    top, bottom = fig.axes
    labels = legend_texts(top)
    assert len(labels) == 3 and labels[0] == "perfect calibration"
    assert labels[1].startswith("before  (ECE 0.") and labels[2].startswith(
        "after temperature scaling  (ECE 0."
    )
    assert len(bottom.patches) == 2  # one confidence histogram each
    assert saved(tmp_path / "rel.png")
    assert len(legend_texts(plots.plot_reliability(y, p).axes[0])) == 2


def test_learning_curves(tmp_path):
    epochs = np.arange(1, 13)
    history = pd.DataFrame(
        {
            "epoch": epochs,
            "loss": 1 / epochs,
            "val_loss": 1.2 / epochs + 0.01 * epochs,
            "accuracy": 1 - 0.5 / epochs,
            "val_accuracy": 1 - 0.6 / epochs,
            "stage": ["head"] * 5 + ["finetune"] * 7,
        }
    )
    fig = plots.plot_learning_curves(history, None, save_to=tmp_path / "lc.png")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_title() == "Loss" and acc_ax.get_title() == "Accuracy"
    assert len(loss_ax.lines) == 4 and len(acc_ax.lines) == 3  # train, val, (best), boundary
    assert loss_ax.lines[-1].get_xdata()[0] == 5.5  # boundary between epochs 5 and 6
    assert "lowest val_loss (epoch 11)" in legend_texts(loss_ax)
    assert "stage 'finetune' starts" in legend_texts(acc_ax)
    assert saved(tmp_path / "lc.png")
    only_loss = plots.plot_learning_curves(history[["loss"]], stage_boundary=3)
    assert len(only_loss.axes) == 1 and only_loss.axes[0].lines[-1].get_xdata()[0] == 2.5
    with pytest.raises(ValueError, match="no loss or accuracy"):
        plots.plot_learning_curves(history[["epoch"]])


def test_error_gallery(tmp_path):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(6)]
    images[1] = np.stack([images[1]] * 3, axis=-1)
    true = [0, 1, 2, 0, 1, 2]
    pred = ["COVID-19", "Normal", "COVID-19", "Normal", "Viral Pneumonia", "Viral Pneumonia"]
    conf = [0.9, 0.8, 0.6, 0.95, 0.7, 0.99]
    fig = plots.plot_error_gallery(images, true, pred, conf, CLASSES, save_to=tmp_path / "err.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "COVID-19 → Normal (0.95)",
        "Normal → Viral Pneumonia (0.70)",
        "Viral Pneumonia → COVID-19 (0.60)",
    ]
    assert saved(tmp_path / "err.png")
    assert len(plots.plot_error_gallery(images, true, pred, conf, CLASSES, max_images=2).axes) == 2
    none = plots.plot_error_gallery(images[:2], true[:2], pred[:2], conf[:2], CLASSES)
    assert none.axes[0].texts[0].get_text() == "No misclassified images"
    with pytest.raises(ValueError, match="differ in length"):
        plots.plot_error_gallery(images, true[:3], pred, conf, CLASSES)
