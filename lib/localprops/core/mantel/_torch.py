"""Torch backend of the Mantel test: standardization and permutation counts.

Runs on the inputs' device (a CUDA GPU for CUDA tensors), with the
permutations of :func:`permutations_of`, in chunks of bounded memory. torch is
imported on first use only.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._numba import _hits, permutations_of


def _torch_module():
    """Import and return torch.

    Returns
    -------
    module
    """
    import torch
    return torch


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
    per_perm = 8 * m * (1 + 2 * bx + (0 if (bx == 1 or identity_x) else n_tests)) + 16 * n_tests
    rows = max(1, min(n_perm, max_memory_bytes // per_perm))
    counts = torch.zeros(n_tests, dtype=torch.int64, device=device)
    for k0 in range(0, n_perm, rows):
        p = min(rows, n_perm - k0)
        # x[b] gets the permutations of stream b, as on the CPU
        perms = torch.from_numpy(np.stack([permutations_of(seed, n, k0, p, stream=b)
                                           for b in range(bx)])).to(device)  # (bx, p, n)
        flat = (perms[:, :, iu[0]] * n + perms[:, :, iu[1]]).reshape(bx, -1)  # (bx, p M)
        gathered = zx_flat.gather(1, flat).reshape(bx, p, m)
        if bx == 1:
            s = zy_sel @ gathered[0].T                               # (B, p)
        else:
            g = gathered if identity_x else gathered[xi_t]
            s = torch.bmm(g, zy_sel[:, :, None])[:, :, 0]            # (B, p)
        s = s.clamp(-1.0, 1.0)
        counts += _hits(s, obs_t, alt).sum(dim=1)
    return counts.cpu().numpy()
