"""Model-behaviour tier: training writes a complete, reloadable run; resume; tf.distribute."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from covidxray import paths

CLI = [sys.executable, "-m", "covidxray.cli"]
ENV = {**os.environ, "PYTHONPATH": str(paths.ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_run_folder_is_complete(smoke_run):
    for name in ("model.keras", "config.yaml", "history.csv", "run.json", "splits.csv", "saved_model"):
        assert (smoke_run / name).exists(), name
    assert any((smoke_run / "tensorboard").rglob("events.out.tfevents*"))
    meta = json.loads((smoke_run / "run.json").read_text())
    assert meta["status"] == "finished"
    assert meta["classes"] == ["COVID-19", "Normal", "Viral Pneumonia"]
    assert meta["image_size"] == 75 and meta["preprocessing"]["version"] == 1
    assert meta["weights_source"].startswith("none") and meta["stages"] == ["scratch"]
    assert len(meta["splits_sha256"]) == 64 and meta["seed"] == 42
    assert {"tensorflow", "keras", "numpy"} <= set(meta["packages"]) and meta["git_sha"]
    assert meta["wall_s"] > 0 and meta["last_conv_layer"] == "mixed10"
    hist = pd.read_csv(smoke_run / "history.csv")
    assert list(hist["epoch"]) == [0, 1] and {"loss", "val_loss", "val_accuracy"} <= set(hist.columns)


def test_model_keras_holds_the_best_epoch_and_the_export_predicts_like_it(smoke_run):
    import keras
    import tensorflow as tf

    from covidxray import runinfo
    from covidxray.data.cache import cached_images
    from covidxray.data.inputs import for_run
    from covidxray.data.pipeline import read_splits
    from covidxray.evaluation.predict import model_probs

    model, meta = runinfo.load_run(smoke_run)
    cfg = runinfo.run_config(smoke_run)
    val = read_splits(smoke_run / "splits.csv", meta["classes"]).query("split == 'val'")
    images = cached_images(list(val["path"]), meta["image_size"], cfg, for_run(dict(meta)))
    y = keras.utils.to_categorical([meta["classes"].index(c) for c in val["label"]], len(meta["classes"]))
    probs = model_probs(model, images, cfg.train.batch_size)
    loss = float(keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing)(y, probs))
    hist = pd.read_csv(smoke_run / "history.csv")
    assert loss == pytest.approx(hist["val_loss"].min(), abs=1e-5), (loss, list(hist["val_loss"]))
    x = np.random.default_rng(0).uniform(0, 255, (4, 75, 75, 1)).astype("float32")
    exported = tf.saved_model.load(str(smoke_run / "saved_model"))  # keep a reference: it owns the variables
    np.testing.assert_allclose(exported.serve(tf.constant(x)).numpy(), model.predict(x, verbose=0), atol=1e-5)
    assert isinstance(model, keras.Model)


def test_a_finished_run_keeps_its_model_not_its_resume_points(smoke_run):
    import zipfile

    import h5py

    names = {p.name for p in smoke_run.iterdir()}
    assert {"model.keras", "saved_model", "run.json", "history.csv", "ood_stats.npz"} <= names
    assert not [n for n in names if n.endswith(".weights.h5")] and "backup" not in names, sorted(names)
    with zipfile.ZipFile(smoke_run / "model.keras") as z, z.open("model.weights.h5") as fh:
        assert "optimizer" not in h5py.File(fh, "r")  # the moments would triple the file
    done = subprocess.run(CLI + ["train", "--resume", str(smoke_run)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0 and "is a finished run: nothing to resume" in done.stdout + done.stderr, done.stderr


def test_training_never_reads_the_test_split(tmp_path, phantom_dir, smoke_cfg, monkeypatch):
    from covidxray.config import load_config
    from covidxray.data import cache
    from covidxray.training.train import train

    seen: list[str] = []
    real_read = cache.read_image

    def spy(path, *a, **k):
        seen.append(str(path))
        return real_read(path, *a, **k)

    run = tmp_path / "run"
    splits_src = phantom_dir / "splits_for_spy.csv"
    # make the splits first (that step legitimately reads every image to hash it)
    from covidxray.data import pipeline as data

    splits = data.prepare_splits(smoke_cfg, phantom_dir, tmp_path / "prep", log=lambda *_: None)
    splits.to_csv(splits_src, index=False)
    # only the decode into model inputs is spied on: the leakage check on a user's splits file
    # recomputes every image's hashes (test images included) by design, and never feeds them to the model
    monkeypatch.setattr(cache, "read_image", spy)
    cfg = load_config(["smoke"], [f"data.cache_dir={tmp_path / 'fresh-cache'}"])
    train(cfg, dataset=splits_src, out=run, log=lambda *_: None)
    test_files = set(splits.loc[splits["split"] == "test", "path"])
    assert seen and not test_files & set(seen)


@pytest.mark.slow
def test_sigkill_during_third_epoch_then_resume_gives_continuous_history(tmp_path, phantom_dir):
    run = tmp_path / "run"
    cmd = CLI + ["train", "-c", "smoke", "--set", "train.epochs=4", "--set", "train.patience=10",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}",
                 "--data", str(phantom_dir), "--out", str(run)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    log = run / "history_scratch.csv"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.is_file() and len(log.read_text().strip().splitlines()) >= 3:  # header + 2 epochs
            break
        assert proc.poll() is None, "training ended before its third epoch"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model.keras").exists()
    done = subprocess.run(CLI + ["train", "--resume", str(run)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2, 3]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


MIRRORED = """
import os, sys, json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from covidxray.config import load_config
from covidxray.training.train import train
cfg = load_config(["smoke"], ["train.strategy=mirrored", "train.epochs=1", "train.batch_size=4",
                             "data.cache_dir=" + sys.argv[2] + "-cache"])
