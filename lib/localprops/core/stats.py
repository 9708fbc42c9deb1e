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
    >>> print(f"{float(sigmoid(-40.0)):.10e}")   # 1 - s for a log-odds of 40, where s rounds to 1
    4.2483542553e-18
    >>> float(1.0 - sigmoid(40.0))
    0.0
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial share ``successes / n``.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at
    0 or n successes, so a share of 8/8 gets an honest interval (about
    [0.68, 1]). ``n = 0`` gives the uninformative interval (0, 1).

    Examples
    --------
    >>> [round(v, 3) for v in wilson_interval(8, 8)]
    [0.676, 1.0]
    >>> [round(v, 3) for v in wilson_interval(50, 100)]
    [0.404, 0.596]
    """
    from scipy.stats import norm as _normal

    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = float(_normal.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return float(low), float(high)


def bootstrap_interval(values: ArrayLike, statistic=np.median, *, n_boot: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the first axis of ``values``.

    The first axis indexes independent units (samples); any further axes are
    kept together, so a statistic over (sample, radius) pairs is resampled by
    whole samples (a cluster bootstrap): pairs of one image are not
    independent draws. ``statistic`` receives an array of the resampled rows
    and returns a number. Seeded: the same call gives the same interval.
    NaN values are ignored by the default statistics only if ``statistic``
    ignores them; pass ``np.nanmedian`` for that.

    Examples
    --------
    >>> lo, hi = bootstrap_interval(np.arange(101.0))
    >>> bool(lo < 50 < hi)
    True
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(int(n_boot), n))
    stats = np.array([statistic(values[p]) for p in picks], dtype=np.float64)
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def pooled_share(hits: ArrayLike, counted: ArrayLike | None = None) -> float:
    """Share of hits among counted items, pooled over all axes (NaN when none count).

    ``hits`` and ``counted`` are boolean arrays of one shape (``counted``
    defaults to all items). Used with :func:`bootstrap_interval` on per-sample
    rows, e.g. ``statistic=lambda rows: pooled_share(rows[..., 0], rows[..., 1])``.
    """
    hits = np.asarray(hits, bool)
    counted = np.ones_like(hits) if counted is None else np.asarray(counted, bool)
    total = counted.sum()
    return float((hits & counted).sum() / total) if total else float("nan")
