"""Figures of the book, drawn from study results (never from hard-coded numbers).

The book, the scorecard and a reader's own notebook draw the same figure from
the same results through these functions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from localprops.core.stats import sigmoid
from localprops.studies.scores import NoiseFloor, ScoreStudy

_RANGE_FLOOR = 1e-12     # log axes cannot show a range of exactly zero


def _radius_labels(radii: np.ndarray) -> list[str]:
    return [f"{r:g}" for r in radii]


def _panel_grid(n: int, columns: int, width: float, height: float, sharey: bool = True
                ) -> tuple[plt.Figure, np.ndarray]:
    """A figure with one panel per model, ``columns`` per row, unused panels hidden."""
    columns = min(columns, n)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                             squeeze=False, sharey=sharey, constrained_layout=True)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def score_range_panels(studies: Sequence[ScoreStudy], *,
                       noise_floors: Mapping[str, NoiseFloor] | None = None,
                       quantity: str = "probability",
                       title: str | None = None, columns: int = 3,
                       jitter: float = 0.18, seed: int = 0) -> plt.Figure:
    """The paper's Fig. 1 / Fig. 3 form: one panel per model.

    x: radius (as categories, since the paper's eps is far from 1..20); y: the
    range max - min over the ``T`` perturbations of the true-class probability
    or log-odds (``quantity``), log scale, one marker per sample and radius;
    colour: ``log10(1 - s)`` of the mean true-class probability (computed
    from the log-odds, so it stays finite where ``s`` rounds to 1): how far
    from saturation each sample sits, since a probability range scales with
    ``s (1 - s)``; a square where at least one perturbed image was
    misclassified, a circle otherwise. Short dashes mark every sample's own
    noise floor at each radius (float64 radii have float64's lower floor).
    """
    if not studies:
        raise ValueError("no study results to draw")
    fig, axes = _panel_grid(len(studies), columns, 4.6, 3.6)
    rng = np.random.default_rng(seed)
    scatter = None
    for ax, study in zip(axes.flat, studies):
        stats = study.statistics_of(quantity)
        n_samples, n_radii = stats.range.shape
        xs = np.arange(n_radii)[None, :] + rng.uniform(-jitter, jitter, (n_samples, n_radii))
        ranges = np.maximum(stats.range, _RANGE_FLOOR)
        colour = (np.log10(np.maximum(sigmoid(-study.log_odds.mean(axis=-1)), 1e-300))
                  if study.log_odds is not None else study.statistics.mean)
        wrong = study.statistics.any_misclassified
        for marker, mask in (("o", ~wrong), ("s", wrong)):
            if mask.any():
                scatter = ax.scatter(xs[mask], ranges[mask], c=colour[mask], cmap="viridis_r",
                                     vmin=-12, vmax=0, marker=marker, s=16, linewidths=0.3,
                                     edgecolors="k", zorder=3)
        if noise_floors and study.model in noise_floors:
            floor = np.maximum(study.range_floors(noise_floors[study.model], quantity),
                               _RANGE_FLOOR)
            ax.scatter(xs, floor, marker="_", c="crimson", s=14, linewidths=0.8, zorder=2)
        ax.set_yscale("log")
        if (stats.range < _RANGE_FLOOR).any():
            ax.text(0.01, 0.01, f"ranges below {_RANGE_FLOOR:g} (or exactly 0) drawn at "
                    f"{_RANGE_FLOOR:g}", transform=ax.transAxes, fontsize=6, color="0.4")
        ax.set_xticks(np.arange(n_radii), _radius_labels(study.radii), rotation=90,
                      fontsize=7)
        ax.set_title(f"{study.model} ({study.kind}, {study.norm}, S={n_samples})", fontsize=9)
        ax.set_xlabel(f"radius r ({study.norm}, pixel units 0-255)")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{_QUANTITY_LABEL[quantity]} range max - min")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, shrink=0.8,
                     label="log10(1 - mean true-class probability)")
    handles = [Line2D([], [], marker="o", ls="", c="grey", label="all T correct"),
               Line2D([], [], marker="s", ls="", c="grey", label="some misclassified")]
    if noise_floors:
        handles.append(Line2D([], [], marker="_", ls="", c="crimson",
                              label="the sample's noise floor"))
    axes.flat[0].legend(handles=handles, fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


_QUANTITY_LABEL = {"probability": "score", "log_odds": "log-odds"}


def score_range_summary(studies: Sequence[ScoreStudy], *, ax: plt.Axes | None = None,
                        label_kind: bool = False, quantity: str = "probability") -> plt.Axes:
    """Median and interquartile band of the score (or log-odds) range per radius, per model.

    Both axes are logarithmic with the radii at their values, so a range
    proportional to ``r`` (first order) is a line of slope 1 from eps to 20.
    Solid lines: isotropy studies; dashed: symmetry studies.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    names = list(dict.fromkeys(study.model for study in studies))
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for study in studies:
        ranges = np.maximum(study.statistics_of(quantity).range, _RANGE_FLOOR)
        q25, q50, q75 = np.quantile(ranges, [0.25, 0.5, 0.75], axis=0)
        x = np.asarray(study.radii, dtype=np.float64)
        label = f"{study.model} ({study.kind})" if label_kind else study.model
        ax.plot(x, q50, marker=".", label=label, color=colors[study.model],
                ls="-" if study.kind == "isotropy" else "--")
        ax.fill_between(x, q25, q75, alpha=0.15, color=colors[study.model])
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel(f"radius r ({studies[0].norm}, grey levels; log scale)")
    ax.set_ylabel(f"{_QUANTITY_LABEL[quantity]} range (median, IQR band)")
    ax.legend(fontsize=7)
    return ax


def to_rgb(image) -> np.ndarray:
    """(3, H, W) tensor or array in [0, 255] -> (H, W, 3) floats in [0, 1] for imshow."""
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=float)
    return np.clip(a.transpose(1, 2, 0) / 255.0, 0, 1)


def permutation_pair(image, nu_a, nu_b, *, score_a: float, score_b: float,
                     clean_score: float, radius: float, norm: str,
                     class_name: str = "", log_odds_a: float | None = None,
                     log_odds_b: float | None = None) -> plt.Figure:
    """The paper's Fig. 2 idea on real data: one perturbation, one permutation of it.

    Shows the clean image, both perturbations (magnified to fill the grey
    range, with the factor in the title), both perturbed images and the
    true-class score of each, with its log-odds when given (a confident
    network's scores can agree to four decimals while its log-odds differ).
    """
    def score(s: float, lo: float | None) -> str:
        return f"score {s:.4f}" + (f", log-odds {lo:.3f}" if lo is not None else "")

    nu_a = np.asarray(nu_a.detach().cpu() if hasattr(nu_a, "detach") else nu_a, dtype=float)
    nu_b = np.asarray(nu_b.detach().cpu() if hasattr(nu_b, "detach") else nu_b, dtype=float)
    peak = max(np.abs(nu_a).max(), np.abs(nu_b).max())
    magnify = 127.5 / peak
    fig, axes = plt.subplots(1, 5, figsize=(13, 3), constrained_layout=True)
    panels = [
        (image, f"clean: score {clean_score:.4f}"),
        (127.5 + magnify * nu_a, f"nu_1 (x{magnify:.0f})"),
        (127.5 + magnify * nu_b, f"nu_2 = permuted nu_1 (x{magnify:.0f})"),
        (np.asarray(image.cpu() if hasattr(image, "cpu") else image) + nu_a,
         f"x + nu_1: {score(score_a, log_odds_a)}"),
        (np.asarray(image.cpu() if hasattr(image, "cpu") else image) + nu_b,
         f"x + nu_2: {score(score_b, log_odds_b)}"),
    ]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(to_rgb(img), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{class_name}: two perturbations with the same values, {norm} radius "
                 f"{radius:g} (||nu_1|| = ||nu_2||)", fontsize=10)
    return fig


def isotropy_vs_symmetry(isotropy: Sequence[ScoreStudy], symmetry: Sequence[ScoreStudy],
                         quantities: Sequence[str] = ("probability", "log_odds")
                         ) -> plt.Figure:
    """Median range per radius: random directions (solid) against permutations (dashed).

    One panel per quantity (the probability saturates near 1; the log-odds
    do not), log-log axes, and a legend entry for each line style.
    """
    fig, axes = plt.subplots(1, len(quantities), figsize=(6.2 * len(quantities), 4.2),
                             constrained_layout=True, squeeze=False)
    for ax, quantity in zip(axes[0], quantities):
        score_range_summary(list(isotropy) + list(symmetry), ax=ax, quantity=quantity)
        handles, labels = ax.get_legend_handles_labels()
        seen = dict(zip(labels, handles))           # one entry per model
        models = list(seen.values())
        styles = [Line2D([], [], color="0.3", ls="-", label="isotropy (random directions)"),
                  Line2D([], [], color="0.3", ls="--", label="symmetry (permutations)")]
        ax.legend(handles=models + styles, labels=list(seen) + [h.get_label() for h in styles],
                  fontsize=7)
        ax.set_title(f"{_QUANTITY_LABEL[quantity]} range, same samples", fontsize=9)
    return fig


def symmetry_illustration(study: ScoreStudy, images, seeds: Sequence[int],
                          clean_scores: Sequence[float], *, radius: float,
                          sample: int | None = None, class_names: Sequence[str] | None = None
                          ) -> plt.Figure:
    """:func:`permutation_pair` for the two permutations whose log-odds differ most.

    Parameters
    ----------
    study : a symmetry :class:`ScoreStudy`; images, seeds, clean_scores : its
        samples (a :class:`~localprops.studies.SampleSet`'s fields, same order).
    radius : the radius to show (the closest one studied is used).
    sample : which sample (default: the one whose permutations' log-odds range
        is largest at that radius).
    """
    from localprops.core.sampling import PermutedPerturbations

    if study.kind != "symmetry":
        raise ValueError("symmetry_illustration needs a symmetry study")
    r_index = int(np.argmin(np.abs(study.radii - radius)))
    t = study.scores.shape[-1]
    values = study.log_odds if study.log_odds is not None else study.scores
    if sample is None:
        sample = int(np.argmax(np.ptp(values[:, r_index], axis=-1)))
    scores = study.scores[sample, r_index]
    a, b = int(np.argmax(values[sample, r_index])), int(np.argmin(values[sample, r_index]))
    source = PermutedPerturbations(tuple(images.shape[1:]), study.radii.tolist(), t,
                                   study.norm, int(seeds[sample]))
    nu = source.rows(r_index * t, (r_index + 1) * t)
    label = int(study.labels[sample])
    name = class_names[label] if class_names is not None else f"class {label}"
    log_odds = study.log_odds[sample, r_index] if study.log_odds is not None else None
    return permutation_pair(images[sample], nu[a], nu[b], score_a=float(scores[a]),
                            score_b=float(scores[b]), clean_score=float(clean_scores[sample]),
                            radius=float(study.radii[r_index]), norm=study.norm,
                            class_name=f"{study.model}, {name}",
                            log_odds_a=None if log_odds is None else float(log_odds[a]),
                            log_odds_b=None if log_odds is None else float(log_odds[b]))


def kernels_and_spectra(conv, spectra, *, n: int = 8, title: str = "") -> plt.Figure:
    """First-layer kernels (top row, RGB) and their gain |F(K)| summed over colours."""
    import torch

    n = min(n, conv.weight.shape[0])
    weight = conv.weight.detach().cpu().double()[:n]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), constrained_layout=True)
    for k in range(n):
        w = weight[k]
        w = (w - w.min()) / (w.max() - w.min() + 1e-12)
        axes[0, k].imshow(w.permute(1, 2, 0).numpy() if w.shape[0] == 3 else w[0].numpy(),
                          interpolation="nearest")
        axes[1, k].imshow(torch.as_tensor(spectra[k]).sum(0).numpy(), cmap="magma")
        axes[0, k].set_title(f"kernel {k}", fontsize=8)
        for ax in axes[:, k]:
            ax.axis("off")
    axes[1, 0].set_title("|F(K)|", fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def spectra_pair(power, *, radial_profiles=None, title: str = "") -> plt.Figure:
    """Power spectra (log, summed over channels) of a perturbation and its permutation."""
    p = np.asarray(power)
    panels = 3 if radial_profiles is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.4), constrained_layout=True)
    vmin, vmax = np.log10(p.sum(1)).min(), np.log10(p.sum(1)).max()
    for k, name in enumerate(["|F(nu_1)|^2", "|F(nu_2)|^2 (permuted)"]):
        im = axes[k].imshow(np.log10(p[k].sum(0)), cmap="viridis", vmin=vmin, vmax=vmax)
        axes[k].set_title(name, fontsize=9)
        axes[k].axis("off")
    fig.colorbar(im, ax=axes[:2], shrink=0.8, label="log10 power")
    if radial_profiles is not None:
        for profile, name in zip(radial_profiles, ["nu_1", "nu_2"]):
            axes[2].plot(profile, label=name)
        axes[2].set_xlabel("spatial frequency |k|")
        axes[2].set_ylabel("mean power")
        axes[2].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def response_gaps(gaps, *, title: str = "") -> plt.Figure:
    """Absolute and relative gap between responses to a perturbation and its permutations.

    ``gaps`` is a list of :class:`localprops.studies.frequency.ResponseGap` (one per
    model and layer).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for gap in gaps:
        label = getattr(gap, "label", gap.layer)
        axes[0].loglog(gap.radii, gap.absolute, marker="o", label=label)
        axes[1].semilogx(gap.radii, gap.relative, marker="o", label=label)
    axes[0].set_ylabel("||f(x + nu_1) - f(x + nu_2)||")
    axes[1].set_ylabel("gap / ||f(x + nu_1) - f(x)||")
    for ax in axes:
        ax.set_xlabel("radius r")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def mantel_by_radius(studies, *, columns: int = 3) -> plt.Figure:
    """The paper's Fig. 4 form with controls: Mantel statistic per radius, per model.

    Boxes: the model's feature layer over samples. Lines: medians of the
    control maps on the same points (random linear map, the model's Jacobian
    at x). Grey band: the paper's reported range -0.1 < rho < 0.1.
    """
    if not studies:
        raise ValueError("no topology results to draw")
    fig, axes = _panel_grid(len(studies), columns, 4.8, 3.6)
    for ax, study in zip(axes.flat, studies):
        x = np.arange(len(study.radii))
        ax.axhspan(-0.1, 0.1, color="0.9", zorder=0, label="paper: -0.1 < rho < 0.1")
        ax.boxplot([study.rho["model"][:, r] for r in x], positions=x, widths=0.5,
                   medianprops={"color": "k"},
                   showfliers=True, flierprops={"markersize": 3})
        for name, style in (("linear", "C1--"), ("jacobian", "C2:")):
            ax.plot(x, np.median(study.rho[name], axis=0), style, marker=".",
                    label=f"{name} map (median)")
        ax.set_xticks(x, _radius_labels(study.radii), rotation=90, fontsize=7)
        ax.set_xlabel(f"radius r ({study.norm})")
        ax.set_title(f"{study.model} (S={len(study.ids)})", fontsize=9)
        ax.set_ylim(-0.5, 1.05)
    for ax in axes[:, 0]:
        ax.set_ylabel("Mantel statistic rho")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    return fig


def mixed_radii(studies) -> plt.Figure:
    """Mantel statistic at one radius (median over radii) against points spread over radii."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    names = [s.model for s in studies]
    x = np.arange(len(studies))
    width = 0.25
    ax.bar(x - width, [np.median(s.rho["model"]) for s in studies], width,
           label="model, one radius (median)")
    ax.bar(x, [np.median(s.mixed_rho) for s in studies], width,
           label="model, points over all radii")
    ax.bar(x + width, [np.median(s.mixed_linear_rho) for s in studies], width,
           label="random linear map, all radii")
    ax.axhspan(-0.1, 0.1, color="0.9", zorder=0)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("Mantel statistic rho")
    ax.legend(fontsize=7)
    return fig


