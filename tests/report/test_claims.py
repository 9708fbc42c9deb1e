"""Verdict rules of the chapter beyond the paper (B1-B4) on constructed results."""
from __future__ import annotations

import numpy as np
import pytest

from localprops.report import claims, scorecard
from localprops.studies import attacks
from localprops.studies.attacks import AttackStudy
from localprops.studies.firstorder import FirstOrderStudy
from localprops.studies.scores import ScoreStudy


def pair(scale_at_large: float, model="m"):
    """Isotropy and first-order studies whose prediction is exact except at r = 20."""
    radii = np.array([1e-3, 1.0, 20.0])
    rng = np.random.default_rng(0)
    slopes = rng.normal(size=(4, 3, 5)) * 1e-3
    clean = np.full(4, 0.999)
    predicted = clean[:, None, None] + radii[None, :, None] * slopes
    measured = predicted.copy()
    measured[:, 2] = clean[:, None] + scale_at_large * (predicted[:, 2] - clean[:, None])
    iso = ScoreStudy(model, "isotropy", "l2", radii, np.arange(4), np.zeros(4, int),
                     measured, np.zeros((4, 3, 5), np.int16))
    study = FirstOrderStudy(model, "l2", radii, np.array([]), np.arange(4), np.zeros(4, int),
                            np.log(clean / (1 - clean)), slopes, np.zeros((4, 0, 0)), np.ones(4), np.ones(4))
    return iso, study


def test_exact_prediction_contradicts_the_dismissal():
    iso, study = pair(scale_at_large=1.0)
    b1, b2 = claims.first_order_claims([iso], [study], {"m": np.ones((4, 3), bool)})
    assert (b1.claim, b1.verdict) == ("B1", scorecard.NOT_SUPPORTED)
    assert (b2.claim, b2.verdict) == ("B2", scorecard.NOT_SUPPORTED)
    assert "score model 0 of 4, median none" in b2.measured


def test_departure_at_large_radius_ends_the_linear_regime():
    iso, study = pair(scale_at_large=10.0)
    b1, b2 = claims.first_order_claims([iso], [study], {"m": np.ones((4, 3), bool)})
    assert b1.verdict == scorecard.NOT_SUPPORTED        # still exact at r = 1
    assert b2.verdict == scorecard.SUPPORTED and "score model 4 of 4, median r = 20" in b2.measured
    # nothing measurable: nothing agrees at r = 1
    b1, _ = claims.first_order_claims([iso], [study], {"m": np.zeros((4, 3), bool)})
    assert b1.verdict == scorecard.SUPPORTED
    # shares are over measurable samples: one measurable sample that agrees is enough
    mask = np.zeros((4, 3), bool)
    mask[0] = True
    b1, b2 = claims.first_order_claims([iso], [study], {"m": mask})
    assert b1.verdict == scorecard.NOT_SUPPORTED and "1 of 1 measurable" in b1.measured
    assert b2.verdict == scorecard.SUPPORTED and "score model 1 of 1" in b2.measured


def attack(ratio, d=10_000, censored=None, l1_over_l2=None):
    """An AttackStudy with adversarial radius 1 and the given random radii."""
    n = len(ratio)
    l1 = np.full(n, 80.0) if l1_over_l2 is None else np.asarray(l1_over_l2, float)
    return AttackStudy("m", "l2", np.array([1.0]), np.arange(n), d, 50, 1e5,
                       np.ones((n, 1)), np.ones((n, 1)),
                       np.ones((n, 1)), np.ones(n), np.ones(n), np.asarray(ratio, float),
                       np.zeros(n, bool) if censored is None else np.asarray(censored), l1)


def test_ratio_rules():
    best = float(attacks.linear_ratio("l2", 10_000, T=50))     # 100 / 2.25 = 44.5
    assert best == pytest.approx(100 / attacks.expected_max_normal(50))
    b3, b4 = claims.attack_claims([attack([0.9 * best, best, 1.2 * best])])
    assert b3.verdict == scorecard.SUPPORTED and b4.verdict == scorecard.SUPPORTED
    # the typical-direction value sqrt(D) = 100 is more than a factor 2 from best of T
    b3, _ = claims.attack_claims([attack([100, 110, 120])])
    assert b3.verdict == scorecard.NOT_SUPPORTED
    b3, b4 = claims.attack_claims([attack([2, 3, 0.5])])
    assert b3.verdict == scorecard.NOT_SUPPORTED and b4.verdict == scorecard.NOT_SUPPORTED
    b3, _ = claims.attack_claims([attack([best] * 3), attack([1, 2, 3])])
    assert b3.verdict == scorecard.PARTLY
    b3, _ = claims.attack_claims([attack([best] * 3, censored=[False, True, True])])
    assert "2 lower bounds" in b3.measured
    failed = attack([best, best, best])
    failed.deepfool_radius[0] = failed.pgd_radius[0] = np.inf
    b3, b4 = claims.attack_claims([failed])
    assert "1 without an adversarial point" in b3.measured and b4.verdict == scorecard.SUPPORTED


@pytest.mark.parametrize("scale, agrees", [(0.75, True), (0.25, False)])
def test_claims_plot_and_regime_share_one_agreement_rule(scale, agrees):
    """B1, the agreement figure and the end of the linear regime judge alike."""
    import matplotlib

    matplotlib.use("Agg")
    from localprops.report import plots
    from localprops.studies import firstorder

    iso, study = pair(scale_at_large=1.0)
    clean = study.clean_scores[:, None, None]
    iso.scores[:] = clean + scale * (study.predicted_scores(1) - clean)   # ratio 1 / scale
    valid = {"m": np.ones((4, 3), bool)}
    ratio = firstorder.range_ratios(iso, study)
    np.testing.assert_allclose(ratio, 1 / scale, rtol=1e-6)
    assert firstorder.within_factor(ratio).all() == agrees
    b1, _ = claims.first_order_claims([iso], [study], valid)
    assert b1.verdict == (scorecard.NOT_SUPPORTED if agrees else scorecard.SUPPORTED)
    ax = plots.agreement_by_radius([iso], [study], valid)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), 1.0 if agrees else 0.0)
    end = firstorder.linear_regime_end(ratio, study.radii, valid["m"])
    np.testing.assert_array_equal(end, np.inf if agrees else 1e-3)
    assert claims.attack_claims([attack([44.5 / scale] * 3)])[0].verdict == (
        scorecard.SUPPORTED if agrees else scorecard.NOT_SUPPORTED)
