"""Time ``compute_metrics`` with its full stratified bootstrap (requirement: under 5 s).

5,000 synthetic predictions, 3 classes, 1,000 resamples, every metric and an operating point;
reports the median of 3 runs and writes it as JSON.

    PYTHONPATH=src python benchmarks/bootstrap_speed.py [--out benchmarks/results/bootstrap_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.special import softmax

from covidxray.evaluation.metrics import compute_metrics

CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of a moderately good, over-confident classifier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += 2.0
    return y, softmax(2.0 * logits, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bootstrap_speed.json"))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    y, probs = synthetic(args.n)
    times, result = [], {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = compute_metrics(y, probs, CLASSES, n_boot=args.n_boot, seed=0, threshold=0.5)
        times.append(time.perf_counter() - start)
    report = {
        "n": args.n,
        "n_classes": len(CLASSES),
        "n_boot": args.n_boot,
        "seconds": round(float(np.median(times)), 4),
        "seconds_all_runs": [round(t, 4) for t in times],
        "metrics_count": len(result["ci95"]) + len(result["operating_point"]["ci95"]),
        "requirement_seconds": 5.0,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
