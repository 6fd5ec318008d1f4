"""Kill-anywhere stress test: SIGKILL a smoke training at random moments, resume, check the run.

Each round starts ``covidxray train -c smoke --set train.epochs=3`` on a small phantom set (with a
fresh cache folder, so the cache build can be hit too) and SIGKILLs its process group at a seeded
random moment. Even rounds kill at a uniform random time over 90% of the length of a reference run
(startup, cache build, epochs, checkpoint writes, export); odd rounds kill the moment the k-th
temporary file of an atomic write appears (k random), i.e. inside a checkpoint, backup, model or
export write. The machine's load changes how long a run takes, so a round whose training finished
before its kill is started again with the kill drawn over what that attempt measured (its length, or
the temporary files it wrote): every round ends in a real SIGKILL. Then ``covidxray train --resume`` is run until it finishes (the original command is
run again when the kill came before the run folder had a config). A round passes when the run
finishes, ``history.csv`` is continuous (``global_epoch`` 0..n-1, each epoch once, n = epochs),
``model.keras`` loads, and no temporary file is left.

  python benchmarks/kill_resume.py [--rounds 20] [--seed 0] [--epochs 3]
Writes benchmarks/results/kill_resume.json (atomically). Not a timed test: it measures outcomes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from covidxray import atomic, paths  # noqa: E402

CLI = [sys.executable, "-m", "covidxray.cli"]
TMP = atomic.TMP_TAG


def _env() -> dict:
    src = str(paths.ROOT / "src")
    pp = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + pp if pp else ""), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _cmd(run: Path, cache: Path, data: Path, epochs: int) -> list[str]:
    return CLI + ["train", "-c", "smoke", "--set", f"train.epochs={epochs}", "--set", "train.patience=10",
                  "--set", f"data.cache_dir={cache}", "--data", str(data), "--out", str(run)]


def _temp_files(*folders: Path) -> list[Path]:
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p for p in folder.rglob(f"*{TMP}*")]
    return found


def _phase(run: Path, cache: Path) -> str:
    """A guess of what the training was doing, from the files it had written."""
    tmp = _temp_files(run, cache)
    if tmp:
        names = ", ".join(sorted({p.name for p in tmp}))
        if any(cache in p.parents for p in tmp):
            return f"cache build ({names})"
        return f"atomic write ({names})"
    if not (run / "config.yaml").is_file():
        return "startup (no run folder yet)"
    if not (run / "splits.csv").is_file():
        return "splits"
    if (run / "model.keras").is_file():
        return "export / finishing"
    if (run / "state.json").is_file():
        return "after the stage (history merge, model save)"
    hist = run / "history_scratch.csv"
    rows = max(0, len(hist.read_text().splitlines()) - 1) if hist.is_file() else 0
    if not list(cache.rglob("images.npy")):
        return "cache build / model build"
    return f"epoch {rows}" if rows else "model build / first epoch"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _run_and_kill(cmd, env, run, cache, kill_at: float | None, kth_tmp: int | None, limit: float) -> dict:
    """Start ``cmd``; SIGKILL it at ``kill_at`` seconds or when the ``kth_tmp``-th temp file appears.

    Returns:
        ``killed_at_s`` (None when the run finished first), ``phase``, ``rc``, and for a run that
        finished: ``ran_s`` and ``temp_files_seen``, from which the next attempt draws its kill.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    seen: set[str] = set()
    while proc.poll() is None:
        now = time.monotonic() - t0
        hit = kill_at is not None and now >= kill_at
        if kth_tmp is not None:
            seen |= {str(p) for p in _temp_files(run, cache)}
            hit = hit or len(seen) >= kth_tmp
        if hit or now > limit:
            phase = _phase(run, cache)
            _kill_group(proc)
            return {"killed_at_s": round(now, 2), "phase": phase, "rc": proc.returncode}
        time.sleep(0.005 if kth_tmp is not None else 0.05)
    return {"killed_at_s": None, "phase": "finished before the kill", "rc": proc.returncode,
            "ran_s": time.monotonic() - t0, "temp_files_seen": len(seen)}


