"""Worst-case Lipschitz: Lanczos and power iteration against a full SVD, ratios, PGD."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import spec_of
from localprops.studies.lipschitz import global_lipschitz_bound
from localprops.studies.worstcase import (
    FeatureMap,
    feature_jacobian_norm,
    max_ratio_search,
    ratio_along,
    top_singular,
)


def relu_net() -> nn.Module:
    """conv + ReLU + linear on (1, 6, 6) images, float64."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(108, 7)).double().eval()


def tanh_net() -> nn.Module:
    """The same with tanh: smooth, so a ratio departs from sigma at first order in r."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(108, 7)).double().eval()


def image() -> torch.Tensor:
    return torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def jacobian(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The full (F, D) Jacobian by autograd, the reference."""
    return torch.autograd.functional.jacobian(
        lambda v: net(v.unsqueeze(0)).flatten(), x).reshape(-1, x.numel())


def linear(w: torch.Tensor):
    return lambda batch: batch @ w.T


def matrix(singular_values, rows=9, cols=12, seed=0) -> torch.Tensor:
    """U diag(s) V^T with random orthonormal U, V."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    s = torch.zeros(rows, cols, dtype=torch.float64)
    s[range(len(singular_values)), range(len(singular_values))] = torch.tensor(
        singular_values, dtype=torch.float64)
    return u @ s @ v.T


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_matches_svd_of_the_autograd_jacobian(method):
    net, x = relu_net(), image()
    _, s, vh = torch.linalg.svd(jacobian(net, x))
    top = top_singular(net, x, method=method)
    assert top.converged and top.iterations < 200
    assert np.isclose(top.sigma, s[0].item(), rtol=1e-6, atol=0)
    assert top.direction.shape == x.shape
    assert np.isclose(top.direction.norm().item(), 1.0, rtol=1e-12)
    assert abs(torch.dot(top.direction.flatten(), vh[0]).item()) == pytest.approx(1, abs=1e-5)
    # the estimates approach sigma from below
    assert (top.history <= s[0].item() * (1 + 1e-12)).all()


@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize("cols", [12, 40])        # 12: Lanczos' exact branch; 40: ARPACK
def test_linear_map_gives_the_spectral_norm(method, cols):
    w = torch.randn(8, cols, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    top = top_singular(linear(w), torch.zeros(cols, dtype=torch.float64), method=method)
    assert np.isclose(top.sigma, torch.linalg.matrix_norm(w, 2).item(), rtol=1e-6, atol=0)


def test_lanczos_needs_far_fewer_products_on_close_singular_values():
    """sigma_2 / sigma_1 = 0.99 in 400 dimensions: power crawls, Lanczos does not."""
    w = matrix([1.0, 0.99] + np.linspace(0.9, 0.1, 38).tolist(), rows=60, cols=400, seed=7)
    x = torch.zeros(400, dtype=torch.float64)
    lanczos = top_singular(linear(w), x, tol=1e-8, iterations=1000)
    power = top_singular(linear(w), x, tol=1e-8, iterations=1000, method="power")
    assert lanczos.converged and lanczos.sigma == pytest.approx(1.0, rel=1e-8)
    assert lanczos.sigma <= 1.0 + 1e-12
    assert lanczos.iterations < 100 < power.iterations
    assert lanczos.direction.shape == x.shape
    assert lanczos.direction.norm().item() == pytest.approx(1.0, rel=1e-12)


def test_lanczos_out_of_products_says_so_and_keeps_the_best_direction_seen():
    w = matrix([1.0, 0.99] + np.linspace(0.9, 0.1, 38).tolist(), rows=60, cols=400, seed=7)
    x = torch.zeros(400, dtype=torch.float64)
    top = top_singular(linear(w), x, tol=1e-14, iterations=12)
    assert not top.converged and top.iterations == 12
    assert top.sigma <= 1.0 + 1e-12
    # far above a random direction's stretch (about ||w||_F / sqrt(400) = 0.18):
    # the Ritz vector of the 12-dimensional Krylov space, not the start vector
    assert top.sigma > 0.95
    start = top_singular(linear(w), x, iterations=1, method="power")
    assert start.sigma < 0.5


def test_lanczos_in_float32_agrees_with_float64():
    net, x = relu_net(), image() * 255
    exact = top_singular(net, x, tol=1e-10)
    low = top_singular(copy.deepcopy(net).float(), x.float(), tol=1e-4)
    assert low.direction.dtype == torch.float32
    assert low.sigma == pytest.approx(exact.sigma, rel=1e-4)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="lanczos"):
        top_singular(linear(torch.eye(3, dtype=torch.float64)),
                     torch.zeros(3, dtype=torch.float64), method="svd")


def test_tiny_inputs_are_solved_exactly():
    w = matrix([2.0, 1.0], rows=3, cols=5, seed=8)
    top = top_singular(linear(w), torch.zeros(5, dtype=torch.float64))
    assert top.converged and top.iterations == 5
    assert top.sigma == pytest.approx(2.0, rel=1e-12)


def test_scales_give_the_normalised_jacobian():
    net, x = relu_net(), image()
    g = torch.Generator().manual_seed(4)
    scale = torch.rand(7, generator=g, dtype=torch.float64) * 10 + 0.1
    in_scale = torch.rand(36, generator=g, dtype=torch.float64) * 255 + 1
    jac = jacobian(net, x)
    expected = torch.linalg.matrix_norm(jac / scale[:, None], 2).item()
    assert np.isclose(top_singular(net, x, scale=scale).sigma, expected, rtol=1e-6, atol=0)
    # the raw value differs, so the scale is really used
    assert not np.isclose(top_singular(net, x).sigma, expected, rtol=1e-2)
    both = torch.linalg.matrix_norm(jac / scale[:, None] * in_scale[None, :], 2).item()
    assert np.isclose(top_singular(net, x, scale=scale, input_scale=in_scale).sigma, both,
                      rtol=1e-6, atol=0)


def test_model_wrapper_uses_the_feature_layer_in_float64():
    net, x = relu_net().float(), image().float()
    # the reference: the same (float32-rounded) weights and image in float64
    reference = top_singular(copy.deepcopy(net).double()[:2], x.double())  # after the ReLU
    for model in (net, spec_of(net, feature_layer="1")):
        top = feature_jacobian_norm(model, x, "1")
        assert top.direction.dtype == torch.float64
        assert np.isclose(top.sigma, reference.sigma, rtol=1e-6)
    assert next(net.parameters()).dtype == torch.float32      # the model itself untouched
    with pytest.raises(ValueError, match="not a module"):
        FeatureMap(net, "nope")


def test_power_converged_flag():
    close = matrix([1.0, 0.999, 0.5])
    zero = torch.zeros(12, dtype=torch.float64)
    assert top_singular(linear(close), zero, iterations=1, method="power").converged is False
    slow = top_singular(linear(close), zero, iterations=30, method="power")
    assert not slow.converged and slow.iterations == 30
    # the rule does not stop early on close values: given time, it converges to sigma
    patient = top_singular(linear(close), zero, iterations=10000, method="power")
    assert patient.converged and patient.sigma == pytest.approx(1.0, rel=1e-6)
    apart = top_singular(linear(matrix([2.0, 1.0, 0.5])), zero, method="power")
    assert apart.converged and apart.sigma == pytest.approx(2.0, rel=1e-6)


def test_ratio_along_the_top_direction():
    w = matrix([3.0, 1.0, 0.2])
    x = torch.randn(12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    top = top_singular(linear(w), x)
    radii = [1e-3, 1.0, 100.0]
    for norm in ("l2", "linf"):
        assert np.allclose(ratio_along(linear(w), x, top.direction, radii, norm=norm),
                           top.sigma, rtol=1e-9)
    # a random direction stretches less
    other = torch.randn(12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert (ratio_along(linear(w), x, other, radii) < top.sigma * 0.99).all()

    net, x = tanh_net(), image() * 3
    top = top_singular(net, x, tol=1e-12, iterations=1000)
    radii = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    error = np.abs(ratio_along(net, x, top.direction, radii) / top.sigma - 1)
    assert error[-1] < 1e-4
    # first order: ten times smaller radius, about ten times smaller error
    assert np.all(error[1:] < error[:-1] / 5)


def test_ratio_along_radius_in_linf_units():
    w = matrix([3.0, 1.0])
    d = torch.zeros(12, dtype=torch.float64)
    d[:2] = torch.tensor([2.0, -1.0])
    f = linear(w)
    # nu = r d / ||d||_inf, so the input distance is r * ||d||_2 / ||d||_inf
    expected = torch.linalg.vector_norm(f((d / 2).unsqueeze(0))).item() / (d / 2).norm().item()
    assert np.allclose(ratio_along(f, torch.zeros(12, dtype=torch.float64), d, [0.5, 4.0],
                                   norm="linf"), expected, rtol=1e-12)


def test_search_on_a_linear_map_finds_sigma_and_never_exceeds_it():
    w = matrix([3.0, 2.0, 1.0])
    x = torch.zeros(12, dtype=torch.float64)
    for norm in ("l2", "linf"):
        found = max_ratio_search(linear(w), x, 2.0, norm=norm, start="random", restarts=3,
                                 steps=60)
        assert found.ratio <= 3.0 * (1 + 1e-9)
        assert found.ratio >= 3.0 * 0.99
        assert np.all(np.diff(found.history) >= 0)
        size = (found.perturbation.norm() if norm == "l2"
                else found.perturbation.abs().max()).item()
        assert size == pytest.approx(2.0, rel=1e-12)
    # the start alone is far from sigma: the ascent did the work
    assert found.history[0] < 3.0 * 0.99 or found.restart_ratios.min() < 3.0 * 0.99


def test_search_on_a_relu_net_against_sigma_and_the_global_bound():
    net, x = relu_net(), image() * 255
    top = top_singular(net, x)
    # r -> 0: the search cannot beat sigma, and from the top direction it reaches it
    tiny = max_ratio_search(net, x, 1e-6, start="random", restarts=4, steps=40)
    assert tiny.ratio <= top.sigma * (1 + 1e-3)
    assert max_ratio_search(net, x, 1e-6, start="top", steps=5).ratio >= top.sigma * (1 - 1e-6)
    # a finite radius: the search (a lower bound on the sup) starts from the top
    # direction and only climbs; sigma is no bound there, the global product is
    radius = 50.0
    along = ratio_along(net, x, top.direction, [radius])[0]
    found = max_ratio_search(net, x, radius, start="top", restarts=3, steps=30)
    assert found.ratio >= along * (1 - 1e-12)
    bound, _ = global_lipschitz_bound(net, (1, 6, 6), "3")
    assert found.ratio <= bound * 1.01


def test_worst_case_study_against_the_full_jacobian():
    """Per sample: sigma in both readings, ||J||_F / sqrt(D), and the ratio along the top."""
    from localprops.models.samples import SampleSet
    from localprops.studies.lipschitz import Normalizers
    from localprops.studies.worstcase import worst_case_study

    net = tanh_net()
    images = torch.stack([image(), image().flip(-1)]) * 255
    with torch.no_grad():                     # labels the net gets right: DeepFool has work
        labels = net(images).argmax(dim=1).tolist()
    samples = SampleSet(images=images, labels=labels, seeds=[1, 2], ids=[10, 11])
    g = torch.linspace(0.5, 2.0, 7, dtype=torch.float64)
    h = torch.full((36,), 255.0, dtype=torch.float64)
    normalizers = Normalizers(output_scale={"minmax": g}, input_scale={"minmax": h}, n_images=1)
    spec = spec_of(net, "tanh", feature_layer="3")
    study = worst_case_study(spec, samples, normalizers, radii=[1e-4, 1.0], dtype=torch.float64,
                             tol=1e-9, iterations=500, probes=800, progress=False)
    for k in range(2):
        j = jacobian(net, images[k])
        scaled = torch.diag(1 / g) @ j @ torch.diag(h)
        for reading, m in (("raw", j), ("minmax", scaled)):
            exact = torch.linalg.matrix_norm(m, 2).item()
            assert study.converged[reading][k]
            assert study.sigma[reading][k] == pytest.approx(exact, rel=1e-8)
            assert study.along[reading][k, 0] == pytest.approx(exact, rel=1e-3)   # r -> 0
            rms = (torch.linalg.matrix_norm(m) / 6).item()              # ||J||_F / sqrt(36)
            assert study.frobenius[reading][k] == pytest.approx(rms, rel=0.1)
            # along DeepFool's direction: a real ratio, never above the worst one at r -> 0
            attack = study.along_attack[reading][k, 0]
            assert np.isfinite(attack) and 0 < attack <= exact * (1 + 1e-3)
