"""An explorer of the neighbourhood of a clean image that works on the static site.

:mod:`localprops.report.explorer` needs a live kernel (ipywidgets). This one is
a plotly figure built from precomputed results: a reader of the site moves it
in the browser, with no kernel and nothing fetched from the internet.

- :func:`static_explorer_figure` turns :class:`~localprops.studies.scores.ScoreStudy`
  results (one per model) and the studies' clean samples into one figure: a
  dropdown for the model, buttons for the sample and a slider for the radius
  (plotly's own ``updatemenus`` and ``sliders``: pure client-side). Its panels
  are the histogram of the ``T`` true-class log-odds (or probabilities) at that
  radius, the clean value marked by a red line, the perturbed image ``x + nu``
  of one of those ``T`` draws, and that ``nu`` magnified to the full grey range.
  The perturbations are regenerated from each sample's seed
  (:mod:`localprops.core.sampling`), exactly the study's; the scores are the
  study's own numbers.
- :func:`to_offline_html` writes the HTML for ``IPython.display.HTML``: the
  figure as JSON and a few lines of script that load plotly.js from the site
  itself (``_static/plotly/plotly.min.js``, copied there by
  :func:`localprops.tools.build.vendor_plotly`), once per page however many
  figures it holds, and draw with ``Plotly.newPlot``.

Plotly's controls hold no shared state: each (model, sample) has its own radius
slider, and choosing another model or sample shows that one's slider at the
starting radius.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import html
import io
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from localprops.core.engine import model_device, true_class_log_odds
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec
from localprops.studies.scores import KINDS, QUANTITIES, ScoreStudy

if TYPE_CHECKING:                                  # plotly is in the `book` extra
    import plotly.graph_objects as go

__all__ = ["PLOTLY_SITE_PATH", "PLOTLY_SRC", "clean_values", "displayed_perturbation",
           "static_explorer_figure", "to_offline_html"]

#: where the site serves plotly.js, relative to its root (see tools.build.vendor_plotly)
PLOTLY_SITE_PATH = "_static/plotly/plotly.min.js"
#: the same seen from a page of the book (``book/NN_name.html``)
PLOTLY_SRC = "../" + PLOTLY_SITE_PATH

_LABELS = {"log_odds": "true-class log-odds", "probability": "true-class probability"}
_SHORT = {"log_odds": "log-odds", "probability": "score"}
_HIST, _IMAGE, _NU = 0, 1, 2                      # trace indices


def _png_uri(rgb: np.ndarray) -> str:
    """A (H, W, 3) uint8 array as a PNG data URI (what ``go.Image(source=...)`` shows)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _display(image: torch.Tensor, step: int) -> np.ndarray:
    """(C, H, W) values in [0, 255] -> (H', W', 3) uint8: every ``step``-th pixel, clipped.

    Clipping is for display only: the study scored ``x + nu`` unclipped.
    Subsampling (rather than averaging) keeps the noise at its per-pixel size.
    """
    a = image.detach().double().cpu()[:, ::step, ::step]
    if a.shape[0] == 1:
        a = a.expand(3, -1, -1)
    return np.rint(a.clamp(0.0, 255.0).permute(1, 2, 0).numpy()).astype(np.uint8)


def _network(model: ModelSpec | nn.Module) -> nn.Module:
    return model.model if isinstance(model, ModelSpec) else model


