"""Tests of localprops.core.mantel: the Mantel test against scikit-bio and brute force."""
from __future__ import annotations

import doctest
import itertools
import math

import numba
import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata

from localprops.core.mantel import mantel, permutations_of

ALTERNATIVES = ("two-sided", "greater", "less")


def euclidean(points: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix of the rows of ``points``."""
    return squareform(pdist(points))


def pair(n: int, rho: float, seed: int, dim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two distance matrices on n items; rho in [0, 1] sets how related they are."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim))
    b = rho * a + (1 - rho) * rng.normal(size=(n, dim))
    return euclidean(a), euclidean(b)


def within_sampling_error(p1: float, p2: float, n1: int, n2: int | None = None,
                          sigmas: float = 5.0) -> bool:
    """Whether two Monte Carlo p-values can estimate the same p (binomial error)."""
    p = min(max((p1 + p2) / 2, 1.0 / n1), 1 - 1.0 / n1)
    var = p * (1 - p) / n1 + (p * (1 - p) / n2 if n2 else 0.0)
    return abs(p1 - p2) <= sigmas * math.sqrt(var) + 2.0 / n1


# ----------------------------------------------------------------------------
# statistic and p-value against scikit-bio
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("n", [10, 30, 100])
def test_statistic_matches_skbio(n, method):
    skbio = pytest.importorskip("skbio")
    x, y = pair(n, 0.5, seed=n)
    ours, _ = mantel(x, y, permutations=0, method=method)
    ref, _, _ = skbio.stats.distance.mantel(x, y, method=method, permutations=0)
    assert ours == pytest.approx(ref, abs=1e-9)


def test_spearman_with_ties_matches_skbio():
    skbio = pytest.importorskip("skbio")
    x, y = pair(25, 0.5, seed=3)
    x, y = np.round(x), np.round(2 * y)           # many tied distances
    ours, _ = mantel(x, y, permutations=0, method="spearman")
    ref, _, _ = skbio.stats.distance.mantel(x, y, method="spearman", permutations=0)
    assert ours == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_stacks_and_shared_x_match_skbio(method):
    skbio = pytest.importorskip("skbio")
    ref = skbio.stats.distance.mantel
    pairs = [pair(30, rho, seed=s) for s, rho in enumerate(np.linspace(0, 1, 9))]
    xs = np.stack([p[0] for p in pairs])
    ys = np.stack([p[1] for p in pairs])
    stat, p = mantel(xs, ys, permutations=99, method=method, seed=1)
    assert stat.shape == p.shape == (9,) and stat.dtype == np.float64
    expected = [ref(a, b, method=method, permutations=0)[0] for a, b in zip(xs, ys)]
    np.testing.assert_allclose(stat, expected, rtol=0, atol=1e-9)
    # one x against the 9 y (matrix-product path), and 9 x against one y
    stat, _ = mantel(xs[0], ys, permutations=99, method=method, seed=1)
    expected = [ref(xs[0], b, method=method, permutations=0)[0] for b in ys]
    np.testing.assert_allclose(stat, expected, rtol=0, atol=1e-9)
    stat, _ = mantel(xs, ys[0], permutations=99, method=method, seed=1)
    expected = [ref(a, ys[0], method=method, permutations=0)[0] for a in xs]
    np.testing.assert_allclose(stat, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("rho", [0.0, 0.15, 0.8])
def test_p_value_matches_skbio(alternative, rho):
    skbio = pytest.importorskip("skbio")
    x, y = pair(15, rho, seed=7)
    n_perm = 4000
    _, ours = mantel(x, y, permutations=n_perm, alternative=alternative, seed=11)
    _, ref, _ = skbio.stats.distance.mantel(x, y, permutations=n_perm,
                                            alternative=alternative, seed=12)
    assert within_sampling_error(ours, ref, n_perm, n_perm), (ours, ref)


# ----------------------------------------------------------------------------
# exact permutation distribution on a tiny case
# ----------------------------------------------------------------------------

def exact_p_values(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Exact permutation p-values by enumerating all n! permutations (plain loop)."""
    n = x.shape[0]
    iu = np.triu_indices(n, 1)
    r0 = np.corrcoef(x[iu], y[iu])[0, 1]
    stats = []
    for perm in itertools.permutations(range(n)):
        xp = x[np.ix_(perm, perm)]
        stats.append(np.corrcoef(xp[iu], y[iu])[0, 1])
    stats = np.array(stats)
    tol = 1e-12
    return {"two-sided": np.mean(np.abs(stats) >= abs(r0) - tol),
            "greater": np.mean(stats >= r0 - tol),
            "less": np.mean(stats <= r0 + tol)}


@pytest.mark.parametrize("seed", [0, 1])
def test_brute_force_n4(seed):
    x, y = pair(4, 0.3, seed=seed, dim=2)
    exact = exact_p_values(x, y)
    n_perm = 20000
    for alternative in ALTERNATIVES:
        _, p = mantel(x, y, permutations=n_perm, alternative=alternative, seed=5)
        # E[p] = (n_perm * exact + 1) / (n_perm + 1)
        expected = (n_perm * exact[alternative] + 1) / (n_perm + 1)
        assert within_sampling_error(p, expected, n_perm), (alternative, p, expected)
    # the torch path samples the same distribution
    _, p = mantel(x, y, permutations=n_perm, seed=5, backend="torch")
    assert within_sampling_error(p, exact["two-sided"], n_perm)


def test_permutations_are_uniform():
    # every one of the 24 permutations of 4 items appears about equally often
    perms = permutations_of(seed=3, n=4, k0=0, count=24000)
    codes = perms @ np.array([64, 16, 4, 1])
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) == 24
    assert np.all(np.abs(counts - 1000) < 5 * math.sqrt(1000))
    assert np.all(np.sort(perms, axis=1) == np.arange(4))


