"""Time one training step of the from-scratch InceptionV3 with and without the attribution prior.

The prior (``train.attribution_prior``, :mod:`covidxray.training.prior`) needs the gradient of the
input gradient: a nested ``tf.GradientTape``, about one extra forward and two extra backward passes.
Same model, batch and optimizer for both; reports the median of the timed steps (after warm-up)
and writes JSON.

    PYTHONPATH=src python benchmarks/attribution_prior.py [--size 96] [--batch 8] [--steps 5]
        [--out benchmarks/results/attribution_prior.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


def step_times(lam: float, size: int, batch: int, steps: int) -> list[float]:
    import keras

    from covidxray.models import build_model
    from covidxray.training.mitigations import trainer

    keras.utils.set_random_seed(0)
    model, _ = build_model(CLASSES, "inceptionv3", size, "none", [256, 128], [0.5, 0.3], 0.9)
    fit_model = trainer(model, lam)
    fit_model.compile(optimizer=keras.optimizers.AdamW(3e-4), loss=keras.losses.CategoricalCrossentropy())
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (batch, size, size, 1)).astype(np.float32)
    y = np.eye(len(CLASSES), dtype=np.float32)[rng.integers(0, len(CLASSES), batch)]
    lungs = np.zeros((batch, size, size), np.float32)
    lungs[:, size // 5: -size // 5, size // 8: -size // 8] = 1
    data = ({"image": x, "lungs": lungs}, y) if lam > 0 else (x, y)
    out = []
    for i in range(steps + 2):  # two warm-up steps (tracing)
        t0 = time.perf_counter()
        fit_model.train_on_batch(*data)
        if i >= 2:
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/attribution_prior.json")
    a = ap.parse_args()
    plain, prior = step_times(0.0, a.size, a.batch, a.steps), step_times(1.0, a.size, a.batch, a.steps)
    res = {"size": a.size, "batch": a.batch, "steps": a.steps, "step_s_plain": float(np.median(plain)),
           "step_s_prior": float(np.median(prior)), "slowdown": float(np.median(prior) / np.median(plain)),
           "cpus": os.cpu_count(), "platform": platform.platform(),
           "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
