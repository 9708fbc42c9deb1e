"""What the figures encode: colours, legends and the data drawn, on constructed results."""
from __future__ import annotations

import matplotlib
import numpy as np

from localprops.studies.lipschitz import LipschitzStudy

matplotlib.use("Agg")

from localprops.report import plots  # noqa: E402  (after the backend is chosen)


def lipschitz_study(model: str, radii) -> LipschitzStudy:
    """Input distance = radius, output distance = half of it, for 3 samples x T = 2."""
    radii = np.asarray(radii, float)
    x = np.broadcast_to(radii[None, :, None], (3, len(radii), 2)).copy()
    return LipschitzStudy(model, "l2", radii, np.arange(3),
                          output_distance={"minmax": x / 2, "raw": x / 2},
                          input_distance={"minmax": x, "raw": x})


def test_lipschitz_scatter_one_colour_per_radius_and_one_legend():
    studies = [lipschitz_study("a", [1e-3, 1.0, 10.0]), lipschitz_study("b", [1.0, 5.0])]
    fig = plots.lipschitz_scatter(studies)
    first, second = fig.axes[:2]
    # radii below 1 share the colour of r = 1; every other radius has its own
    colours = [tuple(c.get_facecolor()[0]) for c in first.collections]
    assert colours[0] == colours[1] and colours[1] != colours[2]
    assert tuple(second.collections[0].get_facecolor()[0]) == colours[1]     # r = 1 alike
    labels = first.get_legend().get_texts()
    assert [t.get_text() for t in labels] == ["r = 1", "r = 10", "degree 1 fit",
                                              "degree 2 fit", "L_x = 1"]
    assert second.get_legend() is None
    # the points drawn are the study's distances, radius by radius
    np.testing.assert_array_equal(first.collections[2].get_offsets()[:, 0], 10.0)
    np.testing.assert_array_equal(first.collections[2].get_offsets()[:, 1], 5.0)
    matplotlib.pyplot.close(fig)