def lipschitz_illustration() -> plt.Figure:
    """Two functions with the same global Lipschitz constant (1), different locally.

    ``f1(t) = t`` has slope 1 everywhere; ``f2(t) = 5 tanh(t / 5)`` has slope
    1 only at 0 and contracts more and more for ``|t| > 5``. A global constant
    cannot tell them apart; local ratios can (the idea of the paper's Fig. 5).
    """
    t = np.linspace(-15, 15, 601)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    axes[0].plot(t, t, label="f1(t) = t")
    axes[0].plot(t, 5 * np.tanh(t / 5), label="f2(t) = 5 tanh(t/5)")
    axes[1].plot(t, np.ones_like(t), label="f1'(t)")
    axes[1].plot(t, 1 / np.cosh(t / 5) ** 2, label="f2'(t)")
    close = 5 * float(np.arccosh(1 / np.sqrt(0.9)))      # f2' >= 0.9 f1' inside
    for ax in axes:
        ax.axvspan(-close, close, color="0.92", zorder=0)
        ax.set_xlabel("t")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("f(t)")
    axes[1].set_ylabel("f'(t): the local ratio as the step goes to 0")
    axes[0].set_title("same global Lipschitz constant (1)", fontsize=9)
    axes[1].set_title(f"derivatives within 10% for |t| < {close:.1f} (grey), "
                      "apart beyond", fontsize=9)
    return fig