def _check(run: Path, cache: Path, epochs: int) -> str | None:
    import json

    import keras
    import pandas as pd

    meta = json.loads((run / "run.json").read_text())
    if meta.get("status") != "finished":
        return f"run.json status {meta.get('status')}"
    hist = pd.read_csv(run / "history.csv")
    if list(hist["global_epoch"]) != list(range(len(hist))) or list(hist["epoch"]) != list(range(epochs)):
        return f"history not continuous: epochs {list(hist['epoch'])}"
    try:
        keras.models.load_model(run / "model.keras", compile=False)
    except Exception as err:  # noqa: BLE001 - any failure to load is the finding
        return f"model.keras does not load: {err}"
    left = _temp_files(run, cache)
    if left:
        return f"temporary files left: {[p.name for p in left]}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-per-class", type=int, default=12)
    ap.add_argument("--max-resumes", type=int, default=4)
    ap.add_argument("--max-attempts", type=int, default=4,
                    help="starts of a round whose training finished before the kill (then drawn again)")
    ap.add_argument("--reference-s", type=float, default=0.0,
                    help="length of an uninterrupted run in seconds (default: measure one)")
    ap.add_argument("--out", type=Path, default=paths.ROOT / "benchmarks" / "results" / "kill_resume.json")
    args = ap.parse_args()

    from covidxray.data.phantoms import generate_dataset

    rng = random.Random(args.seed)
    env = _env()
    work = Path(tempfile.mkdtemp(prefix="kill_resume-"))
    data = work / "phantoms"
    generate_dataset(data, n_per_class=args.n_per_class, size=96, seed=7)

    # reference run: how long an uninterrupted run takes, to spread the kill times over it
    if args.reference_s:
        ref_s = args.reference_s
    else:
        t0 = time.monotonic()
        ref = subprocess.run(_cmd(work / "ref", work / "ref-cache", data, args.epochs), env=env,
                             capture_output=True, text=True)
        ref_s = time.monotonic() - t0
        if ref.returncode != 0:
            sys.exit(f"reference run failed:\n{ref.stderr[-3000:]}")
    print(f"reference run: {ref_s:.0f} s", flush=True)

    rounds = []
    for i in range(args.rounds):
        run, cache = work / f"run{i:02d}", work / f"cache{i:02d}"
        if i % 2 == 0:
            kill_at, kth = rng.uniform(0.0, 0.9 * ref_s), None  # 0.9: the load varies, a kill must land
        else:
            kill_at, kth = None, rng.randint(1, 12)
        r0 = time.monotonic()
        rec = {"round": i, "mode": "time" if kth is None else "inside a write", "planned_s": kill_at,
               "kth_temp_file": kth}
        for attempt in range(1, args.max_attempts + 1):
            hit = _run_and_kill(_cmd(run, cache, data, args.epochs), env, run, cache, kill_at, kth, 3 * ref_s)
            rec.update(hit, attempts=attempt)
            if hit["killed_at_s"] is not None:
                break
            # finished first (the machine got faster): draw again over what this attempt measured
            shutil.rmtree(run, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            if kth is None:
                kill_at = rng.uniform(0.0, 0.9 * hit["ran_s"])
            else:
                kth = rng.randint(1, max(1, hit["temp_files_seen"]))
            rec.update(planned_s=kill_at, kth_temp_file=kth)
        resumes, outcome, last_err = 0, None, ""
        while resumes < args.max_resumes:
            resumes += 1
            cmd = CLI + ["train", "--resume", str(run)] if (run / "config.yaml").is_file() \
                else _cmd(run, cache, data, args.epochs)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode == 0:
                outcome = _check(run, cache, args.epochs) or "ok"
                break
            last_err = done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else ["(no message)"]
        rec.update(resumes=resumes, outcome=outcome or f"resume failed: {last_err}",
                   resume_lines=[ln for ln in (done.stdout + done.stderr).splitlines()
                                 if ln.startswith(("resume:", "stage '"))][:10],
                   round_s=round(time.monotonic() - r0, 1))
        rec["ok"] = rec["outcome"] == "ok" and rec["killed_at_s"] is not None
        rounds.append(rec)
        print(f"round {i:2d}: kill {rec['killed_at_s']} s [{rec['phase']}] -> {rec['outcome']} "
              f"({resumes} resume(s))", flush=True)
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        summary = {"rounds": len(rounds), "ok": sum(r["ok"] for r in rounds),
                   "killed": sum(r["killed_at_s"] is not None for r in rounds), "epochs": args.epochs,
                   "seed": args.seed, "reference_run_s": round(ref_s, 1), "per_round": rounds}
        atomic.write_json(args.out, summary)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{summary['killed']} of {summary['rounds']} rounds SIGKILLed; {summary['ok']} finished with a "
          f"continuous history and a loadable model.keras; {args.out}")
    sys.exit(0 if summary["ok"] == summary["killed"] == summary["rounds"] else 1)


if __name__ == "__main__":
    main()
