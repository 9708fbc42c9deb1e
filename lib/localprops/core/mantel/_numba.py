"""Numba kernels of the Mantel test on the CPU, and their numpy helpers.

Permutations come from a counter-based generator: SplitMix64 keyed by the
seed, the stream (index of the permuted matrix) and the permutation number
drives a Fisher-Yates shuffle, so results depend neither on thread scheduling
nor on chunking. :func:`permutations_of` exposes them (the torch backend
uses them too).
"""
from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

#: Permuted statistics within this distance of the observed one count as ties
#: (i.e. as extreme), so that rounding never decides a tie (see ``mantel``).
TIE_TOLERANCE = 1e-10

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
# permutation counts
# --------------------------------------------------------------------------

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