def radius_colours(radii) -> dict[float, np.ndarray]:
    """One viridis colour per distinct radius, smallest darkest (up to 0.9: no pale yellow)."""
    shown = np.unique(np.asarray(radii, dtype=np.float64))
    return dict(zip(shown.tolist(), plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(shown)))))


#: Axis units of the Lipschitz chapter's readings: (input side, feature side).
_LIPSCHITZ_UNITS = {"raw": ("grey levels", "activations"),
                    "minmax": ("per-value min-max units", "per-feature min-max units"),
                    "zscore": ("per-value z-scores", "per-feature z-scores")}


def lipschitz_scatter(studies, *, reading: str = "minmax", columns: int = 3) -> plt.Figure:
    """The paper's Fig. 6 form: output against input distance of every perturbed point.

    Colour: the radius, one colour per radius of the grid (the radii below 1,
    e.g. the paper's eps, sit at the origin and share the first colour).
    Solid black: first-order polynomial fit; dashed blue: second-order fit.
    The dotted diagonal is L_x = 1. One legend, on the first panel.
    """
    if not studies:
        raise ValueError("no Lipschitz results to draw")
    fig, axes = _panel_grid(len(studies), columns, 4.6, 3.8, sharey=False)
    colours = radius_colours(np.concatenate([np.maximum(s.radii, 1.0) for s in studies]))
    for ax, study in zip(axes.flat, studies):
        x = study.input_distance[reading]
        y = study.output_distance[reading]
        for k, r in enumerate(study.radii):
            colour = colours[max(float(r), 1.0)]
            ax.scatter(x[:, k].ravel(), y[:, k].ravel(), color=colour, s=4, alpha=0.6,
                       label=None if r < 1 else f"r = {r:g}")
        grid = np.linspace(0, x.max(), 100)
        for degree, colour, style in ((1, "k", "-"), (2, "tab:blue", "--")):
            coef = np.polyfit(x.ravel(), y.ravel(), degree)
            ax.plot(grid, np.polyval(coef, grid), color=colour, ls=style, lw=1.2,
                    label=f"degree {degree} fit")
        top = max(x.max(), y.max())
        ax.plot([0, top], [0, top], c="0.3", ls=":", lw=1.0, label="L_x = 1")
        ax.set_xlim(0, x.max() * 1.05)
        ax.set_ylim(0, y.max() * 1.05)
        units = _LIPSCHITZ_UNITS.get(reading, (f"{reading} units", f"{reading} units"))
        ax.set_xlabel(f"||h(x + nu) - h(x)||, L2 ({units[0]})")
        ax.set_ylabel(f"||g(Phi(x + nu)) - g(Phi(x))|| ({units[1]})")
        ax.set_title(f"{study.model} (S={len(study.ids)})", fontsize=9)
    axes.flat[0].legend(fontsize=7, loc="upper left", markerscale=2)
    return fig


