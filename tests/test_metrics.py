"""Score statistics, distance matrices and Lipschitz ratios against direct computations."""
import numpy as np
import pytest
import torch
from localprops.core.distances import pairwise_distances
from localprops.studies.lipschitz import MinMaxNormalizer, local_lipschitz_ratios
from localprops.studies.scores import score_statistics
from scipy.spatial.distance import cdist


def test_score_statistics_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.random((4, 3, 10))
    preds = rng.integers(0, 3, (4, 3, 10))
    labels = np.array([0, 1, 2, 0])
    stats = score_statistics(scores, preds, labels[:, None])
    for s in range(4):
        for r in range(3):
            v = scores[s, r]
            assert stats.range[s, r] == max(v) - min(v)
            assert np.isclose(stats.mean[s, r], sum(v) / len(v))
            assert stats.any_misclassified[s, r] == any(p != labels[s] for p in preds[s, r])


def test_score_statistics_torch_and_int_label():
    scores = torch.tensor([[0.9, 0.99, 0.95]])
    stats = score_statistics(scores, torch.tensor([[1, 1, 1]]), 1)
    assert np.isclose(stats.range[0], 0.09) and not stats.any_misclassified[0]
    assert score_statistics(scores).any_misclassified is None


def test_score_statistics_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        score_statistics([[0.1, float("nan")]])
    with pytest.raises(ValueError, match="true label"):
        score_statistics([[0.1]], [[1]])
    with pytest.raises(ValueError, match="differs"):
        score_statistics([[0.1, 0.2]], [[1]], 1)


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


def test_normalizer_and_lipschitz_brute_force():
    rng = np.random.default_rng(3)
    fit_data = rng.normal(size=(50, 6))
    fit_data[:, 5] = 2.0                                   # a constant feature
    g = MinMaxNormalizer().update(fit_data[:20]).update(fit_data[20:])
    low, high = fit_data.min(0), fit_data.max(0)
    scale = np.where(high > low, high - low, 1.0)
    assert np.allclose(g(fit_data).numpy(), (fit_data - low) / scale)
    h = MinMaxNormalizer(per_feature=False).update(np.array([[0.0, 255.0]]))
    x, xp = rng.uniform(0, 255, 4), rng.uniform(0, 255, (3, 4))
    y, yp = rng.normal(size=6), rng.normal(size=(3, 6))
    ratios = local_lipschitz_ratios(x, xp, y, yp, g, h)
    for t in range(3):
        out = np.linalg.norm((yp[t] - low) / scale - (y - low) / scale)
        inp = np.linalg.norm(xp[t] / 255 - x / 255)
        assert np.isclose(ratios.output_distance[t].item(), out)
        assert np.isclose(ratios.ratio[t].item(), out / inp)
    assert ratios.share_below(np.inf).item() == 1.0


def test_normalizer_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        MinMaxNormalizer().transform(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        MinMaxNormalizer().update(np.zeros(3))
    with pytest.raises(ValueError, match="features"):
        MinMaxNormalizer().update(np.zeros((2, 3))).update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="elements"):
        local_lipschitz_ratios(np.zeros(3), np.zeros((2, 4)), np.zeros(2), np.zeros((2, 2)))
