"""Small statistical functions shared by the studies and the report (numpy, float64).

Written once here so that every layer computes them the same way, bit for bit.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def sigmoid(x: ArrayLike) -> np.ndarray | np.float64:
    """The logistic function ``1 / (1 + exp(-x))``, elementwise, in float64.

    Turns a true-class log-odds ``lo`` into the true-class probability
    ``s = sigmoid(lo)``; ``1 - s`` is best computed as ``sigmoid(-lo)``, which
    stays exact where ``s`` rounds to 1 (``lo`` above about 37).

    Parameters
    ----------
    x : array_like
        Any real values (converted to float64); ``inf`` and ``-inf`` are
        allowed.

    Returns
    -------
    numpy.ndarray or numpy.float64
        ``1.0 / (1.0 + np.exp(-x))`` evaluated exactly so (no other rounding),
        with the shape of ``x`` (a scalar for a scalar). Where ``exp(-x)``
        overflows (``x`` below about -709) the result is 0 without a warning;
        where it underflows, 1.

    Examples
    --------
    >>> sigmoid([0.0, 2.0, -800.0, 800.0])
    array([0.5       , 0.88079708, 0.        , 1.        ])
    >>> float(sigmoid(-40.0))       # 1 - s for a log-odds of 40, where s rounds to 1
    4.24835425529159e-18
    >>> float(1.0 - sigmoid(40.0))
    0.0
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))
