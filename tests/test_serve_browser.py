"""The web page of `delf serve` in headless Chromium: upload a photo through the file input, see the
verdict, the result thumbnails and the inlier picture; the photos view lists the index. Saves a
screenshot in the test's temporary folder; with DELF_UPDATE_SCREENSHOT=1 it also replaces
docs/serve.png (the README's picture), so that a test run never changes a tracked file.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them) and selenium: with CI=true a
missing one fails the test, otherwise it is skipped with the reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"
WIDTH, HEIGHT = 1200, 900


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            _missing(f"{path} is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The viewport itself WIDTH x HEIGHT (the window's size would include the browser's frame).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def _all_loaded(driver, css: str, at_least: int = 1) -> bool:
    """At least ``at_least`` img elements match ``css`` and every one has loaded (naturalWidth > 0)."""
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll(arguments[0])];"
        "return imgs.length >= arguments[1] && imgs.every(i => i.complete && i.naturalWidth > 0);", css, at_least)


def test_the_page_searches_with_an_uploaded_photo(lund_server, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(lund_server.url + "/")
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: "9 photos indexed" in d.find_element(By.ID, "index-status").text)
    browser.find_element(By.ID, "search-file").send_keys(str(lund_server.photos[-1]))
    wait.until(lambda d: d.find_element(By.ID, "verdict-label").text in ("MATCH", "No match", "Could not search"))
    assert browser.find_element(By.ID, "verdict-label").text == "MATCH"
    assert "lund_" in browser.find_element(By.ID, "verdict-detail").text
    wait.until(lambda d: _all_loaded(d, "#results .result img", 5))
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .result .title")]
    assert len(names) == 5 and all(n.startswith("lund_") for n in names)
    wait.until(lambda d: _all_loaded(d, "#search-picture-img"))
    assert browser.find_element(By.ID, "search-picture").is_displayed()
    wait.until(lambda d: _all_loaded(d, "#search-preview"))

    screenshot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(screenshot))
    shot = Image.open(screenshot)
    assert shot.size == (WIDTH, HEIGHT)
    if os.environ.get("DELF_UPDATE_SCREENSHOT") == "1":
        # Kept small in the repository: 256 colours.
        shot.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(DOCS_SCREENSHOT, optimize=True)

    # The photos view lists the index, each with its thumbnail.
    browser.find_element(By.CSS_SELECTOR, 'a[data-view="photos"]').click()
    wait.until(lambda d: d.find_element(By.ID, "photo-count").text == "(9)")
    wait.until(lambda d: _all_loaded(d, "#gallery .photo img", 9))
