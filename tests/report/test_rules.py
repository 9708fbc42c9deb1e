"""The verdict machinery: intervals, per-model outcomes, and their combination across models."""
from __future__ import annotations

import numpy as np
import pytest

from localprops.core.stats import bootstrap_interval, wilson_interval
from localprops.report import rules
from localprops.report.rules import FAIL, PASS, UNDECIDED, Outcome, combine
from localprops.report.scorecard import INCONCLUSIVE, NOT_SUPPORTED, PARTLY, SUPPORTED

Z95 = 1.959963984540054     # the normal 97.5% quantile


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, written out independently of the library."""
    p = k / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 / (1 + Z95 ** 2 / n) * np.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n ** 2))
    return max(0.0, centre - half), min(1.0, centre + half)


def outcome(result: str, model: str = "m") -> Outcome:
    """An outcome that only carries its pass/fail/undecided result."""
    return Outcome(model, 0.5, (0.4, 0.6), 0.5, True, result, 10, 10)


def verdict_of(*results: str, **kwargs) -> str:
    return combine([outcome(r) for r in results], **kwargs)


# ------------------------------------------------------------ intervals
@pytest.mark.parametrize("k, n, published", [(8, 8, (0.676, 1.0)), (0, 10, (0.0, 0.278)),
                                             (50, 100, (0.404, 0.596))])
def test_wilson_interval_matches_published_values(k, n, published):
    np.testing.assert_allclose(wilson_interval(k, n), published, atol=5e-4)


@pytest.mark.parametrize("k, n", [(1, 3), (7, 20), (24, 30), (29, 30)])
def test_wilson_interval_matches_the_formula(k, n):
    np.testing.assert_allclose(wilson_interval(k, n), wilson_by_hand(k, n), rtol=1e-9)


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


@pytest.mark.parametrize("k, n", [(30, 30), (0, 3)])
def test_wilson_interval_contains_an_extreme_share_exactly(k, n):
    lo, hi = wilson_interval(k, n)
    assert lo <= k / n <= hi


def test_bootstrap_interval_is_seeded():
    values = np.random.default_rng(1).normal(size=40)
    first = bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) == first
    assert bootstrap_interval(values, seed=4) != first      # the seed is what fixes it


def test_bootstrap_interval_resamples_whole_samples():
    per_sample = np.random.default_rng(2).uniform(size=30)
    repeated = np.repeat(per_sample[:, None], 5, axis=1)      # (S, R), equal within a sample
    clustered = bootstrap_interval(repeated, np.mean)
    assert clustered == pytest.approx(bootstrap_interval(per_sample, np.mean), abs=1e-12)
    # resampling the 150 items one by one would pretend to five times more data
    lo, hi = bootstrap_interval(repeated.ravel(), np.mean)
    assert hi - lo < 0.6 * (clustered[1] - clustered[0])


def test_pooled_outcome_resamples_whole_samples():
    hits = np.arange(30) % 5 == 0                                  # 6 of 30 samples
    repeated = np.repeat(hits[:, None], 4, axis=1)
    per_sample = rules.pooled_outcome("m", hits, threshold=0.5)
    pooled = rules.pooled_outcome("m", repeated, threshold=0.5)
    assert pooled.estimate == pytest.approx(0.2) and pooled.counted == 120
    assert pooled.samples == 30
    assert pooled.interval == pytest.approx(per_sample.interval, abs=1e-12)
    boot, wilson = bootstrap_interval(hits.astype(float), np.mean), wilson_interval(6, 30)
    assert pooled.interval == pytest.approx((min(boot[0], wilson[0]), max(boot[1], wilson[1])))
    assert pooled.outcome == FAIL


def test_pooled_interval_is_never_narrower_than_wilson_over_samples():
    """All items agree: the bootstrap has zero width, the interval does not."""
    out = rules.pooled_outcome("m", np.ones((24, 5), bool), threshold=0.9)
    assert out.interval == pytest.approx(wilson_interval(24, 24))
    assert out.outcome == UNDECIDED           # 24 of 24 cannot show more than 86% at 95%


# ------------------------------------------------------------ per model
@pytest.mark.parametrize("estimate, interval, threshold, above, expected", [
    (0.8, (0.6, 0.9), 0.5, True, PASS),
    (0.5, (0.5, 0.7), 0.5, True, PASS),            # at the threshold is on the claim's side
    (0.3, (0.2, 0.45), 0.5, True, FAIL),
    (0.5, (0.4, 0.6), 0.5, True, UNDECIDED),
    (0.3, (0.2, 0.45), 0.5, False, PASS),
    (0.5, (0.4, 0.5), 0.5, False, UNDECIDED),      # "below" is strict
    (0.7, (0.5, 0.9), 0.5, False, FAIL),
    (float("nan"), (0.6, 0.9), 0.5, True, UNDECIDED),
    (0.8, (float("nan"), 0.9), 0.5, True, UNDECIDED),
])
def test_decide(estimate, interval, threshold, above, expected):
    assert rules.decide(estimate, interval, threshold, above=above) == expected


def test_share_outcome_uses_wilson_and_leaves_out_undecided_samples():
    positive = np.array([True] * 20 + [False] * 5 + [False] * 5)
    negative = np.array([False] * 20 + [True] * 5 + [False] * 5)     # the last 5: neither
    out = rules.share_outcome("m", positive, negative, threshold=0.5, classes=4)
    assert (out.counted, out.samples, out.classes) == (25, 30, 4)
    assert out.estimate == pytest.approx(0.8)
    assert out.interval == pytest.approx(wilson_interval(20, 25))
    assert out.outcome == PASS
    # without ``negative`` every other sample counts against
    assert rules.share_outcome("m", positive, threshold=0.5).estimate == pytest.approx(20 / 30)
    with pytest.raises(ValueError):
        rules.share_outcome("m", positive, positive, threshold=0.5)


def test_a_threshold_the_sample_count_cannot_reach_is_said_so():
    out = rules.share_outcome("m", np.ones(30, bool), threshold=0.95)     # 30 of 30: >= 88.6%
    assert out.outcome == UNDECIDED and "30 samples can never pass at least 95%" in out.note
    low = rules.share_outcome("m", np.zeros(30, bool), threshold=0.05, above=False)
    assert low.outcome == UNDECIDED and "even 0 of 30" in low.note
    reachable = rules.share_outcome("m", np.array([True] * 28 + [False] * 2), threshold=0.8)
    assert reachable.outcome == UNDECIDED and reachable.note == "interval straddles the threshold"
    assert rules.share_outcome("m", np.ones(100, bool), threshold=0.95).outcome == PASS


def test_too_few_counted_units_make_a_model_undecided():
    out = rules.share_outcome("m", np.ones(9, bool), threshold=0.5)
    assert out.outcome == UNDECIDED and "only 9 measurable" in out.note
    assert rules.share_outcome("m", np.ones(10, bool), threshold=0.5).outcome == PASS
    # a share with no counted sample at all
    out = rules.share_outcome("m", np.zeros(30, bool), np.zeros(30, bool), threshold=0.5)
    assert out.outcome == UNDECIDED and np.isnan(out.estimate) and out.counted == 0


def test_median_outcome_ignores_nan_and_needs_values():
    values = np.r_[np.full(20, 0.1), np.full(10, np.nan)]
    out = rules.median_outcome("m", values, threshold=1.0, above=False)
    assert (out.estimate, out.counted, out.outcome) == (pytest.approx(0.1), 20, PASS)
    empty = rules.median_outcome("m", np.full(30, np.nan), threshold=1.0)
    assert empty.outcome == UNDECIDED and np.isnan(empty.interval).all()
    above = rules.median_outcome("m", np.full(30, 2.0), threshold=1.0, above=False)
    assert above.outcome == FAIL


@pytest.mark.parametrize("centre, expected", [(0.0, PASS), (3.0, FAIL), (-3.0, FAIL),
                                              (1.0, UNDECIDED)])
def test_band_outcome(centre, expected):
    values = centre + np.linspace(-0.3, 0.3, 30)
    out = rules.band_outcome("m", values, low=-1.0, high=1.0)
    assert out.outcome == expected
    assert out.interval[0] <= out.estimate <= out.interval[1]


def test_band_outcome_needs_enough_values():
    out = rules.band_outcome("m", np.r_[np.zeros(5), np.full(25, np.nan)], low=-1, high=1)
    assert out.outcome == UNDECIDED and out.counted == 5


def test_outcome_as_dict_is_json_ready():
    out = rules.share_outcome("m", np.zeros(4, bool), np.zeros(4, bool), threshold=0.5,
                              classes=2)
    assert out.as_dict() == {"samples": 4, "classes": 2, "estimate": None,
                             "interval": [0.0, 1.0], "outcome": UNDECIDED, "counted": 0}


# ------------------------------------------------------------ across models
@pytest.mark.parametrize("results, expected", [
    ((PASS, PASS), SUPPORTED),
    ((PASS, FAIL), PARTLY),
    ((FAIL, FAIL), NOT_SUPPORTED),
    ((PASS, UNDECIDED), INCONCLUSIVE),             # supported or partly
    ((FAIL, UNDECIDED), INCONCLUSIVE),             # partly or not supported
    ((PASS, FAIL, UNDECIDED), PARTLY),             # partly whatever the third does
    ((UNDECIDED,), INCONCLUSIVE),
    ((), INCONCLUSIVE),
])
def test_combine_every_model(results, expected):
    assert verdict_of(*results) == expected


@pytest.mark.parametrize("results, expected", [
    ((PASS, PASS, FAIL), SUPPORTED),
    ((PASS, FAIL), PARTLY),                        # one of two is not more than half
    ((FAIL, FAIL, FAIL), NOT_SUPPORTED),
    ((PASS, PASS, UNDECIDED), SUPPORTED),          # two of three pass either way
    ((PASS, FAIL, UNDECIDED), INCONCLUSIVE),       # supported or partly
])
def test_combine_most_models(results, expected):
    assert verdict_of(*results, rule=rules.most_models) == expected


@pytest.mark.parametrize("results, expected", [
    ((PASS, PASS), NOT_SUPPORTED),
    ((FAIL, FAIL), SUPPORTED),
    ((PASS, FAIL), PARTLY),
    ((PASS, UNDECIDED), INCONCLUSIVE),
    ((FAIL, PASS, UNDECIDED), PARTLY),
])
def test_combine_inverted(results, expected):
    assert verdict_of(*results, invert=True) == expected


def test_combine_gives_up_on_too_many_undecided_models():
    assert verdict_of(PASS, FAIL, *[UNDECIDED] * 13) == INCONCLUSIVE
    assert verdict_of(PASS, FAIL, *[UNDECIDED] * 12) == PARTLY


def test_deciding_is_the_model_closest_to_its_threshold():
    far = Outcome("far", 0.9, (0.8, 1.0), 0.5, True, PASS, 30, 30)
    near = Outcome("near", 0.6, (0.5, 0.7), 0.5, True, PASS, 30, 30)
    below = Outcome("below", 0.2, (0.1, 0.3), 0.5, False, PASS, 30, 30)   # margin 0.3
    missing = Outcome("missing", float("nan"), (0.0, 1.0), 0.5, True, UNDECIDED, 0, 30)
    assert rules.deciding([far, near, below, missing]).model == "near"
    assert rules.deciding([far, below]).model == "below"
    assert rules.deciding([missing]) is None


def test_one_image_cannot_pass_a_pooled_share_or_a_median():
    """Items of one sample are not independent: the minimum counts samples, not items."""
    one = rules.pooled_outcome("m", np.ones((1, 12), bool), threshold=0.5)
    assert one.outcome == rules.UNDECIDED and "samples with a measurable item" in one.note
    many = rules.pooled_outcome("m", np.ones((12, 3), bool), threshold=0.5)
    assert many.outcome == rules.PASS
    assert rules.median_outcome("m", np.zeros((1, 20)), threshold=1.0).outcome == rules.UNDECIDED


@pytest.mark.parametrize("share, need", [(0.9, 35), (0.95, 73), (0.5, 4)])
def test_samples_needed_matches_the_wilson_closed_form(share, need):
    # all n positive: the Wilson lower end is n / (n + z^2), so it reaches `share`
    # at n >= share * z^2 / (1 - share)
    z2 = 1.959963984540054 ** 2
    assert need == int(np.ceil(share * z2 / (1 - share)))
    assert rules.samples_needed(share) == need
    assert rules.can_pass(need, share) and not rules.can_pass(need - 1, share)
    assert rules.best_bound(need) == pytest.approx(need / (need + z2))


def test_can_pass_below_a_threshold_uses_the_upper_end():
    # none of n positive: the upper end z^2 / (n + z^2) must fall below the threshold
    assert not rules.can_pass(30, 0.1, above=False)
    assert rules.can_pass(40, 0.1, above=False)
    assert rules.best_bound(40, above=False) == pytest.approx(wilson_interval(0, 40)[1])


def test_median_text_resamples_whole_samples_and_skips_nan():
    from localprops.report.rules import median_text

    values = np.array([[1.0, 1.0], [2.0, np.nan], [3.0, 3.0]])
    text = median_text(values, ".2f")
    assert text == "2.00 [1.00, 3.00]"
    assert median_text(np.arange(101.0), ".0f").startswith("50 [")
    lo, hi = (float(v) for v in median_text(np.arange(101.0), ".1f")[6:-1].split(", "))
    assert lo < 50 < hi
    assert median_text(np.full((3, 2), np.nan)) == "n/a"
    assert median_text(np.array([5.0])) == "5 [5, 5]"
