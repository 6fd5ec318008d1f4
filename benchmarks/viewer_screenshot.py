"""The README's screenshot of the viewer: serve a run, upload one of its test images with headless
Chromium, save the page as ``figures/results/viewer.png`` (palette PNG, kept under 300 KB).

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser``) and selenium
(requirements-dev.txt); uses the browser helpers of the viewer's tests. The run folder is only read.

    PYTHONPATH=src python benchmarks/viewer_screenshot.py [RUN] [--image PATH]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from covidxray import atomic, paths

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "viewer"))
import viewer_browser as browser  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default=str(paths.MODELS / "cxr-dev-128-e40"))
    ap.add_argument("--image", help="File to upload (default: the run's first COVID-19 test image).")
    ap.add_argument("--out", default=str(paths.ROOT / "figures" / "results" / "viewer.png"))
    ap.add_argument("--size", default="1400x1050", help="Browser window WIDTHxHEIGHT.")
    args = ap.parse_args(argv)

    from PIL import Image

    from covidxray.viewer.app import serve

    page, url = serve(args.run, port=browser.free_port(), block=False, log=print)
    width, height = (int(v) for v in args.size.split("x"))
    driver = browser.chrome(width, height)
    try:
        browser.open_page(driver, url)
        image = args.image or next(iter(_examples(args.run)))
        browser.upload(driver, image)
        browser.wait_for(lambda: browser.probabilities(driver), what="the probabilities")
        browser.wait_for(lambda: browser.heatmap_size(driver)[0] > 0, what="the heat map")
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
        page.close()
    shot = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    buf = io.BytesIO()
    shot.save(buf, format="PNG", optimize=True)
    out = atomic.write_bytes(args.out, buf.getvalue())
    print(f"screenshot ({len(buf.getvalue()) / 1024:.0f} KB): {out}")
    return out


def _examples(run: str) -> list[str]:
    from covidxray.data.pipeline import read_splits
    from covidxray.runinfo import read_run
    from covidxray.viewer.inputs import example_paths

    meta = read_run(run)
    return example_paths(read_splits(Path(run) / "splits.csv", meta["classes"]), meta["classes"], per_class=1)


if __name__ == "__main__":
    main()
