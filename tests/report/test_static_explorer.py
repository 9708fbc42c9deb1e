"""The static-site explorer: a plotly figure of score studies, drawn offline.

The figure's controls must reach every (model, sample, radius), its numbers
be the study's, its images the study's own perturbations; the HTML must load
plotly.js from the site (never a CDN, never inline), once per page; the build
must put plotly's bundled plotly.js where the site serves it. The last test
opens a page with two figures in headless Chromium (skipped without it).
"""
from __future__ import annotations

import base64
import copy
import functools
import http.server
import io
import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import SmoothNet, TinyConvNet, spec_of
from localprops.core.engine import true_class_log_odds
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.studies.scores import ScoreStudy, score_study
from localprops.tools import build as lpbuild

plotly = pytest.importorskip("plotly", reason="plotly is in the `book` extra")
se = pytest.importorskip("localprops.report.static_explorer")

RADII = [1e-3, 1.0, 10.0]
T = 4


def _samples(shape, seed, n=2) -> SampleSet:
    g = torch.Generator().manual_seed(seed)
    return SampleSet(images=torch.rand(n, *shape, generator=g) * 255, labels=[1, 3][:n],
                     seeds=[101 + seed, 202 + seed][:n], ids=[5 + seed, 9 + seed][:n])


@pytest.fixture(scope="module")
def world():
    """Two tiny models with their samples and isotropy studies (2 samples, T = 4)."""
    torch.manual_seed(0)
    nets = {"tiny": TinyConvNet().eval(), "smooth": SmoothNet().eval()}
    sets = {"tiny": _samples((3, 16, 16), 0), "smooth": _samples((3, 6, 6), 1)}
    studies = [score_study(spec_of(net, name), sets[name], radii=RADII, T=T, progress=False)
               for name, net in nets.items()]
    return nets, sets, studies


@pytest.fixture(scope="module")
def figure(world):
    nets, sets, studies = world
    return se.static_explorer_figure(studies, sets, n_samples=3, models=nets)


def _decode(uri: str) -> np.ndarray:
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def _show(args, layout):
    """Apply an ``update`` button's layout changes to a dict copy of the layout."""
    for path, value in args[1].items():
        node, parts = layout, path.split(".")
        for part in parts[:-1]:
            name, _, index = part.partition("[")
            node = node[name][int(index[:-1])] if index else node.setdefault(name, {})
        node[parts[-1]] = value


def test_controls_reach_every_model_sample_and_radius(world, figure):
    _, _, studies = world
    layout = figure.to_plotly_json()["layout"]
    menus, sliders = layout["updatemenus"], layout["sliders"]
    assert len(menus) == 1 + len(studies)
    assert [b["label"] for b in menus[0]["buttons"]] == [s.model for s in studies]
    pairs = [(m, s) for m, study in enumerate(studies) for s in range(len(study.ids))]
    assert len(sliders) == len(pairs) == 4
    for k, (m, s) in enumerate(pairs):
        # choose the model, then the sample: exactly this pair's slider shows
        state = json.loads(json.dumps(layout))
        _show(menus[0]["buttons"][m]["args"], state)
        assert [u.get("visible", True) for u in state["updatemenus"][1:]] == \
            [j == m for j in range(len(studies))]
        _show(state["updatemenus"][1 + m]["buttons"][s]["args"], state)
        assert [sl["visible"] for sl in state["sliders"]] == [j == k for j in range(len(pairs))]
        steps = sliders[k]["steps"]
        assert [st["label"] for st in steps] == [f"{r:g}" for r in RADII]
        for r, step in enumerate(steps):
            data, _, traces = step["args"]
            assert traces == [0, 1, 2]
            assert data["x"][0] == studies[m].log_odds[s, r].tolist()


def test_starting_view_is_the_first_pair_at_the_radius_nearest_ten(world, figure):
    _, _, studies = world
    start = RADII.index(10.0)
    assert figure.layout.sliders[0].active == start and figure.layout.sliders[0].visible
    assert list(figure.data[0].x) == studies[0].log_odds[0, start].tolist()
    assert figure.data[1].source == figure.layout.sliders[0].steps[start].args[0]["source"][1]


@pytest.mark.parametrize("m", [0, 1])
def test_images_show_the_studys_own_perturbations(world, figure, m):
    nets, sets, studies = world
    study, samples = studies[m], sets[studies[m].model]
    net64 = copy.deepcopy(nets[study.model]).double()
    slider = figure.layout.sliders[2 * m + 1]          # the second sample
    for r, radius in enumerate(RADII):
        nu = se.displayed_perturbation(study, samples, 1, r, 0)
        expected = RadialPerturbations(tuple(samples.images.shape[1:]), [radius], T,
                                       study.norm, samples.seeds[1]).materialize(
                                           dtype=torch.float64)[0, 0]
        assert torch.equal(nu, expected)
        x = samples.images[1].double()
        shown = _decode(slider.steps[r].args[0]["source"][1])
        want = (x + nu).clamp(0, 255).round().permute(1, 2, 0).numpy().astype(np.uint8)
        np.testing.assert_array_equal(shown, want)
        # the study scored this very draw: its value is the nearest of the T
        with torch.no_grad():
            value = float(true_class_log_odds(net64((x + nu)[None]), study.labels[1])[0])
        row = study.log_odds[1, r]
        assert int(np.argmin(np.abs(row - value))) == 0
        assert abs(row[0] - value) <= 0.05 * np.ptp(row) + 1e-12
        magnified = _decode(slider.steps[r].args[0]["source"][2]).astype(float)
        assert magnified.min() <= 1 or magnified.max() >= 254     # the full grey range


