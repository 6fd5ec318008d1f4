"""Drive the viewer page with headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via Selenium.

Shared by the browser test and ``benchmarks/viewer_screenshot.py``. :func:`chrome` fails with a
clear message, never a skip, when the browser or its driver is missing (``make browser`` installs
them with apt-get).
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"
MISSING = ("headless Chromium is missing ({what} not on PATH): install Debian's packages with "
           "`make browser` (apt-get install -y chromium chromium-driver)")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chrome(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver on the system browser and driver.

    Raises:
        RuntimeError: The browser or chromedriver is not installed (with the command that installs them).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = shutil.which(DRIVER)
    if binary is None or driver is None:
        raise RuntimeError(MISSING.format(what=" and ".join(
            n for n, p in (("chromium", binary), ("chromedriver", driver)) if p is None)))
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_for(fn, timeout: float = 60.0, every: float = 0.25, what: str = "condition"):
    """Poll ``fn()`` until it returns something truthy; its value, or TimeoutError naming ``what``."""
    end = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
        except Exception as err:  # the page is still rendering
            last_err = err
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" ({last_err})" if last_err else ""))


def open_page(driver, url: str, timeout: float = 60.0) -> None:
    """Load the viewer and wait for its upload field."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"), timeout, what="the upload field")


def upload(driver, path: str | Path) -> None:
    """Put a file into the page's upload field (as a drop or a file dialog would)."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label=Clear]"):
        button.click()  # a file is shown: clear it so the field takes the next one
    field = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"), 30,
                     what="an empty upload field")[0]
    field.send_keys(str(Path(path).resolve()))


def status_text(driver) -> str:
    """The text of the status panel (warnings, or the reason a file was refused)."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def probabilities(driver) -> dict[str, float]:
    """Class -> calibrated probability as shown in the page ({} before an image is analysed)."""
    from selenium.webdriver.common.by import By

    spans = driver.find_elements(By.CSS_SELECTOR, "#probs span.prob")
    return {s.get_attribute("data-class"): float(s.text) for s in spans}


def heatmap_src(driver) -> str:
    """The ``src`` of the heat-map image ("" when none is shown)."""
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, "#heatmap img")
    return (imgs[0].get_attribute("src") or "") if imgs else ""


def heatmap_size(driver) -> tuple[int, int]:
    """Natural width and height of the heat-map image once it has loaded ((0, 0) otherwise)."""
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, "#heatmap img")
    if not imgs:
        return 0, 0
    w, h = driver.execute_script("return [arguments[0].complete ? arguments[0].naturalWidth : 0, "
                                 "arguments[0].naturalHeight];", imgs[0])
    return int(w), int(h)