run = train(cfg, dataset=sys.argv[1], out=sys.argv[2], log=lambda *_: None)
print(json.dumps(json.load(open(run / "run.json"))))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, phantom_dir):
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(phantom_dir), str(tmp_path / "run")],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads(done.stdout.strip().splitlines()[-1])
    assert meta["strategy"] == "mirrored" and meta["replicas"] == 2 and meta["global_batch_size"] == 8
    assert meta["status"] == "finished"


def test_cli_config_errors_are_one_clear_line(tmp_path):
    done = subprocess.run(CLI + ["train", "--set", "train.batchsize=3", "--out", str(tmp_path / "r")],
                          env=ENV, capture_output=True, text=True)
    assert done.returncode == 2
    assert "error:" in done.stderr and "did you mean 'train.batch_size'" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_imagenet_offline_is_a_clear_message(monkeypatch, tmp_path, phantom_dir):
    from typer.testing import CliRunner

    from covidxray import cli

    def offline(*a, **k):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    result = CliRunner().invoke(cli.app, ["train", "-c", "smoke", "--weights", "imagenet",
                                          "--data", str(phantom_dir), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "ImageNet" in error[0] and "--weights PATH" in error[0]


# --- crash safety: a kill inside a checkpoint write, damaged checkpoints on resume -------------------

KILL_IN_CHECKPOINT = """
import os, signal, sys
import keras
from covidxray.training import checkpoints
from covidxray.config import load_config
from covidxray.training.train import train
checkpoints.AtomicCheckpoint._is_improvement = lambda self, current, best: True  # a best save each epoch
real = keras.Model.save_weights
saves = []
def dying(self, filepath, *args, **kwargs):
    real(self, filepath, *args, **kwargs)
    if os.path.basename(str(filepath)).startswith((".best_scratch", "best_scratch")):
        saves.append(filepath)
        if len(saves) == 3:  # the third epoch's checkpoint: cut the file short, die inside the write
            with open(filepath, "r+b") as fh:
                fh.truncate(os.path.getsize(filepath) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
keras.Model.save_weights = dying
cfg = load_config(["smoke"], ["train.epochs=4", "train.patience=10", "data.cache_dir=" + sys.argv[3]])
train(cfg, dataset=sys.argv[1], out=sys.argv[2], log=lambda *_: None)
"""


@pytest.fixture(scope="module")
def killed_in_checkpoint(tmp_path_factory, phantom_dir):
    """A run SIGKILLed while writing its third best-weights checkpoint (kept pristine; tests copy it)."""
    base = tmp_path_factory.mktemp("killed")
    run = base / "run"
    done = subprocess.run([sys.executable, "-c", KILL_IN_CHECKPOINT, str(phantom_dir), str(run),
                           str(base / "cache")], env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    return run


def _copy_run(src, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def _resume(run):
    done = subprocess.run(CLI + ["train", "--resume", str(run)], env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return (done.stdout + done.stderr).splitlines()


def _assert_finished(run):
    from covidxray.runinfo import load_run

    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2, 3] and list(hist["global_epoch"]) == [0, 1, 2, 3]
    model, meta = load_run(run)
    assert meta["status"] == "finished" and model.output_shape[-1] == 3
    assert not [p for p in run.rglob("*") if ".tmp-covidxray" in p.name]


@pytest.mark.slow
def test_kill_inside_the_checkpoint_write_leaves_the_checkpoint_whole_and_resume_finishes(
        killed_in_checkpoint, tmp_path):
    from covidxray.training.checkpoints import weights_problem

    run = _copy_run(killed_in_checkpoint, tmp_path)
    assert [p for p in run.glob(".best_scratch.*.tmp-covidxray.weights.h5")]  # died inside this write
    assert weights_problem(run / "best_scratch.weights.h5") is None  # ...which never touched the target
    assert not (run / "model.keras").exists()
    lines = _resume(run)
    assert not [line for line in lines if line.startswith("resume: ")]
    assert [line for line in lines if "resuming after epoch 2" in line]
    _assert_finished(run)


@pytest.mark.slow
def test_damaged_checkpoint_and_backup_fall_back_to_the_previous_good_ones_on_resume(
        killed_in_checkpoint, tmp_path):
    run = _copy_run(killed_in_checkpoint, tmp_path)
    for name in ("best_scratch.weights.h5", "backup/scratch/epoch0002.weights.h5"):
        f = run / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # what an in-place write cut short leaves
    lines = _resume(run)
    damaged = [line for line in lines if line.startswith("resume: ")]
    assert len(damaged) == 2, damaged
    assert any(line.startswith("resume: best_scratch.weights.h5 is damaged (")
               and line.endswith("; using best_scratch.prev.weights.h5") for line in damaged), damaged
    assert any(line.startswith("resume: backup/scratch/epoch0002.weights.h5 is damaged (")
               and line.endswith("; using backup/scratch/epoch0001.weights.h5") for line in damaged), damaged
    assert [line for line in lines if "resuming after epoch 1" in line]
    _assert_finished(run)