def test_clean_value_is_marked_only_with_the_models(world, figure):
    nets, sets, studies = world
    samples = sets["smooth"]
    with torch.no_grad():
        clean = float(true_class_log_odds(
            copy.deepcopy(nets["smooth"]).double()(samples.images[:1].double()),
            samples.labels[0])[0])
    step = figure.layout.sliders[2].steps[0].args[1]   # smooth, sample 0, eps
    assert step["shapes[0].visible"] is True
    assert step["shapes[0].x0"] == pytest.approx(clean, rel=1e-12, abs=1e-12)
    bare = se.static_explorer_figure(studies, sets, n_samples=1)
    assert len(bare.layout.sliders) == 2
    assert bare.layout.shapes[0].visible is False
    assert "clean" not in bare.layout.sliders[0].steps[0].args[1]["annotations[0].text"]


def test_probability_and_sample_limit(world):
    _, sets, studies = world
    fig = se.static_explorer_figure(studies[:1], sets, n_samples=1, quantity="probability")
    assert len(fig.layout.sliders) == 1 and len(fig.layout.updatemenus[1].buttons) == 1
    assert fig.layout.sliders[0].steps[1].args[0]["x"][0] == studies[0].scores[0, 1].tolist()
    assert fig.layout.xaxis.title.text == "true-class probability"


def test_large_images_are_subsampled_and_say_so():
    samples = _samples((3, 40, 40), 2, n=1)
    values = np.linspace(0, 1, 2 * 3).reshape(1, 2, 3)
    study = ScoreStudy(model="big", kind="isotropy", norm="l2", radii=np.array([1.0, 5.0]),
                       ids=np.array(samples.ids), labels=np.array(samples.labels),
                       scores=values, predictions=np.zeros((1, 2, 3), np.int16),
                       log_odds=values * 10)
    fig = se.static_explorer_figure([study], {"big": samples}, max_side=20)
    assert _decode(fig.data[1].source).shape == (20, 20, 3)
    assert fig.layout.xaxis2.title.text == "subsampled 2:1 to 20x20 of 40x40"


def test_bad_inputs_say_what_is_wrong(world):
    _, sets, studies = world
    with pytest.raises(KeyError, match="no samples for 'tiny'"):
        se.static_explorer_figure(studies, {"smooth": sets["smooth"]})
    with pytest.raises(ValueError, match="quantity"):
        se.static_explorer_figure(studies, sets, quantity="logit")
    with pytest.raises(ValueError, match="none of the tiny study's samples"):
        se.static_explorer_figure(studies[:1], {"tiny": sets["smooth"]})


def test_offline_html_loads_the_sites_plotly_once_and_no_url(figure):
    html = se.to_offline_html(figure)
    again = se.to_offline_html(figure)
    assert not re.search(r"https?://", html, re.IGNORECASE)
    assert len(html) < 200_000 and "Copyright 2012" not in html    # not plotly.js inline
    assert 'src = "../_static/plotly/plotly.min.js"' in html
    assert "Plotly.newPlot" in html and "window.localpropsPlotly" in html
    assert "<script src" not in html                      # no tag that loads it per figure
    ids = [re.search(r'<div id="([^"]+)"', h).group(1) for h in (html, again)]
    assert ids[0] != ids[1]                               # unique on a page,
    assert ids[0].rsplit("-", 1)[0] == ids[1].rsplit("-", 1)[0]   # not random: same figure
    payload = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>',
                        html, re.S).group(1)
    spec = json.loads(payload)
    assert spec["config"]["displaylogo"] is False
    assert spec["layout"]["sliders"][1]["steps"][0]["args"][0]["x"][0] == \
        figure.layout.sliders[1].steps[0].args[0]["x"][0]
    with pytest.raises(ValueError, match="not a URL"):
        se.to_offline_html(figure, src="https://cdn.example/plotly.js")


def test_site_paths_agree():
    assert se.PLOTLY_SITE_PATH == lpbuild.PLOTLY_SITE_PATH
    assert se.PLOTLY_SRC == "../" + lpbuild.PLOTLY_SITE_PATH      # pages are book/*.html


# ------------------------------------------------- the build serves plotly.js


def _repo(tmp_path: Path, extra: list[str] | None) -> Path:
    settings = {"mathjax_path": "mathjax/tex-mml-chtml.js"}
    if extra is not None:
        settings["html_extra_path"] = extra
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "_config.yml").write_text(json.dumps({"sphinx": {"config": settings}}),
                                          encoding="utf-8")
    return tmp_path


