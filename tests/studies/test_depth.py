"""Topology by depth and the linear-map prediction of Mantel's rho."""
import numpy as np
import pytest
import torch
from torch import nn

from conftest import spec_of
from localprops.core.distances import pairwise_distances
from localprops.core.mantel import mantel
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.studies import depth


def points(dimension: int, T: int = 40, seed: int = 0) -> torch.Tensor:
    return RadialPerturbations((dimension,), [1.0], T, "l2", seed).materialize(
        dtype=torch.float64)[0]


@pytest.mark.parametrize("width", [16, 128, 1024])
def test_prediction_matches_random_linear_maps(width):
    """Median over 12 draws of a random map's rho against the closed form."""
    dimension, measured = 2048, []
    for seed in range(12):
        nu = points(dimension, seed=seed)
        g = torch.Generator().manual_seed(100 + seed)
        w = torch.rand(dimension, width, generator=g, dtype=torch.float64) * 2 - 1
        measured.append(mantel(pairwise_distances(nu).numpy(),
                               pairwise_distances(nu @ w).numpy(), permutations=0)[0])
    predicted = depth.predicted_linear_rho(
        dimension, depth.random_map_participation(dimension, width))
    assert np.median(measured) == pytest.approx(float(predicted), abs=0.05)


def test_prediction_limits():
    assert float(depth.predicted_linear_rho(500, 500)) == pytest.approx(1.0)   # identity
    assert float(depth.predicted_linear_rho(10_000, 8)) == pytest.approx(
        np.sqrt(8 / 20_000), rel=0.01)
    assert depth.participation_ratio([1, 1, 1, 0]) == pytest.approx(3.0)
    assert depth.participation_ratio([10, 1e-3]) == pytest.approx(1.0, abs=1e-6)
    s = np.linalg.svd(np.random.default_rng(0).normal(size=(200, 2000)), compute_uv=False)
    assert depth.participation_ratio(s) == pytest.approx(
        depth.random_map_participation(2000, 200), rel=0.05)


class Stages(nn.Module):
    """conv -> pool -> conv -> pool -> linear: two stages and a feature layer."""

    def __init__(self, linear: bool = False):
        super().__init__()
        torch.manual_seed(0)
        act = nn.Identity() if linear else nn.ReLU()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act, nn.AvgPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1),
                                      nn.Identity() if linear else nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32, 16),
                                  nn.Identity() if linear else nn.Tanh(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.features(x / 255.0))


def test_depth_layers_in_forward_order():
    net = Stages()
    assert depth.depth_layers(net, "head.2") == ["features.0", "features.2", "features.5",
                                                 "head.2"]
    assert len(depth.depth_layers(net, "head.2", most=3)) == 3


class _Branches(nn.Module):
    """An inception-like block: a pooling branch beside a convolution."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 2, 1)
        self.pool_branch = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        return torch.cat([self.conv(x), self.pool_branch(x)], dim=1)


class _Trunk(nn.Module):
    """Stem, a pooling layer, two blocks (one residual-stage-like), pooling, classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.block1 = _Branches()
        self.layer2 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.block1(self.pool(self.relu(self.stem(x))))
        return self.fc(self.avgpool(self.layer2(x)).flatten(1))


def test_depth_layers_take_whole_blocks_not_pools_inside_a_branch():
    net = _Trunk()
    # the branch's pool sees one branch only; the blocks' outputs are whole representations
    assert depth.depth_layers(net, "avgpool") == ["stem", "pool", "block1", "layer2", "avgpool"]
    assert depth.depth_layers(net, "avgpool", most=3) == ["stem", "pool", "avgpool"]
    with pytest.raises(ValueError, match="not a module"):
        depth.depth_layers(net, "head")


def test_depth_study_linear_net_gives_equal_model_and_jacobian_rho():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 255
    samples = SampleSet(images=images, labels=[0, 1], seeds=[3, 4], ids=[0, 1])
    linear = depth.depth_study(spec_of(Stages(linear=True).double(), "lin", feature_layer="head.2"),
                               samples, radii=[1.0, 10.0], T=12, progress=False)
    assert linear.rho["model"].shape == (2, 4, 2)
    np.testing.assert_allclose(linear.rho["model"], linear.rho["jacobian"], atol=1e-6)
    relu = depth.depth_study(spec_of(Stages().double(), "relu", feature_layer="head.2"),
                             samples, radii=[1.0, 200.0], T=12, progress=False)
    assert np.abs(relu.rho["model"] - relu.rho["jacobian"])[..., 1].max() > 1e-4
    # the participation ratio lies between 1 and the feature width (16)
    assert ((linear.participation >= 1) & (linear.participation <= 16 + 1e-6)).all()
