"""The cohort report and a pair's QC page opened in a real browser (headless Chromium driven by
Selenium, both from the system: Debian's ``chromium`` and ``chromium-driver``; nothing is
downloaded at run time, ``SE_OFFLINE=true``).

A small cohort (two 32 px synthetic pairs and a broken one, x LDDMM and vSVF, 2 iterations) is
run with the cohort workflow; then, at a 1400 x 900 window, every image of the report and of a
pair's QC page (reached by following the report's link) must load, every link must lead to a
file that exists (no link leaves the output folder's files), and the pages must fit the window's
width. Without chromium, chromedriver or selenium the test is skipped, unless
``RDMM_REQUIRE_BROWSER=1`` (the CI sets it), where it fails.
"""

import os

os.environ.setdefault("NO_ET", "1")  # pydra's online version check: not offline

import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from conftest import three_cohort_pairs

pytestmark = pytest.mark.filterwarnings("ignore")

WIDTH, HEIGHT = 1400, 900
METHODS = ["lddmm", "vsvf"]


def _browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths, or skip (fail with RDMM_REQUIRE_BROWSER=1)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = []
    if chromium is None:
        missing.append("chromium (apt install chromium)")
    if driver is None:
        missing.append("chromedriver (apt install chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[browser]')")
    if missing:
        why = "no browser to test the report in: missing " + ", ".join(missing)
        if os.environ.get("RDMM_REQUIRE_BROWSER") == "1":
            pytest.fail(why + " (RDMM_REQUIRE_BROWSER=1)")
        pytest.skip(why)
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium at 1400 x 900 driven by the system's chromedriver."""
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    before = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_window_size(WIDTH, HEIGHT)
        yield driver
    finally:
        driver.quit()
        if before is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = before


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A real cohort report: pairs 01 and 02, and 03 whose moving image is all zeros (it fails),
    each with LDDMM and vSVF (2 iterations, this process's worker)."""
    from rdmm_pipelines.workflows.cohort import run_cohort

    _browser()  # skip before the registrations when there is no browser
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("browser_cohort")
    pairs, config = three_cohort_pairs(root / "inputs")
    return run_cohort(pairs, root / "out", METHODS, worker="debug", config_json=config, threads=1,
                      progress=False)


# ------------------------------------------------------------------ what a page must pass
_PENDING_IMAGES = """
const pending = Array.from(document.images).filter(img => !img.complete);
if (pending.length) { pending[0].scrollIntoView(); }  // lazy images load once near the view
return pending.length;
"""

_BROKEN_IMAGES = """
return Array.from(document.images)
    .filter(img => !(img.complete && img.naturalWidth > 0))
    .map(img => img.getAttribute('src').slice(0, 80));
"""


def _open(driver, url: str) -> None:
    """Load ``url`` and wait until the document and every image (lazy ones too) have loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    deadline = time.monotonic() + 60
    while driver.execute_script(_PENDING_IMAGES) and time.monotonic() < deadline:
        time.sleep(0.1)
    driver.execute_script("window.scrollTo(0, 0);")


def _check_page(driver, url: str) -> list[str]:
    """Open ``url``: every image loaded, the page fits 1400 px, every link a file that exists.
    Returns the links (absolute file:// URLs)."""
    _open(driver, url)
    assert driver.execute_script("return window.innerWidth") <= WIDTH
    assert driver.execute_script(_BROKEN_IMAGES) == [], f"{url}: images that did not load"
    assert driver.execute_script("return document.images.length") > 0
    scroll_width = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll_width <= WIDTH, f"{url}: {scroll_width} px wide, more than a {WIDTH} px window"
    links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    for link in links:
        parsed = urlparse(link)
        assert parsed.scheme == "file", f"{url}: link {link} leaves the output folder"
        assert Path(unquote(parsed.path)).is_file(), f"{url}: link {link} leads to no file"
    return links


def test_the_cohort_report_and_a_qc_page_load_whole_in_a_browser(browser, cohort):
    out = cohort.report.parent
    links = _check_page(browser, cohort.report.as_uri())
    ok = [r for r in cohort.rows if r["status"] != "failed"]
    assert len(ok) == 4 and len(cohort.rows) == 6  # pair 03 failed with both methods
    assert sorted(links) == sorted((out / f"sub-{r['id']}" / r["method"] / f"sub-{r['id']}_qc.html").as_uri()
                                   for r in ok)
    # the thumbnails: one per registered pair, the QC figure itself (relative, lazy), not embedded
    thumbs = browser.execute_script(
        "return Array.from(document.querySelectorAll('td.thumb img'))"
        ".map(img => [img.getAttribute('src'), img.getAttribute('loading'), img.naturalWidth, img.width])")
    assert len(thumbs) == len(ok)
    for src, loading, natural, shown in thumbs:
        assert not src.startswith(("data:", "file:", "/")) and src.endswith("_qc.png") and loading == "lazy"
        assert natural > shown > 0  # shown small
    # the reference row, once per registered pair
    before = browser.find_elements("css selector", "tr.before")
    assert len(before) == 1 + 2 and all("before registration" in tr.text for tr in before)

    # follow the first pair's link: its QC page loads whole and fits the window as well
    first = out / "sub-01" / METHODS[0] / "sub-01_qc.html"
    anchor = browser.find_element("css selector", 'a[href="sub-01/lddmm/sub-01_qc.html"]')
    anchor.click()
    assert unquote(urlparse(browser.current_url).path) == str(first)
    _check_page(browser, browser.current_url)
    assert "mean Dice" in browser.find_element("css selector", "table.metrics").text
    figure = browser.find_element("css selector", "figure img")
    assert figure.size["width"] <= WIDTH and browser.title.startswith("lddmm")
