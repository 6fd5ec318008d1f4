"""Disk the test suite needs: peak size of its temporary folder while it runs, and what it leaves.

A CI run once failed with ``No space left on device`` half-way through the suite: each smoke run
folder held 1.2 GB (three optimizer-carrying checkpoints, a model and an export) and pytest kept
every test's folder for three sessions. This runs the suite with ``TMPDIR`` pointed at a fresh
folder, samples that folder's size every few seconds, and writes JSON; it asserts nothing.

    python benchmarks/suite_disk.py [--interval 5] [--out benchmarks/results/suite_disk.json] [-- PYTEST ARGS]

Default pytest arguments are the README's (``-n 2 --dist loadfile``). Run it on a quiet machine or
read only the sizes: the wall time is whatever the machine's load made it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from covidxray import atomic

ROOT = Path(__file__).resolve().parents[1]


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (files vanishing while it walks are skipped)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder, onerror=lambda _e: None):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "suite_disk.json")
    ap.add_argument("pytest_args", nargs="*", default=["-n", "2", "--dist", "loadfile"])
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="suite_disk-"))
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample():
        while not done.is_set():
            samples.append((round(time.monotonic() - t0, 1), folder_bytes(tmp)))
            done.wait(args.interval)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *args.pytest_args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    done.set()
    watcher.join()
    left = folder_bytes(tmp)
    out = proc.stdout.strip().splitlines()
    summary = out[-1] if out else ""
    start = next((i for i, ln in enumerate(out) if "slowest" in ln and "durations" in ln), None)
    slowest = [] if start is None else [ln for ln in out[start + 1:] if ln[:1].isdigit()]
    peak_s, peak = max(samples, key=lambda s: s[1]) if samples else (0.0, 0)
    result = {
        "pytest_args": args.pytest_args, "rc": proc.returncode, "summary": summary,
        "wall_s": round(time.monotonic() - t0, 1), "interval_s": args.interval,
        "peak_gb": round(peak / 1e9, 2), "peak_at_s": peak_s, "left_after_gb": round(left / 1e9, 3),
        "slowest": slowest, "samples": [(s, round(b / 1e9, 3)) for s, b in samples],
    }
    shutil.rmtree(tmp, ignore_errors=True)
    atomic.write_json(args.out, result, indent=1)
    print(f"{summary}\npeak {result['peak_gb']} GB at {peak_s:.0f} s; left after the run "
          f"{result['left_after_gb']} GB (pytest rc {proc.returncode}); {args.out}")
    return result


if __name__ == "__main__":
    main()
