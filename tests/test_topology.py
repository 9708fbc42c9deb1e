"""Topology study: Mantel statistics of known maps, Jacobian products, alpha of eq. 7."""
import numpy as np
import pytest
import torch
from localprops.core.distances import pairwise_distances
from localprops.core.mantel import mantel
from localprops.core.philox import derive_seed
from localprops.models.samples import SampleSet
from localprops.studies.topology import (
    alpha_matrix,
    features_and_tangents,
    topology_study,
)
from torch import nn


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
    study = topology_study(model, samples(), radii=[1.0, 50.0], T=12, feature_layer="fc",
                           model_name="linear", permutations=99, progress=False)
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
    study = topology_study(tiny_net, s, radii=[5.0], T=10, feature_layer="classifier.2",
                           model_name="tiny", permutations=99, seed=4, progress=False)
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
        topology_study(tiny_net, samples(1, (3, 12, 12)), radii=[1.0], T=2,
                       feature_layer="classifier.2", model_name="t")