def clean_values(model: ModelSpec | nn.Module, images: torch.Tensor, labels: Sequence[int],
                 quantity: str = "log_odds") -> np.ndarray:
    """The true-class log-odds (or probability) of clean images, in float64.

    A float64 copy of the network evaluates them, so that the clean value is
    resolved as finely as the study's smallest radii (evaluated in float64).
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    net = copy.deepcopy(_network(model)).to(dtype=torch.float64).eval()
    device = model_device(net)
    with torch.no_grad():
        logits = net(images.to(device=device, dtype=torch.float64)).double().cpu()
    label = torch.as_tensor(list(labels), dtype=torch.int64)
    if quantity == "log_odds":
        return true_class_log_odds(logits, label).numpy()
    return torch.softmax(logits, dim=1).gather(1, label[:, None])[:, 0].numpy()


def displayed_perturbation(study: ScoreStudy, samples: SampleSet, sample: int, radius: int,
                           draw: int = 0) -> torch.Tensor:
    """The study's perturbation ``nu`` (float64) of draw ``draw`` at radius index ``radius``.

    ``sample`` indexes the study's samples; the SampleSet must hold that id.
    Regenerated from the sample's seed with the study's sampler (radial or
    permuted), radii, ``T`` and norm: the very perturbation the study scored
    in ``study.scores[sample, radius, draw]``.
    """
    sample_id = int(np.asarray(study.ids)[sample])
    ids = [int(i) for i in samples.ids]
    if sample_id not in ids:
        raise KeyError(f"sample id {sample_id} of the {study.model} study is not in the "
                       "SampleSet: pass the samples the study ran on")
    position = ids.index(sample_id)
    T = study.scores.shape[-1]
    if not 0 <= draw < T:
        raise ValueError(f"draw must lie in 0..{T - 1}, got {draw}")
    source = KINDS[study.kind](tuple(samples.images.shape[1:]),
                               tuple(float(r) for r in study.radii), T, study.norm,
                               int(samples.seeds[position]))
    return source.rows(radius * T + draw, radius * T + draw + 1, dtype=torch.float64)[0]


def _bins(values: np.ndarray, marks: Sequence[float] = ()) -> dict[str, float]:
    """20 equal bins over the values (one when they coincide to rounding)."""
    low, high = float(values.min()), float(values.max())
    scale = max(1.0, abs(low), abs(high), *(abs(m) for m in marks))
    if high - low <= 1e-12 * scale:
        half = max(1e-12 * scale, 1e-300)
        return {"start": low - half, "end": high + half, "size": 2 * half + (high - low)}
    size = (high - low) / 20
    return {"start": low - size / 2, "end": high + size / 2, "size": size}


def _default_radius(radii: np.ndarray) -> int:
    """The radius the explorer opens at: the one nearest 10 grey levels (07's example)."""
    return int(np.argmin(np.abs(np.log(np.asarray(radii, dtype=float) / 10.0))))


def _model_label(study: ScoreStudy, studies: Sequence[ScoreStudy]) -> str:
    same = [s for s in studies if s.model == study.model]
    if len(same) == 1:
        return study.model
    return f"{study.model} ({study.kind}, {study.norm})"


def static_explorer_figure(studies: Sequence[ScoreStudy],
                           samples_by_model: Mapping[str, SampleSet], *, n_samples: int = 3,
                           quantity: str = "log_odds",
                           models: Mapping[str, ModelSpec | nn.Module] | None = None,
                           classes: Mapping[str, Sequence[str]] | None = None,
                           draw: int = 0, max_side: int = 112, height: int = 560
                           ) -> "go.Figure":
    """A kernel-free explorer figure of score studies (model, sample, radius).

    Parameters
    ----------
    studies : one :class:`ScoreStudy` per model (the default run's results,
        e.g. read back from the cache by :func:`~localprops.studies.scores.score_study`).
        Two studies of one model (two norms) are two entries of the model menu.
    samples_by_model : each study's clean samples, keyed by ``study.model``;
        they must hold the study's sample ids (their images and seeds
        regenerate the displayed perturbations).
    n_samples : samples shown per model: the study's first ones.
    quantity : ``"log_odds"`` (default; it keeps resolving where the
        probability is 1 to machine precision) or ``"probability"``.
    models : the loaded models by name, to mark each sample's clean value
        (one float64 forward pass per sample); without them nothing is marked.
    classes : class names by model name (default: the ModelSpec's, if given).
    draw : which of the ``T`` draws of a radius the images show.
    max_side : larger images are subsampled (every k-th pixel, said in the
        panel's title) to at most this many pixels per side.
    height : of the figure, in pixels.

    Returns
    -------
    plotly.graph_objects.Figure with traces 0 (histogram), 1 (``x + nu``) and
    2 (``nu`` magnified); ``layout.updatemenus[0]`` chooses the model,
    ``updatemenus[1 + m]`` the sample of model ``m``, and ``sliders[k]`` the
    radius of the ``k``-th (model, sample) pair, in that order.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    if n_samples < 1 or max_side < 1:
        raise ValueError("n_samples and max_side must be at least 1")
    if not studies:
        raise ValueError("no study to explore")
    models = models or {}
    panels = []       # per model: its label, study and, per sample, per radius, a step
    for study in studies:
        values = study.scores if quantity == "probability" else study.log_odds
        if values is None:
            raise ValueError(f"the {study.model} study has no log-odds: use "
                             "quantity='probability' or rerun it")
        if study.kind not in KINDS:
            raise ValueError(f"unknown study kind {study.kind!r}")
        if study.model not in samples_by_model:
            raise KeyError(f"samples_by_model has no samples for {study.model!r} "
                           f"(it has {sorted(samples_by_model)})")
        sample_set = samples_by_model[study.model]
        where = {int(i): k for k, i in enumerate(sample_set.ids)}
        shown = [s for s, i in enumerate(np.asarray(study.ids).tolist())
                 if int(i) in where][:n_samples]
        if not shown:
            raise ValueError(f"none of the {study.model} study's samples "
                             f"({np.asarray(study.ids).tolist()[:5]}...) are in "
                             "samples_by_model: pass the SampleSet the study ran on")
        T = values.shape[-1]
        if not 0 <= draw < T:
            raise ValueError(f"draw must lie in 0..{T - 1}, got {draw}")
        shape = tuple(sample_set.images.shape[1:])
        step_px = max(1, math.ceil(max(shape[1:]) / max_side))
        names = (classes or {}).get(study.model)
        model = models.get(study.model)
        if names is None and isinstance(model, ModelSpec) and model.classes:
            names = model.classes
        positions = [where[int(study.ids[s])] for s in shown]
        clean = (clean_values(model, sample_set.images[positions],
                              [int(study.labels[s]) for s in shown], quantity)
                 if model is not None else [None] * len(shown))
        per_sample = []
        for s, position, clean_value in zip(shown, positions, clean):
            x = sample_set.images[position].double()
            label = int(study.labels[s])
            name = str(names[label]) if names is not None and label < len(names) \
                else f"class {label}"
            per_radius = []
            for k, radius in enumerate(np.asarray(study.radii, dtype=float)):
                nu = displayed_perturbation(study, sample_set, s, k, draw)
                magnify = 127.5 / max(float(nu.abs().max()), 1e-300)
                v = np.asarray(values[s, k], dtype=np.float64)
                per_radius.append(dict(
                    values=v.tolist(), bins=_bins(v, [] if clean_value is None
                                                  else [float(clean_value)]),
                    image=_png_uri(_display(x + nu, step_px)),
                    nu=_png_uri(_display(127.5 + magnify * nu, step_px)),
                    radius=float(radius), magnify=magnify, shown=float(v[draw]),
                    clean=None if clean_value is None else float(clean_value),
                    range=float(v.max() - v.min())))
            per_sample.append(dict(id=int(study.ids[s]), label=label, name=name,
                                   steps=per_radius))
        panels.append(dict(label=_model_label(study, studies), study=study, T=T,
                           shape=shape, step_px=step_px, samples=per_sample,
                           start=_default_radius(study.radii)))

    pairs = [(m, s) for m, panel in enumerate(panels) for s in range(len(panel["samples"]))]
    slider_of = {pair: k for k, pair in enumerate(pairs)}
    what = _LABELS[quantity]

    def update(m: int, s: int, r: int) -> list[Any]:
        """The ``update`` args that show (model m, sample s, radius r)."""
        panel = panels[m]
        sample = panel["samples"][s]
        step = sample["steps"][r]
        study = panel["study"]
        h, w = panel["shape"][1:]
        seen_h, seen_w = len(range(0, h, panel["step_px"])), len(range(0, w, panel["step_px"]))
        subsampled = (f"subsampled {panel['step_px']}:1 to {seen_w}x{seen_h} of {w}x{h}"
                      if panel["step_px"] > 1 else "")
        clean = step["clean"]
        data = {"x": [step["values"], None, None], "xbins": [step["bins"], None, None],
                "source": [None, step["image"], step["nu"]]}
        layout = {
            "annotations[0].text": (
                f"{panel['T']} draws at r = {step['radius']:g} ({study.norm}): "
                f"range {step['range']:.2e}"
                + ("" if clean is None else f"<br>clean {clean:.6g} (red line)")),
            "annotations[1].text": (f"x + nu (draw {draw + 1} of {panel['T']})<br>"
                                    f"{_SHORT[quantity]} {step['shown']:.6g}"),
            "annotations[2].text": f"nu magnified x {step['magnify']:.4g}<br>(grey = 0)",
            "xaxis2.title.text": subsampled,
            "shapes[0].visible": clean is not None,
            "shapes[0].x0": clean if clean is not None else 0.0,
            "shapes[0].x1": clean if clean is not None else 0.0,
            "xaxis.autorange": True, "yaxis.autorange": True,
            "xaxis2.range": [-0.5, seen_w - 0.5], "yaxis2.range": [seen_h - 0.5, -0.5],
            "xaxis3.range": [-0.5, seen_w - 0.5], "yaxis3.range": [seen_h - 0.5, -0.5],
            "title.text": (f"{panel['label']}: sample {sample['id']} "
                           f"({html.escape(sample['name'])})"),
        }
        return [data, layout, [_HIST, _IMAGE, _NU]]

    def with_controls(args: list[Any], m: int, s: int, r: int, *, model: bool) -> list[Any]:
        data, layout, traces = args
        layout = dict(layout)
        for k, pair in enumerate(pairs):
            layout[f"sliders[{k}].visible"] = pair == (m, s)
        layout[f"sliders[{slider_of[(m, s)]}].active"] = r
        if model:
            for j in range(len(panels)):
                layout[f"updatemenus[{1 + j}].visible"] = j == m
            layout[f"updatemenus[{1 + m}].active"] = s
        return [data, layout, traces]

    m0, s0, r0 = 0, 0, panels[0]["start"]
    first = update(m0, s0, r0)
    step0 = panels[0]["samples"][0]["steps"][r0]
    fig = make_subplots(rows=1, cols=3, column_widths=[0.44, 0.28, 0.28],
                        horizontal_spacing=0.07,
                        subplot_titles=[first[1][f"annotations[{i}].text"] for i in range(3)])
    fig.add_trace(go.Histogram(x=step0["values"], xbins=step0["bins"], autobinx=False,
                               marker_color="#1f77b4", name=what, showlegend=False,
                               hovertemplate="%{x}<br>%{y} draws<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Image(source=step0["image"], hoverinfo="skip", name="x + nu"),
                  row=1, col=2)
    fig.add_trace(go.Image(source=step0["nu"], hoverinfo="skip", name="nu"),
                  row=1, col=3)
    fig.add_shape(type="line", xref="x", yref="y domain", x0=0.0, x1=0.0, y0=0, y1=1,
                  line={"color": "#d62728", "width": 2}, visible=False)
    fig.update_annotations(font_size=12)
    fig.update_xaxes(title_text=what, row=1, col=1)
    fig.update_yaxes(title_text="draws", row=1, col=1)
    for col in (2, 3):
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, row=1, col=col,
                         title_font_size=11)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, row=1, col=col,
                         scaleanchor=f"x{col}")

    model_menu = {
        "type": "dropdown", "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.22,
        "yanchor": "bottom", "active": m0, "showactive": True, "name": "model",
        "buttons": [{"label": panel["label"], "method": "update",
                     "args": with_controls(update(m, 0, panel["start"]), m, 0,
                                           panel["start"], model=True)}
                    for m, panel in enumerate(panels)]}
    sample_menus = [{
        "type": "buttons", "direction": "right", "x": 0.34, "xanchor": "left", "y": 1.22,
        "yanchor": "bottom", "active": 0, "showactive": True, "visible": m == m0,
        "name": f"sample ({panel['label']})", "pad": {"l": 4},
        "buttons": [{"label": f"#{sample['id']} {sample['name'][:14]}", "method": "update",
                     "args": with_controls(update(m, s, panel["start"]), m, s,
                                           panel["start"], model=False)}
                    for s, sample in enumerate(panel["samples"])]}
        for m, panel in enumerate(panels)]
    sliders = [{
        "active": panels[m]["start"], "visible": (m, s) == (m0, s0), "name": f"radius {m} {s}",
        "x": 0.0, "len": 1.0, "y": -0.16, "yanchor": "top", "pad": {"t": 8},
        "currentvalue": {"prefix": "radius r = ", "suffix": f" ({panels[m]['study'].norm})",
                         "xanchor": "left"},
        "steps": [{"label": f"{step['radius']:g}", "method": "update",
                   "args": update(m, s, r)}
                  for r, step in enumerate(panels[m]["samples"][s]["steps"])]}
        for m, s in pairs]
    fig.update_layout(updatemenus=[model_menu, *sample_menus], sliders=sliders,
                      template="plotly_white", height=height, bargap=0.05,
                      margin={"t": 130, "b": 120, "l": 60, "r": 20},
                      title={"x": 0.0, "xanchor": "left", "y": 0.99, "yanchor": "top",
                             "font": {"size": 14}})
    # the starting view: the same relayout as its slider step
    _relayout(fig.layout, first[1])
    return fig


def _relayout(layout: Any, changes: Mapping[str, Any]) -> None:
    """Apply ``Plotly.relayout``-style changes (``"annotations[0].text"``) in Python."""
    for path, value in changes.items():
        node = layout
        parts = path.split(".")
        for part in parts[:-1]:
            name, _, index = part.partition("[")
            node = node[name][int(index[:-1])] if index else node[name]
        node[parts[-1]] = value


_COUNTER = itertools.count(1)

_LOADER = """\
(function () {
  var id = %(id)s, src = %(src)s;
  function draw() {
    var spec = JSON.parse(document.getElementById(id + "-json").textContent);
    Plotly.newPlot(id, spec.data, spec.layout, spec.config);
  }
  function fail() {
    document.getElementById(id).textContent = "plotly.js could not be loaded from " + src +
      ": the figure is drawn on the book's website (in a live kernel: the widgets below).";
  }
  if (window.Plotly) { draw(); return; }
  // one <script> per page, however many figures: they share one promise
  if (!window.localpropsPlotly) {
    window.localpropsPlotly = new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }
  window.localpropsPlotly.then(draw, fail);
})();
"""


def to_offline_html(fig: "go.Figure", *, src: str = PLOTLY_SRC, div_id: str | None = None,
                    config: Mapping[str, Any] | None = None) -> str:
    """HTML that draws ``fig`` with plotly.js from ``src`` (the site's copy), no CDN.

    plotly.js itself is not included (4.8 MB): the page loads it from ``src``,
    by default ``../_static/plotly/plotly.min.js``, where the book's build puts
    plotly's own bundled copy (pages are ``book/NN_name.html``). Figures on
    one page share one load. For ``IPython.display.HTML``. The element id
    derives from the figure (and a counter), not from chance, so that an
    unchanged notebook re-executes to the same file.
    """
    import plotly.io as pio

    if "://" in src or src.startswith("//"):
        raise ValueError(f"src must be a path served by the site, not a URL: {src!r}")
    spec = json.loads(pio.to_json(fig, validate=False))
    spec["config"] = {"responsive": True, "displaylogo": False, **(config or {})}
    payload = json.dumps(spec, separators=(",", ":"))
    # the same figure in the same run gets the same id: re-executing an unchanged
    # notebook rewrites an identical file; the counter keeps ids unique on a page
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    div_id = div_id or f"localprops-plotly-{digest}-{next(_COUNTER)}"
    # inside <script type="application/json">: no "</" may close the element
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")
    height = (fig.layout.height or 500)
    loader = _LOADER % {"id": json.dumps(div_id), "src": json.dumps(src)}
    return (f'<div id="{div_id}" class="localprops-plotly" '
            f'style="width:100%;height:{int(height)}px"></div>\n'
            f'<script type="application/json" id="{div_id}-json">{payload}</script>\n'
            f"<script>\n{loader}</script>\n")
