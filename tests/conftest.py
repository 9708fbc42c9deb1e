"""Shared fixtures: tiny models, and skips (with reasons) for optional data and devices."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn


def data_path(variable: str) -> str:
    """The path in environment ``variable``, or skip the test saying how to set it."""
    value = os.environ.get(variable)
    if not value or not os.path.exists(value):
        pytest.skip(f"{variable} is not set to an existing path: the real data are "
                    f"not available here (.ci/run sets it when ../shared/data exists)")
    return value


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device in this session: the GPU variant of this test "
                    "runs where one is present")
    return torch.device("cuda")


class TinyConvNet(nn.Module):
    """A small ConvNet in the project's convention: [0, 255] in, logits out."""

    def __init__(self, classes: int = 5, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(),
                                        nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x / 255.0 - 0.5))


@pytest.fixture
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyConvNet().eval()


class Affine(nn.Module):
    """Logits ``W (x - 128) / 255 + b`` in float64: every boundary is a hyperplane."""

    def __init__(self, shape, classes: int = 2, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = int(np.prod(shape))
        self.weight = nn.Parameter(torch.randn(classes, d, generator=g, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(classes, dtype=torch.float64))

    def forward(self, x):
        return (x.double().flatten(1) - 128.0) / 255.0 @ self.weight.T + self.bias


class SmoothNet(nn.Module):
    """A tiny tanh ConvNet on (3, 6, 6) images: smooth (non-zero Hessian) and
    sensitive to its input, unlike an untrained ReLU net."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 6 * 6, classes)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x / 64.0 - 2.0)).flatten(1))


class OutOfMemoryOnce(nn.Module):
    """Raises a CUDA out-of-memory error for batches larger than ``limit``."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, []

    def forward(self, x):
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated")
        return self.inner(x)


def spec_of(model: nn.Module, name: str = "tiny", *, feature_layer: str = "",
            weights: str = ""):
    """A bare network as the one object the studies take (a ModelSpec)."""
    from localprops.core.engine import model_device
    from localprops.models import ModelSpec

    return ModelSpec(name=name, model=model, preprocess=None, input_size=(0, 0),
                     classes=[], feature_layer=feature_layer, weights=weights,
                     weights_source="test", dataset="custom", device=model_device(model))