# ----------------------------------------------------------------------------
# torch backend, seeds, paths, threads
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_torch_backend_matches_numba(method):
    x, y = pair(20, 0.2, seed=2)
    y = np.round(y, 1)                                   # ties for spearman
    ys = np.stack([pair(20, rho, seed=9 + i)[1] for i, rho in enumerate([0, .1, .2, .3])])
    xs = np.stack([pair(20, rho, seed=20 + i)[0] for i, rho in enumerate([0, .1, .2, .3])])
    kw = dict(permutations=999, method=method, seed=4)
    # single pair, one shared x, independent stacks: both backends draw the
    # same permutations for every x (one stream per matrix), so equal p-values
    for args in ((x, y), (x, ys), (xs, ys)):
        s_nb, p_nb = mantel(*args, backend="numba", **kw)
        s_t, p_t = mantel(*(torch.from_numpy(a) for a in args), backend="torch", **kw)
        np.testing.assert_allclose(s_t, s_nb, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(p_t, p_nb)


def test_torch_ranks_match_scipy():
    # Spearman on the torch path equals Pearson on scipy's average ranks, bit for bit,
    # only if the torch ranks are exactly scipy's (ties included)
    xs = np.stack([np.round(pair(11, 0.5, seed=s)[0], 1) for s in range(3)])
    ys = np.stack([np.round(pair(11, 0.5, seed=s)[1], 1) for s in range(3)])

    def ranked(a):
        return np.stack([squareform(rankdata(squareform(m, checks=False), method="average"))
                         for m in a])

    kw = dict(permutations=99, seed=0, backend="torch")
    r_s, p_s = mantel(torch.from_numpy(xs), torch.from_numpy(ys), method="spearman", **kw)
    r_p, p_p = mantel(torch.from_numpy(ranked(xs)), torch.from_numpy(ranked(ys)),
                      method="pearson", **kw)
    np.testing.assert_array_equal(r_s, r_p)
    np.testing.assert_array_equal(p_s, p_p)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_same_seed_same_p_values_different_seed_differs(backend):
    rng = np.random.default_rng(8)
    xs = np.stack([pair(12, 0.15, seed=int(s))[0] for s in rng.integers(1000, size=6)])
    ys = np.stack([pair(12, 0.15, seed=int(s))[1] for s in rng.integers(1000, size=6)])
    _, p1 = mantel(xs, ys, permutations=499, seed=123, backend=backend)
    _, p2 = mantel(xs, ys, permutations=499, seed=123, backend=backend)
    _, p3 = mantel(xs, ys, permutations=499, seed=124, backend=backend)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    _, p4 = mantel(xs, ys, permutations=499, seed=np.random.default_rng(0), backend=backend)
    _, p5 = mantel(xs, ys, permutations=499, backend=backend)   # fresh seed
    assert np.all((p4 > 0) & (p4 <= 1)) and np.all((p5 > 0) & (p5 <= 1))


def test_results_do_not_depend_on_threads_chunks_or_path():
    x, _ = pair(16, 0.3, seed=1)
    ys = np.stack([pair(16, 0.3, seed=100 + i)[1] for i in range(10)])
    kw = dict(permutations=600, seed=77)
    _, p_gemm = mantel(x, ys, **kw)                          # matrix-product path
    _, p_small = mantel(x, ys, max_memory_bytes=100_000, **kw)  # several chunks
    _, p_torch = mantel(x, ys, backend="torch", max_memory_bytes=50_000, **kw)
    p_fused = np.array([mantel(x, y, **kw)[1] for y in ys])  # one test at a time
    np.testing.assert_array_equal(p_gemm, p_small)
    np.testing.assert_array_equal(p_gemm, p_fused)
    np.testing.assert_array_equal(p_gemm, p_torch)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        _, p_one_thread = mantel(np.stack([x] * 3), ys[:3], **kw)
    finally:
        numba.set_num_threads(threads)
    _, p_all_threads = mantel(np.stack([x] * 3), ys[:3], **kw)
    np.testing.assert_array_equal(p_one_thread, p_all_threads)


# ----------------------------------------------------------------------------
# edge cases and return types
# ----------------------------------------------------------------------------

def test_return_types_and_inputs():
    x, y = pair(8, 0.5, seed=0)
    r, p = mantel(x, y, permutations=9, seed=0)
    assert type(r) is float and type(p) is float
    assert 1 / 10 <= p <= 1
    r2, _ = mantel(torch.tensor(x, dtype=torch.float32), y.tolist(), permutations=9,
                   seed=0)
    assert r2 == pytest.approx(r, abs=1e-6)
    r3, _ = mantel(x[None], y[None], permutations=9, seed=0)
    assert r3.shape == (1,)
    r4, _ = mantel(x.astype(int), y.astype(int), permutations=0)
    assert np.isfinite(r4)


def test_permutations_zero_gives_nan_p():
    x, y = pair(6, 0.5, seed=0)
    r, p = mantel(x, y, permutations=0)
    assert math.isfinite(r) and math.isnan(p)


def test_constant_matrix_gives_nan():
    x, y = pair(6, 0.5, seed=0)
    const = np.ones((6, 6)) - np.eye(6)
    for method in ("pearson", "spearman"):
        r, p = mantel(const, y, method=method)
        assert math.isnan(r) and math.isnan(p)
    r, p = mantel(np.stack([x, const]), np.stack([y, y]), permutations=99, seed=0)
    assert np.isfinite(r[0]) and np.isfinite(p[0])
    assert np.isnan(r[1]) and np.isnan(p[1])


def test_perfect_correlation():
    x, _ = pair(10, 0.5, seed=0)
    r, p = mantel(x, 3 * x, permutations=999, alternative="greater", seed=0)
    assert r == pytest.approx(1.0) and p == pytest.approx(1 / 1000)


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(mantel, "mantel", globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


# ----------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------

def _good(n: int = 5) -> np.ndarray:
    return pair(n, 0.5, seed=0)[0]


def _asymmetric() -> np.ndarray:
    a = _good()
    a[0, 1] += 0.5
    return a


def _hollow_broken() -> np.ndarray:
    a = _good()
    a[2, 2] = 1.0
    return a


def _with_nan() -> np.ndarray:
    a = _good()
    a[0, 1] = a[1, 0] = np.nan
    return a


def _with_inf() -> np.ndarray:
    a = _good()
    a[0, 1] = a[1, 0] = np.inf
    return a


BAD_INPUTS = [
    (dict(x=np.zeros((5, 4))), ValueError, "must be square"),
    (dict(x=np.zeros(10)), ValueError, r"shape \(N, N\)"),
    (dict(x=np.zeros((2, 2, 5, 5))), ValueError, r"shape \(N, N\)"),
    (dict(x=_asymmetric()), ValueError, "not symmetric"),
    (dict(x=np.stack([_good(), _asymmetric()])), ValueError, r"x\[1\] is not symmetric"),
    (dict(y=_hollow_broken()), ValueError, "non-zero diagonal"),
    (dict(x=_with_nan()), ValueError, "NaN or infinite"),
    (dict(y=_with_inf()), ValueError, "NaN or infinite"),
    (dict(x=_good(6)), ValueError, "same items"),
    (dict(x=_good(2), y=_good(2)), ValueError, "at least 3 x 3"),
    (dict(x=np.stack([_good()] * 2), y=np.stack([_good()] * 3)), ValueError,
     "stacks must have the same length"),
    (dict(x=np.full((5, 5), "a")), TypeError, "real numbers"),
    (dict(x=torch.zeros(5, 5, dtype=torch.bool)), TypeError, "real numbers"),
    (dict(method="kendall"), ValueError, "unknown method 'kendall'"),
    (dict(alternative="two_sided"), ValueError, "unknown alternative"),
    (dict(backend="cuda"), ValueError, "unknown backend"),
    (dict(permutations=-1), ValueError, "permutations must be >= 0"),
    (dict(permutations=99.0), TypeError, "permutations must be an integer"),
    (dict(permutations=True), TypeError, "permutations must be an integer"),
    (dict(seed=-3), ValueError, "seed must lie in"),
    (dict(seed=1.5), TypeError, "seed must be None"),
    (dict(max_memory_bytes=0), ValueError, "max_memory_bytes must be positive"),
]


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("overrides, error, message", BAD_INPUTS)
def test_bad_inputs_raise_helpful_errors(overrides, error, message, backend):
    kwargs = dict(x=_good(), y=_good(), permutations=9, backend=backend)
    kwargs.update(overrides)
    x, y = kwargs.pop("x"), kwargs.pop("y")
    with pytest.raises(error, match=message):
        mantel(x, y, **kwargs)


def test_small_rounding_asymmetry_is_accepted():
    x, y = pair(30, 0.5, seed=0)
    x32 = torch.tensor(x, dtype=torch.float32)
    noise = 1e-6 * torch.rand(30, 30)
    r, _ = mantel(x32 + noise, y, permutations=0)          # float32 rounding level
    assert r == pytest.approx(mantel(x, y, permutations=0)[0], abs=1e-5)
    with pytest.raises(ValueError, match="not symmetric"):
        mantel(x + 1e-6 * np.triu(np.ones((30, 30)), 1), y, permutations=0)
