"""Crash safety: atomic writes, the image cache on a full disk or Ctrl-C, the run-folder lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest

from covidxray import atomic, paths
from covidxray.errors import DiskSpaceError, RunLockedError

ENV = {**os.environ, "PYTHONPATH": str(paths.ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _tmp_files(folder):
    return [p for p in folder.rglob("*") if atomic.TMP_TAG in p.name or ".tmp" in p.name]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "state.json"
    atomic.write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError, match="boom"), atomic.atomic_path(target) as tmp:
        tmp.write_text('{"epoch": 2')  # half written, then the writer fails
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert _tmp_files(tmp_path) == []


def test_writers_keep_the_suffix_and_replace_the_target(tmp_path):
    with atomic.atomic_path(tmp_path / "best_scratch.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    atomic.write_csv(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.csv")
    atomic.write_csv(pd.DataFrame({"a": [3]}), tmp_path / "t.csv")
    assert pd.read_csv(tmp_path / "t.csv")["a"].tolist() == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_scratch.weights.h5", "t.csv"]


def test_a_folder_target_is_refused(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic.write_json(tmp_path / "out.json", {})


def test_atomic_dir_swaps_a_folder_in_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "saved_model"
    with atomic.atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "v1").write_text("1")
    with pytest.raises(RuntimeError), atomic.atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "v2").write_text("2")
        raise RuntimeError("export failed")
    assert [p.name for p in target.iterdir()] == ["v1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".images.{dead}{atomic.TMP_TAG}.npy"
    stale.write_bytes(b"0" * 10)
    stale_dir = tmp_path / f".saved_model.{dead}{atomic.TMP_TAG}"
    stale_dir.mkdir()
    mine = tmp_path / f".x.{os.getpid()}{atomic.TMP_TAG}.json"
    mine.write_text("{}")
    assert sorted(atomic.remove_stale_tmp(tmp_path)) == sorted([stale, stale_dir])
    assert mine.exists()


# --- the image cache ---------------------------------------------------------------------------------

def _images(tmp_path, n=6):
    import cv2

    files = []
    for i in range(n):
        f = tmp_path / "img" / f"{i}.png"
        f.parent.mkdir(exist_ok=True)
        img = np.full((40, 40), i * 20, np.uint8)
        img[0, 0] = 255  # not constant: a blank image is refused
        cv2.imwrite(str(f), img)
        files.append(f)
    return files


def test_cache_refuses_a_full_disk_up_front_and_leaves_nothing(tmp_path, monkeypatch):
    from covidxray.data import cache

    files = _images(tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError, match="not enough free disk space"):
        cache.build_cache(files, 32, tmp_path / "cache")
    assert _tmp_files(tmp_path / "cache") == []
    assert not list((tmp_path / "cache").rglob("images.npy"))


def test_cache_file_is_reserved_up_front_so_a_full_disk_is_an_error_not_sigbus(tmp_path, monkeypatch):
    import errno

    from covidxray.data import cache

    files = _images(tmp_path)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "posix_fallocate", full, raising=False)
    with pytest.raises(DiskSpaceError, match="not enough free disk space for the image cache"):
        cache.build_cache(files, 32, tmp_path / "cache")
    assert _tmp_files(tmp_path / "cache") == []


def test_cache_interrupted_leaves_no_temp_file_and_builds_next_time(tmp_path, monkeypatch):
    from covidxray.data import cache

    files = _images(tmp_path)
    real = cache._load_chunk
    calls = []

    def interrupted(task):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(cache, "_load_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(files, 32, tmp_path / "cache", chunk=2)
    assert _tmp_files(tmp_path / "cache") == []
    assert not list((tmp_path / "cache").rglob("images.npy"))
    monkeypatch.setattr(cache, "_load_chunk", real)
    arr = cache.build_cache(files, 32, tmp_path / "cache", chunk=2)
    assert arr.shape == (6, 32, 32) and np.median(arr[5]) == 100
    assert _tmp_files(tmp_path / "cache") == []


def test_cache_sigterm_removes_its_temp_file(tmp_path):
    files = _images(tmp_path, 3)
    script = f"""
import os, signal, sys
from covidxray.data import cache
real = cache._load_chunk
def slow(task):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(task)
cache._load_chunk = slow
cache.build_cache({[str(f) for f in files]!r}, 32, {str(tmp_path / 'cache')!r}, chunk=1)
"""
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "signal 15" in done.stderr  # stopped inside the build
    assert _tmp_files(tmp_path / "cache") == []


# --- the run-folder lock -----------------------------------------------------------------------------

HOLD = """
import sys, time
from covidxray import runinfo
with runinfo.lock_run(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_lock_refuses_a_second_trainer_names_the_holder_and_dies_with_it(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run([sys.executable, "-m", "covidxray.cli", "train", "-c", "smoke", "--out", str(run)],
                              env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "in use by" in error[0] and f"pid {holder.pid}" in error[0]
        assert not (run / "config.yaml").exists()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock, so the folder is free again
        holder.wait()
    from covidxray import runinfo

    with runinfo.lock_run(run):
        owner = json.loads((run / ".lock.owner").read_text())
        assert owner["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"), runinfo.lock_run(run):
            pass
    assert not (run / ".lock.owner").exists()


def test_resume_of_a_folder_that_never_started_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "covidxray.cli", "train", "--resume", str(tmp_path / "nope")],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "nothing to resume" in done.stderr
