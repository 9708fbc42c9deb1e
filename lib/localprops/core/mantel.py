"""Mantel test between distance matrices, batched, on CPU (numba) or GPU (torch).

The topology study of the book asks, for every clean image, radius and model,
whether the distances between perturbed inputs are correlated with the
distances between their feature vectors: a Mantel test. The paper runs
6 x 300 x 21 = 37,800 of them, so this module computes many tests in one call.

The statistic and the p-value are those of :func:`skbio.stats.distance.mantel`
(the tests compare them); what differs is how the permutations are evaluated:

- the condensed (upper-triangle) vectors are standardized once; permuting the
  rows and columns of ``x`` only permutes its off-diagonal entries, so the
  permuted statistic is a plain dot product, ``r_p = sum_{i<j} xs[p_i, p_j]
  ys[i, j]``, with no mean or norm to recompute;
- on a CPU a numba kernel draws each permutation itself (Fisher-Yates driven
  by a counter-based SplitMix64 hash keyed by the seed, the matrix and the
  permutation number, so results depend neither on thread scheduling nor on
  chunking) and fuses it with the dot product; when one ``x`` is tested
  against many ``y``, each permuted ``x`` is gathered once and one matrix
  product evaluates it against all partners;
- on a GPU the same permutations are evaluated with gathers and matrix
  products in torch, in chunks of bounded memory.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numba
import numpy as np
from scipy.stats import rankdata

__all__ = ["mantel", "permutations_of", "TIE_TOLERANCE"]

_METHODS = ("pearson", "spearman")
_ALTERNATIVES = ("two-sided", "greater", "less")
_BACKENDS = ("auto", "numba", "torch")

#: Permuted statistics within this distance of the observed one count as ties
#: (i.e. as extreme), so that rounding never decides a tie (see ``mantel``).
TIE_TOLERANCE = 1e-10

_DEFAULT_MAX_MEMORY = 128 * 2**20   # bytes of scratch memory per chunk
_GEMM_MIN_TESTS = 8                 # shared x: matrix product from this many partners (measured)
_FUSED_BLOCK = 64                   # permutations per work item of the fused kernel

# SplitMix64 constants (Steele, Lea, Flood 2014), as uint64 so numba keeps
# the arithmetic in unsigned 64-bit integers.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = (np.uint64(s) for s in (27, 30, 31, 32))


# --------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------

@numba.njit(inline="always", cache=True)
def _mix64(z):
    """SplitMix64 finalizer: a bijective 64-bit hash.

    Parameters
    ----------
    z : uint64
        Value to hash.

    Returns
    -------
    uint64
        Hashed value.
    """
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@numba.njit(inline="always", cache=True)
def _permutation_key(seed, stream, k):
    """Key of permutation ``k`` of stream ``stream`` (the permuted matrix).

    Parameters
    ----------
    seed, stream, k : uint64
        Seed of the call, index of the permuted matrix, permutation number.

    Returns
    -------
    uint64
        Starting state of the permutation's SplitMix64 stream.
    """
    return _mix64(_mix64(_mix64(seed + _GOLDEN) ^ (stream + _GOLDEN)) ^ (k + _GOLDEN))


@numba.njit(inline="always", cache=True)
def _fill_permutation(perm, key):
    """Write a uniformly random permutation of ``0..n-1`` into ``perm``.

    Fisher-Yates, with bounded integers from the high 32 bits of SplitMix64
    outputs by multiply-shift (bias below n / 2**32).

    Parameters
    ----------
    perm : integer array (n,)
        Output.
    key : uint64
        Starting state (from ``_permutation_key``).

    Returns
    -------
    None
    """
    n = perm.shape[0]
    for i in range(n):
        perm[i] = i
    state = key
    for i in range(n - 1, 0, -1):
        state += _GOLDEN
        r = _mix64(state) >> _S32
        j = np.int64((r * np.uint64(i + 1)) >> _S32)
        t = perm[i]
        perm[i] = perm[j]
        perm[j] = t


@numba.njit(cache=True)
def _permuted_dot4(xm, yv, pa, pb, pc, pd):
    """Permuted statistics of four permutations in one pass over ``yv``.

    Returns ``sum_{i<j} xm[p[i], p[j]] * yv[condensed(i, j)]`` for each of the
    four permutations, each clipped to [-1, 1]. Sharing the loads of ``yv``,
    unsigned indices (no negative-index wraparound) and two partial sums per
    permutation in a fixed order make it fast and bitwise reproducible.

    Parameters
    ----------
    xm : float64 array (n, n)
        Standardized symmetric x.
    yv : float64 array (n (n - 1) / 2,)
        Standardized condensed y (row-major upper triangle).
    pa, pb, pc, pd : uint32 arrays (n,)
        Permutations of the rows and columns of x.

    Returns
    -------
    tuple of four floats
    """
    n = pa.shape[0]
    a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = 0.0
    one = np.uint64(1)
    off = 0
    for i in range(n - 1):
        xa = xm[pa[i]]
        xb = xm[pb[i]]
        xc = xm[pc[i]]
        xd = xm[pd[i]]
        length = n - 1 - i
        sa = pa[i + 1:]
        sb = pb[i + 1:]
        sc = pc[i + 1:]
        sd = pd[i + 1:]
        yseg = yv[off:off + length]
        half = length // 2
        for u in range(half):
            t = np.uint64(2 * u)
            t1 = t + one
            y0 = yseg[t]
            y1 = yseg[t1]
            a0 += xa[sa[t]] * y0
            a1 += xa[sa[t1]] * y1
            b0 += xb[sb[t]] * y0
            b1 += xb[sb[t1]] * y1
            c0 += xc[sc[t]] * y0
            c1 += xc[sc[t1]] * y1
            d0 += xd[sd[t]] * y0
            d1 += xd[sd[t1]] * y1
        for u in range(2 * half, length):   # a loop, not an if: 3x faster code
            t = np.uint64(u)
            y0 = yseg[t]
            a0 += xa[sa[t]] * y0
            b0 += xb[sb[t]] * y0
            c0 += xc[sc[t]] * y0
            d0 += xd[sd[t]] * y0
        off += length
    return (min(max(a0 + a1, -1.0), 1.0), min(max(b0 + b1, -1.0), 1.0),
            min(max(c0 + c1, -1.0), 1.0), min(max(d0 + d1, -1.0), 1.0))


@numba.njit(inline="always", cache=True)
def _is_hit(s, r0, alt, tol):
    """Whether permuted statistic ``s`` is as or more extreme than ``r0``.

    Parameters
    ----------
    s, r0 : float
        Permuted and observed statistics.
    alt : int
        0 two-sided, 1 greater, 2 less.
    tol : float
        Tie tolerance.

    Returns
    -------
    bool
    """
    if alt == 0:
        return abs(s) >= abs(r0) - tol
    if alt == 1:
        return s >= r0 - tol
    return s <= r0 + tol


@numba.njit(parallel=True, cache=True)
def _counts_fused(xs, ys, xi, yi, obs, n_perm, alt, seed, tol, block):
    """Count permuted statistics as or more extreme, one fused pass per test.

    Parameters
    ----------
    xs : float64 array (Bx, n, n)
        Standardized symmetric x matrices.
    ys : float64 array (By, m)
        Standardized condensed y vectors.
    xi, yi : int64 arrays (B,)
        Test b compares ``xs[xi[b]]`` with ``ys[yi[b]]``.
    obs : float64 array (B,)
        Observed statistics.
    n_perm : int
        Permutations per test.
    alt : int
        0 two-sided, 1 greater, 2 less.
    seed : uint64
        Seed of the call; permutation k of test b is keyed by (seed, xi[b], k).
    tol : float
        Tie tolerance.
    block : int
        Permutations per parallel work item.

    Returns
    -------
    int64 array (B,)
        Counts of permuted statistics as or more extreme than ``obs``.
    """
    n_tests = xi.shape[0]
    n = xs.shape[1]
    n_blocks = (n_perm + block - 1) // block
    partial = np.zeros((n_tests, n_blocks), dtype=np.int64)
    for w in numba.prange(n_tests * n_blocks):
        b = w // n_blocks
        blk = w - b * n_blocks
        perms = np.empty((4, n), dtype=np.uint32)
        xm = xs[xi[b]]
        yv = ys[yi[b]]
        r0 = obs[b]
        stream = np.uint64(xi[b])
        k_end = min(n_perm, (blk + 1) * block)
        c = 0
        for k in range(blk * block, k_end, 4):
            for g in range(4):   # past the end, repeat the last permutation
                _fill_permutation(perms[g], _permutation_key(
                    seed, stream, np.uint64(min(k + g, k_end - 1))))
            stats = _permuted_dot4(xm, yv, perms[0], perms[1], perms[2], perms[3])
            for g in range(min(4, k_end - k)):
                if _is_hit(stats[g], r0, alt, tol):
                    c += 1
        partial[b, blk] = c
    counts = np.zeros(n_tests, dtype=np.int64)
    for b in range(n_tests):
        for blk in range(n_blocks):
            counts[b] += partial[b, blk]
    return counts


@numba.njit(parallel=True, cache=True)
def _gather_permuted(xm, seed, stream, k0, out):
    """Write condensed permuted copies of ``xm`` for permutations k0, k0+1, ...

    Parameters
    ----------
    xm : float64 array (n, n)
        Standardized symmetric x.
    seed, stream : uint64
        Seed of the call and index of the permuted matrix.
    k0 : int
        Number of the first permutation.
    out : float64 array (P, n (n - 1) / 2)
        Output, row p holds permutation k0 + p.

    Returns
    -------
    None
    """
    n_rows = out.shape[0]
    n = xm.shape[0]
    for p in numba.prange(n_rows):
        perm = np.empty(n, dtype=np.uint32)
        _fill_permutation(perm, _permutation_key(seed, stream, np.uint64(k0 + p)))
        row = out[p]
        off = 0
        for i in range(n - 1):
            xrow = xm[perm[i]]
            seg = perm[i + 1:]
            for u in range(n - 1 - i):
                t = np.uint64(u)
                row[np.uint64(off) + t] = xrow[seg[t]]
            off += n - 1 - i


@numba.njit(parallel=True, cache=True)
def _permutations_into(seed, stream, k0, out):
    """Write permutations k0, k0+1, ... of a stream as rows of ``out``.

    Parameters
    ----------
    seed, stream : uint64
        Seed of the call and stream (index of the permuted matrix).
    k0 : int
        Number of the first permutation.
    out : int64 array (P, n)
        Output.

    Returns
    -------
    None
    """
    for p in numba.prange(out.shape[0]):
        _fill_permutation(out[p], _permutation_key(seed, stream, np.uint64(k0 + p)))


def permutations_of(seed: int, n: int, k0: int, count: int,
                    stream: int = 0) -> np.ndarray:
    """Return the permutations the tests use: rows k0 .. k0+count-1 of a stream.

    Parameters
    ----------
    seed : int
        Seed in [0, 2**64).
    n : int
        Size of the permuted matrix.
    k0, count : int
        First permutation number and number of permutations.
    stream : int
        Index of the permuted matrix in its stack (0 for a single matrix).

    Returns
    -------
    numpy.ndarray of int64, shape (count, n)
    """
    out = np.empty((count, n), dtype=np.int64)
    _permutations_into(np.uint64(seed), np.uint64(stream), k0, out)
    return out


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------

def _torch():
    """Return the torch module if it is imported, else None.

    Returns
    -------
    module or None
    """
    return sys.modules.get("torch")


def _is_tensor(a: Any) -> bool:
    """Whether ``a`` is a torch tensor (without importing torch).

    Parameters
    ----------
    a : object

    Returns
    -------
    bool
    """
    torch = _torch()
    return torch is not None and isinstance(a, torch.Tensor)


def _check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise ValueError.

    Parameters
    ----------
    value : object
    name : str
        Parameter name for the message.
    allowed : tuple of str

    Returns
    -------
    str
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r}: use one of "
                         + ", ".join(repr(a) for a in allowed))
    return value


def _check_permutations(permutations: Any) -> int:
    """Return the number of permutations as an int >= 0.

    Parameters
    ----------
    permutations : object

    Returns
    -------
    int
    """
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)):
        raise TypeError(f"permutations must be an integer >= 0 (e.g. 999 or 9999), "
                        f"got {permutations!r} of type {type(permutations).__name__}")
    if permutations < 0:
        raise ValueError(f"permutations must be >= 0 (0 skips the test and gives "
                         f"p = nan), got {permutations}")
    return int(permutations)


def _resolve_seed(seed: Any) -> int:
    """Return a seed in [0, 2**64); None draws one from numpy's default_rng.

    Parameters
    ----------
    seed : None, int or numpy.random.Generator

    Returns
    -------
    int
    """
    if seed is None:
        seed = np.random.default_rng()
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63, dtype=np.int64))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None, a non-negative integer or a "
                        f"numpy.random.Generator, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {seed}")
    return int(seed)


def _check_max_memory(max_memory_bytes: Any) -> int:
    """Return the scratch-memory bound as a positive int.

    Parameters
    ----------
    max_memory_bytes : object

    Returns
    -------
    int
    """
    if isinstance(max_memory_bytes, bool) or not isinstance(
            max_memory_bytes, (int, np.integer)):
        raise TypeError(f"max_memory_bytes must be a positive integer, got "
                        f"{max_memory_bytes!r}")
    if max_memory_bytes < 1:
        raise ValueError(f"max_memory_bytes must be positive, got {max_memory_bytes}")
    return int(max_memory_bytes)


def _rounding_tolerance(dtype: Any) -> float:
    """Relative tolerance for symmetry and the diagonal: sqrt(eps) of the dtype.

    Parameters
    ----------
    dtype : numpy or torch dtype

    Returns
    -------
    float
        sqrt(machine epsilon) for floating dtypes, that of float64 otherwise.
    """
    torch = _torch()
    if torch is not None and isinstance(dtype, torch.dtype):
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else np.finfo(np.float64).eps
    else:
        dtype = np.dtype(dtype)
        eps = np.finfo(dtype).eps if dtype.kind == "f" else np.finfo(np.float64).eps
    return math.sqrt(eps)


def _as_float64(a: Any, name: str, to_torch: bool, device: Any) -> tuple[Any, float]:
    """Convert one input to a float64 numpy array or torch tensor.

    Parameters
    ----------
    a : array_like or torch.Tensor
    name : str
        'x' or 'y', for messages.
    to_torch : bool
        Return a torch tensor (on ``device``) instead of a numpy array.
    device : torch.device or None

    Returns
    -------
    array : numpy.ndarray or torch.Tensor, float64
    rtol : float
        Relative rounding tolerance of the input's dtype.
    """
    if _is_tensor(a):
        torch = _torch()
        if a.dtype == torch.bool or a.dtype.is_complex or not (
                a.dtype.is_floating_point or a.dtype in (
                    torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)):
            raise TypeError(f"{name} must hold real numbers (float or int), got a "
                            f"tensor of dtype {a.dtype}")
        rtol = _rounding_tolerance(a.dtype)
        a = a.detach()
        if to_torch:
            return a.to(device=device, dtype=torch.float64), rtol
        return a.cpu().numpy().astype(np.float64), rtol
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} must be a numpy array or torch tensor of shape (N, N) "
                        f"or (B, N, N), got {type(a).__name__}") from error
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype "
                        f"{arr.dtype}; convert it with np.asarray({name}, float)")
    rtol = _rounding_tolerance(arr.dtype)
    arr = arr.astype(np.float64, copy=False)
    if to_torch:
        return _torch().as_tensor(arr, device=device), rtol
    return arr, rtol


def _check_matrices(a: Any, name: str, rtol: float) -> None:
    """Raise unless ``a`` is a stack of finite, symmetric, hollow matrices.

    Parameters
    ----------
    a : numpy.ndarray or torch.Tensor, float64, shape (B, N, N)
    name : str
        'x' or 'y', for messages.
    rtol : float
        Tolerance relative to each matrix's largest absolute entry.

    Returns
    -------
    None
    """
    if _is_tensor(a):
        torch = _torch()
        finite = bool(torch.isfinite(a).all())
        if finite:
            scale = a.abs().amax(dim=(1, 2)).cpu().numpy()
            asym = (a - a.transpose(1, 2)).abs().amax(dim=(1, 2)).cpu().numpy()
            diag = torch.diagonal(a, dim1=1, dim2=2).abs().amax(dim=1).cpu().numpy()
    else:
        finite = bool(np.isfinite(a).all())
        if finite:
            scale = np.abs(a).max(axis=(1, 2))
            asym = np.abs(a - a.transpose(0, 2, 1)).max(axis=(1, 2))
            diag = np.abs(np.diagonal(a, axis1=1, axis2=2)).max(axis=1)
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values: distance matrices "
                         f"must be finite; check how the distances were computed")
    bound = rtol * scale
    three_d = a.shape[0] > 1
    for b in np.flatnonzero(asym > bound)[:1]:
        where = f"{name}[{b}]" if three_d else name
        raise ValueError(
            f"{where} is not symmetric: max |{name} - {name}.T| = {asym[b]:.3g} exceeds "
            f"{rtol:.2g} x its largest entry ({scale[b]:.3g}); pass a symmetric distance "
            f"matrix, e.g. ({name} + {name}.T) / 2")
    for b in np.flatnonzero(diag > bound)[:1]:
        where = f"{name}[{b}]" if three_d else name
        raise ValueError(
            f"{where} has a non-zero diagonal (max |diagonal| = {diag[b]:.3g}): the "
            f"distance of an item to itself must be 0; set it with "
            f"fill_diagonal(..., 0) if it comes from rounding")


def _prepare(x: Any, y: Any, backend: str) -> tuple[Any, Any, bool, bool]:
    """Validate and convert both inputs.

    Parameters
    ----------
    x, y : array_like or torch.Tensor
    backend : {'auto', 'numba', 'torch'}

    Returns
    -------
    xs, ys : numpy.ndarray or torch.Tensor, float64, shapes (Bx, N, N), (By, N, N)
    single : bool
        Both inputs were single (N, N) matrices.
    use_torch : bool
        Whether the torch path runs (on the CUDA inputs' device, else the CPU).
    """
    devices = {a.device for a in (x, y) if _is_tensor(a) and a.device.type != "cpu"}
    if len(devices) > 1:
        raise ValueError(f"x and y are on different devices ({sorted(map(str, devices))}); "
                         f"move them to the same device")
    use_torch = backend == "torch" or (backend == "auto" and bool(devices))
    device = None
    if use_torch:
        device = devices.pop() if devices else _torch_module().device("cpu")
    stacks, tolerances, ndims = [], [], []
    for a, name in ((x, "x"), (y, "y")):
        arr, rtol = _as_float64(a, name, use_torch, device)
        if arr.ndim not in (2, 3):
            raise ValueError(f"{name} must be a distance matrix of shape (N, N) or a "
                             f"stack of shape (B, N, N), got shape {tuple(arr.shape)}")
        if arr.shape[-1] != arr.shape[-2]:
            raise ValueError(f"{name} must be square, got shape {tuple(arr.shape)}: pass "
                             f"the full (N, N) distance matrix, not a condensed vector or "
                             f"a data matrix")
        ndims.append(arr.ndim)
        stacks.append(arr[None] if arr.ndim == 2 else arr)
        tolerances.append(rtol)
    xa, ya = stacks
    xtol, ytol = tolerances
    if xa.shape[-1] != ya.shape[-1]:
        raise ValueError(f"x and y must describe the same items: x is "
                         f"{xa.shape[-1]} x {xa.shape[-1]} but y is "
                         f"{ya.shape[-1]} x {ya.shape[-1]}")
    if xa.shape[-1] < 3:
        raise ValueError(f"distance matrices must be at least 3 x 3 for a Mantel "
                         f"test, got {xa.shape[-1]} x {xa.shape[-1]}")
    bx, by = xa.shape[0], ya.shape[0]
    if bx != by and 1 not in (bx, by):
        raise ValueError(f"x holds {bx} matrices and y holds {by}: stacks must have the "
                         f"same length B, or one side must be a single (N, N) matrix "
                         f"shared by all tests")
    if 0 in (bx, by):
        raise ValueError("empty stack: x and y must hold at least one matrix each")
    _check_matrices(xa, "x", xtol)
    _check_matrices(ya, "y", ytol)
    return xa, ya, ndims == [2, 2], use_torch


def _torch_module():
    """Import and return torch.

    Returns
    -------
    module
    """
    import torch
    return torch


# --------------------------------------------------------------------------
# standardization
# --------------------------------------------------------------------------

def _standardize_numpy(a: np.ndarray, spearman: bool) -> tuple[np.ndarray, np.ndarray]:
    """Standardized condensed vectors of a stack of matrices.

    Parameters
    ----------
    a : float64 array (B, N, N)
    spearman : bool
        Rank the condensed entries first (average ranks for ties).

    Returns
    -------
    z : float64 array (B, N (N - 1) / 2)
        Zero mean, unit L2 norm; zero for a constant matrix.
    constant : bool array (B,)
        Which matrices are constant (statistic undefined).
    """
    n = a.shape[-1]
    iu0, iu1 = np.triu_indices(n, 1)
    v = a[:, iu0, iu1]
    if spearman:
        v = rankdata(v, axis=1, method="average")
    v = v - v.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(v, axis=1)
    constant = ~(norm > 0) | (np.ptp(a[:, iu0, iu1], axis=1) == 0)
    z = np.where(constant[:, None], 0.0, v / np.where(constant, 1.0, norm)[:, None])
    return z, constant


def _rank_average_torch(v: Any) -> Any:
    """Average ranks (1-based, ties share their mean rank) along dim 1.

    Parameters
    ----------
    v : torch.Tensor, float64 (B, M)

    Returns
    -------
    torch.Tensor, float64 (B, M)
        Same as ``scipy.stats.rankdata(v, axis=1, method='average')``.
    """
    torch = _torch_module()
    rows, m = v.shape
    sv, order = torch.sort(v, dim=1, stable=True)
    new = torch.ones_like(sv, dtype=torch.bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    group = torch.cumsum(new, dim=1) - 1
    group = group + torch.arange(rows, device=v.device)[:, None] * m
    pos = torch.arange(m, device=v.device, dtype=torch.float64).expand(rows, m).reshape(-1)
    flat = group.reshape(-1)
    first = torch.full((rows * m,), math.inf, device=v.device, dtype=torch.float64)
    last = torch.full((rows * m,), -math.inf, device=v.device, dtype=torch.float64)
    first = first.scatter_reduce(0, flat, pos, reduce="amin")
    last = last.scatter_reduce(0, flat, pos, reduce="amax")
    avg = ((first[flat] + last[flat]) / 2 + 1).reshape(rows, m)
    return torch.empty_like(v).scatter_(1, order, avg)


def _standardize_torch(a: Any, spearman: bool) -> tuple[Any, np.ndarray]:
    """Torch version of ``_standardize_numpy``.

    Parameters
    ----------
    a : torch.Tensor, float64 (B, N, N)
    spearman : bool

    Returns
    -------
    z : torch.Tensor, float64 (B, N (N - 1) / 2)
    constant : numpy bool array (B,)
    """
    torch = _torch_module()
    n = a.shape[-1]
    iu = torch.triu_indices(n, n, 1, device=a.device)
    raw = a[:, iu[0], iu[1]]
    v = _rank_average_torch(raw) if spearman else raw
    v = v - v.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(v, dim=1)
    constant_t = ~(norm > 0) | (raw.amax(dim=1) == raw.amin(dim=1))
    z = torch.where(constant_t[:, None], torch.zeros_like(v),
                    v / torch.where(constant_t, torch.ones_like(norm), norm)[:, None])
    return z, constant_t.cpu().numpy()


def _full_symmetric(z: np.ndarray, n: int) -> np.ndarray:
    """Symmetric (B, N, N) matrices with zero diagonal from condensed vectors.

    Parameters
    ----------
    z : float64 array (B, N (N - 1) / 2)
    n : int

    Returns
    -------
    float64 array (B, N, N), C-contiguous
    """
    iu0, iu1 = np.triu_indices(n, 1)
    full = np.zeros((z.shape[0], n, n))
    full[:, iu0, iu1] = z
    full[:, iu1, iu0] = z
    return full


# --------------------------------------------------------------------------
# permutation counts
# --------------------------------------------------------------------------

def _counts_numba(zx: np.ndarray, zy: np.ndarray, xi: np.ndarray, yi: np.ndarray,
                  obs: np.ndarray, n_perm: int, alt: int, seed: int,
                  max_memory_bytes: int) -> np.ndarray:
    """Permutation counts on the CPU.

    Parameters
    ----------
    zx, zy : float64 arrays (Bx, M), (By, M)
        Standardized condensed vectors.
    xi, yi : int64 arrays (B,)
        Test b compares zx[xi[b]] with zy[yi[b]].
    obs : float64 array (B,)
    n_perm, alt, seed, max_memory_bytes : int

    Returns
    -------
    int64 array (B,)
    """
    m = zx.shape[1]
    n = int(round((1 + math.sqrt(1 + 8 * m)) / 2))
    xs = _full_symmetric(zx, n)
    if zx.shape[0] == 1 and len(xi) >= _GEMM_MIN_TESTS:
        # one shared x: gather each permuted x once, one matrix product for all y
        yt = np.ascontiguousarray(zy[yi].T)                 # (M, B)
        rows = max(1, min(n_perm, max_memory_bytes // (8 * (m + len(yi)))))
        buf = np.empty((rows, m))
        counts = np.zeros(len(yi), dtype=np.int64)
        for k0 in range(0, n_perm, rows):
            p = min(rows, n_perm - k0)
            _gather_permuted(xs[0], np.uint64(seed), np.uint64(0), k0, buf[:p])
            s = np.clip(buf[:p] @ yt, -1.0, 1.0)            # (p, B)
            counts += _hits(s, obs[None, :], alt).sum(axis=0)
        return counts
    return _counts_fused(xs, np.ascontiguousarray(zy), xi.astype(np.int64),
                         yi.astype(np.int64), obs, n_perm, alt, np.uint64(seed),
                         TIE_TOLERANCE, _FUSED_BLOCK)


def _hits(s: Any, r0: Any, alt: int) -> Any:
    """Elementwise: permuted statistic as or more extreme than the observed one.

    Parameters
    ----------
    s, r0 : numpy arrays or torch tensors (broadcastable)
    alt : int
        0 two-sided, 1 greater, 2 less.

    Returns
    -------
    bool array or tensor
    """
    if alt == 0:
        return abs(s) >= abs(r0) - TIE_TOLERANCE
    if alt == 1:
        return s >= r0 - TIE_TOLERANCE
    return s <= r0 + TIE_TOLERANCE


def _counts_torch(zx: Any, zy: Any, xi: np.ndarray, yi: np.ndarray, obs: np.ndarray,
                  n_perm: int, alt: int, seed: int, max_memory_bytes: int) -> np.ndarray:
    """Permutation counts with torch (any device), permutations shared by all tests.

    Parameters
    ----------
    zx, zy : torch.Tensor, float64 (Bx, M), (By, M)
    xi, yi : int64 arrays (B,)
    obs : float64 array (B,)
    n_perm, alt, seed, max_memory_bytes : int

    Returns
    -------
    int64 array (B,)
    """
    torch = _torch_module()
    device = zx.device
    bx, m = zx.shape
    n = int(round((1 + math.sqrt(1 + 8 * m)) / 2))
    iu = torch.triu_indices(n, n, 1, device=device)
    zx_flat = torch.zeros((bx, n * n), dtype=torch.float64, device=device)
    zx_flat[:, iu[0] * n + iu[1]] = zx
    zx_flat[:, iu[1] * n + iu[0]] = zx
    xi_t = torch.as_tensor(xi, device=device)
    yi_t = torch.as_tensor(yi, device=device)
    zy_sel = zy[yi_t]                                            # (B, M)
    obs_t = torch.as_tensor(obs, device=device)[:, None]
    n_tests = len(xi)
    identity_x = bx == n_tests and bool((xi == np.arange(n_tests)).all())
    # scratch per permutation: flat indices + gathered x (+ a re-indexed copy)
    per_perm = 8 * m * (2 + bx + (0 if (bx == 1 or identity_x) else n_tests)) + 16 * n_tests
    rows = max(1, min(n_perm, max_memory_bytes // per_perm))
    counts = torch.zeros(n_tests, dtype=torch.int64, device=device)
    for k0 in range(0, n_perm, rows):
        p = min(rows, n_perm - k0)
        perms = torch.from_numpy(permutations_of(seed, n, k0, p)).to(device)
        flat = (perms[:, iu[0]] * n + perms[:, iu[1]]).reshape(-1)   # (p M,)
        gathered = zx_flat.index_select(1, flat).reshape(bx, p, m)
        if bx == 1:
            s = zy_sel @ gathered[0].T                               # (B, p)
        else:
            g = gathered if identity_x else gathered[xi_t]
            s = torch.bmm(g, zy_sel[:, :, None])[:, :, 0]            # (B, p)
        s = s.clamp(-1.0, 1.0)
        counts += _hits(s, obs_t, alt).sum(dim=1)
    return counts.cpu().numpy()


# --------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------

def mantel(x: Any, y: Any, *, permutations: int = 999, method: str = "pearson",
           alternative: str = "two-sided", seed: int | np.random.Generator | None = None,
           backend: str = "auto", max_memory_bytes: int = _DEFAULT_MAX_MEMORY
           ) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    r"""Compute the correlation between distance matrices with the Mantel test.

    The Mantel test compares two distance matrices by correlating the
    distances of their upper triangles, and assesses significance by permuting
    the rows and columns of one of them. Given symmetric distance matrices
    :math:`D_X` and :math:`D_Y` of size :math:`n`, the statistic is

    .. math::

       r_M = \sum_{i=1}^{n-1} \sum_{j=i+1}^{n} s(D_X)_{ij} \, s(D_Y)_{ij},

    where :math:`s(\cdot)` standardizes the :math:`d = n(n-1)/2` upper-triangle
    entries to zero mean and unit Euclidean norm, so that :math:`r_M` is their
    Pearson correlation. With ``method='spearman'`` the entries are replaced
    by their ranks first (ties get their average rank). For a permutation
    :math:`\pi` of the items, the permuted statistic is

    .. math::

       r_\pi = \sum_{i<j} s(D_X)_{\pi_i \pi_j} \, s(D_Y)_{ij},

    because permuting rows and columns together only reorders the
    off-diagonal entries of :math:`D_X` and leaves their mean and norm
    unchanged. The p-value is the proportion of permuted statistics as or
    more extreme than :math:`r_M`, counting the observed one.

    Many tests run in one call: ``x`` and ``y`` may be stacks of matrices, or
    one matrix ``x`` may be tested against a stack ``y`` (each permuted ``x``
    is then gathered once and evaluated against all partners with one matrix
    product).

    Parameters
    ----------
    x, y : numpy.ndarray or torch.Tensor (or array_like)
        Square, symmetric distance matrices with zero diagonal, of shape
        ``(N, N)``, or stacks of them of shape ``(B, N, N)`` (test ``b``
        compares ``x[b]`` with ``y[b]``). One side may be a single ``(N, N)``
        matrix shared by all ``B`` tests. ``N >= 3``; values must be finite
        real numbers. Asymmetry and diagonal entries up to
        ``sqrt(eps)`` of the input's dtype times the largest entry are
        accepted as rounding; only the upper triangles are used. The rows and
        columns of ``x`` are permuted.
    permutations : int, optional
        Number of random permutations, ``>= 0``. ``0`` skips the test and
        gives ``p = nan``. Default 999.
    method : {'pearson', 'spearman'}, optional
        Correlation of the distances (``'pearson'``) or of their ranks
        (``'spearman'``).
    alternative : {'two-sided', 'greater', 'less'}, optional
        Alternative hypothesis: ``'two-sided'`` counts permuted statistics with
        :math:`|r_\pi| \ge |r_M|`, ``'greater'`` those with
        :math:`r_\pi \ge r_M`, ``'less'`` those with :math:`r_\pi \le r_M`.
    seed : int, numpy.random.Generator or None, optional
        Seed of the permutations, an integer in ``[0, 2**64)``. ``None`` draws
        a fresh seed from :func:`numpy.random.default_rng`; a Generator gives
        one draw of its own. The same seed gives the same p-values.
    backend : {'auto', 'numba', 'torch'}, optional
        ``'auto'`` runs the numba kernels for CPU inputs and torch for CUDA
        tensors; ``'numba'`` copies CUDA tensors to the host; ``'torch'`` runs
        the torch path on the inputs' device (the CPU for numpy arrays).
    max_memory_bytes : int, optional
        Bound on the scratch memory of one chunk of permutations in the
        matrix-product paths (shared ``x`` on the CPU; torch). Default 128 MiB.

    Returns
    -------
    statistic : float or numpy.ndarray of float64, shape (B,)
        Mantel statistic :math:`r_M` in ``[-1, 1]``; ``nan`` when a matrix is
        constant (its correlation is undefined).
    p_value : float or numpy.ndarray of float64, shape (B,)
        Permutation p-value; ``nan`` if ``permutations == 0`` or the
        statistic is ``nan``. Python floats for two ``(N, N)`` matrices,
        arrays of shape ``(B,)`` as soon as one input is a stack.

    Raises
    ------
    TypeError
        If an input does not hold real numbers, or ``permutations``, ``seed``
        or ``max_memory_bytes`` has the wrong type.
    ValueError
        If an input is not 2-D or 3-D, not square, smaller than 3 x 3, not
        finite, not symmetric or has a non-zero diagonal; if ``x`` and ``y``
        differ in size or stack length; if ``method``, ``alternative`` or
        ``backend`` is unknown, or ``permutations`` is negative.

    See Also
    --------
    skbio.stats.distance.mantel : the reference implementation (one test).

    Notes
    -----
    The statistic and the p-value follow :func:`skbio.stats.distance.mantel`
    and ``vegan::mantel``: with :math:`k` the number of permuted statistics
    as or more extreme than the observed one,

    .. math::

       p = \frac{k + 1}{\text{permutations} + 1}.

    A permuted statistic within ``TIE_TOLERANCE`` (1e-10) of the observed one
    counts as a tie, so that rounding (the order of a sum) never decides a
    tie, e.g. when a permutation maps the matrix onto itself; apart from such
    exact ties the definition is scikit-bio's.

    Permutations are drawn by a counter-based generator (SplitMix64 keyed by
    the seed, the index of the permuted matrix in its stack and the
    permutation number, driving a Fisher-Yates shuffle), so results do not
    depend on the number of threads, the chunking or the device. On the CPU
    (numba) each ``x`` matrix of a stack has its own permutations; tests that
    share one ``x`` share its permutations. The torch path (used for CUDA
    tensors) shares the permutations of the first stream among **all** tests
    of a call: each test's p-value is exact in distribution, but the p-values
    of different tests in one call are not independent. For a single pair,
    or one ``x`` against many ``y``, both backends use the same permutations
    and agree up to rounding.

    The test of a pair ``(x[b], y[b])`` in a stack uses different
    permutations than the same pair alone (unless ``b == 0``), so their
    p-values agree only within sampling error.

    References
    ----------
    .. [1] Mantel, N. (1967). "The detection of disease clustering and a
       generalized regression approach". Cancer Research 27 (2): 209-220.
    .. [2] Legendre, P. and Legendre, L. (2012). Numerical Ecology. 3rd
       English Edition. Elsevier.

    Examples
    --------
    >>> import numpy as np
    >>> from localprops.core.mantel import mantel
    >>> x = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]])
    >>> y = np.array([[0, 2, 7], [2, 0, 6], [7, 6, 0]])
    >>> r, p = mantel(x, y, seed=0)
    >>> round(r, 4)
    0.7559

    One ``x`` against a stack of three ``y`` returns arrays:

    >>> r, p = mantel(x, np.stack([y, 2 * y, x]), permutations=99, seed=0)
    >>> np.round(r, 4)
    array([0.7559, 0.7559, 1.    ])
    """
    permutations = _check_permutations(permutations)
    method = _check_choice(method, "method", _METHODS)
    alternative = _check_choice(alternative, "alternative", _ALTERNATIVES)
    backend = _check_choice(backend, "backend", _BACKENDS)
    max_memory_bytes = _check_max_memory(max_memory_bytes)
    seed = _resolve_seed(seed)
    xa, ya, single, use_torch = _prepare(x, y, backend)

    spearman = method == "spearman"
    bx, by = xa.shape[0], ya.shape[0]
    n_tests = max(bx, by)
    xi = np.arange(n_tests) if bx == n_tests else np.zeros(n_tests, dtype=np.int64)
    yi = np.arange(n_tests) if by == n_tests else np.zeros(n_tests, dtype=np.int64)
    if use_torch:
        zx, cx = _standardize_torch(xa, spearman)
        zy, cy = _standardize_torch(ya, spearman)
        torch = _torch_module()
        stat = (zx[torch.as_tensor(xi, device=zx.device)]
                * zy[torch.as_tensor(yi, device=zy.device)]).sum(dim=1).cpu().numpy()
    else:
        zx, cx = _standardize_numpy(xa, spearman)
        zy, cy = _standardize_numpy(ya, spearman)
        stat = np.einsum("bm,bm->b", zx[xi], zy[yi])
    stat = np.clip(stat, -1.0, 1.0)
    stat[cx[xi] | cy[yi]] = np.nan

    p_value = np.full(n_tests, np.nan)
    valid = np.flatnonzero(~np.isnan(stat))
    if permutations > 0 and valid.size:
        alt = _ALTERNATIVES.index(alternative)
        counter = _counts_torch if use_torch else _counts_numba
        counts = counter(zx, zy, xi[valid], yi[valid], stat[valid], permutations, alt,
                         seed, max_memory_bytes)
        p_value[valid] = (counts + 1) / (permutations + 1)
    if single:
        return float(stat[0]), float(p_value[0])
    return stat, p_value
