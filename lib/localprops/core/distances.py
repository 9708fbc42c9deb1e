"""Distance matrices of perturbed points (paper Sec. 2.3), exact for tiny radii.

:func:`pairwise_distances` gives the Euclidean distance matrices the Mantel
test (:mod:`localprops.core.mantel`) compares, at the input or at a layer.
"""
from __future__ import annotations

import numpy as np
import torch

from localprops.core import checks as _checks

ArrayLike = np.ndarray | torch.Tensor


def pairwise_distances(points: ArrayLike) -> torch.Tensor:
    """Euclidean distance matrices of point sets, in float64.

    Parameters
    ----------
    points : (..., N, F) points (e.g. the ``T`` perturbed images of one radius,
        flattened, or their feature-layer activations).

    Returns
    -------
    (..., N, N) float64 tensor on the points' device: symmetric, with an exact
    zero diagonal.

    Notes
    -----
    Perturbed images lie within ``r`` of ``x``, whose norm is about
    ``255 sqrt(D)``: the textbook ``|a|^2 + |b|^2 - 2ab`` would cancel
    catastrophically. The points are centred on their mean first (distances do
    not change under translation), then the Gram identity is evaluated in
    float64, which keeps the relative error near 1e-12 even for tiny radii.
    """
    p = points if isinstance(points, torch.Tensor) else torch.as_tensor(np.asarray(points))
    if p.ndim < 2:
        raise ValueError(f"points must have shape (..., N, F), got {tuple(p.shape)}")
    _checks.check_finite(p, "points")
    p = p.to(torch.float64)
    p = p - p.mean(dim=-2, keepdim=True)
    sq = (p * p).sum(dim=-1)
    d2 = sq[..., :, None] + sq[..., None, :] - 2.0 * (p @ p.transpose(-1, -2))
    d = d2.clamp_min_(0.0).sqrt_()
    d = 0.5 * (d + d.transpose(-1, -2))
    d.diagonal(dim1=-2, dim2=-1).zero_()
    return d


