"""Schedules and bookkeeping that make training resumable and budgeted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidxray.training.callbacks import (
    TimeBudgetCosine,
    best_so_far,
    cosine_schedule,
    elapsed_s,
    merge_history,
    stage_callbacks,
)


def test_epoch_cosine_warms_up_then_decays_to_floor():
    lr = cosine_schedule(1e-3, epochs=10, warmup=2, floor=0.05)
    values = [lr(e) for e in range(10)]
    assert values[0] < values[1] < values[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(values[2:], values[3:], strict=False))
    assert values[-1] == pytest.approx(5e-5)


def test_time_budget_cosine_is_a_function_of_the_budget_fraction():
    cb = TimeBudgetCosine(1e-3, minutes=10, warmup=0.1, floor=0.02)
    fracs = np.linspace(0, 1.2, 25)
    rates = [cb.rate(f) for f in fracs]
    assert rates[0] == pytest.approx(5e-5)  # warm-up starts at 5% of the peak, not at zero
    assert cb.rate(0.1) == pytest.approx(1e-3)
    after = [r for f, r in zip(fracs, rates, strict=True) if f >= 0.1]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert cb.rate(1.0) == pytest.approx(2e-5) and cb.rate(1.2) == pytest.approx(2e-5)


def test_time_schedule_needs_a_budget(tmp_path):
    from covidxray.config import load_config

    cfg = load_config(["smoke"], ["train.schedule=time", "train.max_minutes=0"])
    with pytest.raises(ValueError, match="needs train.max_minutes > 0"):
        stage_callbacks(tmp_path, "scratch", cfg, cosine_schedule(1e-3, 2))
    cfg = load_config(["smoke"], ["train.schedule=time", "train.max_minutes=3"])
    (tmp_path / "elapsed_scratch.txt").write_text("60.0\n")
    cbs = stage_callbacks(tmp_path, "scratch", cfg, cosine_schedule(1e-3, 2))
    budget = next(cb for cb in cbs if isinstance(cb, TimeBudgetCosine))
    assert budget.budget == 180 and elapsed_s(tmp_path, "scratch") == 60.0


def test_history_merge_counts_a_resumed_epoch_once(tmp_path):
    pd.DataFrame({"epoch": [0, 1, 1, 2], "val_loss": [1.0, 0.8, 0.7, 0.9]}).to_csv(
        tmp_path / "history_scratch.csv", index=False)
    hist = merge_history(tmp_path, ["scratch"])
    assert list(hist["epoch"]) == [0, 1, 2] and list(hist["global_epoch"]) == [0, 1, 2]
    assert hist.loc[1, "val_loss"] == 0.7
    assert best_so_far(tmp_path / "history_scratch.csv", "val_loss") == 0.7
    assert best_so_far(tmp_path / "none.csv", "val_loss") is None


def _tiny_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8)(inp)))


def test_history_repair_drops_a_partial_last_line_and_epochs_to_redo(tmp_path):
    from covidxray.training.checkpoints import repair_history

    f = tmp_path / "history_scratch.csv"
    f.write_text("epoch,loss,val_loss\n0,1.0,1.1\n1,0.9,1.0\n2,0.8,0.9\n3,0.7")  # killed mid-row
    repair_history(f, before_epoch=3)
    assert f.read_text() == "epoch,loss,val_loss\n0,1.0,1.1\n1,0.9,1.0\n2,0.8,0.9\n"
    repair_history(f, before_epoch=1)  # the resume point is epoch 1: later rows will be logged again
    assert f.read_text() == "epoch,loss,val_loss\n0,1.0,1.1\n"
    f.write_text("epoch,lo")  # killed inside the header
    repair_history(f, before_epoch=0)
    assert not f.exists()


def test_checkpoint_keeps_the_previous_one_and_a_damaged_one_falls_back_in_one_line(tmp_path):
    from covidxray.training.checkpoints import (
        load_first_good,
        previous_path,
        save_weights_atomic,
        weights_problem,
    )

    first, second = _tiny_model(0), _tiny_model(1)
    best = tmp_path / "best_scratch.weights.h5"
    save_weights_atomic(first, best, keep_previous=True)
    save_weights_atomic(second, best, keep_previous=True)
    prev = previous_path(best)
    assert prev.name == "best_scratch.prev.weights.h5"
    assert weights_problem(best) is None and weights_problem(prev) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([best.name, prev.name])
    best.write_bytes(best.read_bytes()[:1500])  # cut short, as an in-place write killed halfway
    assert weights_problem(best)
    lines: list[str] = []
    model = _tiny_model(2)
    assert load_first_good(model, [best, prev], lines.append) == prev
    assert len(lines) == 1 and lines[0].startswith("resume: best_scratch.weights.h5 is damaged (")
    assert lines[0].endswith("; using best_scratch.prev.weights.h5")
    for got, want in zip(model.get_weights(), first.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_no_usable_backup_restarts_the_stage_and_says_so(tmp_path):
    from covidxray.training.checkpoints import EpochBackup, backup_candidates, restore_backup

    model = _tiny_model(0)
    folder = tmp_path / "backup" / "scratch"
    cb = EpochBackup(folder)
    cb.set_model(model)
    for epoch in range(3):
        cb.on_epoch_end(epoch)
    assert [e for e, _ in backup_candidates(folder)] == [3, 2]  # the newest two are kept
    before = [w.copy() for w in model.get_weights()]
    lines: list[str] = []
    assert restore_backup(_tiny_model(1), folder, "scratch", lines.append) == 3 and lines == []
    for _, f in backup_candidates(folder):
        f.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    fresh = _tiny_model(1)
    start = [w.copy() for w in fresh.get_weights()]
    assert restore_backup(fresh, folder, "scratch", lines.append) == 0
    assert len(lines) == 2 and all(" is damaged (" in line for line in lines)
    assert lines[-1].endswith("restarting stage 'scratch' from epoch 0")
    for got, want in zip(fresh.get_weights(), start, strict=True):  # untouched: the stage starts afresh
        np.testing.assert_array_equal(got, want)
    assert before
