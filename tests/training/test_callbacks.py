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
