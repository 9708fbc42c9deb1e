"""Tests of localprops.core.distances: exact distance matrices, also for tiny radii."""
import numpy as np
import torch
from scipy.spatial.distance import cdist

from localprops.core.distances import pairwise_distances


def test_pairwise_distances_match_scipy():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(2, 15, 40))
    d = pairwise_distances(torch.as_tensor(points))
    for b in range(2):
        assert np.allclose(d[b].numpy(), cdist(points[b], points[b]), rtol=1e-10, atol=1e-12)
    assert torch.equal(d, d.transpose(-1, -2))
    assert (d.diagonal(dim1=-2, dim2=-1) == 0).all()


def test_pairwise_distances_tiny_radius_far_from_origin():
    # points within 1e-3 of an image whose norm is ~1e4: the naive Gram form fails here
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, size=3000)
    nu = rng.uniform(-1, 1, size=(10, 3000))
    nu *= 1e-3 / np.linalg.norm(nu, axis=1, keepdims=True)
    exact = cdist(nu, nu)                      # distances do not depend on x
    d = pairwise_distances(x + nu).numpy()
    off = ~np.eye(10, dtype=bool)
    assert np.max(np.abs(d[off] - exact[off]) / exact[off]) < 1e-6


