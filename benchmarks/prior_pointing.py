"""Does the attribution prior move Grad-CAM's pointing game on the phantoms' lesions?

Two runs of the demo recipe (``configs/demo.yaml``: 128 px, 30 epochs, from scratch) on the demo
phantoms, the same seed and split, differing only in ``train.attribution_prior`` (0, then each
``--lambdas`` value; Ross et al. 2017: the share of input-gradient energy outside the lungs is
penalised, the phantoms' own lung masks are the lungs). Each run is explained by ``covidxray interpret``
on its test split (the same images for every run: same split, same seed); the per-image table
(``localisation.csv``) gives, per method, the pointing game on the lesion-bearing images (Wilson 95%
interval), the mean energy share inside the lungs and inside the lesion, and, against the run without
the prior, McNemar's test of the pointing-game hits on the same images
(:mod:`covidxray.explain.pointing_compare`). A uniform map's pointing game is the lesions' mean area
fraction (``chance`` in ``interpret.json``).

  python benchmarks/prior_pointing.py [--lambdas 1.0] [--epochs 30] [--n-per-class 45]
      [--methods gradcam,gradient] [--runs models/prior-pointing]

A finished run is reused, a killed one resumed. Writes benchmarks/results/prior_pointing.json and .md
(atomically).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# mitigations.py sits beside this script (its folder is on sys.path when it runs)
from mitigations import CLI, run_logged, train_resume_or_reuse  # noqa: E402

from covidxray import atomic, paths  # noqa: E402
from covidxray.explain.pointing_compare import compare_pointing, to_markdown  # noqa: E402

DATA = paths.ROOT / "data" / "phantoms"


def demo_data(log: Path) -> Path:
    """The demo phantoms and their split, made as ``make demo`` makes them when they are missing."""
    splits = DATA / "splits.csv"
    if not splits.is_file():
        run_logged(CLI + ["phantoms", str(DATA), "--n-per-class", "300", "--seed", "42"], log)
        run_logged(CLI + ["index", str(DATA), "-o", str(DATA / "index.csv")], log)
        run_logged(CLI + ["split", str(DATA / "index.csv"), "-o", str(splits), "--seed", "42"], log)
    return splits


def train_and_explain(lam: float, args, splits: Path) -> Path:
    """Train (or reuse / resume) the run with prior weight ``lam`` and explain its test split."""
    run = args.runs / f"lambda-{lam:g}"
    log = args.runs / f"lambda-{lam:g}.log"
    sets = [f"train.attribution_prior={lam:g}", f"train.epochs={args.epochs}", "model.weights=none",
            f"seed={args.seed}"]
    train_resume_or_reuse(run, ["--config", "demo", "--data", str(splits), *sum((["--set", s] for s in sets), [])],
                          log)
    out = run / "interpret" / "prior-pointing"
    if not (out / "interpret.json").is_file():
        run_logged(CLI + ["interpret", str(run), "--n-per-class", str(args.n_per_class), "-o", str(out),
                    *sum((["-m", m] for m in args.methods), [])], log)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lambdas", default="1.0", help="comma-separated prior weights beside 0")
    ap.add_argument("--epochs", type=int, default=30, help="the demo recipe's 30 by default")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-per-class", type=int, default=45, help="test images per class to explain (45: all)")
    ap.add_argument("--methods", default="gradcam,gradient", type=lambda s: s.split(","))
    ap.add_argument("--runs", type=Path, default=paths.ROOT / "models" / "prior-pointing")
    ap.add_argument("--out", type=Path, default=paths.ROOT / "benchmarks" / "results" / "prior_pointing")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    splits = demo_data(args.runs / "data.log")
    lambdas = [0.0, *(float(x) for x in args.lambdas.split(",") if float(x) != 0.0)]
    runs = {lam: train_and_explain(lam, args, splits) for lam in lambdas}
    table = compare_pointing({f"lambda {lam:g}": run / "interpret" / "prior-pointing" for lam, run in runs.items()})
    atomic.write_json(args.out.with_suffix(".json"),
                      {"epochs": args.epochs, "seed": args.seed, "methods": args.methods,
                       "runs": {f"{lam:g}": str(r) for lam, r in runs.items()},
                       "table": json.loads(table.to_json(orient="records"))})
    atomic.write_text(args.out.with_suffix(".md"), to_markdown(table))
    print(to_markdown(table))


if __name__ == "__main__":
    main()
