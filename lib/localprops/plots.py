"""Figures of the book, drawn from study results (never from hard-coded numbers).

The book, the scorecard and a reader's own notebook draw the same figure from
the same results through these functions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from .studies import ScoreStudy

_RANGE_FLOOR = 1e-12     # log axes cannot show a range of exactly zero


def _radius_labels(radii: np.ndarray) -> list[str]:
    return [f"{r:g}" for r in radii]


def score_range_panels(studies: Sequence[ScoreStudy], *,
                       noise_floors: Mapping[str, float] | None = None,
                       title: str | None = None, columns: int = 3,
                       jitter: float = 0.18, seed: int = 0) -> plt.Figure:
    """The paper's Fig. 1 / Fig. 3 form: one panel per model.

    x: radius (as categories, since the paper's eps is far from 1..20); y: the
    score range max - min over the ``T`` perturbations, log scale, one marker
    per sample and radius; colour: the mean score; a square where at least one
    perturbed image was misclassified, a circle otherwise. A dashed line marks
    each model's float32 noise floor when given.
    """
    if not studies:
        raise ValueError("no study results to draw")
    columns = min(columns, len(studies))
    rows = int(np.ceil(len(studies) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows),
                             squeeze=False, sharey=True, constrained_layout=True)
    rng = np.random.default_rng(seed)
    scatter = None
    for ax, study in zip(axes.flat, studies):
        stats = study.statistics
        n_samples, n_radii = stats.range.shape
        xs = np.arange(n_radii)[None, :] + rng.uniform(-jitter, jitter, (n_samples, n_radii))
        ranges = np.maximum(stats.range, _RANGE_FLOOR)
        for marker, mask in (("o", ~stats.any_misclassified), ("s", stats.any_misclassified)):
            if mask.any():
                scatter = ax.scatter(xs[mask], ranges[mask], c=stats.mean[mask], cmap="viridis",
                                     vmin=0, vmax=1, marker=marker, s=16, linewidths=0.3,
                                     edgecolors="k")
        if noise_floors and study.model in noise_floors:
            ax.axhline(max(noise_floors[study.model], _RANGE_FLOOR), ls="--", c="crimson",
                       lw=1)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(n_radii), _radius_labels(study.radii), rotation=90,
                      fontsize=7)
        ax.set_title(f"{study.model} ({study.kind}, {study.norm}, S={n_samples})", fontsize=9)
        ax.set_xlabel(f"radius r ({study.norm}, pixel units 0-255)")
    for ax in axes[:, 0]:
        ax.set_ylabel("score range max - min")
    for ax in list(axes.flat)[len(studies):]:
        ax.set_visible(False)
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, shrink=0.8, label="mean true-class score")
    handles = [Line2D([], [], marker="o", ls="", c="grey", label="all T correct"),
               Line2D([], [], marker="s", ls="", c="grey", label="some misclassified")]
    if noise_floors:
        handles.append(Line2D([], [], ls="--", c="crimson", label="float32 noise floor"))
    axes.flat[0].legend(handles=handles, fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def score_range_summary(studies: Sequence[ScoreStudy], *, ax: plt.Axes | None = None,
                        label_kind: bool = False) -> plt.Axes:
    """Median and interquartile band of the score range per radius, per model."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for study in studies:
        ranges = np.maximum(study.statistics.range, _RANGE_FLOOR)
        q25, q50, q75 = np.quantile(ranges, [0.25, 0.5, 0.75], axis=0)
        x = np.arange(len(study.radii))
        label = f"{study.model} ({study.kind})" if label_kind else study.model
        line, = ax.plot(x, q50, marker=".", label=label,
                        ls="-" if study.kind == "isotropy" else "--")
        ax.fill_between(x, q25, q75, alpha=0.2, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(studies[0].radii)), _radius_labels(studies[0].radii),
                  rotation=90, fontsize=7)
    ax.set_xlabel(f"radius r ({studies[0].norm})")
    ax.set_ylabel("score range (median, IQR band)")
    ax.legend(fontsize=7)
    return ax