# ------------------------------------------------ beyond the paper (chapter 08)
def taylor_vs_measured(measured: Sequence[ScoreStudy], studies: Sequence, *, order: int = 1,
                       factor: float = 2.0, columns: int = 3,
                       valid: Mapping[str, np.ndarray] | None = None) -> plt.Figure:
    """Predicted against measured score range, one panel per model, log-log.

    ``studies`` are :class:`localprops.studies.firstorder.FirstOrderStudy` results for
    the same samples as ``measured`` (isotropy studies); one marker per sample
    and radius, one colour per radius (legend on the first panel). With
    ``valid`` (model -> (S, R) mask of measurable ranges, as in
    :func:`agreement_by_radius`), pairs that are not measurable are drawn
    hollow. The diagonal is perfect agreement; the dotted lines bound
    agreement within ``factor``. Ranges are true-class probabilities (the
    radius in grey levels of the [0, 255] scale).
    """
    from localprops.studies.firstorder import check_aligned

    if not studies:
        raise ValueError("no study results to draw")
    fig, axes = _panel_grid(len(studies), columns, 4.2, 3.8, sharey=False)
    colours = radius_colours(np.concatenate([s.radii if order == 1 else s.second_radii
                                             for s in studies]))
    for ax, iso, study in zip(axes.flat, measured, studies):
        check_aligned(iso, study)
        radii = study.radii if order == 1 else study.second_radii
        predicted = study.predicted_scores(order)
        scores = iso.scores
        ok = (np.ones(scores.shape[:2], bool) if valid is None
              else np.asarray(valid[study.model], bool))
        if order == 2:
            scores = scores[:, study.second_index, :predicted.shape[-1]]
            ok = ok[:, study.second_index]
        x = np.maximum(np.ptp(scores, axis=-1), _RANGE_FLOOR)
        y = np.maximum(np.ptp(predicted, axis=-1), _RANGE_FLOOR)
        for k, r in enumerate(radii):
            colour = colours[r]
            ax.scatter(x[ok[:, k], k], y[ok[:, k], k], color=colour, s=14, linewidths=0.3,
                       edgecolors="k", label=f"r = {r:g}")
            if (~ok[:, k]).any():
                ax.scatter(x[~ok[:, k], k], y[~ok[:, k], k], facecolors="none",
                           edgecolors=colour, s=14, linewidths=0.8)
        low, high = min(x.min(), y.min()) / 2, max(x.max(), y.max()) * 2
        line = np.array([low, high])
        ax.plot(line, line, c="k", lw=0.8)
        ax.plot(line, line * factor, c="k", lw=0.6, ls=":")
        ax.plot(line, line / factor, c="k", lw=0.6, ls=":")
        ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high))
        ax.set_title(f"{study.model} ({study.norm}, order {order})", fontsize=9)
        ax.set_xlabel("measured range of the true-class probability")
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted range")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if valid is not None:
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="k"))
        labels.append("not measurable")
    axes.flat[0].legend(handles, labels, fontsize=7, loc="upper left")
    return fig


