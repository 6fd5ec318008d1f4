"""TensorBoard HParams: train() writes the config and final validation metrics; evaluate adds test metrics."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from covidxray.runinfo import run_config
from covidxray.training.hparams import flat_scalars, hparams_dir, write_eval_metrics


def _read(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    try:
        content = acc.PluginTagToContent("hparams")
    except KeyError:  # no hparams summary in this folder
        content = {}
    starts = [plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()]
    scalars = {tag: float(tensor_util.make_ndarray(acc.Tensors(tag)[-1].tensor_proto))
               for tag in acc.Tags()["tensors"] if not tag.startswith("_hparams_")}
    return starts, scalars


def test_flat_scalars_keeps_scalars_under_dotted_keys():
    flat = flat_scalars({"seed": 1, "train": {"lr": 0.1, "jit": False, "sizes": [1, 2]}, "a": {"b": {"c": "x"}}})
    assert flat == {"seed": 1, "train.lr": 0.1, "train.jit": False, "a.b.c": "x"}


def test_train_writes_the_hparams_session(smoke_run):
    starts, scalars = _read(hparams_dir(smoke_run))
    assert len(starts) == 1, "one HParams session per run"
    hp = starts[0].hparams
    cfg = run_config(smoke_run)
    assert hp["train.lr"].number_value == pytest.approx(cfg.train.lr)
    assert hp["model.image_size"].number_value == cfg.model.image_size
    assert hp["model.backbone"].string_value == cfg.model.backbone
    assert hp["train.deterministic"].bool_value is cfg.train.deterministic
    assert "classes" not in hp  # a list: not a scalar
    last = pd.read_csv(smoke_run / "history.csv").iloc[-1]
    assert scalars["val_accuracy"] == pytest.approx(last["val_accuracy"], rel=1e-6)
    assert scalars["val_loss"] == pytest.approx(last["val_loss"], rel=1e-6)


def test_evaluation_metrics_join_the_session(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run / "tensorboard", run / "tensorboard")
    sub = write_eval_metrics(run, "test", {"accuracy": 0.75, "macro_auc": 0.9, "sensitivity_op": None})
    assert sub == hparams_dir(run) / "eval_test"
    starts, scalars = _read(sub)
    assert starts == [] and scalars == {"accuracy": 0.75, "macro_auc": pytest.approx(0.9)}
    assert _read(hparams_dir(run))[0], "the session itself is kept"
    assert write_eval_metrics(tmp_path / "old-run", "test", {"accuracy": 1.0}) is None
