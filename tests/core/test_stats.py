"""The shared statistical functions of localprops.core.stats."""
from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest
from scipy.special import expit

from localprops.core import stats
from localprops.core.stats import sigmoid


def test_sigmoid_matches_scipy_expit():
    x = np.concatenate([np.linspace(-700, 700, 20001), np.geomspace(1e-300, 1e-3, 50),
                        -np.geomspace(1e-300, 1e-3, 50), [0.0, -0.0]])
    np.testing.assert_allclose(sigmoid(x), expit(x), rtol=1e-15, atol=0)


def test_sigmoid_is_the_written_out_formula_bit_for_bit():
    """Every caller's former ``1 / (1 + exp(-x))``, so no cached or shown number moves."""
    x = np.random.default_rng(0).normal(scale=30, size=(7, 11, 13))
    with np.errstate(over="ignore"):
        assert np.array_equal(sigmoid(x), 1.0 / (1.0 + np.exp(-x)))
        assert np.array_equal(sigmoid(-x), 1.0 / (1.0 + np.exp(x)))


def test_sigmoid_at_extreme_arguments_warns_nothing():
    x = np.array([-np.inf, -1e308, -1000.0, -746.0, -710.0, 710.0, 746.0, 1000.0, 1e308,
                  np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid(x)
        below = sigmoid(-1000.0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_array_equal(sigmoid(x), s)     # the overflow is handled inside
    np.testing.assert_array_equal(s, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert below == 0.0 and sigmoid(1000.0) == 1.0
    # 1 - s from the negated argument stays exact where s itself rounds to 1
    assert sigmoid(40.0) == 1.0
    assert sigmoid(-40.0) == pytest.approx(np.exp(-40.0) / (1 + np.exp(-40.0)), rel=1e-15)
    assert np.isnan(sigmoid(np.nan))


def test_sigmoid_types():
    assert isinstance(sigmoid(0.0), np.float64) and sigmoid(0.0) == 0.5
    out = sigmoid(np.array([0.0, 1.0], dtype=np.float32))
    assert out.dtype == np.float64 and out.shape == (2,)
    assert sigmoid([[0.0]]).shape == (1, 1)
    assert sigmoid(2) == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-16)


def test_docstring_examples():
    result = doctest.testmod(stats, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
