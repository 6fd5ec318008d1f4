"""The viewer in a real browser: headless Chromium (Debian's packages) uploads files to `covidxray serve`.

Never skipped: without Chromium or chromedriver the test fails and says how to install them
(``make browser``, which ``make test`` runs first).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import viewer_browser as browser
from PIL import Image

import fixtures_images as fx


@pytest.fixture(scope="module")
def page_url(viewer_run):
    from covidxray.viewer.app import serve

    page, url = serve(viewer_run, port=browser.free_port(), block=False, log=lambda *_: None)
    yield url
    page.close()


@pytest.fixture(scope="module")
def driver():
    try:
        d = browser.chrome()
    except RuntimeError as err:
        pytest.fail(str(err))
    yield d
    d.quit()


def _image_bytes(driver, src: str) -> bytes:
    """The heat-map image's bytes, fetched by the page itself (same origin)."""
    if src.startswith("data:"):
        return base64.b64decode(src.split(",", 1)[1])
    b64 = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {"
        "  let s = ''; const u = new Uint8Array(b); for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]);"
        "  done(btoa(s)); });", src)
    return base64.b64decode(b64)


def test_upload_shows_probabilities_heatmap_and_reasons(driver, page_url, viewer, tmp_path):
    browser.open_page(driver, page_url)
    browser.upload(driver, viewer.examples[0])  # a phantom PNG of the run's test split
    probs = browser.wait_for(lambda: browser.probabilities(driver), what="the probabilities")
    assert list(probs) == viewer.classes and abs(sum(probs.values()) - 1) < 2e-3
    assert all(0 <= p <= 1 for p in probs.values())
    src = browser.wait_for(lambda: browser.heatmap_size(driver)[0] > 0 and browser.heatmap_src(driver),
                           what="the heat-map image")
    heat = np.asarray(Image.open(io.BytesIO(_image_bytes(driver, src))).convert("RGB"))
    assert heat.shape[0] >= 256 and heat.std() > 10  # an overlay, not a blank picture
    assert "lung contour from the dataset's mask" in browser.status_text(driver)
    expected = viewer.analyse(viewer.examples[0])  # the page shows what the viewer computes (4 decimals)
    assert probs == pytest.approx({c: round(p, 4) for c, p in expected.probs.items()}, abs=1e-4)

    bad = fx.write_truncated_png(tmp_path / "broken.png")
    browser.upload(driver, bad)
    reason = browser.wait_for(lambda: "cannot use" in browser.status_text(driver) and browser.status_text(driver),
                              what="the refusal reason")
    assert reason.startswith("cannot use broken.png: ") and "Traceback" not in reason
    assert browser.probabilities(driver) == {} and browser.heatmap_src(driver) == ""