#: Per-model markers and line styles where several models share one axes.
_MODEL_MARKERS = ("o", "s", "^", "v", "D", "P", "X")
_MODEL_STYLES = ("-", "--", "-.", ":")


def agreement_by_radius(measured: Sequence[ScoreStudy], studies: Sequence,
                        valid: Mapping[str, np.ndarray], *, factor: float = 2.0,
                        ax: plt.Axes | None = None, legend: bool = True,
                        dodge: float = 0.04) -> plt.Axes:
    """Share of measurable samples whose predicted range is within ``factor`` of the measured one.

    Lines: first order at every radius, one colour, marker and line style
    per model; crosses: second order at its radii. Models are dodged
    sideways by a few percent of the radius (``dodge`` per model on the log
    axis), so that lines at the same share (often 1) stay apart. ``legend``
    outside the axes, on their right. ``valid`` maps a model to its (S, R) mask of measurable ranges
    (:func:`localprops.studies.firstorder.measurable`); the share at a radius is over
    the samples measurable there (no point where there is none).
    """
    from localprops.studies.firstorder import range_ratios, within_factor

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    middle = (len(studies) - 1) / 2
    for i, (iso, study) in enumerate(zip(measured, studies)):
        colour = f"C{i % 10}"
        shift = (1.0 + dodge) ** (i - middle)
        ok_all = np.asarray(valid[study.model], bool)
        for order in (1, 2):
            if order == 2 and not len(study.second_radii):
                continue
            ratio = range_ratios(iso, study, order)
            ok = ok_all[:, study.second_index] if order == 2 else ok_all
            agree = (ok & within_factor(ratio, factor=factor)).sum(axis=0)
            share = np.where(ok.any(axis=0), agree / np.maximum(ok.sum(axis=0), 1), np.nan)
            radii = np.asarray(study.radii if order == 1 else study.second_radii) * shift
            ax.plot(radii, share, color=colour,
                    marker=_MODEL_MARKERS[i % len(_MODEL_MARKERS)] if order == 1 else "x",
                    ls=_MODEL_STYLES[i % len(_MODEL_STYLES)] if order == 1 else "",
                    ms=4 if order == 1 else 8, lw=1.2,
                    label=study.model if order == 1 else None)
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(f"radius r ({studies[0].norm})"
                  + (f"; models offset sideways by {dodge:.0%}" if dodge and len(studies) > 1
                     else ""))
    ax.set_ylabel(f"share of measurable samples within x{factor:g}")
    if legend:       # one entry per model, one for the second-order crosses, beside the axes
        handles, labels = ax.get_legend_handles_labels()
        if any(len(s.second_radii) for s in studies):
            handles.append(Line2D([], [], color="grey", marker="x", ls="", ms=8))
            labels.append("second order (model's colour)")
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def attack_scores(studies: Sequence, *, columns: int = 3) -> plt.Figure:
    """How far the score falls: worst of ``T`` random directions, first-order step, PGD.

    ``studies`` are :class:`localprops.studies.attacks.AttackStudy` results. The y
    axis is ``1 - s`` on a log scale (``s`` the true-class score), so both a
    fall from 0.9999 to 0.999 and one to 0 are visible; lines are medians over
    samples, bands the interquartile range.
    """
    if not studies:
        raise ValueError("no study results to draw")
    fig, axes = _panel_grid(len(studies), columns, 4.4, 3.4)
    for ax, study in zip(axes.flat, studies):
        series = (("worst of T random", "C0", study.random_drops),
                  ("first-order step", "C1", study.first_order_drops),
                  ("PGD", "C3", study.pgd_drops))
        for label, colour, values in series:
            drop = np.maximum(values, _RANGE_FLOOR)
            q25, q50, q75 = np.quantile(drop, [0.25, 0.5, 0.75], axis=0)
            ax.plot(study.radii, q50, color=colour, marker=".", label=label)
            ax.fill_between(study.radii, q25, q75, color=colour, alpha=0.15)
        ax.set(xscale="log", yscale="log")
        ax.axhline(0.5, color="0.5", lw=0.6, ls=":")
        ax.set_title(f"{study.model} ({study.norm}, S={len(study.ids)})", fontsize=9)
        ax.set_xlabel(f"radius r ({study.norm})")
    for ax in axes[:, 0]:
        ax.set_ylabel("1 - true-class score")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    return fig


