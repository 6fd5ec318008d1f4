"""OOD AUROC of a run: its test split (in-distribution) against images that are not frontal CXRs.

Every method of :data:`covidxray.evaluation.ood.METHODS` is fitted on the run's training split and
thresholded on its validation split (the test split and the OOD images never choose anything),
then scored on the test split and on natural photographs (scikit-learn / matplotlib sample
photos, random crops), synthetic patterns, inverted test films and MRI head-slice crops
(:mod:`covidxray.evaluation.ood_images`). Writes AUROC per OOD kind (``roc_auc_score``, OOD = positive),
the share of each kind flagged at the threshold, the test-split pass rate and, when the run has
one, the same for its stored detector.

    PYTHONPATH=src .venv/bin/python benchmarks/ood_auroc.py [models/cxr-dev-128-e40]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from covidxray import atomic, paths, runinfo  # noqa: E402
from covidxray.data import pipeline as data  # noqa: E402
from covidxray.data.cache import cached_images  # noqa: E402
from covidxray.evaluation import ood, ood_images  # noqa: E402
from covidxray.runinfo import run_config  # noqa: E402


def _evaluate(det: ood.Detector, feats: dict, kinds: dict) -> dict:
    from sklearn.metrics import roc_auc_score

    scores = {name: det.score_features(f) for name, f in feats.items()}
    test = scores["test"]
    out = {"test_pass_rate": float(np.mean(~det.flag(test))), "val_pass_rate": det.val_pass_rate,
           "threshold": det.threshold, "auroc": {}, "flagged": {}}
    for kind in kinds:
        s = scores[kind]
        y = np.r_[np.zeros(len(test)), np.ones(len(s))]
        out["auroc"][kind] = float(roc_auc_score(y, np.r_[test, s]))
        out["flagged"][kind] = float(np.mean(det.flag(s)))
    return out, scores


def _by_group(flags: np.ndarray, groups: list[str]) -> dict[str, float]:
    g = np.asarray(groups)
    return {k: float(flags[g == k].mean()) for k in dict.fromkeys(groups)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default=str(paths.MODELS / "cxr-dev-128-e40"))
    ap.add_argument("--out", default=str(paths.BENCHMARK_RESULTS / "ood_auroc.json"))
    ap.add_argument("--n-natural", type=int, default=300)
    ap.add_argument("--n-patterns", type=int, default=300)
    ap.add_argument("--n-mri", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    run = paths.resolve(args.run)
    model, meta = runinfo.load_run(run)
    cfg, classes, size = run_config(run), list(meta["classes"]), int(meta["image_size"])
    splits = data.read_splits(run / "splits.csv", classes)
    images = {s: cached_images(list(splits.loc[splits["split"] == s, "path"]), size, cfg)
              for s in ("train", "val", "test")}
    labels = np.array([classes.index(c) for c in splits.loc[splits["split"] == "train", "label"]])
    natural, sources = ood_images.natural_images(args.n_natural, size, args.seed)
    patterns, pattern_kinds = ood_images.synthetic_patterns(args.n_patterns, size, args.seed)
    extra = {"natural": natural, "patterns": patterns, "inverted": ood_images.inverted(images["test"]),
             "mri_slice": ood_images.mri_slices(args.n_mri, size, args.seed)}
    extra = {k: v for k, v in extra.items() if len(v)}
    keys = list(dict.fromkeys(k for comps in ood.METHODS.values() for k in ood.feature_keys(comps)))
    feats = {name: ood.extract(model, imgs, cfg.train.batch_size, keys)
             for name, imgs in {**images, **extra}.items()}
    print(f"features of {sum(len(v) for v in {**images, **extra}.values())} images in {time.monotonic() - t0:.0f} s")

    results, chosen_scores = {}, None
    for method in ood.METHODS:
        det = ood.fit_features(feats["train"], labels, feats["val"], method)
        results[method], scores = _evaluate(det, {k: v for k, v in feats.items() if k != "train"}, extra)
        if method == ood.DEFAULT_METHOD:
            chosen_scores, chosen = scores, det
    report = {
        "run": str(run), "image_size": size, "default_method": ood.DEFAULT_METHOD,
        "n": {k: int(len(v)) for k, v in {**images, **extra}.items()},
        "ood_kinds": {"natural": "random crops of the scikit-learn and matplotlib sample photographs "
                                 f"({', '.join(dict.fromkeys(sources))}), grayscale",
                      "patterns": ", ".join(ood_images.PATTERNS),
                      "inverted": "255 - x of every test image",
                      "mri_slice": "crops of matplotlib's MRI head slice (s1045.ima.gz)"},
        "not_covered": "lateral views and CT slices (none can be made offline here)",
        "methods": results,
    }
    if chosen_scores is not None:
        report["default_flagged_by_kind"] = {
            "patterns": _by_group(chosen.flag(chosen_scores["patterns"]), pattern_kinds),
            "natural": _by_group(chosen.flag(chosen_scores["natural"]), sources)}
    if (run / ood.OOD_JSON).is_file():
        stored = ood.Detector.load(run)
        report["stored_detector"] = {"method": stored.method,
                                     **_evaluate(stored, {k: v for k, v in feats.items() if k != "train"}, extra)[0]}
    report["wall_s"] = round(time.monotonic() - t0, 1)
    atomic.write_json(args.out, report)

    kinds = list(extra)
    print(f"{'method':<24} {'test pass':>9} " + " ".join(f"{k:>10}" for k in kinds) + "   (AUROC)")
    for method, r in results.items():
        print(f"{method:<24} {r['test_pass_rate']:>9.3f} " + " ".join(f"{r['auroc'][k]:>10.3f}" for k in kinds))
    print(f"results: {args.out}")
    return report


if __name__ == "__main__":
    main()
