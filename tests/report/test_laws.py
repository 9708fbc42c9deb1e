"""Verdict rules of the later laws L1-L3 on constructed study results.

No model runs: each study dataclass is filled with synthetic arrays that
follow (or break) the law by construction, and every rule is driven through
its branches (supported, partly, not supported, inconclusive) with 30
samples per model.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from localprops.report import laws, scorecard
from localprops.report.rules import FAIL, PASS, UNDECIDED
from localprops.report.scorecard import INCONCLUSIVE, NOT_SUPPORTED, PARTLY, SUPPORTED
from localprops.studies.fourier import FourierHeatMap, frequency_grid
from localprops.studies.halfspace import NoiseErrorStudy
from localprops.studies.subspace import SubspaceStudy

N = 30                                   # samples per model


# ------------------------------------------------------------ L1: subspaces
D = 3072
DIMS = np.array([1, 4, 16, 64, 256, D])


def power_ratios(slopes, dims=DIMS, dimension=D, repeats=2, noise=0.0, seed=0):
    """(S, M, repeats) ratios ``c_s (D/m)^(-slope_s)`` times log-normal noise of sd ``noise``."""
    slopes = np.asarray(slopes, float)[:, None, None]
    scale = np.linspace(0.8, 1.2, len(slopes))[:, None, None]
    rng = np.random.default_rng(seed)
    jitter = np.exp(noise * rng.standard_normal((len(slopes), len(dims), repeats)))
    return scale * (dimension / dims[None, :, None]) ** (-slopes) * jitter


def subspace(slopes, model="m", noise=0.03, lost=None):
    """A SubspaceStudy with per-sample slopes ``slopes``; ``lost`` samples found no flip."""
    slopes = np.broadcast_to(np.asarray(slopes, float), (N,))
    full = np.linspace(50.0, 150.0, N)
    radius = power_ratios(slopes, noise=noise) * full[:, None, None]
    radius[:, DIMS == D] = full[:, None, None]           # m = D: the full-space radius
    if lost is not None:
        radius[np.asarray(lost, bool)[:, None] & (DIMS < D)] = np.inf
    return SubspaceStudy(model=model, ids=np.arange(N), dims=DIMS, dimension=D, candidates=10,
                         radius_full=full, found_full=np.ones(N, bool), radius=radius,
                         found=np.isfinite(radius))


def test_sample_slopes_are_exact_for_a_power_law():
    slopes = np.array([-0.5, -0.2, -1.0])
    got = laws.sample_slopes(power_ratios(slopes), DIMS, D)
    np.testing.assert_allclose(got, slopes, atol=1e-12)


def test_sample_slopes_average_repeats_in_log_space():
    dims = np.array([1.0, 100.0])
    ratios = np.array([[[10.0, 1000.0], [1.0, 1.0]]])     # geometric mean 100 at m = 1
    # log-space mean: log 100 at m = 1, 0 at m = 100 -> slope exactly -1 (arithmetic: not)
    assert laws.sample_slopes(ratios, dims, 10_000)[0] == pytest.approx(-1.0)


def test_sample_slopes_leave_out_inf_and_need_two_dims():
    ratios = power_ratios([-0.5, -0.5, -0.5], repeats=1)
    ratios[0, 1] = np.inf                                # no flip at m = 4: left out
    ratios[1, :-1] = np.inf                              # only m = D left: no slope
    ratios[2, 2:] = np.nan                               # two dims left: still a slope
    got = laws.sample_slopes(ratios, DIMS, D)
    assert got[0] == pytest.approx(-0.5) and np.isnan(got[1])
    assert got[2] == pytest.approx(-0.5)


def test_sample_slopes_ignore_m_equal_to_d():
    ratios = power_ratios([-0.5], repeats=1)
    ratios[0, -1] = 1e6                                  # m = D would bend the fit
    assert laws.sample_slopes(ratios, DIMS, D)[0] == pytest.approx(-0.5)


SPREAD = -0.6 + np.linspace(-0.3, 0.3, N)                # median right at the band's edge
L1_CASES = {
    "supported": ([-0.5, -0.5], SUPPORTED),
    "partly": ([-0.5, -0.2], PARTLY),
    "not supported": ([-0.2, -0.2], NOT_SUPPORTED),
    "straddles": ([SPREAD], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", L1_CASES)
def test_l1(case):
    slopes, expected = L1_CASES[case]
    (row,) = laws.subspace_claim([subspace(s, f"m{i}") for i, s in enumerate(slopes)],
                                 center=-0.5)
    assert (row.claim, row.verdict) == ("L1", expected)


def test_l1_needs_ten_samples_with_a_slope():
    (row,) = laws.subspace_claim([subspace(-0.5, lost=np.arange(N) >= 9)], center=-0.5)
    assert row.verdict == INCONCLUSIVE
    assert row.models["m"]["counted"] == 9 and row.models["m"]["outcome"] == UNDECIDED


def test_l1_sensitivity_names_the_alternative_tolerances():
    (row,) = laws.subspace_claim([subspace(-0.65)], center=-0.5)   # outside 0.1, inside 0.2
    assert row.verdict == NOT_SUPPORTED
    assert row.sensitivity == "tolerance 0.2: supported; tolerance 0.05: not supported"
    assert "+- 0.1" in row.rule and "slope of the median ratio" in row.measured


def test_the_linear_reference_slope_is_the_beta_law_on_the_grid():
    """-1/2 for large m; steeper with m = 1 in the grid; checked by simulation."""
    assert laws.linear_reference_slope([100, 200, 400, 800], 10**6) == pytest.approx(-0.5,
                                                                                        abs=0.01)
    dims, d = np.array([1, 4, 16, 64]), 256
    exact = laws.linear_reference_slope(dims, d)
    assert exact < -0.52
    rng = np.random.default_rng(0)
    w = rng.standard_normal(d)
    logs = []
    for m in dims:                       # ||w|| / ||P_S w|| for random subspaces, in log
        q = np.linalg.qr(rng.standard_normal((d, m, 400)).transpose(2, 0, 1))[0]
        logs.append(np.log(np.linalg.norm(w) / np.linalg.norm(
            np.einsum("kdm,d->km", q, w), axis=1)).mean())
    assert np.polyfit(np.log(dims), logs, 1)[0] == pytest.approx(exact, abs=0.03)


def test_l1_centres_on_the_reference_by_default():
    study = subspace(-0.5)
    centre = laws.linear_reference_slope(study.dims, study.dimension)
    (row,) = laws.subspace_claim([subspace(centre)])
    assert row.verdict == SUPPORTED and f"{centre:.3f}" in row.measured


def test_l1_without_studies_has_no_row():
    assert laws.subspace_claim([]) == []


# ------------------------------------------------------------ L2: Fourier heat maps
def test_band_share_on_a_4x4_grid():
    grid = frequency_grid(4)                             # axis -2, -1, 0, 1
    radial = np.hypot(grid[:, 0], grid[:, 1])
    index = {tuple(k): f for f, k in enumerate(grid.tolist())}
    drops = np.zeros((4, 16))
    drops[0] = -1.0                                      # |drop| counts, sign does not
    drops[1, index[0, 0]] = 5.0                          # all at DC
    drops[2, index[-2, -2]], drops[2, index[0, 1]] = 3.0, -1.0
    got = laws.band_share(drops, radial, 1.5)            # |k| > 1.5: i or j = -2, 7 of 16
    np.testing.assert_allclose(got[:3], [7 / 16, 0.0, 3 / 4])
    assert np.isnan(got[3])                              # no response at all


def test_band_level_on_a_4x4_grid():
    grid = frequency_grid(4)
    radial = np.hypot(grid[:, 0], grid[:, 1])
    drops = np.stack([-radial ** 2, np.ones(16)])
    # 1 <= |k| <= 1.5: four at |k| = 1 (|drop| 1), four at sqrt 2 (|drop| 2)
    np.testing.assert_allclose(laws.band_level(drops, radial, 1.0, 1.5), [1.5, 1.0])
    np.testing.assert_allclose(laws.band_level(drops, radial, 1.0, 1.0), [1.0, 1.0])  # inclusive


BASE = np.linspace(1.0, 2.0, N)


@pytest.mark.parametrize("shift, above, expected", [
    (1.0, True, PASS), (1.0, False, FAIL), (-1.0, True, FAIL), (-1.0, False, PASS),
    (0.0, True, UNDECIDED), (0.0, False, UNDECIDED)])
def test_difference_outcome(shift, above, expected):
    out = laws.difference_outcome("t vs b", BASE[::-1] + shift, BASE, above=above)
    assert out.outcome == expected and out.estimate == pytest.approx(shift)
    assert out.counted == N and out.interval[0] <= out.estimate <= out.interval[1]


def test_difference_outcome_needs_min_count_finite_samples():
    treated = np.r_[BASE[:5] + 10, np.full(N - 5, np.nan)]
    out = laws.difference_outcome("t vs b", treated, BASE, above=True)
    assert out.outcome == UNDECIDED and out.counted == 5 and "only 5" in out.note
    assert laws.difference_outcome("t vs b", treated, BASE, above=True,
                                   min_count=5).outcome == PASS
    empty = laws.difference_outcome("t vs b", [np.nan], BASE, above=True)
    assert empty.outcome == UNDECIDED and empty.counted == 0


def test_difference_outcome_bootstrap_is_seeded():
    noisy = np.random.default_rng(2).normal(size=N)
    first = laws.difference_outcome("t vs b", noisy, BASE, above=True).interval
    assert laws.difference_outcome("t vs b", noisy, BASE, above=True).interval == first
    assert laws.difference_outcome("t vs b", noisy, BASE, above=True, seed=1).interval != first


SIZE, CUTOFF = 8, 3.0
GRID = frequency_grid(SIZE)


def high_heavy(k):                                       # sensitive at high frequencies
    return k ** 2


def low_heavy(k):                                        # sensitive at low frequencies
    return 40.0 / (1.0 + k) ** 2


def heat_map(profile, model, seed=0, norms=(2.0, 8.0), grid=GRID):
    """A FourierHeatMap with |drop| ``profile(|k|)`` at norm 1, scaled and signed per sample."""
    profile = profile(np.hypot(grid[:, 0], grid[:, 1]))
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(-0.3, 0.3, (N, 1)))
    signs = rng.choice([-1.0, 1.0], (N, len(grid)))
    at_norm = scale * profile * signs * np.exp(rng.normal(0, 0.1, (N, len(grid))))
    drops = np.stack([0.1 * at_norm, at_norm], axis=1)   # (S, R, F)
    return FourierHeatMap(model=model, norms=np.asarray(norms, float), grid=grid, size=SIZE,
                          stride=1, ids=np.arange(N), labels=np.zeros(N, int),
                          clean_log_odds=np.full(N, 5.0), drops=drops,
                          wrong=np.zeros(drops.shape, bool), clipped=np.zeros((N, 2)))


def l2(base, treated, **kwargs):
    return laws.augmentation_claims(base, treated, norm_index=1, cutoff=CUTOFF, **kwargs)


@pytest.mark.parametrize("base, treated, expected", [
    (high_heavy, low_heavy, SUPPORTED), (low_heavy, high_heavy, NOT_SUPPORTED)])
def test_l2(base, treated, expected):
    share, level = l2(heat_map(base, "plain"), heat_map(treated, "noise", seed=1))
    assert (share.claim, share.verdict) == ("L2", expected)
    assert (level.claim, level.verdict) == ("L2", expected)


def test_l2_same_maps_are_inconclusive():
    base = heat_map(high_heavy, "plain")
    treated = heat_map(high_heavy, "noise")              # the same noisy drops
    assert [row.verdict for row in l2(base, treated)] == [INCONCLUSIVE, INCONCLUSIVE]


@pytest.mark.parametrize("change", [{"norms": (2.0, 16.0)}, {"grid": frequency_grid(SIZE, 2)}])
def test_l2_needs_the_same_norms_and_grid(change):
    with pytest.raises(ValueError, match="norms and frequency grid"):
        l2(heat_map(high_heavy, "plain"), heat_map(low_heavy, "noise", **change))


def test_l2_rows_are_separate_readings():
    rows = l2(heat_map(high_heavy, "plain"), heat_map(low_heavy, "noise", seed=1),
              alternatives=[2.0, 4.0])
    readings = [scorecard.reading(row.setting) for row in rows]
    assert readings[0] != readings[1] and "l2 norm 8" in readings[0]
    grid = scorecard.verdict_grid([row.as_dict() for row in rows])
    assert grid.shape == (1, 2) and list(grid.loc["L2"]) == [SUPPORTED, SUPPORTED]
    assert rows[0].sensitivity.startswith("cutoff 2: ") and "cutoff 4: " in rows[1].sensitivity
    assert set(rows[0].models) == {"noise vs plain"}


# ------------------------------------------------------------ L3: half-spaces
SIGMAS = np.array([8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
DRAWS = 1000
DISTANCE = np.linspace(20.0, 200.0, N)


def noise_study(distance=DISTANCE, model="m", seed=0, blind=None):
    """Binomial error counts of the half-space model ``Phi(-d / sigma)``; ``blind`` rows all 0."""
    rng = np.random.default_rng(seed)
    errors = rng.binomial(DRAWS, norm.cdf(-np.asarray(distance)[:, None] / SIGMAS))
    if blind is not None:
        errors[np.asarray(blind, bool)] = 0
    return NoiseErrorStudy(model=model, sigmas=SIGMAS, n_draws=DRAWS, clip=False,
                           ids=np.arange(N), labels=np.zeros(N, int), errors=errors)


L3_CASES = {
    "supported": ([1.0], SUPPORTED),
    "partly": ([1.0, 5.0], PARTLY),
    "not supported": ([5.0], NOT_SUPPORTED),
}


@pytest.mark.parametrize("case", L3_CASES)
def test_l3(case):
    factors, expected = L3_CASES[case]
    studies = [noise_study(model=f"m{i}", seed=i) for i in range(len(factors))]
    adversarial = {s.model: f * DISTANCE for s, f in zip(studies, factors)}
    (row,) = laws.halfspace_claim(studies, adversarial)
    assert (row.claim, row.verdict) == ("L3", expected)


def test_l3_leaves_out_samples_without_errors():
    (row,) = laws.halfspace_claim([noise_study(blind=np.arange(N) == 0)], {"m": DISTANCE})
    assert row.verdict == SUPPORTED and row.models["m"]["counted"] == N - 1
    assert f"{N - 1} of {N} samples with an estimate" in row.measured


def test_l3_with_too_few_estimates_is_inconclusive():
    (row,) = laws.halfspace_claim([noise_study(blind=np.arange(N) >= 8)], {"m": DISTANCE})
    assert row.verdict == INCONCLUSIVE and row.models["m"]["outcome"] == UNDECIDED
    assert f"8 of {N} samples with an estimate" in row.measured


def test_l3_sensitivity_names_the_alternative_factors():
    (row,) = laws.halfspace_claim([noise_study()], {"m": 1.8 * DISTANCE})
    assert row.verdict == SUPPORTED                       # log 1.8 < log 2
    assert row.sensitivity == ("factor 1.5: not supported; factor 3: supported; "
                               "fit on every sigma: supported")


def test_l3_fits_only_the_rates_a_half_space_can_give():
    """Counts above half the draws are left out; with them the fit is pulled down."""
    study = noise_study()
    sigmas = np.asarray(study.sigmas, float)
    saturated = study.errors.copy()
    saturated[:, -1] = study.n_draws                      # every draw wrong at the largest sigma
    broken = NoiseErrorStudy(study.model, study.sigmas, study.n_draws, study.clip, study.ids,
                             study.labels, saturated)
    kept, _ = laws.halfspace_fit(broken)
    every, _ = laws.halfspace_fit(broken, None)
    clean, _ = laws.halfspace_fit(study)
    assert np.nanmedian(every) < np.nanmedian(kept)
    np.testing.assert_allclose(kept, laws.halfspace_fit(NoiseErrorStudy(
        study.model, sigmas[:-1], study.n_draws, study.clip, study.ids, study.labels,
        study.errors[:, :-1]))[0])
    assert np.isfinite(clean).all()


def test_a_paired_difference_removes_the_image_to_image_spread():
    """The same images under two models: a small shift hidden by the spread, seen by pairs."""
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.2, 40)
    treated = base - 0.02 + rng.normal(0, 0.002, 40)
    assert laws.difference_outcome("x", treated, base, above=False).outcome == UNDECIDED
    assert laws.difference_outcome("x", treated, base, above=False,
                                   paired=True).outcome == PASS
    with pytest.raises(ValueError, match="same images"):
        laws.difference_outcome("x", treated[:5], base, above=False, paired=True)


def test_halfspace_comparison_reads_the_rules_fit():
    """The table's ratio is the rule's: rates above 1/2 pull the all-level fit down."""
    study = noise_study()
    saturated = study.errors.copy()
    saturated[:, -1] = study.n_draws
    broken = NoiseErrorStudy(study.model, study.sigmas, study.n_draws, study.clip, study.ids,
                             study.labels, saturated)
    kept = laws.halfspace_comparison(broken, DISTANCE)
    every = laws.halfspace_comparison(broken, DISTANCE, max_rate=None)
    d, usable = laws.halfspace_fit(broken)
    assert kept["median_ratio"] == pytest.approx(np.median(d[usable] / DISTANCE[usable]))
    assert every["median_ratio"] < kept["median_ratio"]
    assert kept["ratio_interval"][0] <= kept["median_ratio"] <= kept["ratio_interval"][1]
    assert kept["compared"] == kept["usable"] == N and kept["lower_bounded"] == 0
    assert kept["spearman"] > 0.9          # d grows with the distance the counts came from
    # the intervals come with the fit and bracket it
    d, low, high, usable = laws.halfspace_fit(broken, intervals=True)
    assert (low[usable] <= d[usable]).all() and (d[usable] <= high[usable]).all()
    with pytest.raises(ValueError, match="one radius per sample"):
        laws.halfspace_comparison(broken, DISTANCE[:-1])


def test_paired_difference_aligns_images_by_id_and_resamples_pairs():
    rng = np.random.default_rng(3)
    level = rng.uniform(0, 10, 40)                 # large image-to-image spread
    base_ids, treated_ids = np.arange(40), np.arange(40)[::-1]      # other order
    base = level
    treated = (level - 0.5)[::-1]                  # every image 0.5 lower, stored reversed
    lower = laws.paired_difference("x", base_ids, base, treated_ids, treated,
                                   statistic=np.mean)
    assert lower.estimate == pytest.approx(-0.5) and lower.outcome == PASS
    assert lower.interval[1] < 0 and lower.interval[0] == pytest.approx(-0.5)
    higher = laws.paired_difference("x", base_ids, base, treated_ids, treated + 1.0,
                                    statistic=np.mean)
    assert higher.outcome == FAIL and higher.estimate == pytest.approx(0.5)
    # ids held by one set only are left out; too few shared images decide nothing
    few = laws.paired_difference("x", np.arange(5), base[:5], np.arange(3, 40), treated[:37])
    assert few.counted == 2 and few.outcome == UNDECIDED