def radius_ratios(studies: Sequence, *, ax: plt.Axes | None = None) -> plt.Axes:
    """Random over adversarial smallest misclassifying radius, per model and sample.

    Dots are samples (an upward triangle where no random direction
    misclassified up to the search cap: a lower bound). The segments are what
    a linear classifier gives for this sampler and norm
    (:func:`localprops.studies.attacks.linear_ratio`, median over the samples'
    gradients): solid for a typical direction (sqrt(D) in L2, the law of
    Fawzi et al.), dashed for the best of ``T``, which the dots measure.
    """
    from localprops.studies.attacks import linear_ratio

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for i, study in enumerate(studies):
        ratio = study.ratio
        x = i + np.linspace(-0.15, 0.15, len(ratio)) if len(ratio) > 1 else np.full(1, i)
        for censored, marker in ((False, "o"), (True, "^")):
            mask = study.random_censored == censored
            if mask.any():
                ax.scatter(x[mask], ratio[mask], marker=marker, s=18, color=f"C{i % 10}",
                           edgecolors="k", linewidths=0.3)
        typical = np.median(linear_ratio(study.norm, study.dimension, study.l1_over_l2))
        ax.hlines(typical, i - 0.3, i + 0.3, colors="k", lw=1.2)
        ax.hlines(np.median(study.linear_ratio), i - 0.3, i + 0.3, colors="k", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(studies)), [f"{s.model}\n({s.norm}, D={s.dimension})"
                                        for s in studies], fontsize=7)
    ax.set_ylabel("random / adversarial radius")
    ax.legend(handles=[Line2D([], [], c="k", label="linear classifier, typical direction"),
                       Line2D([], [], c="k", ls="--", label="linear classifier, best of T"),
                       Line2D([], [], marker="^", ls="", c="grey",
                              label="no random flip up to the cap")], fontsize=7,
              loc="upper right")
    return ax


