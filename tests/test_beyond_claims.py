"""Verdict rules of the chapter beyond the paper (B1-B4) on constructed results."""
from __future__ import annotations

import numpy as np

from localprops import claims
from localprops.attacks import AttackStudy
from localprops.firstorder import FirstOrderStudy
from localprops.studies import ScoreStudy


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
                            clean, slopes, np.zeros((4, 0, 0)), np.ones(4), np.ones(4))
    return iso, study


def test_exact_prediction_contradicts_the_dismissal():
    iso, study = pair(scale_at_large=1.0)
    b1, b2 = claims.first_order_claims([iso], [study], {"m": np.ones((4, 3), bool)})
    assert (b1.claim, b1.verdict) == ("B1", claims.NOT_SUPPORTED)
    assert (b2.claim, b2.verdict) == ("B2", claims.NOT_SUPPORTED)
    assert "beyond 20" in b2.measured


def test_departure_at_large_radius_ends_the_linear_regime():
    iso, study = pair(scale_at_large=10.0)
    b1, b2 = claims.first_order_claims([iso], [study], {"m": np.ones((4, 3), bool)})
    assert b1.verdict == claims.NOT_SUPPORTED        # still exact at r = 1
    assert b2.verdict == claims.SUPPORTED and "median r = 20" in b2.measured
    # nothing measurable: nothing agrees at r = 1
    b1, _ = claims.first_order_claims([iso], [study], {"m": np.zeros((4, 3), bool)})
    assert b1.verdict == claims.SUPPORTED
    # shares are over measurable samples: one measurable sample that agrees is enough
    mask = np.zeros((4, 3), bool)
    mask[0] = True
    b1, b2 = claims.first_order_claims([iso], [study], {"m": mask})
    assert b1.verdict == claims.NOT_SUPPORTED and "1 of 1 measurable" in b1.measured
    assert b2.verdict == claims.SUPPORTED and "1 of 1 measurable" in b2.measured


def attack(ratio, d=10_000, censored=None):
    n = len(ratio)
    return AttackStudy("m", "l2", np.array([1.0]), np.arange(n), d, 50, 1e5,
                       np.ones((n, 1)), np.ones((n, 1)), np.zeros((n, 1), bool),
                       np.ones((n, 1)), np.ones(n), np.asarray(ratio, float),
                       np.zeros(n, bool) if censored is None else np.asarray(censored))


def test_ratio_rules():
    b3, b4 = claims.attack_claims([attack([90, 100, 120])])
    assert b3.verdict == claims.SUPPORTED and b4.verdict == claims.SUPPORTED
    b3, b4 = claims.attack_claims([attack([2, 3, 0.5])])
    assert b3.verdict == claims.NOT_SUPPORTED and b4.verdict == claims.NOT_SUPPORTED
    b3, _ = claims.attack_claims([attack([90, 100, 120]), attack([1, 2, 3])])
    assert b3.verdict == claims.PARTLY
    b3, _ = claims.attack_claims([attack([90, 100, 120], censored=[False, True, True])])
    assert "2 lower bounds" in b3.measured
