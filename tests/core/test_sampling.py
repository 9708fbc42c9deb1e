"""Perturbations at exact radii (paper eqs. 4 and 6): norms, determinism, permutations."""
import math

import pytest
import torch

from localprops.core.sampling import (
    PermutedPerturbations,
    RadialPerturbations,
    permuted_perturbations,
    radial_perturbations,
    radius_grid,
)

SHAPE = (3, 8, 8)
RADII = [1e-3, 1.0, 2.5, 20.0]
SAMPLERS = [radial_perturbations, permuted_perturbations]


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_exact_norms(sampler, norm):
    nu = sampler(SHAPE, RADII, 7, norm=norm, seed=3)
    assert nu.shape == (len(RADII), 7, *SHAPE) and nu.dtype == torch.float32
    flat = nu.double().flatten(2)
    lengths = flat.norm(dim=-1) if norm == "l2" else flat.abs().amax(dim=-1)
    expected = torch.tensor(RADII, dtype=torch.float64)[:, None]
    assert ((lengths - expected).abs() / expected).max() < 1e-5


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_float64_norms_are_exact_to_rounding(sampler):
    nu = sampler(SHAPE, RADII, 3, seed=1, dtype=torch.float64)
    lengths = nu.flatten(2).norm(dim=-1)
    assert torch.allclose(lengths, torch.tensor(RADII, dtype=torch.float64)[:, None],
                          rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [RadialPerturbations, PermutedPerturbations])
def test_same_seed_same_tensor_across_chunks_and_calls(cls):
    source = cls(SHAPE, RADII, 9, "l2", 11)
    whole = source.materialize()
    for chunk in (1, 4, 7, 36):
        parts = [source.rows(s, min(s + chunk, len(source))) for s in range(0, len(source), chunk)]
        assert torch.equal(torch.cat(parts).reshape(whole.shape), whole)
    again = cls(SHAPE, RADII, 9, "l2", 11).materialize()
    assert torch.equal(again, whole)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_different_seeds_differ(sampler):
    a = sampler(SHAPE, RADII, 4, seed=0)
    b = sampler(SHAPE, RADII, 4, seed=1)
    assert not torch.isclose(a, b).all(dim=(2, 3, 4)).any()


def test_draws_differ_between_perturbations_and_radii():
    nu = radial_perturbations(SHAPE, [1.0, 2.0], 5, seed=0).flatten(2)
    unit = nu / nu.norm(dim=-1, keepdim=True)
    gram = (unit.flatten(0, 1) @ unit.flatten(0, 1).T) - torch.eye(10)
    assert gram.abs().max() < 0.5       # no two directions coincide


def test_radius_enters_by_value():
    # r = 1 gives the same draws whatever the rest of the radii list
    a = radial_perturbations(SHAPE, [1.0, 2.0], 5, seed=4)[0]
    b = radial_perturbations(SHAPE, [0.5, 3.0, 1.0], 5, seed=4)[2]
    assert torch.equal(a, b)


def test_more_draws_extend_fewer():
    a = radial_perturbations(SHAPE, [1.0], 3, seed=2)
    b = radial_perturbations(SHAPE, [1.0], 8, seed=2)
    assert torch.equal(a, b[:, :3])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_permutations_hold_the_same_values(norm):
    nu = permuted_perturbations(SHAPE, RADII, 6, norm=norm, seed=5).flatten(2)
    for r in range(len(RADII)):
        reference = nu[r, 0].sort().values
        for t in range(1, 6):
            assert torch.equal(nu[r, t].sort().values, reference)
            assert not torch.equal(nu[r, t], nu[r, 0])


def test_permutations_are_uniform_enough():
    # position of element 0's value should be spread over all positions
    d = 3 * 4 * 4
    nu = permuted_perturbations((3, 4, 4), [1.0], 2000, seed=9).flatten(2)[0]
    base_value = nu[0].sort().values[0]
    positions = (nu == base_value).float().argmax(dim=-1)
    counts = torch.bincount(positions, minlength=d).double()
    expected = 2000 / d
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < d - 1 + 5 * math.sqrt(2 * (d - 1))


def test_paper_radii():
    assert radius_grid(1e-4, [1, 2, 3]) == [1e-4, 1.0, 2.0, 3.0]
    assert radius_grid()[1:] == [float(r) for r in range(1, 21)]
    with pytest.raises(ValueError, match="smaller than every radius"):
        radius_grid(2.0, [1, 2])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(radii=[0.0]), ValueError, "positive finite"),
    (dict(radii=[-1.0]), ValueError, "positive finite"),
    (dict(radii=[float("nan")]), ValueError, "positive finite"),
    (dict(radii=[float("inf")]), ValueError, "positive finite"),
    (dict(radii=[]), ValueError, "empty"),
    (dict(radii="abc"), TypeError, "radii"),
    (dict(n=0), ValueError, "at least 1"),
    (dict(n=2.5), TypeError, "integer"),
    (dict(norm="l1"), ValueError, "unknown norm"),
    (dict(shape=(3, 0, 4)), ValueError, "positive"),
    (dict(seed=-1), ValueError, "seed"),
])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bad_input(sampler, kwargs, error, match):
    args = dict(shape=SHAPE, radii=[1.0], n=2) | kwargs
    with pytest.raises(error, match=match):
        sampler(args.pop("shape"), args.pop("radii"), args.pop("n"), **args)


def test_rows_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        RadialPerturbations(SHAPE, [1.0], 2).rows(0, 3)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cuda_matches_cpu(sampler, cuda_device):
    cpu = sampler((3, 32, 32), RADII, 5, seed=8)
    gpu = sampler((3, 32, 32), RADII, 5, seed=8, device=cuda_device)
    assert torch.allclose(cpu, gpu.cpu(), rtol=1e-6, atol=0)