def test_taylor_vs_measured_draws_unmeasurable_pairs_hollow():
    from localprops.studies.firstorder import FirstOrderStudy
    from localprops.studies.scores import ScoreStudy

    n, radii = 4, np.array([1e-3, 1.0, 20.0])
    slopes = np.random.default_rng(0).normal(size=(n, 3, 5)) * 1e-3
    clean = np.full(n, 0.999)
    study = FirstOrderStudy("m", "l2", radii, np.array([]), np.arange(n), np.zeros(n, int),
                            np.log(clean / (1 - clean)), slopes, np.zeros((n, 0, 0)),
                            np.ones(n), np.ones(n))
    iso = ScoreStudy("m", "isotropy", "l2", radii, np.arange(n), np.zeros(n, int),
                     study.predicted_scores(1), np.zeros((n, 3, 5), np.int16))
    valid = np.ones((n, 3), bool)
    valid[0, 2] = False                                 # one pair not measurable at r = 20
    fig = plots.taylor_vs_measured([iso], [study], valid={"m": valid})
    ax = fig.axes[0]
    filled = [c for c in ax.collections if c.get_facecolor().size]
    hollow = [c for c in ax.collections if not c.get_facecolor().size]
    assert [len(c.get_offsets()) for c in filled] == [4, 4, 3]       # one per radius
    assert len(hollow) == 1 and len(hollow[0].get_offsets()) == 1
    # the hollow marker has the colour of its radius
    np.testing.assert_allclose(hollow[0].get_edgecolor()[0], filled[2].get_facecolor()[0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "r = 0.001", "r = 1", "r = 20", "not measurable"]
    matplotlib.pyplot.close(fig)


def test_agreement_by_radius_keeps_models_at_one_share_apart():
    from localprops.studies.firstorder import FirstOrderStudy
    from localprops.studies.scores import ScoreStudy

    n, radii = 4, np.array([1.0, 20.0])
    slopes = np.random.default_rng(0).normal(size=(n, 2, 5)) * 1e-3
    clean = np.full(n, 0.999)
    pairs = []
    for name in ("a", "b"):                 # two models whose predictions agree exactly
        study = FirstOrderStudy(name, "l2", radii, np.array([]), np.arange(n),
                                np.zeros(n, int), np.log(clean / (1 - clean)), slopes,
                                np.zeros((n, 0, 0)), np.ones(n), np.ones(n))
        iso = ScoreStudy(name, "isotropy", "l2", radii, np.arange(n), np.zeros(n, int),
                         study.predicted_scores(1), np.zeros((n, 2, 5), np.int16))
        pairs.append((iso, study))
    valid = {"a": np.ones((n, 2), bool), "b": np.ones((n, 2), bool)}
    ax = plots.agreement_by_radius([p[0] for p in pairs], [p[1] for p in pairs], valid,
                                   dodge=0.05)
    first, second = ax.lines[:2]
    np.testing.assert_allclose(first.get_ydata(), 1.0)       # every sample agrees
    np.testing.assert_allclose(second.get_ydata(), 1.0)
    np.testing.assert_allclose(second.get_xdata() / first.get_xdata(), 1.05)
    assert first.get_marker() != second.get_marker()
    assert first.get_linestyle() != second.get_linestyle()
    assert "offset sideways by 5%" in ax.get_xlabel()
    matplotlib.pyplot.close(ax.figure)


def test_subspace_ratios_in_units_of_the_law():
    """Ratios of exactly sqrt(D/m) sit on the line at 1; the linear curve is the Beta law's."""
    from scipy.special import digamma

    from localprops.studies.subspace import SubspaceStudy

    dims, d = np.array([1, 10, 100, 3072]), 3072
    full = np.full(3, 2.0)
    radius = np.broadcast_to((full[:, None] * np.sqrt(d / dims))[..., None], (3, 4, 1)).copy()
    study = SubspaceStudy("m", np.arange(3), dims, d, 3, full, np.ones(3, bool), radius,
                          np.ones((3, 4, 1), bool))
    ax = plots.subspace_ratios([study])
    dots = ax.lines[0]                      # the medians (errorbar's data line)
    np.testing.assert_allclose(dots.get_ydata(), 1.0)
    np.testing.assert_allclose(dots.get_xdata(), dims)          # one model: no shift
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"][0]
    m = dims[dims < d]
    np.testing.assert_allclose(dashed.get_ydata(), np.exp(
        -0.5 * (digamma(m / 2) - digamma(d / 2))) / np.sqrt(d / m))
    assert dashed.get_ydata()[0] > 1                            # heavy tail at m = 1
    matplotlib.pyplot.close(ax.figure)


def test_radial_sensitivity_legend_only_where_asked():
    from localprops.studies.fourier import FourierHeatMap, frequency_grid

    grid = frequency_grid(8, 1)
    n, f = 3, len(grid)
    drops = np.ones((n, 1, f))
    heat = FourierHeatMap(model="m", norms=np.asarray([100.0]), grid=grid, size=8, stride=1,
                          ids=np.arange(n), labels=np.zeros(n, int),
                          clean_log_odds=np.full(n, 5.0), drops=drops,
                          wrong=np.zeros(drops.shape, bool), clipped=np.zeros((n, 1)))
    fig, (a, b) = matplotlib.pyplot.subplots(1, 2)
    plots.radial_sensitivity(heat, 0, ax=a)
    plots.radial_sensitivity(heat, 0, ax=b, legend=False)
    assert [t.get_text() for t in a.get_legend().get_texts()] == [
        "measured |log-odds drop|", "uniform noise (flat)"]
    assert b.get_legend() is None
    # a flat measured map draws the same shares as the uniform noise
    np.testing.assert_allclose(a.lines[0].get_ydata(), a.lines[1].get_ydata())
    matplotlib.pyplot.close(fig)


def test_isotropy_vs_symmetry_log_axes_and_line_styles():
    from localprops.studies.scores import ScoreStudy

    radii = np.array([1e-3, 1.0, 10.0])
    n, t = 4, 5
    rng = np.random.default_rng(0)
    base = rng.uniform(0.9, 0.99, (n, 3, t))
    make = lambda kind: ScoreStudy("m", kind, "l2", radii, np.arange(n), np.zeros(n, int),  # noqa: E731
                                   base, np.zeros((n, 3, t), np.int16),
                                   log_odds=np.log(base / (1 - base)))
    fig = plots.isotropy_vs_symmetry([make("isotropy")], [make("symmetry")])
    left, right = fig.axes
    assert left.get_xscale() == right.get_xscale() == "log"
    np.testing.assert_allclose(left.lines[0].get_xdata(), radii)      # radii at their values
    assert [line.get_linestyle() for line in left.lines[:2]] == ["-", "--"]
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert labels == ["m", "isotropy (random directions)", "symmetry (permutations)"]
    assert "log-odds" in right.get_title()
    matplotlib.pyplot.close(fig)
