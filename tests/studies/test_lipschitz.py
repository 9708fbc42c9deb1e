"""Lipschitz study: distances against direct computations, global bound against SVD."""
import numpy as np
import pytest
import torch
from torch import nn

from conftest import spec_of
from localprops.core.philox import derive_seed
from localprops.core.sampling import radial_perturbations
from localprops.models.samples import SampleSet
from localprops.studies.lipschitz import (
    MinMaxNormalizer,
    ZScoreNormalizer,
    _operator_norm,
    fit_normalizers,
    global_lipschitz_bound,
    lipschitz_study,
)


def make_samples(n=2):
    g = torch.Generator().manual_seed(5)
    return SampleSet(torch.rand(n, 3, 12, 12, generator=g) * 255, [1] * n,
                     [derive_seed(2, i) for i in range(n)], list(range(n)))


def test_distances_match_direct_computation(tiny_net):
    s = make_samples()
    fit = torch.rand(30, 3, 12, 12, generator=torch.Generator().manual_seed(1)) * 255
    norms = fit_normalizers(tiny_net, fit, "classifier.2")
    study = lipschitz_study(spec_of(tiny_net, "tiny", feature_layer="classifier.2"), s, norms, radii=[1.0, 10.0], T=4, progress=False)
    nu = radial_perturbations((3, 12, 12), [1.0, 10.0], 4, seed=s.seeds[0], dtype=torch.float64)
    store = []
    h = dict(tiny_net.named_modules())["classifier.2"].register_forward_hook(
        lambda m, i, o: store.append(o))
    with torch.no_grad():
        tiny_net(s.images[:1])
        tiny_net(s.images[0] + nu.float().flatten(0, 1))
    h.remove()
    clean, pert = store[0][0].double(), store[1].double().reshape(2, 4, -1)
    # raw reading: plain Euclidean distances; input distance = the radius
    assert np.allclose(study.output_distance["raw"][0], (pert - clean).norm(dim=-1), rtol=1e-5)
    assert np.allclose(study.input_distance["raw"][0], [[1.0] * 4, [10.0] * 4], rtol=1e-6)
    scale = norms.output_scale["minmax"]
    assert np.allclose(study.output_distance["minmax"][0],
                       ((pert - clean) / scale).norm(dim=-1), rtol=1e-5)
    assert study.share_contracting("raw").shape == (2,)


def test_zscore_normalizer_matches_numpy():
    data = np.random.default_rng(0).normal(3, 2, size=(100, 5))
    z = ZScoreNormalizer().update(torch.as_tensor(data[:40])).update(torch.as_tensor(data[40:]))
    assert np.allclose(z.scale.numpy(), data.std(axis=0))


def test_operator_norm_matches_svd():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)
    jac = torch.autograd.functional.jacobian(
        lambda v: nn.functional.conv2d(v, conv.weight.double()),
        torch.zeros(1, 2, 6, 6, dtype=torch.float64)).reshape(3 * 16, 72)
    assert np.isclose(_operator_norm(conv, (2, 6, 6)), torch.linalg.matrix_norm(jac, 2).item(),
                      rtol=2e-3)


def test_global_bound_is_an_upper_bound(tiny_net):
    bound, factors = global_lipschitz_bound(tiny_net, (3, 12, 12), "classifier.2")
    assert bound > 0 and factors[-1][0] == "classifier.2"
    # the observed ratio of output to input distances never exceeds the bound
    x = torch.rand(50, 3, 12, 12) * 255
    y = x + torch.randn_like(x) * 5
    store = []
    h = dict(tiny_net.named_modules())["classifier.2"].register_forward_hook(
        lambda m, i, o: store.append(o))
    with torch.no_grad():
        tiny_net(x), tiny_net(y)
    h.remove()
    ratio = (store[0] - store[1]).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert (ratio <= bound * 1.001).all()


def test_global_bound_refuses_branching_models():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, padding=1)
            self.b = nn.ReLU()
            self.c = nn.Flatten()

        def forward(self, x):
            return self.c(self.b(self.a(x)) + x)

    with pytest.raises(ValueError, match="not a plain sequence"):
        global_lipschitz_bound(Residual(), (3, 4, 4), "c")


def test_normalizer_brute_force():
    rng = np.random.default_rng(3)
    fit_data = rng.normal(size=(50, 6))
    fit_data[:, 5] = 2.0                                   # a constant feature
    g = MinMaxNormalizer().update(fit_data[:20]).update(fit_data[20:])
    low, high = fit_data.min(0), fit_data.max(0)
    scale = np.where(high > low, high - low, 1.0)
    assert np.allclose(g(fit_data).numpy(), (fit_data - low) / scale)
    h = MinMaxNormalizer(per_feature=False).update(np.array([[0.0, 255.0]]))
    assert h.scale.tolist() == [255.0]
    x = rng.uniform(0, 255, 4)
    assert np.allclose(h(x).numpy(), x / 255)


def test_normalizer_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        MinMaxNormalizer().transform(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        MinMaxNormalizer().update(np.zeros(3))
    with pytest.raises(ValueError, match="features"):
        MinMaxNormalizer().update(np.zeros((2, 3))).update(np.zeros((2, 4)))
