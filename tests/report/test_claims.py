"""Verdict rules of the claims C1-C10 and B1-B4 on constructed study results.

Every rule is driven through each of its branches (supported, partly, not
supported, inconclusive) with 30 samples per model, enough for an interval
to be decisive when the data are clear.
"""
from __future__ import annotations

import numpy as np
import pytest

from localprops.report import claims, scorecard
from localprops.report.scorecard import (
    INCONCLUSIVE,
    LOGICAL,
    NOT_SUPPORTED,
    PARTLY,
    SUPPORTED,
)
from localprops.studies import attacks
from localprops.studies.attacks import AttackStudy
from localprops.studies.firstorder import FirstOrderStudy
from localprops.studies.lipschitz import LipschitzStudy
from localprops.studies.scores import NoiseFloor, ScoreStudy
from localprops.studies.topology import TopologyStudy

N = 60                                   # samples per model
RADII = np.array([1e-3, 1.0, 10.0])      # eps, 1, 10
FLOOR = 1e-6                             # every sample's float32 noise floor
HALF = np.arange(N) < N // 2             # the first half of the samples


def split(first, second, where=HALF):
    """Per-sample values: ``first`` where ``where``, ``second`` elsewhere."""
    return np.where(where, first, second).astype(float)


# ------------------------------------------------------------ isotropy, C1-C6
def ranges(eps, one=0.1, ten=0.5):
    """(N, 3) score ranges at eps, r = 1 and r = 10 (scalars or per-sample arrays)."""
    return np.column_stack([np.broadcast_to(np.asarray(v, float), (N,))
                            for v in (eps, one, ten)])


def scores(rng, model="m", kind="isotropy", log_odds=None, float64=None):
    """A ScoreStudy whose probability (and log-odds) ranges are ``rng`` (and ``log_odds``)."""
    def spread(r):                       # T = 4 scores with range exactly r
        return 0.5 + np.asarray(r, float)[..., None] * np.array([0.0, 1.0, 0.5, 0.5])

    labels = np.arange(N) % 3
    predictions = np.broadcast_to(labels[:, None, None], (N, 3, 4)).astype(np.int16)
    return ScoreStudy(model, kind, "l2", RADII, np.arange(N), labels, spread(rng),
                      predictions, spread(rng if log_odds is None else log_odds),
                      float64=float64)


def floors(*studies, value=FLOOR):
    n = np.full(N, value)
    return {s.model: NoiseFloor(s.ids, n, n) for s in studies}


def isotropy(*models, quantity="probability"):
    """C1-C4 of the models, each given as its (N, 3) ranges."""
    studies = [scores(rng, f"m{i}") for i, rng in enumerate(models)]
    return dict(zip(("C1", "C2", "C3", "C4"),
                    claims.isotropy_claims(studies, floors(*studies), quantity=quantity)))


ANISOTROPIC = ranges(eps=1e-3)                      # far above 10x the floor at eps
FLAT = ranges(eps=1e-9, one=1.0)                    # below it, though r = 1 predicts 1e-3
C1_CASES = {
    "supported": ([ANISOTROPIC], SUPPORTED),
    "partly": ([ANISOTROPIC, FLAT], PARTLY),
    "not supported": ([FLAT], NOT_SUPPORTED),
    "straddles": ([ranges(eps=split(1e-3, 1e-9), one=1.0)], INCONCLUSIVE),
    "below floor": ([ranges(eps=1e-9, one=1e-8)], INCONCLUSIVE),
}


def as_measured(row):
    """The verdict a logical row's rule gives (the row itself is shown, not counted)."""
    return row.rule.split("Rule verdict as measured: ")[1].split(";")[0]


@pytest.mark.parametrize("case", C1_CASES)
def test_c1(case):
    """Logical for a differentiable score: shown with the verdict its rule gives."""
    models, expected = C1_CASES[case]
    row = isotropy(*models)["C1"]
    assert row.verdict == LOGICAL and as_measured(row) == expected


def test_c1_float64_radii_have_float64_floor():
    """A range of 1e-9 says nothing in float32 but is far above float64's floor."""
    study = scores(ranges(eps=1e-9, one=1.0))
    plain = claims.isotropy_claims([study], floors(study))[0]
    study.float64 = np.array([True, False, False])
    wide = claims.isotropy_claims([study], floors(study))[0]
    assert (as_measured(plain), as_measured(wide)) == (NOT_SUPPORTED, SUPPORTED)


