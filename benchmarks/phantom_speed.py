"""Time ``generate_dataset`` on one core, PNG writing included (requirement: >= 50 images/s at 256 px).

Generates N phantoms (split evenly over the three default classes) with ``workers=1`` and OpenCV
limited to one thread into a temporary folder; reports the median of the repeats as JSON, as
wall-clock throughput and as throughput per CPU-second of this process (robust to a busy machine).

    PYTHONPATH=src python benchmarks/phantom_speed.py [--n 300] [--size 256] [--out benchmarks/results/phantom_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from covidxray import DEFAULT_CLASSES
from covidxray.data.phantoms import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/phantom_speed.json"))
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    per_class = max(1, -(-args.n // len(DEFAULT_CLASSES)))
    times, cpu_times = [], []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu_start = time.perf_counter(), time.process_time()
            df = generate_dataset(Path(tmp), n_per_class=per_class, size=args.size, seed=rep, workers=1)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    n = len(df)
    seconds = float(np.median(times))
    report = {
        "n": n,
        "size": args.size,
        "workers": 1,
        "opencv_threads": cv2.getNumThreads(),
        "seconds": round(seconds, 3),
        "images_per_s": round(n / seconds, 1),
        "images_per_s_all_runs": [round(n / t, 1) for t in times],
        "images_per_cpu_s": round(n / float(np.median(cpu_times)), 1),
        "requirement_images_per_s": 50.0,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
