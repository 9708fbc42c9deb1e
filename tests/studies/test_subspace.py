"""Random-subspace DeepFool: bases, closed forms of a linear classifier, the sqrt(D/m) law."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import Affine, SmoothNet, spec_of
from localprops.core.cache import ResultCache
from localprops.models.samples import SampleSet
from localprops.studies import attacks
from localprops.studies import subspace as sub


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny QRs and Philox draws: a thread pool only adds latency (500x on a busy machine)."""
    import numba

    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(threads[0])
    numba.set_num_threads(threads[1])


def images(n=3, shape=(3, 4, 4), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (80 + 100 * torch.rand(n, *shape, generator=g, dtype=torch.float64)).to(dtype)


def predicted(model, x):
    with torch.no_grad():
        return model(x).argmax(dim=1)


def binary_boundary(model, x, y):
    """``f = z_other - z_y`` at ``x`` and its gradient ``w`` (D,) for a 2-class Affine."""
    w = ((model.weight[1 - y] - model.weight[y]) / 255.0).detach()
    with torch.no_grad():
        z = model(x[None])[0]
    return float(z[1 - y] - z[y]), w


def sample_set(model, x):
    x = x.to(next(model.parameters()).dtype)
    y = predicted(model, x).tolist()
    return SampleSet(images=x, labels=y, seeds=[100 + i for i in range(len(x))],
                     ids=list(range(len(x))))


def test_basis_is_orthonormal_deterministic_and_seeded():
    b = sub.random_subspace(7, 48, 5)
    assert b.shape == (48, 5) and b.dtype == torch.float64
    torch.testing.assert_close(b.T @ b, torch.eye(5, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(b, sub.random_subspace(7, 48, 5))
    other = sub.random_subspace(8, 48, 5)
    assert (b @ b.T - other @ other.T).norm() > 0.5          # another subspace, not a rotation
    torch.testing.assert_close(sub.random_subspace(7, 48, 5, dtype=torch.float32), b.float())
    one = sub.random_subspace(7, 48, 1)
    assert one.norm().item() == pytest.approx(1.0)
    full = sub.random_subspace(7, 6, 6)
    torch.testing.assert_close(full.T @ full, torch.eye(6, dtype=torch.float64))


def test_basis_is_the_same_on_a_gpu(cuda_device):
    b = sub.random_subspace(7, 300, 20)
    torch.testing.assert_close(sub.random_subspace(7, 300, 20, device=cuda_device).cpu(), b,
                               atol=1e-10, rtol=0)


def test_subspace_deepfool_matches_the_linear_closed_form():
    shape = (3, 4, 4)
    model = Affine(shape).eval()
    x = images(2, shape)
    for i, y in enumerate(predicted(model, x).tolist()):
        f, w = binary_boundary(model, x[i], y)
        for m in (3, 8, 20):
            basis = sub.random_subspace(i * 10 + m, 48, m)
            radius, found, delta = sub.subspace_deepfool(model, x[i], y, basis)
            assert found
            expected = abs(f) / (basis.T @ w).norm().item()
            assert radius == pytest.approx(expected, rel=1e-4)
            flat = delta.flatten().double()
            torch.testing.assert_close(basis @ (basis.T @ flat), flat)   # within the subspace
        radius, found, _ = sub.subspace_deepfool(model, x[i], y, torch.eye(48))
        assert found and radius == pytest.approx(abs(f) / w.norm().item(), rel=1e-4)
        full = attacks.deepfool(model, x[i:i + 1], [y], norm="l2")
        assert full.radius[0] == pytest.approx(abs(f) / w.norm().item(), rel=1e-4)


def test_bisection_leaves_the_perturbation_misclassified():
    model = SmoothNet().eval()
    x = images(3, (3, 6, 6), dtype=torch.float32)
    for i, y in enumerate(predicted(model, x).tolist()):
        basis = sub.random_subspace(i, 108, 30)
        radius, found, delta = sub.subspace_deepfool(model, x[i], y, basis, candidates=3)
        assert found and np.isfinite(radius)
        assert radius == pytest.approx(delta.double().norm().item(), rel=1e-9)
        with torch.no_grad():
            assert model((x[i] + delta)[None]).argmax().item() != y
            assert model((x[i] + 0.99 * delta)[None]).argmax().item() == y    # tight


def test_no_flip_within_the_subspace_or_the_cap_is_reported():
    shape = (3, 4, 4)
    model = Affine(shape).eval()
    x = images(1, shape)[0]
    y = int(predicted(model, x[None])[0])
    axis = torch.zeros(48, 1, dtype=torch.float64)
    axis[0] = 1.0
    with torch.no_grad():                 # the boundary's normal is orthogonal to axis 0
        model.weight[:, 0] = 0.0
    assert sub.subspace_deepfool(model, x, y, axis)[:2] == (np.inf, False)
    basis = sub.random_subspace(0, 48, 4)
    assert sub.subspace_deepfool(model, x, y, basis, cap=1e-3)[:2] == (np.inf, False)
    assert sub.subspace_deepfool(model, x, y, basis)[1]


def test_squared_ratio_has_the_beta_mean_m_over_d():
    shape, n = (3, 4, 4), 500
    model = Affine(shape, seed=1).eval()
    study = sub.subspace_study(spec_of(model, "affine"), sample_set(model, images(1, shape)),
                               [4, 12], repeats=n, progress=False)
    assert study.found.all() and study.found_full.all()
    squared = 1.0 / study.ratios()[0] ** 2                            # (M, n)
    for j, m in enumerate((4, 12)):
        mean, d = m / 48, 48
        se = np.sqrt(mean * (1 - mean) / (d / 2 + 1) / n)             # Beta(m/2, (D-m)/2)
        assert abs(squared[j].mean() - mean) < 4 * se
    assert len({tuple(r) for r in study.radius[0].T}) == n            # distinct subspaces


def test_slope_of_the_median_ratio_is_minus_one_half():
    shape = (3, 8, 8)
    model = Affine(shape, seed=2).eval()
    study = sub.subspace_study(spec_of(model, "affine"), sample_set(model, images(20, shape)),
                               [8, 16, 32, 64, 192], repeats=4, progress=False)
    assert study.radius.shape == (20, 5, 4)
    np.testing.assert_array_equal(study.ratios()[:, -1], 1.0)         # m = D: the whole space
    np.testing.assert_allclose(study.predicted(), np.sqrt(192 / study.dims))
    slope, (low, high) = study.slope(n_boot=200)
    assert abs(slope + 0.5) < 0.07
    assert low <= slope <= high and high - low < 0.2


def test_study_reads_back_from_the_cache(tmp_path, monkeypatch):
    model = SmoothNet().eval()
    samples = sample_set(model, images(2, (3, 6, 6)))
    cache = ResultCache(tmp_path)
    first = sub.subspace_study(spec_of(model, "smooth"), samples, [2, 10], repeats=2,
                               candidates=3, cache=cache, progress=False)
    assert first.found.all()

    def never(*args, **kwargs):
        raise AssertionError("recomputed a cached unit")

    monkeypatch.setattr(sub, "subspace_deepfool", never)
    monkeypatch.setattr(sub, "deepfool", never)
    again = sub.subspace_study(spec_of(model, "smooth"), samples, [2, 10], repeats=2,
                               candidates=3, cache=cache, progress=False)
    assert cache.hits == 2
    np.testing.assert_array_equal(again.radius, first.radius)
    np.testing.assert_array_equal(again.radius_full, first.radius_full)
    with pytest.raises(AssertionError, match="recomputed"):          # other dims: new units
        sub.subspace_study(spec_of(model, "smooth"), samples, [3], candidates=3, cache=cache,
                           progress=False)


def test_dims_grid():
    grid = sub.dims_grid(48)
    assert grid[0] == 1 and grid[-1] == 48 and grid == sorted(set(grid)) and len(grid) == 8
    assert sub.dims_grid(3) == [1, 2, 3]
    assert sub.dims_grid(150528, 6, max_dim=1000)[-1] == 1000
    assert sub.dims_grid(10, 1) == [10]


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"m must be .* \[1, 48\]"):
        sub.random_subspace(0, 48, 0)
    with pytest.raises(ValueError, match=r"m must be .* \[1, 48\]"):
        sub.random_subspace(0, 48, 49)
    with pytest.raises(ValueError, match="pass m <= 1783"):
        sub.random_subspace(0, 150528, 2000)
    with pytest.raises(ValueError, match="whole space"):
        sub.random_subspace(0, 150528, 150528)
    model = SmoothNet().eval()
    samples = sample_set(model, images(1, (3, 6, 6)))
    with pytest.raises(ValueError, match="dims must list"):
        sub.subspace_study(spec_of(model), samples, [], progress=False)
    with pytest.raises(ValueError, match=r"\[1, 108\]"):
        sub.subspace_study(spec_of(model), samples, [4, 109], progress=False)
    with pytest.raises(ValueError, match="basis must"):
        sub.subspace_deepfool(model, samples.images[0], 0, torch.eye(10))
    with pytest.raises(TypeError, match="ModelSpec"):
        sub.subspace_study(model, samples, [4], progress=False)
    study = sub.subspace_study(spec_of(model), samples, [4, 108], candidates=2, progress=False)
    with pytest.raises(ValueError, match="two dims below"):
        study.slope()