def test_build_vendors_plotlys_own_bundle(tmp_path):
    bundle = lpbuild.plotly_bundle()
    assert bundle is not None and bundle.name == "plotly.min.js"
    assert bundle.parent.name == "package_data" and bundle.parent.parent.name == "plotly"
    root = _repo(tmp_path / "repo", ["_build/vendor/mathjax", "book/_extra"])
    fake = tmp_path / "plotly.min.js"
    fake.write_text("/* plotly.js v0 */ window.Plotly = {};", encoding="utf-8")
    target = lpbuild.vendor_plotly(root, fake)
    assert target == root / "_build/vendor/mathjax" / lpbuild.PLOTLY_SITE_PATH
    assert target.read_bytes() == fake.read_bytes()
    assert not (root / "book").exists()                   # never into tracked sources
    stamp = target.stat().st_mtime_ns
    assert lpbuild.vendor_plotly(root, fake) == target and target.stat().st_mtime_ns == stamp
    fake.write_text("/* plotly.js v1 */", encoding="utf-8")   # a new plotly: copied again
    assert lpbuild.vendor_plotly(root, fake).read_text(encoding="utf-8") == "/* plotly.js v1 */"


def test_build_prefers_a_plotly_folder_and_warns_without_one(tmp_path, caplog):
    fake = tmp_path / "plotly.min.js"
    fake.write_text("x", encoding="utf-8")
    root = _repo(tmp_path / "a", ["_build/vendor/mathjax", str(tmp_path / "v" / "plotly")])
    assert lpbuild.vendor_plotly(root, fake) == tmp_path / "v/plotly" / lpbuild.PLOTLY_SITE_PATH
    for extra in (None, ["book/_extra"]):
        root = _repo(tmp_path / f"b{extra is None}", extra)
        caplog.clear()
        assert lpbuild.vendor_plotly(root, fake) is None
        assert "plotly.js not vendored" in caplog.text
    root = _repo(tmp_path / "c", ["_build/vendor/mathjax"])
    assert lpbuild.vendor_plotly(root, tmp_path / "missing.js") is None


def test_build_vendors_plotly_before_rendering(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(lpbuild, "check_mathjax", lambda root: calls.append("mathjax"))
    monkeypatch.setattr(lpbuild, "vendor_plotly", lambda root: calls.append("plotly"))
    monkeypatch.setattr(lpbuild, "publish_student_edition",
                        lambda root: calls.append("student"))

    def stop(plan):
        calls.append("prepare")
        raise lpbuild.BuildError("stop here")

    monkeypatch.setattr(lpbuild, "prepare_source", stop)
    plan = SimpleNamespace(root=tmp_path, source_dir=tmp_path,
                           profile=SimpleNamespace(name="ci", path=tmp_path / "ci.yml"))
    with pytest.raises(lpbuild.BuildError, match="stop here"):
        lpbuild.build(plan, execute=False)
    assert calls == ["mathjax", "plotly", "student", "prepare"]
    calls.clear()
    with pytest.raises(lpbuild.BuildError):
        lpbuild.build(plan, execute=False, html=False)
    assert calls == ["prepare"]


# ------------------------------------------------------------- in a browser

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.slow
def test_two_figures_draw_offline_and_respond_in_chromium(world, figure, tmp_path):
    """A page like book/07_explorer.html: plotly.js once, from the site; clicks move it."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian chromium + chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains

    _, _, studies = world
    site = tmp_path / "_build" / "site"
    (site / "book").mkdir(parents=True)
    lpbuild.vendor_plotly(_repo(tmp_path, ["_build/site"]))   # the site root, as Sphinx copies it
    assert (site / lpbuild.PLOTLY_SITE_PATH).is_file()
    (site / "book" / "page.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "</head><body>" + se.to_offline_html(figure) + se.to_offline_html(figure)
        + "</body></html>", encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1000,1400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(f"{base}/book/page.html")
        deadline = time.monotonic() + 30
        while driver.execute_script(
                "return document.querySelectorAll('.js-plotly-plot').length") < 2:
            assert time.monotonic() < deadline, "the figures were not drawn"
            time.sleep(0.1)
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert [u for u in loaded if not u.startswith(base)] == []
        assert [u for u in loaded if u.endswith("plotly.min.js")] == \
            [f"{base}/{lpbuild.PLOTLY_SITE_PATH}"]
        shown = "return document.querySelectorAll('.js-plotly-plot')[0].data[0].x.slice()"
        start = RADII.index(10.0)
        assert driver.execute_script(shown) == studies[0].log_odds[0, start].tolist()
        plot = driver.find_elements("css selector", ".js-plotly-plot")[0]
        plot.find_elements("css selector", ".updatemenu-button")[1].click()     # sample 2
        time.sleep(0.3)
        assert driver.execute_script(shown) == studies[0].log_odds[1, start].tolist()
        rail = [r for r in plot.find_elements("css selector", ".slider-rail-touch-rect")
                if r.size["width"] > 0][0]
        ActionChains(driver).move_to_element_with_offset(
            rail, -rail.size["width"] // 2 + 3, 0).click().perform()            # radius eps
        time.sleep(0.3)
        assert driver.execute_script(shown) == studies[0].log_odds[1, 0].tolist()
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
