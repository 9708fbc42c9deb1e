"""An interactive explorer of the neighbourhood of a clean image (ipywidgets).

Choose a model, a clean sample, a radius and a norm; see one perturbed image
(with the perturbation magnified), the distribution of the true-class score
over ``T`` random perturbations at that radius, and which classes they were
assigned. :func:`draw` makes the figure for one choice (it also works in a
static page); :func:`explorer` wires it to widgets in a live kernel.
"""
from __future__ import annotations

from collections import Counter

import matplotlib.pyplot as plt
import numpy as np

from localprops.core.engine import evaluate
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import Prepared
from localprops.report.plots import to_rgb


def draw(prepared: Prepared, *, sample: int = 0, radius: float = 10.0, norm: str = "linf",
         T: int = 32, batch_size: int = 64) -> plt.Figure:
    """The explorer's figure for one (model, sample, radius, norm)."""
    samples, spec = prepared.samples, prepared.spec
    if not 0 <= sample < len(samples):
        raise ValueError(f"sample must lie in 0..{len(samples) - 1}, got {sample}")
    x = samples.images[sample]
    source = RadialPerturbations(tuple(x.shape), [radius], T, norm, int(samples.seeds[sample]))
    label = int(samples.labels[sample])
    out = evaluate(spec.model, x, source, labels=label, batch_size=batch_size, progress=False)
    scores, predictions = out.scores[0].numpy(), out.predictions[0].numpy()
    nu = source.rows(0, 1)[0]
    magnify = 127.5 / float(nu.abs().max())
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1, 1.4, 1.4]})
    axes[0].imshow(to_rgb(x))
    axes[0].set_title(f"clean: {spec.classes[label][:24]}\nscore "
                      f"{float(out.clean_probs[label]):.4f}", fontsize=8)
    axes[1].imshow(to_rgb(x + nu))
    axes[1].set_title(f"x + nu ({norm} r = {radius:g})\nscore {scores[0]:.4f}", fontsize=8)
    for ax in axes[:2]:
        ax.axis("off")
    # the log-odds, not the probability: near s = 1 the probabilities of all T
    # perturbations can coincide to the last bit, the log-odds still spread
    log_odds = out.log_odds[0].numpy()
    spread = float(np.ptp(log_odds))
    axes[2].hist(log_odds, bins=20 if spread > 1e-9 * max(1.0, float(np.abs(log_odds).max()))
                 else 1, color="C0")
    axes[2].set_xlabel("true-class log-odds")
    axes[2].set_title(f"{T} perturbations: score range {scores.max() - scores.min():.2e}, "
                      f"log-odds range {spread:.2e}", fontsize=8)
    counts = Counter(int(p) for p in predictions).most_common(6)
    axes[3].barh([spec.classes[c][:22] for c, _ in counts][::-1],
                 [n for _, n in counts][::-1], color="C2")
    axes[3].set_xlabel("perturbations")
    axes[3].set_title("predicted classes", fontsize=8)
    inset = axes[1].inset_axes([0.62, 0.62, 0.36, 0.36])
    inset.imshow(to_rgb(127.5 + magnify * nu))
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_title(f"nu x{magnify:.0f}", fontsize=6)
    fig.suptitle(spec.name, fontsize=9)
    return fig


def explorer(prepared_models: list[Prepared], *, radii=(0.001, 1, 2, 5, 10, 20, 50),
             T: int = 32):
    """Widgets (model, sample, radius, norm) around :func:`draw`, for a live kernel."""
    import ipywidgets as widgets

    by_name = {p.spec.name: p for p in prepared_models}
    if not by_name:
        raise ValueError("no prepared model to explore")
    model = widgets.Dropdown(options=list(by_name), description="model")
    sample = widgets.IntSlider(0, 0, max(len(p.samples) for p in prepared_models) - 1,
                               description="sample")
    radius = widgets.SelectionSlider(options=list(radii), value=radii[len(radii) // 2],
                                     description="radius")
    norm = widgets.ToggleButtons(options=["linf", "l2"], description="norm")
    output = widgets.Output()

    def update(*_):
        chosen = by_name[model.value]
        sample.max = len(chosen.samples) - 1
        with output:
            output.clear_output(wait=True)
            draw(chosen, sample=min(sample.value, sample.max), radius=float(radius.value),
                 norm=norm.value, T=T)
            plt.show()

    for widget in (model, sample, radius, norm):
        widget.observe(update, names="value")
    update()
    return widgets.VBox([widgets.HBox([model, sample]), widgets.HBox([radius, norm]), output])


