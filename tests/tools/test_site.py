"""Open the built site in a headless browser, page by page.

Every page of ``_toc.yml`` is loaded from a local HTTP server in Debian's
Chromium (driven by Selenium), and must show all of its images, typeset its
equations with the MathJax the site serves itself, fetch nothing from any
other host, and log no error in the browser console.

The site is the ``ci`` build of ``tests/test_build.py`` (built once per
session, whichever module asks first), or the folder named by the
environment variable ``LOCALPROPS_SITE_DIR`` (e.g. ``_build/html`` after
``make book``), which skips building.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from localprops.tools import build as lpbuild

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = ("install Debian chromium + chromium-driver: "
                "apt-get install -y chromium chromium-driver")
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1280,900")
PAGES = lpbuild.toc_files(ROOT / "_toc.yml")
TIMEOUT = 30.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory) -> Path:
    given = os.environ.get("LOCALPROPS_SITE_DIR")
    if given:
        html = Path(given)
        if not (html / "index.html").is_file():
            pytest.fail(f"LOCALPROPS_SITE_DIR={given} holds no index.html")
        return html
    from test_build import build_ci_site

    return build_ci_site(tmp_path_factory)


@pytest.fixture(scope="session")
def base_url(site_dir):
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output readable
            pass

    handler = functools.partial(QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing; {INSTALL_HINT}")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed "
        "(pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver: Selenium Manager would otherwise try the network
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)),
                              options=options)
    driver.set_script_timeout(TIMEOUT)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def wait_for(driver, script: str, what: str) -> None:
    """Poll a JavaScript condition until it holds, or fail saying what."""
    deadline = time.monotonic() + TIMEOUT
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def load(driver, url: str) -> list[dict]:
    """Open ``url``, wait for images and MathJax; return the console log."""
    driver.get_log("browser")            # drop what earlier pages logged
    driver.get(url)
    wait_for(driver, "return document.readyState === 'complete'", "the page")
    wait_for(driver,
             "return Array.from(document.images).every(i => i.complete)",
             "the images")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const mj = window.MathJax;"
        "if (mj && mj.startup && mj.startup.promise) {"
        "  mj.startup.promise.then(() => done(true), () => done(false));"
        "} else { done(true); }")
    return driver.get_log("browser")


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline_without_errors(browser, base_url, page):
    log = load(browser, f"{base_url}/{page}.html")

    title = browser.find_element("css selector", "article h1").text
    assert title, f"{page} has no title"

    broken = browser.execute_script(
        "return Array.from(document.querySelectorAll('article img'))"
        ".filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, f"images that did not load: {broken}"

    elsewhere = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        f".filter(u => !u.startsWith({base_url!r}))")
    assert not elsewhere, f"fetched from outside the site: {elsewhere}"

    math = browser.execute_script(
        "return document.querySelectorAll('article .math').length")
    if math:
        typeset = browser.execute_script(
            "return [document.querySelectorAll('mjx-container').length,"
            " document.querySelectorAll('mjx-merror').length]")
        assert typeset[0] > 0, "the page has math but MathJax typeset none"
        assert typeset[1] == 0, "MathJax reported errors in equations"

    errors = [entry["message"] for entry in log if entry["level"] == "SEVERE"]
    assert not errors, "browser console errors:\n" + "\n".join(errors)


def test_root_redirects_to_the_first_page(browser, base_url):
    log = load(browser, f"{base_url}/index.html")
    wait_for(browser, f"return location.pathname === '/{PAGES[0]}.html'",
             f"the redirect to {PAGES[0]}.html")
    log += browser.get_log("browser")
    errors = [entry["message"] for entry in log if entry["level"] == "SEVERE"]
    assert not errors, "browser console errors:\n" + "\n".join(errors)


def test_mathjax_is_the_local_copy(browser, base_url):
    load(browser, f"{base_url}/{PAGES[0]}.html")
    sources = browser.execute_script(
        "return Array.from(document.scripts).map(s => s.src)"
        ".filter(s => s.includes('tex-mml-chtml'))")
    assert sources and all(s.startswith(f"{base_url}/_static/mathjax/")
                           for s in sources), sources


EXPLORER_PAGE = "book/07_explorer"


def test_static_explorer_draws_offline_and_responds(browser, base_url):
    """07's plotly explorer on the built site: plotly.js once, from the site; clicks move it.

    Needs a site built with 07's static-explorer cells (the ci build of this
    module, or LOCALPROPS_SITE_DIR); skipped while notebooks/07_explorer.ipynb
    does not use localprops.report.static_explorer.
    """
    source = (ROOT / "notebooks" / "07_explorer.ipynb").read_text(encoding="utf-8")
    if "static_explorer" not in source:
        pytest.skip("notebooks/07_explorer.ipynb has no static explorer yet")
    from selenium.webdriver.common.action_chains import ActionChains

    log = load(browser, f"{base_url}/{EXPLORER_PAGE}.html")
    wait_for(browser, "return document.querySelector('.localprops-plotly.js-plotly-plot')"
             " !== null", "the static explorer to be drawn")
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in loaded if not u.startswith(base_url)] == []
    assert [u for u in loaded if u.endswith("plotly.min.js")] == \
        [f"{base_url}/{lpbuild.PLOTLY_SITE_PATH}"], "plotly.js must load once, from the site"
    shown = ("JSON.stringify(Array.from("
             "document.querySelector('.localprops-plotly').data[0].x))")
    plot = browser.find_element("css selector", ".localprops-plotly")
    samples = plot.find_elements("css selector", ".updatemenu-button")
    assert len(samples) >= 2, "the sample buttons are missing"
    browser.execute_script(f"window.lpShown = {shown};")
    samples[1].click()
    wait_for(browser, f"return {shown} !== window.lpShown",
             "the histogram to change with the sample")
    browser.execute_script(f"window.lpShown = {shown};")
    rail = [r for r in plot.find_elements("css selector", ".slider-rail-touch-rect")
            if r.size["width"] > 0][0]
    ActionChains(browser).move_to_element_with_offset(
        rail, -rail.size["width"] // 2 + 3, 0).click().perform()     # the smallest radius
    wait_for(browser, f"return {shown} !== window.lpShown",
             "the histogram to change with the radius")
    log += browser.get_log("browser")
    errors = [entry["message"] for entry in log if entry["level"] == "SEVERE"]
    assert not errors, "browser console errors:\n" + "\n".join(errors)


CHAPTER_PAGES = [page for page in PAGES
                 if (ROOT / "notebooks" / f"{Path(page).name}.ipynb").is_file()]


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_injected_parameters_are_hidden_unless_they_change_a_value(browser, base_url,
                                                                   site_dir, page):
    """papermill's injected cell: left out of the page when it repeats the notebook's values.

    The executed notebook behind the page (the site's ``_sources`` copy, the
    one the download button serves) says which case applies: tagged
    ``remove-cell`` (it repeats the values) or not (it changes one, and is then
    shown under a header saying so). The page must show the notebook's own
    parameters cell once either way.
    """
    import nbformat

    source = site_dir / "_sources" / f"{page}.ipynb"
    assert source.is_file(), f"the site has no {source.relative_to(site_dir)}"
    nb = nbformat.read(source, as_version=4)
    injected = [cell for cell in nb.cells
                if "injected-parameters" in cell.metadata.get("tags", [])]
    load(browser, f"{base_url}/{page}.html")
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('.tag_injected-parameters'))"
        ".map(e => e.innerText)")
    own = browser.execute_script(
        "return document.querySelectorAll('.tag_parameters').length")
    assert own == 1, f"{page} shows {own} parameters cells of its own, not 1"
    expected = [cell for cell in injected
                if "remove-cell" not in cell.metadata.get("tags", [])]
    assert len(shown) == len(expected), (
        f"{page} shows {len(shown)} injected cells; its notebook has {len(injected)}, "
        f"{len(injected) - len(expected)} of them repeating its own values (hidden)")
    for text in shown:
        assert text.lstrip().startswith("# Parameters of profile"), (
            f"{page} shows an injected cell without the header that says it replaces "
            f"the values above: {text[:80]!r}")


TEACHING_PAGE = "book/teaching"


def test_teaching_page_links_to_the_student_edition(browser, base_url):
    """The teachers' page links every chapter's student notebook and the zip; all are served.

    The links are fetched in the browser (each must answer 200 from the
    site itself), and the zip is read: one notebook per chapter, no solution
    left, every exercise of the source chapter kept.
    """
    import io
    import urllib.request
    import zipfile

    import nbformat

    from localprops.tools import student

    if TEACHING_PAGE not in PAGES:
        pytest.skip(f"{TEACHING_PAGE} is not in _toc.yml")
    log = load(browser, f"{base_url}/{TEACHING_PAGE}.html")
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('.localprops-student-edition a'))"
        ".map(a => a.href)")
    chapters = sorted(path.name for path in
                      (ROOT / "notebooks").glob(lpbuild.NOTEBOOK_GLOB))
    prefix = f"{base_url}/{lpbuild.STUDENT_SITE_DIR}/"
    assert all(link.startswith(prefix) for link in links), links
    assert sorted(link[len(prefix):] for link in links) == sorted(
        [lpbuild.STUDENT_ZIP, *chapters]), "the page must link every chapter and the zip"
    statuses = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(arguments[0].map(u => fetch(u).then(r => r.status, () => 0)))"
        ".then(done);", links)
    assert statuses == [200] * len(links), dict(zip(links, statuses))
    with urllib.request.urlopen(prefix + lpbuild.STUDENT_ZIP) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    names = sorted(Path(name).name for name in archive.namelist())
    assert names == chapters
    for name in archive.namelist():
        text = archive.read(name).decode("utf-8")
        assert "{solution" not in text, f"{name} in the zip still holds a solution"
        kept = student.exercise_labels(nbformat.reads(text, as_version=4))
        wanted = student.exercise_labels(
            nbformat.read(ROOT / "notebooks" / Path(name).name, as_version=4))
        assert kept == wanted, f"{name}: exercises {sorted(wanted - kept)} are missing"
    errors = [entry["message"] for entry in log if entry["level"] == "SEVERE"]
    assert not errors, "browser console errors:\n" + "\n".join(errors)