# ------------------------------------------------------ laws of later work (chapter 09)
def radial_profile_of(values: np.ndarray, radial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` (F,) over grid frequencies binned by rounded ``|k|``: (bins, means)."""
    bins = np.rint(np.asarray(radial)).astype(int)
    edges = np.unique(bins)
    return edges, np.array([np.asarray(values)[bins == b].mean() for b in edges])


def fourier_heat_maps(maps: Sequence, norm_index: int, *, what: str = "drop",
                      columns: int = 4) -> plt.Figure:
    """One Fourier heat map per model at ``norms[norm_index]``, centred (0 in the middle).

    ``what="drop"``: mean over samples of ``|log-odds drop|`` (the size of the
    response to a single-frequency perturbation, whatever its sign);
    ``what="error"``: the share of samples misclassified. Each panel has its
    own colour scale (log for drops), since the models differ by orders of
    magnitude.
    """
    from matplotlib.colors import LogNorm

    if what not in ("drop", "error"):
        raise ValueError(f"what must be 'drop' or 'error', got {what!r}")
    fig, axes = _panel_grid(len(maps), columns, 3.3, 3.0, sharey=False)
    for ax, heat in zip(axes.flat, maps):
        if what == "drop":
            values = heat.as_map(np.abs(heat.drops[:, norm_index]).mean(axis=0))
            norm = LogNorm(vmin=max(values.min(), values.max() * 1e-4), vmax=values.max())
            label = "mean |log-odds drop|"
        else:
            values, norm, label = heat.error_rate_map(norm_index), None, "share misclassified"
            top = max(float(np.nanmax(values)), 0.05)      # the data's own range
        axis = heat.axis
        image = ax.imshow(values, origin="lower", norm=norm, cmap="magma",
                          vmin=0 if what == "error" else None,
                          vmax=top if what == "error" else None,
                          extent=(axis[0] - heat.stride / 2, axis[-1] + heat.stride / 2,
                                  axis[0] - heat.stride / 2, axis[-1] + heat.stride / 2))
        ax.set_title(f"{heat.model}\n({len(heat)} samples, grid {len(axis)}x{len(axis)})",
                     fontsize=8)
        ax.set_xlabel("frequency j (cycles per image)", fontsize=7)
        ax.set_ylabel("frequency i", fontsize=7)
        fig.colorbar(image, ax=ax, shrink=0.8).set_label(label, fontsize=7)
    fig.suptitle(f"Fourier heat maps, L2 norm {maps[0].norms[norm_index]:g} (each panel "
                 "on its own colour scale)" if maps else "")
    return fig


def radial_sensitivity(heat, norm_index: int, *, predicted: np.ndarray | None = None,
                       kernel_power: np.ndarray | None = None,
                       ax: plt.Axes | None = None, legend: bool = True) -> plt.Axes:
    """Where a model's sensitivity lies in frequency, as shares per radial frequency ``|k|``.

    Lines, each normalised to sum 1 over the bins: the measured mean
    ``|drop|`` (solid), the first-order prediction from the input gradient
    (``predicted`` (F,), dashed), the first-layer kernels' mean power
    spectrum (``kernel_power`` (F,) on the same grid, dotted), and the flat
    spectrum of the paper's uniform noise (grey), which weights every
    frequency alike. ``legend=False`` leaves the legend out (panels of one
    figure share the first panel's).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    radial = heat.radial
    lines = [("measured |log-odds drop|", np.abs(heat.drops[:, norm_index]).mean(axis=0), "-")]
    if predicted is not None:
        lines.append(("first order, from the gradient", predicted, "--"))
    if kernel_power is not None:
        lines.append(("first-layer kernels' power", kernel_power, ":"))
    for label, values, style in lines:
        bins, profile = radial_profile_of(values, radial)
        ax.plot(bins, profile / profile.sum(), style, label=label)
    bins, flat = radial_profile_of(np.ones(len(radial)), radial)
    ax.plot(bins, flat / flat.sum(), color="grey", lw=1, label="uniform noise (flat)")
    ax.set_yscale("log")
    ax.set_xlabel("radial frequency |k| (cycles per image)")
    ax.set_ylabel("share per |k| bin")
    ax.set_title(heat.model, fontsize=9)
    if legend:
        ax.legend(fontsize=6)
    return ax


def subspace_ratios(studies: Sequence, *, ax: plt.Axes | None = None) -> plt.Axes:
    """Random-subspace over full-space DeepFool radius against ``m``, in units of ``sqrt(D/m)``.

    Dots: median over samples of ``ratio / sqrt(D/m)`` (bars: quartiles), so
    the law of Fawzi et al. (2016) is the line at 1 for every model whatever
    its ``D``; each model's dots are shifted a little along ``m`` so that they
    do not hide one another. Dashed: what a linear binary classifier gives on
    the same grid, ``exp(E log ratio)`` with the ratio ``B^(-1/2)``,
    ``B ~ Beta(m/2, (D-m)/2)`` (above 1 at small ``m``: the reference that
    rule L1 reads, :func:`localprops.report.laws.linear_reference_slope`).
    """
    from scipy.special import digamma

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for i, study in enumerate(studies):
        dims = np.asarray(study.dims, dtype=np.float64)
        law = np.sqrt(study.dimension / dims)
        ratios = study.ratios().reshape(len(study.ids), len(dims), -1)
        flat = np.moveaxis(ratios, 1, 0).reshape(len(dims), -1) / law[:, None]
        with np.errstate(all="ignore"):
            q1, med, q3 = (np.array([np.nanquantile(np.where(np.isfinite(r), r, np.nan), q)
                                     if np.isfinite(r).any() else np.nan for r in flat])
                           for q in (0.25, 0.5, 0.75))
        colour = f"C{i % 10}"
        shift = 1.06 ** (i - (len(studies) - 1) / 2)
        ax.errorbar(dims * shift, med, yerr=[med - q1, q3 - med], fmt="o", ms=4, color=colour,
                    capsize=2, label=f"{study.model} (D = {study.dimension})")
        below = dims[dims < study.dimension]
        linear = np.exp(-0.5 * (digamma(below / 2) - digamma(study.dimension / 2)))
        ax.plot(below, linear / np.sqrt(study.dimension / below), "--", color=colour, lw=0.8)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subspace dimension m")
    ax.set_ylabel("(subspace / full-space radius) / sqrt(D / m)")
    ax.legend(fontsize=7, title="line at 1: sqrt(D / m); dashed: linear classifier",
              title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def halfspace_scatter(studies: Sequence, adversarial: Mapping[str, np.ndarray], *,
                      factor: float = 2.0, columns: int = 4,
                      max_rate: float | None = 0.5) -> plt.Figure:
    """Half-space distance fitted to error rates in noise against the adversarial radius.

    One panel per model, one dot per sample (bars: the likelihood-ratio 95%
    interval of ``d_hat``; triangles: no error at any sigma, so only a lower
    bound is known, drawn at it). Solid: equality; dotted: within ``factor``.
    The fit is L3's (:func:`localprops.report.laws.halfspace_fit`): the noise
    levels with error rate at most ``max_rate`` (None: every level).
    """
    from localprops.report.laws import halfspace_fit

    fig, axes = _panel_grid(len(studies), columns, 3.4, 3.2, sharey=False)
    for ax, study in zip(axes.flat, studies):
        d, low, high, usable = halfspace_fit(study, max_rate, intervals=True)
        radius = np.asarray(adversarial[study.model], dtype=np.float64)
        ok = usable & np.isfinite(radius)
        ax.errorbar(radius[ok], d[ok], yerr=[d[ok] - low[ok], np.minimum(high[ok], 1e9) - d[ok]],
                    fmt="o", ms=3, lw=0.6, capsize=0)
        bound = ~usable & np.isfinite(low) & np.isfinite(radius)
        if bound.any():
            ax.scatter(radius[bound], low[bound], marker="^", s=14, color="grey")
        values = np.concatenate([radius[ok], d[ok], radius[bound], low[bound]])
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            span = np.array([values.min() / 1.5, values.max() * 1.5])
            ax.plot(span, span, "k-", lw=0.8)
            ax.plot(span, span * factor, "k:", lw=0.8)
            ax.plot(span, span / factor, "k:", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())    # no crowded minor labels
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("adversarial L2 radius (grey levels)", fontsize=7)
        ax.set_ylabel("half-space distance d (grey levels)", fontsize=7)
        ax.set_title(study.model, fontsize=8)
    axes.flat[0].legend(handles=[
        Line2D([], [], c="k", lw=0.8, label="d = adversarial radius"),
        Line2D([], [], c="k", ls=":", lw=0.8, label=f"within a factor {factor:g}"),
        Line2D([], [], marker="^", ls="", c="grey", label="no error: lower bound")],
        fontsize=6, loc="upper left")
    return fig
