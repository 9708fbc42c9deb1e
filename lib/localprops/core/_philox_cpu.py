"""Compiled (numba) CPU kernels for :mod:`localprops.core.philox`.

They compute bit for bit what the torch implementation computes (the tests
check it), about ten times faster on a CPU, where eager torch spends most of
its time allocating temporaries for Philox's integer arithmetic. On CUDA the
torch implementation runs as it is.
"""
from __future__ import annotations

import numba
import numpy as np

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)


@numba.njit(inline="always", cache=True)
def _philox_block(c0, c1, c2, c3, k0, k1):
    for round_index in range(10):
        if round_index:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = c0 * _M0
        p1 = c2 * _M1
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _MASK,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _MASK)
    return c0, c1, c2, c3


@numba.njit(parallel=True, cache=True)
def words_into(key0, key1, rows, lane0, lane1, start, out):
    """Fill ``out`` (M, n) int64 with the words of ``philox.random_words``."""
    n_rows, n_words = out.shape
    k0, k1 = np.uint64(key0), np.uint64(key1)
    for m in numba.prange(n_rows):
        r, l0, l1 = np.uint64(rows[m]), np.uint64(lane0[m]), np.uint64(lane1[m])
        for j in range(n_words):
            g = start + j
            if j == 0 or g % 4 == 0:
                w0, w1, w2, w3 = _philox_block(np.uint64(g // 4), r, l0, l1, k0, k1)
            lane = g % 4
            w = w0 if lane == 0 else (w1 if lane == 1 else (w2 if lane == 2 else w3))
            out[m, j] = np.int64(w)


@numba.njit(parallel=True, cache=True)
def uniform_into(key0, key1, rows, lane0, lane1, out):
    """Fill ``out`` (M, n) float64 with ``uniform_symmetric(random_words(...))``."""
    n_rows, n_words = out.shape
    k0, k1 = np.uint64(key0), np.uint64(key1)
    scale = 2.0 ** -24
    for m in numba.prange(n_rows):
        r, l0, l1 = np.uint64(rows[m]), np.uint64(lane0[m]), np.uint64(lane1[m])
        for block in range((n_words + 3) // 4):
            w0, w1, w2, w3 = _philox_block(np.uint64(block), r, l0, l1, k0, k1)
            j = 4 * block
            out[m, j] = (2.0 * np.float64(w0 >> np.uint64(8)) + 1.0 - 16777216.0) * scale
            if j + 1 < n_words:
                out[m, j + 1] = (2.0 * np.float64(w1 >> np.uint64(8)) + 1.0 - 16777216.0) * scale
            if j + 2 < n_words:
                out[m, j + 2] = (2.0 * np.float64(w2 >> np.uint64(8)) + 1.0 - 16777216.0) * scale
            if j + 3 < n_words:
                out[m, j + 3] = (2.0 * np.float64(w3 >> np.uint64(8)) + 1.0 - 16777216.0) * scale


@numba.njit(parallel=True, cache=True)
def sort_keys_into(key0, key1, rows, lane0, lane1, out):
    """Fill ``out`` (M, n) int64 with 63-bit keys from word pairs (2j, 2j + 1)."""
    n_rows, n_keys = out.shape
    k0, k1 = np.uint64(key0), np.uint64(key1)
    for m in numba.prange(n_rows):
        r, l0, l1 = np.uint64(rows[m]), np.uint64(lane0[m]), np.uint64(lane1[m])
        for block in range((n_keys + 1) // 2):
            w0, w1, w2, w3 = _philox_block(np.uint64(block), r, l0, l1, k0, k1)
            j = 2 * block
            out[m, j] = np.int64((w0 << np.uint64(31)) + (w1 >> np.uint64(1)))
            if j + 1 < n_keys:
                out[m, j + 1] = np.int64((w2 << np.uint64(31)) + (w3 >> np.uint64(1)))
