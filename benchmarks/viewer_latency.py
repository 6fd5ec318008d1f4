"""Latency of the viewer for one image, end to end (target: p50 under 1 s on a 2-core CPU).

One upload as the page handles it (:meth:`covidxray.viewer.session.Viewer.analyse`): decode the
file, calibrated probabilities + decision + OOD score (the prediction path of ``covidxray predict``),
one heat map, the lung contour (the lung segmenter's, for images without a dataset mask), the overlay rendered to an RGB array. After ``--warmup`` untimed images (they trace
the model's functions), ``--repeats`` timed calls cycle over the run's test images; the stages are
timed too. The run folder is only read.

    PYTHONPATH=src python benchmarks/viewer_latency.py [RUN] [--method gradcam] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from covidxray import atomic, paths


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default=str(paths.MODELS / "cxr-dev-128-e40"))
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(paths.BENCHMARK_RESULTS / "viewer_latency.json"))
    args = ap.parse_args(argv)

    from covidxray.data.cache import resize_for_model
    from covidxray.data.imageio import read_image
    from covidxray.evaluation.predict import score_images
    from covidxray.explain.registry import explain
    from covidxray.viewer.render import overlay_rgb
    from covidxray.viewer.session import Viewer

    tic = time.perf_counter()
    v = Viewer(args.run, log=lambda *_: None)
    load_s = time.perf_counter() - tic
    files = v.examples or [str(p) for p in v.table.query("split == 'test'")["path"][:6]]
    for i in range(args.warmup):
        v.analyse(files[i % len(files)], args.method)
    total, stages = [], {"decode": [], "predict": [], "heatmap": [], "lungs": [], "overlay": []}
    for i in range(args.repeats):
        f = files[i % len(files)]
        tic = time.perf_counter()
        v.analyse(f, args.method)
        total.append(time.perf_counter() - tic)
        t0 = time.perf_counter()  # the same stages once more, one by one
        x = resize_for_model(read_image(f), v.size)
        t1 = time.perf_counter()
        score_images(v.model, x[None], v.classes, v.cal, v.detector, 1)
        t2 = time.perf_counter()
        heat = explain(v.model, x[None], args.method, batch_size=v.cfg.explain.batch_size, **v.options[args.method])[0]
        t3 = time.perf_counter()
        lungs = v.segmenter.predict(x[None])[0] if v.segmenter is not None else None  # the page's mask lookup aside
        t4 = time.perf_counter()
        overlay_rgb(x, heat, lungs)
        t5 = time.perf_counter()
        for k, a, b in (("decode", t0, t1), ("predict", t1, t2), ("heatmap", t2, t3), ("lungs", t3, t4),
                        ("overlay", t4, t5)):
            stages[k].append(b - a)

    def pct(xs):
        return {"p50_s": float(np.percentile(xs, 50)), "p95_s": float(np.percentile(xs, 95)),
                "mean_s": float(np.mean(xs))}

    report = {"run": str(args.run), "image_size": v.size, "method": args.method, "repeats": args.repeats,
              "warmup": args.warmup, "images": len(files), "ood": v.detector is not None, "load_s": load_s,
              "end_to_end": pct(total), "stages": {k: pct(xs) for k, xs in stages.items()},
              "target_p50_s": 1.0, "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
              "machine": platform.platform()}
    atomic.write_json(args.out, report)
    e = report["end_to_end"]
    print(f"{args.method} at {v.size} px, {args.repeats} images after {args.warmup} warm-up: p50 {e['p50_s']:.3f} s, "
          f"p95 {e['p95_s']:.3f} s (" + ", ".join(f"{k} {s['p50_s']:.3f}" for k, s in report["stages"].items())
          + f"); load {load_s:.1f} s; load average {os.getloadavg()[0]:.1f}\nresults: {args.out}")
    return report


if __name__ == "__main__":
    main()