QUIET, LOUD = ranges(eps=1e-5), ranges(eps=1e-2)    # C2: below 1e-3 at eps, or not
C2_CASES = {
    "supported": ([QUIET], SUPPORTED),
    "partly": ([QUIET, LOUD], PARTLY),
    "not supported": ([LOUD], NOT_SUPPORTED),
    "straddles": ([ranges(eps=split(1e-5, 1e-2, np.arange(N) < 0.8 * N))], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", C2_CASES)
def test_c2(case):
    """Decided on the log-odds; the probability row holds by construction at eps <= 1e-3."""
    models, expected = C2_CASES[case]
    assert isotropy(*models, quantity="log_odds")["C2"].verdict == expected
    assert isotropy(*models)["C2"].verdict == LOGICAL


SIGNIFICANT, SLIGHT = ranges(eps=1e-6, one=0.1), ranges(eps=1e-9, one=1e-4)
C3_CASES = {
    "supported": ([SIGNIFICANT], SUPPORTED),
    "partly": ([SIGNIFICANT, SLIGHT], PARTLY),
    "not supported": ([SLIGHT], NOT_SUPPORTED),       # grows 10^4-fold, yet stays slight
    "straddles": ([ranges(eps=1e-9, one=split(0.1, 1e-4))], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", C3_CASES)
def test_c3(case):
    models, expected = C3_CASES[case]
    assert isotropy(*models)["C3"].verdict == expected


def test_c3_growth_alone_is_only_a_sensitivity_line():
    row = isotropy(SLIGHT)["C3"]
    assert row.verdict == NOT_SUPPORTED
    assert "grows at all (range(1) > range(eps), above the floor): supported" in row.sensitivity


def test_a_saturated_probability_is_below_its_resolution_not_isotropic():
    """Range exactly 0 at eps and one float64 step at r = 1 with a zero float32 floor: undecided."""
    study = scores(ranges(eps=0.0, one=1e-15))
    zero = NoiseFloor(study.ids, np.zeros(N), np.zeros(N))
    c1 = claims.isotropy_claims([study], {"m": zero})[0]
    assert c1.models["m"]["counted"] == 0 and as_measured(c1) == INCONCLUSIVE


def test_c4_worst_case_first_order():
    study = scores(ranges(eps=1e-3, ten=0.01))
    lo = {"m": np.full(N, 5.0)}
    row = claims.c4_worst_claim([study], {"m": np.full(N, 0.1)}, lo, quantity="log_odds")
    assert row.verdict == SUPPORTED and "worst direction" in row.setting    # 2 x 10 x 0.1 = 2
    assert claims.c4_worst_claim([study], {"m": np.full(N, 0.01)}, lo,
                                 quantity="log_odds").verdict == NOT_SUPPORTED
    # the probability through the sigmoid: lo = 5 -> s = 0.9933; +-10 x 0.1 moves it by 0.014
    assert claims.c4_worst_claim([study], {"m": np.full(N, 0.1)}, lo).verdict == NOT_SUPPORTED
    assert np.isclose(claims.worst_first_order_range(5.0, 0.1, 10.0, "probability"),
                      1 / (1 + np.exp(-6)) - 1 / (1 + np.exp(-4)))
    with pytest.raises(ValueError, match="one value per sample"):
        claims.c4_worst_claim([study], {"m": np.ones(3)}, lo)


BIG, SMALL = ranges(eps=1e-3, ten=0.5), ranges(eps=1e-3, ten=0.01)   # C4: above 0.1 at r = 10
C4_CASES = {
    "supported": ([BIG], SUPPORTED),
    "most models": ([BIG, BIG, SMALL], SUPPORTED),
    "partly": ([BIG, SMALL], PARTLY),                # one of two is not most
    "not supported": ([SMALL], NOT_SUPPORTED),
    "straddles": ([ranges(eps=1e-3, ten=split(0.5, 0.01))], INCONCLUSIVE),
    "undecided cannot change it": ([BIG, BIG, ranges(eps=1e-3, ten=split(0.5, 0.01))],
                                   SUPPORTED),
}


@pytest.mark.parametrize("case", C4_CASES)
def test_c4(case):
    models, expected = C4_CASES[case]
    assert isotropy(*models)["C4"].verdict == expected


def test_isotropy_claims_read_the_chosen_quantity():
    """A saturated probability barely moves while its log-odds do: the quantity decides."""
    study = scores(ranges(eps=1e-4, one=1e-3, ten=0.05),
                   log_odds=ranges(eps=1e-2, one=0.5, ten=2.0))
    prob = claims.isotropy_claims([study], floors(study))
    logit = claims.isotropy_claims([study], floors(study), quantity="log_odds")
    assert [v.verdict for v in prob] == [LOGICAL, LOGICAL, SUPPORTED, NOT_SUPPORTED]
    assert [v.verdict for v in logit] == [LOGICAL, NOT_SUPPORTED, SUPPORTED, SUPPORTED]
    assert as_measured(prob[0]) == as_measured(logit[0]) == SUPPORTED
    assert "log-odds" in logit[0].setting and "probability" in prob[0].setting


def symmetry(*pairs):
    """C5 and C6 of models given as (permutation ranges, isotropy ranges)."""
    perm = [scores(p, f"m{i}", kind="symmetry") for i, (p, _) in enumerate(pairs)]
    iso = [scores(r, f"m{i}") for i, (_, r) in enumerate(pairs)]
    return claims.symmetry_claims(perm, iso, floors(*perm))


ASYMMETRIC = (ranges(eps=1e-3, one=0.1, ten=0.1), ranges(eps=1e-3))
SYMMETRIC = (ranges(eps=1e-3, one=1e-5, ten=1e-5), ranges(eps=1e-3))   # < 1% of 0.1
C5_CASES = {
    "supported": ([ASYMMETRIC], SUPPORTED),
    "partly": ([ASYMMETRIC, SYMMETRIC], PARTLY),
    "not supported": ([SYMMETRIC], NOT_SUPPORTED),
    "straddles": ([(ranges(eps=1e-3, one=split(0.1, 1e-5), ten=split(0.1, 1e-5)),
                    ranges(eps=1e-3))], INCONCLUSIVE),
    "below floor": ([(ranges(1e-9, 1e-9, 1e-9), ranges(1e-9, 1e-9, 1e-9))], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", C5_CASES)
def test_c5(case):
    pairs, expected = C5_CASES[case]
    c5, _, _ = symmetry(*pairs)
    assert c5.claim == "C5" and c5.verdict == LOGICAL and as_measured(c5) == expected


def test_c5_size_reading():
    """The second C5 row asks for a permutation range of at least 1e-3 at r = 1."""
    assert symmetry(ASYMMETRIC)[1].verdict == SUPPORTED                      # 0.1 >= 1e-3
    slight = (ranges(eps=1e-6, one=1e-4, ten=1e-4), ranges(eps=1e-6, one=1e-3, ten=1e-3))
    assert as_measured(symmetry(slight)[0]) == SUPPORTED  # asymmetric beyond its floor ...
    assert symmetry(slight)[1].verdict == NOT_SUPPORTED  # ... but not significantly


def test_c5_needs_the_isotropy_study_of_the_same_model():
    perm = scores(ranges(1e-3), "a", kind="symmetry")
    with pytest.raises(ValueError, match="same model"):
        claims.symmetry_claims([perm], [scores(ranges(1e-3), "b")], floors(perm))


@pytest.mark.parametrize("pair, illustration", [(SYMMETRIC, "undecided"),   # below the floor
                                                (ASYMMETRIC, "pass"),
                                                ((ranges(1e-3, 1.0, 1.0), ranges(1e-3)),
                                                 "fail")])
def test_c6_is_logical_whatever_the_data(pair, illustration):
    *_, c6 = symmetry(pair)
    assert c6.claim == "C6" and c6.verdict == LOGICAL
    assert c6.models["m0"]["outcome"] == illustration       # the data do differ


# ------------------------------------------------------------ topology, C7-C8
def topology(model_rho, jacobian_rho=0.5, model="m"):
    """A TopologyStudy whose rho at every radius is the per-sample value given."""
    def per_radius(v):
        return np.repeat(np.broadcast_to(np.asarray(v, float), (N,))[:, None], 3, axis=1)

    rho = {"model": per_radius(model_rho), "jacobian": per_radius(jacobian_rho),
           "linear": per_radius(0.0)}
    return TopologyStudy(model, "l2", RADII, np.arange(N), rho,
                         {k: np.full((N, 3), 0.5) for k in rho}, np.zeros(N), np.ones(N),
                         np.zeros(N), np.ones((N, 3)))


IN_BAND, OUT_OF_BAND = 0.01, 0.5
NEAR_90 = split(IN_BAND, OUT_OF_BAND, np.arange(N) < 0.87 * N)    # 87% in the band
ON_EDGE = split(0.05, 0.15, np.arange(N) % 2 == 0)                 # median 0.1: the band's edge
C7_CASES = {
    "supported": ([IN_BAND], SUPPORTED),
    "partly": ([IN_BAND, OUT_OF_BAND], PARTLY),
    "not supported": ([OUT_OF_BAND], NOT_SUPPORTED),
    "straddles": ([ON_EDGE], INCONCLUSIVE),
    "negative side": ([-OUT_OF_BAND], NOT_SUPPORTED),
}


@pytest.mark.parametrize("case", C7_CASES)
def test_c7(case):
    values, expected = C7_CASES[case]
    studies = [topology(v, model=f"m{i}") for i, v in enumerate(values)]
    c7, _ = claims.topology_claims(studies)
    assert c7.verdict == expected


def test_c7_reads_the_median_and_gives_the_share_as_sensitivity():
    """87% of the statistics in the band: the median passes, a 90% share cannot."""
    c7, _ = claims.topology_claims([topology(NEAR_90)])
    assert c7.verdict == SUPPORTED
    assert c7.models["m"]["estimate"] == pytest.approx(IN_BAND)
    assert c7.sensitivity == ("share >= 90% of (sample, radius) statistics in the band: "
                              "inconclusive; share >= 75% of (sample, radius) statistics "
                              "in the band: supported")
    few = topology(IN_BAND)
    few.rho = {k: v[:30] for k, v in few.rho.items()}
    few.ids = few.ids[:30]
    c7, _ = claims.topology_claims([few])             # 30 samples: the median decides
    assert c7.verdict == SUPPORTED and "can never pass this line" in c7.rule
    assert "share >= 90% of (sample, radius) statistics in the band: inconclusive" in (
        c7.sensitivity)


C8_CASES = {
    "at most partly": ([IN_BAND, IN_BAND], PARTLY),
    "partly": ([IN_BAND, OUT_OF_BAND], PARTLY),
    "not supported": ([OUT_OF_BAND], NOT_SUPPORTED),
    "straddles": ([ON_EDGE], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", C8_CASES)
def test_c8(case):
    values, expected = C8_CASES[case]
    studies = [topology(IN_BAND, v, model=f"m{i}") for i, v in enumerate(values)]
    c7, c8 = claims.topology_claims(studies)
    assert c7.verdict == SUPPORTED and c8.verdict == expected


def depth(first_layer_rho, model="m"):
    """A DepthStudy whose rho after the first convolution is the per-sample value given."""
    from localprops.studies.depth import DepthStudy

    rho = np.full((N, 3, 3), IN_BAND)
    rho[:, 0, :] = np.broadcast_to(np.asarray(first_layer_rho, float), (N,))[:, None]
    return DepthStudy(model, "l2", RADII, np.arange(N), ["conv", "pool", "features"],
                      {"model": rho, "jacobian": rho.copy()}, np.full(N, 5.0), 3072)


@pytest.mark.parametrize("first, expected", [
    ((OUT_OF_BAND, OUT_OF_BAND), SUPPORTED),      # depth needed in every model: compounded
    ((IN_BAND, IN_BAND), PARTLY),                 # one affine map already gives the low rho
    ((IN_BAND, OUT_OF_BAND), PARTLY),
    ((ON_EDGE, OUT_OF_BAND), INCONCLUSIVE),
])
def test_c8_with_depth(first, expected):
    studies = [topology(IN_BAND, IN_BAND, model=f"m{i}") for i in range(2)]
    by_model = {f"m{i}": depth(v, f"m{i}") for i, v in enumerate(first)}
    _, c8 = claims.topology_claims(studies, depth=by_model)
    assert c8.verdict == expected
    assert "after the first convolution" in c8.measured
    # a linearisation outside the band is not supported, whatever the depth study says
    outside = [topology(IN_BAND, OUT_OF_BAND, model=f"m{i}") for i in range(2)]
    assert claims.topology_claims(outside, depth=by_model)[1].verdict == NOT_SUPPORTED


def test_c8_is_never_supported():
    """Without the depth study every linearisation passing makes C8 partly; C7 supported."""
    studies = [topology(IN_BAND, IN_BAND, model=m) for m in "abc"]
    c7, c8 = claims.topology_claims(studies)
    assert all(o["outcome"] == "pass" for o in c8.models.values())
    assert (c7.verdict, c8.verdict) == (SUPPORTED, PARTLY)
    assert "share >= 75% of (sample, radius) statistics in the band: partly" in c8.sensitivity


# ------------------------------------------------------------ Lipschitz, C9-C10
def lipschitz(gain, model="m"):
    """A LipschitzStudy whose L_x is ``gain`` (per sample) at every radius and direction."""
    out = np.broadcast_to(np.asarray(gain, float)[..., None, None] * np.ones(N)[:, None, None],
                          (N, 3, 4)).copy()
    return LipschitzStudy(model, "l2", RADII, np.arange(N), {"minmax": out, "raw": out},
                          {"minmax": np.ones_like(out), "raw": np.ones_like(out)})


CONTRACTING, EXPANDING, MIXED = 0.5, 2.0, split(0.5, 2.0)
C9_CASES = {
    "supported": ([CONTRACTING], SUPPORTED),
    "partly": ([CONTRACTING, EXPANDING], PARTLY),
    "not supported": ([EXPANDING], NOT_SUPPORTED),
    "straddles": ([MIXED], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", C9_CASES)
def test_c9_random_directions(case):
    gains, expected = C9_CASES[case]
    rows = claims.lipschitz_claims([lipschitz(g, f"m{i}") for i, g in enumerate(gains)])
    assert [r.claim for r in rows] == ["C9", "C9", "C10"]
    assert rows[1].verdict == "inconclusive"       # no worst case given: that reading is open
    assert "random directions" in rows[0].paper and rows[0].verdict == expected


@pytest.mark.parametrize("case", C9_CASES)
def test_c9_worst_case(case):
    gains, expected = C9_CASES[case]
    studies = [lipschitz(CONTRACTING, f"m{i}") for i in range(len(gains))]
    worst = {f"m{i}": np.broadcast_to(g, (N,)) for i, g in enumerate(gains)}
    random, worst_case, _ = claims.lipschitz_claims(studies, worst_minmax=worst)
    assert random.verdict == SUPPORTED
    assert "worst case" in worst_case.paper and worst_case.verdict == expected


@pytest.mark.parametrize("along, expected", [(CONTRACTING, SUPPORTED),
                                              (EXPANDING, NOT_SUPPORTED)])
def test_c9_worst_case_witness_at_a_finite_radius(along, expected):
    """The top direction's ratio at r = 1 is a sensitivity line, either way; not the rule."""
    studies = [lipschitz(CONTRACTING, "m0")]
    _, worst_case, _ = claims.lipschitz_claims(
        studies, worst_minmax={"m0": np.full(N, 2.0)}, worst_along={"m0": np.full(N, along)},
        along_radius=1.0)
    assert worst_case.verdict == NOT_SUPPORTED
    assert (f"finite radius r = 1, along the top direction (a lower bound on the worst case "
            f"there): {expected}") in worst_case.sensitivity
    _, without, _ = claims.lipschitz_claims(studies, worst_minmax={"m0": np.full(N, 2.0)})
    assert "finite radius" not in without.sensitivity


def c10(gains, bounds, worst_raw=None):
    studies = [lipschitz(g, f"m{i}") for i, g in enumerate(gains)]
    return claims.lipschitz_claims(studies, {f"m{i}": b for i, b in enumerate(bounds)},
                                   worst_raw=worst_raw)[-1]


def test_c10_worst_case_gain_against_the_global_bound():
    assert as_measured(c10([0.5], [100.0], worst_raw={"m0": np.full(N, 1.0)})) == SUPPORTED
    assert as_measured(c10([0.5], [100.0], worst_raw={"m0": np.full(N, 50.0)})) == NOT_SUPPORTED
    row = c10([0.5, 0.5], [100.0, 100.0], worst_raw={"m0": np.full(N, 1.0),
                                                     "m1": np.full(N, 50.0)})
    assert as_measured(row) == PARTLY and row.verdict == LOGICAL
    assert row.models["m0"]["estimate"] == pytest.approx(0.01)


def test_c10_random_directions_can_fail_a_model_but_never_pass_it():
    # the largest random-direction ratio is a lower bound on the gain
    assert as_measured(c10([50.0], [100.0])) == NOT_SUPPORTED
    low = c10([0.5], [100.0])
    assert as_measured(low) == INCONCLUSIVE and low.models["m0"]["outcome"] == "undecided"
    assert "only a random-direction" in low.measured
    # with a worst-case gain for one model and only a lower bound for the other
    assert as_measured(c10([0.5, 0.5], [100.0, 100.0], worst_raw={"m0": np.full(N, 1.0)})) \
        == INCONCLUSIVE


def test_c10_without_a_global_bound_is_inconclusive():
    row = c10([0.5], [])
    assert row.claim == "C10" and row.verdict == INCONCLUSIVE and row.models == {}


# ------------------------------------------------ beyond the paper, B1-B2
FIRST_ORDER_RADII = np.array([1e-3, 1.0, 20.0])


def first_order(at_1=1.0, at_20=1.0, model="m"):
    """Isotropy and first-order studies of N samples.

    The measured score moves ``at_1`` (at r = 1) and ``at_20`` (at r = 20) times
    as far as the first-order prediction (scalars or per-sample arrays), so the
    predicted-over-measured range ratio there is ``1 / at``.
    """
    rng = np.random.default_rng(0)
    slopes = rng.normal(size=(N, 3, 5)) * 1e-3
    clean = np.full(N, 0.999)
    study = FirstOrderStudy(model, "l2", FIRST_ORDER_RADII, np.array([]), np.arange(N),
                            np.arange(N) % 3, np.log(clean / (1 - clean)), slopes,
                            np.zeros((N, 0, 0)), np.ones(N), np.ones(N))
    base = study.clean_scores[:, None]
    measured = study.predicted_scores(1).copy()
    for k, scale in ((1, at_1), (2, at_20)):
        scale = np.broadcast_to(np.asarray(scale, float), (N,))[:, None]
        measured[:, k] = base + scale * (measured[:, k] - base)
    iso = ScoreStudy(model, "isotropy", "l2", FIRST_ORDER_RADII, np.arange(N),
                     np.arange(N) % 3, measured, np.zeros((N, 3, 5), np.int16))
    return iso, study


def beyond(*pairs, valid=None):
    """B1 and B2 of the models given as (iso, first-order) pairs; all ranges measurable."""
    valid = valid or {study.model: np.ones((N, 3), bool) for _, study in pairs}
    return claims.first_order_claims([p[0] for p in pairs], [p[1] for p in pairs], valid)


EXACT = dict(at_1=1.0)           # the gradient predicts the range at r = 1
OFF = dict(at_1=0.25)            # it predicts four times too much
B1_CASES = {
    "not supported": ([EXACT], NOT_SUPPORTED),     # the gradient test works
    "partly": ([EXACT, OFF], PARTLY),
    "supported": ([OFF], SUPPORTED),
    "straddles": ([dict(at_1=split(1.0, 0.25))], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", B1_CASES)
def test_b1(case):
    models, expected = B1_CASES[case]
    b1, _ = beyond(*[first_order(**kw, model=f"m{i}") for i, kw in enumerate(models)])
    assert (b1.claim, b1.verdict) == ("B1", expected)


def test_b1_shares_are_over_measurable_samples():
    iso, study = first_order(**EXACT)
    nothing = {"m": np.zeros((N, 3), bool)}
    b1, b2 = beyond((iso, study), valid=nothing)
    assert (b1.verdict, b2.verdict) == (INCONCLUSIVE, INCONCLUSIVE)
    assert b1.models["m"]["counted"] == 0
    one = np.zeros((N, 3), bool)
    one[0] = True
    b1, _ = beyond((iso, study), valid={"m": one})
    assert b1.verdict == INCONCLUSIVE and "of 1 measurable samples" in b1.measured
    twelve = np.zeros((N, 3), bool)
    twelve[:12] = True
    b1, _ = beyond((iso, study), valid={"m": twelve})
    assert b1.verdict == NOT_SUPPORTED and "100% [76%, 100%] of 12 measurable" in b1.measured


B2_CASES = {
    "supported": ([dict(at_20=10.0)], SUPPORTED),
    "partly": ([dict(at_20=10.0), dict(at_20=1.0)], PARTLY),
    "not supported": ([dict(at_20=1.0)], NOT_SUPPORTED),
    "straddles": ([dict(at_20=split(10.0, 1.0))], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", B2_CASES)
def test_b2(case):
    models, expected = B2_CASES[case]
    _, b2 = beyond(*[first_order(**kw, model=f"m{i}") for i, kw in enumerate(models)])
    assert (b2.claim, b2.verdict) == ("B2", expected)


def test_b1_b2_sensitivity_lines():
    """Factors, the log-odds model, and a margin above the noise floor, each recomputed."""
    iso, study = first_order(at_1=1.0, at_20=10.0)
    valid = {"m": np.ones((N, 3), bool)}
    b1, b2 = claims.first_order_claims([iso], [study], valid)
    assert "ranges at least" not in b1.sensitivity + b2.sensitivity   # no floors: no line
    assert b2.sensitivity.startswith("first-order model of the log-odds")
    assert "factor 1.5: supported" in b2.sensitivity and "factor 3: supported" in b2.sensitivity
    # ranges at r = 1 are about 3e-3: with a floor of 1e-3 they are within 10x of it and
    # B1 (read at r = 1) has nothing left to count; the departures at r = 20 still count
    ranges = np.ptp(iso.scores, axis=-1)
    assert (ranges[:, 1] < 1e-2).all() and (ranges[:, 2] > 1e-2).all()
    b1, b2 = claims.first_order_claims([iso], [study], valid, floors=floors(iso, value=1e-3))
    assert b1.verdict == NOT_SUPPORTED and b2.verdict == SUPPORTED     # the rules unchanged
    assert "ranges at least 10x their noise floor: inconclusive" in b1.sensitivity
    assert "ranges at least 10x their noise floor: supported" in b2.sensitivity
    # a low floor keeps every range: the margin line agrees with the rule
    b1, _ = claims.first_order_claims([iso], [study], valid, floors=floors(iso, value=1e-9))
    assert "ranges at least 10x their noise floor: not supported" in b1.sensitivity


@pytest.mark.parametrize("scale, expected", [(1.0, NOT_SUPPORTED), (4.0, SUPPORTED)])
def test_b1_b2_on_log_odds_ranges_and_other_radii(scale, expected):
    """The log-odds line compares log-odds ranges with r |g_lo . d| spreads, either way."""
    import dataclasses

    iso, study = first_order(at_1=1.0, at_20=1.0)
    lo = study.clean_log_odds[:, None, None]
    g_lo = study.slopes / (study.clean_scores * (1 - study.clean_scores))[:, None, None]
    # measured log-odds move `scale` times as far as the linear model of the log-odds
    iso = dataclasses.replace(iso, log_odds=lo + scale * study.radii[None, :, None] * g_lo)
    ok = {"m": np.ones((N, 3), bool)}
    b1, b2 = claims.first_order_claims([iso], [study], ok, valid_log_odds=ok)
    line = "log-odds ranges (saturated samples measured)"
    assert f"{line}: {expected}" in b1.sensitivity
    assert f"{line}: {expected}" in b2.sensitivity
    # B1 is read at r = 1 and, in its sensitivity line, at r = 20 (on the grid; 10 is not)
    assert b1.setting.endswith("at r = 1") and "at r = 20: not supported" in b1.sensitivity
    assert "at r = 10" not in b1.sensitivity
    # agreement at r = 1, a tenfold departure at r = 20: the rule and its r = 20 line differ
    far_iso, far_study = first_order(at_1=1.0, at_20=10.0)
    far = claims.first_order_claims([far_iso], [far_study], ok)[0]
    assert far.verdict == NOT_SUPPORTED and "at r = 20: supported" in far.sensitivity


def test_b3_sensitivity_lines():
    b3, _ = claims.attack_claims([attack(AS_LINEAR)])
    assert "factor 1.5" in b3.sensitivity and "factor 3" in b3.sensitivity


def test_b2_says_where_the_linear_regime_ends():
    _, b2 = beyond(first_order(at_20=10.0))
    assert f"score model {N} of {N}, median r = 20" in b2.measured
    _, b2 = beyond(first_order(at_20=1.0))
    assert f"score model 0 of {N}, median none" in b2.measured


# ------------------------------------------------ beyond the paper, B3-B4
BEST = float(attacks.linear_ratio("l2", 10_000, T=50))     # 100 / 2.25 = 44.5


def attack(ratio, model="m", found=None, censored=None):
    """An AttackStudy (D = 10^4, T = 50) with adversarial radius 1 and random radii ``ratio``.

    ``found`` (per sample) marks where an adversarial point was found (all by default).
    """
    ratio = np.broadcast_to(np.asarray(ratio, float), (N,)).copy()
    adversarial = np.where(np.ones(N, bool) if found is None else found, 1.0, np.inf)
    return AttackStudy(
        model=model, norm="l2", radii=np.array([1.0]), ids=np.arange(N), dimension=10_000,
        T=50, cap=1e5, first_order_log_odds=np.ones((N, 1)), pgd_log_odds=np.ones((N, 1)),
        random_min=np.ones((N, 1)), deepfool_radius=adversarial, pgd_radius=adversarial.copy(),
        random_radius=ratio, random_censored=np.zeros(N, bool) if censored is None
        else np.asarray(censored, bool), l1_over_l2=np.full(N, 80.0))


AS_LINEAR = BEST * np.linspace(0.9, 1.2, N)
TYPICAL = 100 * np.linspace(1.0, 1.2, N)                 # sqrt(D): > 2x best of T
AT_EDGE = 2 * BEST * np.exp(np.linspace(-0.5, 0.5, N))   # median right at +log 2
B3_CASES = {
    "supported": ([AS_LINEAR], SUPPORTED),
    "partly": ([AS_LINEAR, TYPICAL], PARTLY),
    "not supported": ([TYPICAL], NOT_SUPPORTED),
    "far below": ([np.linspace(2, 4, N)], NOT_SUPPORTED),
    "straddles": ([AT_EDGE], INCONCLUSIVE),
}


@pytest.mark.parametrize("case", B3_CASES)
def test_b3(case):
    ratios, expected = B3_CASES[case]
    b3, _ = claims.attack_claims([attack(r, f"m{i}") for i, r in enumerate(ratios)])
    assert (b3.claim, b3.verdict) == ("B3", expected)


def test_b3_needs_enough_adversarial_points():
    b3, _ = claims.attack_claims([attack(AS_LINEAR, found=np.arange(N) < 5)])
    assert b3.verdict == INCONCLUSIVE and b3.models["m"]["counted"] == 5
    assert f"({N - 5} without an adversarial point)" in b3.measured


ABOVE_ONE = np.linspace(2, 50, N)
ONE_BELOW = np.r_[0.5, ABOVE_ONE[1:]]
B4_CASES = {
    "supported": ([ABOVE_ONE], SUPPORTED),
    "partly": ([ABOVE_ONE, ONE_BELOW], PARTLY),
    "not supported": ([ONE_BELOW], NOT_SUPPORTED),   # one counterexample is enough
}


@pytest.mark.parametrize("case", B4_CASES)
def test_b4(case):
    ratios, expected = B4_CASES[case]
    _, b4 = claims.attack_claims([attack(r, f"m{i}") for i, r in enumerate(ratios)])
    assert (b4.claim, b4.verdict) == ("B4", expected)


def test_b4_without_adversarial_points_is_inconclusive():
    _, b4 = claims.attack_claims([attack(ABOVE_ONE, found=np.zeros(N, bool))])
    assert b4.verdict == INCONCLUSIVE and b4.models["m"]["outcome"] == "undecided"
    # a sample without an adversarial point is left out, not counted against
    failed = attack(ABOVE_ONE, found=np.arange(N) > 0)
    b3, b4 = claims.attack_claims([failed])
    assert "1 without an adversarial point" in b3.measured and b4.verdict == SUPPORTED
    assert b4.models["m"]["counted"] == N - 1


def test_b3_reports_censored_random_radii():
    b3, _ = claims.attack_claims([attack(AS_LINEAR, censored=np.arange(N) < 2)])
    assert "2 lower bounds" in b3.measured and b3.verdict == SUPPORTED
    assert BEST == pytest.approx(100 / attacks.expected_max_normal(50))


@pytest.mark.parametrize("scale, agrees", [(0.75, True), (0.25, False)])
def test_claims_plot_and_regime_share_one_agreement_rule(scale, agrees):
    """B1, the agreement figure and the end of the linear regime judge alike."""
    import matplotlib

    matplotlib.use("Agg")
    from localprops.report import plots
    from localprops.studies import firstorder

    iso, study = first_order(at_1=scale, at_20=scale)
    iso.scores[:, 0] = study.clean_scores[:, None] + scale * (
        study.predicted_scores(1)[:, 0] - study.clean_scores[:, None])   # ratio 1 / scale
    valid = {"m": np.ones((N, 3), bool)}
    ratio = firstorder.range_ratios(iso, study)
    np.testing.assert_allclose(ratio, 1 / scale, rtol=1e-6)
    assert firstorder.within_factor(ratio).all() == agrees
    b1, _ = claims.first_order_claims([iso], [study], valid)
    assert b1.verdict == (NOT_SUPPORTED if agrees else SUPPORTED)
    ax = plots.agreement_by_radius([iso], [study], valid)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), 1.0 if agrees else 0.0)
    end = firstorder.linear_regime_end(ratio, study.radii, valid["m"])
    np.testing.assert_array_equal(end, np.inf if agrees else 1e-3)
    b3, _ = claims.attack_claims([attack(BEST / scale * np.linspace(0.95, 1.05, N))])
    assert b3.verdict == (SUPPORTED if agrees else NOT_SUPPORTED)


# ------------------------------------------------ what every row stores
def every_row() -> list[scorecard.Verdict]:
    """One row of every claim, two models each (one passing, one failing where possible)."""
    iso = [scores(ANISOTROPIC, "a"), scores(FLAT, "b")]
    perm = [scores(ASYMMETRIC[0], "a", kind="symmetry"),
            scores(SYMMETRIC[0], "b", kind="symmetry")]
    topo = [topology(IN_BAND, IN_BAND, "a"), topology(OUT_OF_BAND, NEAR_90, "b")]
    lip = [lipschitz(CONTRACTING, "a"), lipschitz(MIXED, "b")]
    pairs = [first_order(at_20=10.0, model="a"), first_order(**OFF, model="b")]
    classes = {"a": 3, "b": 3}
    return (claims.isotropy_claims(iso, floors(*iso))
            + claims.symmetry_claims(perm, iso, floors(*perm))
            + claims.topology_claims(topo, classes=classes)
            + claims.lipschitz_claims(lip, {"a": 100.0, "b": 100.0},
                                      worst_minmax={"a": np.full(N, 0.5), "b": np.full(N, 2.0)},
                                      worst_raw={"a": np.full(N, 1.0)}, classes=classes)
            + claims.first_order_claims([p[0] for p in pairs], [p[1] for p in pairs],
                                        {m: np.ones((N, 3), bool) for m in "ab"})
            + claims.attack_claims([attack(AS_LINEAR, "a"), attack(ONE_BELOW, "b")],
                                   classes=classes))


def test_every_row_stores_per_model_estimates_with_intervals():
    rows = every_row()
    assert [r.claim for r in rows] == ["C1", "C2", "C3", "C4", "C5", "C5", "C6", "C7", "C8", "C9",
                                       "C9", "C10", "B1", "B2", "B3", "B4"]
    for row in rows:
        assert row.verdict in scorecard.VERDICTS, row.claim
        assert set(row.models) == {"a", "b"}, row.claim
        for model, stored in row.models.items():
            assert {"samples", "classes", "estimate", "interval", "outcome"} <= set(stored)
            assert stored["samples"] == N and stored["classes"] == 3, (row.claim, model)
            if stored["estimate"] is None:       # nothing measurable: no number, undecided
                assert stored["outcome"] == "undecided", (row.claim, model)
                continue
            lo, hi = stored["interval"]
            if row.claim == "C10":              # a maximum: no sampling interval
                assert lo is None and hi is None, model
                continue
            assert lo < hi or lo == hi == stored["estimate"], (row.claim, model)
            # 1e-12: wilson_interval rounds its ends (test_rules.py, the xfail)
            assert lo - 1e-12 <= stored["estimate"] <= hi + 1e-12, (row.claim, model, stored)
        # the row's headline is one of its models'
        assert [row.estimate, row.interval] in [[m["estimate"], m["interval"]]
                                                for m in row.models.values()], row.claim


def test_c10_needs_enough_samples_to_pass_but_not_to_fail():
    few = LipschitzStudy("m0", "l2", RADII, np.arange(3), {"minmax": np.ones((3, 3, 4)),
                                                          "raw": np.ones((3, 3, 4))},
                         {"minmax": np.ones((3, 3, 4)), "raw": np.ones((3, 3, 4))})
    small = claims.lipschitz_claims([few], {"m0": 100.0}, worst_raw={"m0": np.ones(3)})[-1]
    assert as_measured(small) == INCONCLUSIVE and "only 3 samples" in small.measured
    large = claims.lipschitz_claims([few], {"m0": 100.0}, worst_raw={"m0": np.full(3, 50.0)})
    assert as_measured(large[-1]) == NOT_SUPPORTED


def test_c8_sensitivity_follows_the_depth_rule():
    """At share >= 75% the sensitivity line applies the same rule, depth included."""
    studies = [topology(IN_BAND, IN_BAND, model=f"m{i}") for i in range(2)]
    by_model = {f"m{i}": depth(OUT_OF_BAND, f"m{i}") for i in range(2)}
    _, c8 = claims.topology_claims(studies, depth=by_model)
    assert c8.verdict == SUPPORTED
    assert c8.sensitivity.endswith("share >= 75% of (sample, radius) statistics in the band: "
                                   "supported")


def test_c7_leaves_the_eps_radius_out():
    """A statistic at eps (float32 rounding there) does not count either way."""
    study = topology(IN_BAND, IN_BAND)
    study.rho["model"][:, 0] = OUT_OF_BAND               # eps is the first radius
    c7, _ = claims.topology_claims([study])
    assert c7.verdict == SUPPORTED and c7.models["m"]["counted"] == N   # one score per image


def test_unreachable_names_the_models_whose_sample_count_cannot_pass():
    from localprops.report.rules import PASS, Outcome

    def outcome(model, n):
        return Outcome(model, 1.0, (0.9, 1.0), 0.9, True, PASS, n, n)

    text = claims._unreachable([outcome("small", 30), outcome("big", 100)], 0.9)
    assert "fewer than 35 samples" in text and "small (30)" in text and "big" not in text
    assert claims._unreachable([outcome("big", 100)], 0.9) == \
        "Every model has enough samples to pass."


def test_c9_sensitivity_reads_higher_shares_and_the_scalar_reading():
    # 70% of the points contract: passes "more than half", undecided or failing at 75% / 90%
    studies = [lipschitz(split(0.5, 2.0, np.arange(N) < int(0.7 * N)), "m0")]
    row = claims.lipschitz_claims(studies, scalar_scale={"m0": 0.1})[0]
    assert "share > 75%" in row.sensitivity and "share > 90%" in row.sensitivity
    # times 0.1 every ratio (0.5 or 2.0) is below 1: the scalar reading supports
    assert f"one min-max scalar per side: {SUPPORTED}" in row.sensitivity
    expanding = claims.lipschitz_claims([lipschitz(EXPANDING, "m0")],
                                        scalar_scale={"m0": 0.1})[0]
    assert expanding.verdict == NOT_SUPPORTED
    assert f"one min-max scalar per side: {SUPPORTED}" in expanding.sensitivity
    assert "scalar" not in claims.lipschitz_claims(studies)[0].sensitivity


def test_c10_says_when_the_bound_is_too_loose_to_decide():
    loose = c10([0.5], [1e4], worst_raw={"m0": np.full(N, 1.5)})
    assert "could not have failed" in loose.rule
    assert f"above 1 (expanding in grey levels in, activations out) on {N} of {N}" \
        in loose.measured
    tight = c10([0.5], [100.0], worst_raw={"m0": np.full(N, 5.0)})
    assert "could not have failed" not in tight.rule and f"on {N} of {N}" in tight.measured
