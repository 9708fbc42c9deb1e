"""Topology study: Mantel statistics of known maps, Jacobian products, alpha of eq. 7."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import spec_of
from localprops.core.distances import pairwise_distances
from localprops.core.mantel import mantel
from localprops.core.philox import derive_seed
from localprops.models.samples import SampleSet
from localprops.studies import topology
from localprops.studies.topology import (
    MAPS,
    alpha_matrix,
    features_and_tangents,
    topology_study,
)


def samples(n=2, shape=(3, 8, 8)):
    g = torch.Generator().manual_seed(3)
    return SampleSet(torch.rand(n, *shape, generator=g) * 255, [0] * n,
                     [derive_seed(1, i) for i in range(n)], list(range(n)))


class Linear(nn.Module):
    """A purely linear 'feature layer': its Jacobian is its weight."""

    def __init__(self, d=192, f=40):
        super().__init__()
        torch.manual_seed(0)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(d, f)
        self.out = nn.Linear(f, 3)

    def forward(self, x):
        return self.out(self.fc(self.flat(x)))


def test_linear_model_equals_its_linearization_and_scaling_keeps_rho_one():
    model = Linear().double().eval()          # float64: no rounding noise at x ~ 255
    study = topology_study(spec_of(model, "linear", feature_layer="fc"), samples(), radii=[1.0, 50.0], T=12, permutations=99, progress=False)
    assert np.allclose(study.rho["model"], study.rho["jacobian"], atol=1e-6)
    assert np.allclose(study.rho["identity"], 1.0)
    assert study.rho["model"].shape == (2, 2) and study.input_spread.shape == (2, 2)
    # points spread over radii: a linear map keeps most of the distance structure
    assert (study.mixed_rho > 0.5).all()


def test_tangents_match_finite_differences(tiny_net):
    x = torch.rand(3, 12, 12, dtype=torch.float64) * 255
    nu = torch.randn(5, 3, 12, 12, dtype=torch.float64)
    net = tiny_net.double()
    _, tangent = features_and_tangents(net, x, nu, "classifier.2")
    h = 1e-5
    plus, _ = features_and_tangents(net, x, h * nu, "classifier.2")
    minus, _ = features_and_tangents(net, x, -h * nu, "classifier.2")
    assert torch.allclose(tangent, (plus - minus) / (2 * h), rtol=1e-5, atol=1e-9)


def test_study_matches_a_direct_mantel_computation(tiny_net):
    s = samples(1, (3, 12, 12))
    study = topology_study(spec_of(tiny_net, "tiny", feature_layer="classifier.2"), s, radii=[5.0], T=10, permutations=99, seed=4, progress=False)
    from localprops.core.sampling import radial_perturbations
    nu = radial_perturbations((3, 12, 12), [5.0], 10, seed=s.seeds[0])[0]
    store = []
    h = dict(tiny_net.named_modules())["classifier.2"].register_forward_hook(
        lambda m, i, o: store.append(o))
    with torch.no_grad():
        tiny_net(s.images[0] + nu)
    h.remove()
    rho, _ = mantel(pairwise_distances(nu.flatten(1)).numpy(),
                    pairwise_distances(store[0]).numpy(), permutations=0)
    assert np.isclose(study.rho["model"][0, 0], rho, atol=1e-9)


def test_alpha_is_a_multiple_of_identity_for_a_scaling():
    points = np.random.default_rng(0).normal(size=(6, 4))
    d = pairwise_distances(points).numpy()
    assert np.allclose(alpha_matrix(d, 3 * d), 3 * np.eye(6), atol=1e-8)
    with pytest.raises(ValueError, match="same size"):
        alpha_matrix(d, d[:3, :3])


def test_bad_input(tiny_net):
    with pytest.raises(ValueError, match="at least 3"):
        topology_study(spec_of(tiny_net, "t", feature_layer="classifier.2"), samples(1, (3, 12, 12)), radii=[1.0], T=2)


# ----------------------------------------------------------------------------
# where the Mantel tests run: numpy (numba) on the CPU, torch on a CUDA device
# ----------------------------------------------------------------------------

def record_mantel_calls(monkeypatch) -> list:
    """Make the topology study call a mantel that records (x, y, kwargs, result)."""
    calls = []

    def recording(x, y, **kwargs):
        result = mantel(x, y, **kwargs)
        calls.append((x, y, kwargs, result))
        return result

    monkeypatch.setattr(topology, "mantel", recording)
    return calls


def test_on_the_cpu_mantel_gets_numpy_arrays(monkeypatch):
    calls = record_mantel_calls(monkeypatch)
    study = topology_study(spec_of(Linear().double().eval(), "linear", feature_layer="fc"), samples(1), radii=[1.0, 50.0], T=6, permutations=9,
                           progress=False)
    assert study.skipped == []
    assert len(calls) == len(MAPS) + 2            # the maps, mixed, mixed linear
    assert all(type(a) is np.ndarray for x, y, _, _ in calls for a in (x, y))


def test_on_cuda_mantel_runs_on_the_device_and_matches_the_cpu(cuda_device, monkeypatch):
    kw = dict(radii=[1.0, 50.0], T=12, permutations=99, seed=5, progress=False)
    model = Linear().double().eval()
    cpu = topology_study(spec_of(model, "linear", feature_layer="fc"), samples(), **kw)
    calls = record_mantel_calls(monkeypatch)
    gpu = topology_study(spec_of(copy.deepcopy(model).to(cuda_device), "linear",
                                 feature_layer="fc"), samples(), **kw)
    assert gpu.skipped == [] and np.array_equal(gpu.ids, cpu.ids)
    assert len(calls) == 2 * (len(MAPS) + 2)
    for x, y, kwargs, (rho, p) in calls:
        assert all(isinstance(a, torch.Tensor) and a.is_cuda for a in (x, y))
        # the same distances through the CPU path (numpy, numba kernels)
        rho_cpu, p_cpu = mantel(x.cpu().numpy(), y.cpu().numpy(), **kwargs)
        np.testing.assert_allclose(rho, rho_cpu, rtol=0, atol=1e-12)
        # both backends draw the same permutations for every matrix of a stack
        np.testing.assert_array_equal(np.atleast_1d(p), np.atleast_1d(p_cpu))
    # the whole study: features and distances computed on the GPU round differently
    for m in MAPS:
        np.testing.assert_allclose(gpu.rho[m], cpu.rho[m], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(gpu.p_value[m], cpu.p_value[m])
    np.testing.assert_allclose(gpu.mixed_rho, cpu.mixed_rho, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(gpu.mixed_p, cpu.mixed_p)
    np.testing.assert_allclose(gpu.mixed_linear_rho, cpu.mixed_linear_rho, rtol=0, atol=1e-9)
    np.testing.assert_allclose(gpu.input_spread, cpu.input_spread, rtol=1e-9)
