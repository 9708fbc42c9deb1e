"""Fourier heat maps: the basis, the grid, the signs, closed forms for a linear model."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinyConvNet, spec_of
from localprops.core.cache import ResultCache
from localprops.models.samples import SampleSet
from localprops.studies import fourier


class Linear2(nn.Module):
    """Logits ``(w . x, 0)``: the true-class (0) log-odds is exactly ``w . x``."""

    def __init__(self, shape, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(int(np.prod(shape)), generator=g,
                                               dtype=torch.float64))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        z = x.double().flatten(1) @ self.weight
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def samples_of(n=2, shape=(3, 6, 6), seed=0, centre=128.0, spread=20.0, labels=None):
    g = torch.Generator().manual_seed(seed)
    x = centre + spread * (torch.rand(n, *shape, generator=g, dtype=torch.float64) - 0.5)
    return SampleSet(images=x, labels=labels or [0] * n, seeds=[11 + k for k in range(n)],
                     ids=list(range(100, 100 + n)))


# ------------------------------------------------------------------ basis, grid
def test_basis_is_real_orthonormal_and_complete():
    n = 8
    grid = fourier.frequency_grid(n)
    basis = fourier.hartley_basis(n, grid[:, 0], grid[:, 1])
    assert basis.shape == (64, 8, 8) and basis.dtype == torch.float64
    flat = basis.reshape(64, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(64, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    image = torch.rand(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rebuilt = (flat @ image.flatten()) @ flat
    torch.testing.assert_close(rebuilt.reshape(8, 8), image, atol=1e-12, rtol=0)
    # cas t = sqrt(2) cos(t - pi/4): a phase-shifted cosine wave; scalar -> one image
    u, v = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    wave = np.sqrt(2) * np.cos(2 * np.pi * (1 * u + 3 * v) / 8 - np.pi / 4) / 8
    np.testing.assert_allclose(fourier.hartley_basis(8, 1, 3).numpy(), wave, atol=1e-12)
    # centred (negative) frequencies are taken mod size
    torch.testing.assert_close(fourier.hartley_basis(8, -1, -2), fourier.hartley_basis(8, 7, 6))


def test_frequency_grid_centred_order_and_stride():
    np.testing.assert_array_equal(fourier.frequency_axis(8), np.arange(-4, 4))
    np.testing.assert_array_equal(fourier.frequency_axis(5), np.arange(-2, 3))
    grid = fourier.frequency_grid(4)
    assert grid.shape == (16, 2)
    np.testing.assert_array_equal(grid[:5], [[-2, -2], [-2, -1], [-2, 0], [-2, 1], [-1, -2]])
    # the centred layout is numpy's fftshift of the natural order
    natural = np.arange(16).reshape(4, 4)
    keys = fourier.frequency_keys(grid, 4).reshape(4, 4)
    np.testing.assert_array_equal(keys, np.fft.fftshift(natural))
    np.testing.assert_array_equal(fourier.frequency_axis(8, stride=3), [-3, 0, 3])
    np.testing.assert_array_equal(fourier.frequency_axis(224, stride=4),
                                  np.arange(-112, 112, 4))
    assert len(fourier.frequency_grid(224, stride=4)) == 56 ** 2
    assert [0, 0] in fourier.frequency_grid(9, stride=7).tolist()


def test_fft_coefficients_equal_explicit_dot_products():
    for n in (6, 5):
        g = torch.randn(3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        grid = fourier.frequency_grid(n)
        basis = fourier.hartley_basis(n, grid[:, 0], grid[:, 1])
        explicit = torch.einsum("chw,fhw->cf", g, basis)
        natural = grid % n
        by_fft = fourier.hartley_coefficients(g)[:, natural[:, 0], natural[:, 1]]
        torch.testing.assert_close(by_fft, explicit, atol=1e-12, rtol=0)
        np.testing.assert_allclose(fourier.gradient_heat_map(g),
                                   explicit.pow(2).sum(0).sqrt().numpy() / math.sqrt(3),
                                   atol=1e-12)


# ----------------------------------------------------------------------- signs
def test_signs_are_keyed_by_seed_frequency_and_norm():
    signs = fourier.channel_signs(5, 64, 2, 3)
    assert signs.shape == (2, 64, 3)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert 0.3 < (signs > 0).double().mean() < 0.7
    assert not torch.equal(signs[0], signs[1])                     # per norm
    assert not torch.equal(signs, fourier.channel_signs(6, 64, 2, 3))            # per seed
    assert not torch.equal(signs, fourier.channel_signs(5, 64, 2, 3, seed_offset=1))
    # a coarse grid draws the full grid's signs at its own frequencies
    full = fourier.frequency_keys(fourier.frequency_grid(8), 8)
    coarse = fourier.frequency_keys(fourier.frequency_grid(8, stride=2), 8)
    by_key = dict(zip(full.tolist(), fourier.channel_signs(5, full, 2, 3)[1]))
    for key, row in zip(coarse.tolist(), fourier.channel_signs(5, coarse, 2, 3)[1]):
        assert torch.equal(by_key[key], row)


# ------------------------------------------------------------- linear closed form
def analytic_drops(model, samples, norms, stride=1, seed_offset=0):
    """``-(r / sqrt(C)) sum_c s_c <w_c, H_ij>``: the drop of ``lo = w . x``."""
    shape = tuple(samples.images.shape[1:])
    n, channels = shape[-1], shape[0]
    grid = fourier.frequency_grid(n, stride)
    basis = fourier.hartley_basis(n, grid[:, 0], grid[:, 1])
    a = torch.einsum("chw,fhw->fc", model.weight.detach().reshape(shape), basis)
    out = []
    for seed in samples.seeds:
        s = fourier.channel_signs(seed, fourier.frequency_keys(grid, n), len(norms), channels,
                                  seed_offset=seed_offset)
        r = torch.tensor(norms, dtype=torch.float64)[:, None]
        out.append(-(r / math.sqrt(channels)) * (s * a).sum(-1))
    return torch.stack(out).numpy()


def test_linear_model_drops_equal_the_closed_form():
    s = samples_of(2, (3, 6, 6))
    model = Linear2((3, 6, 6))
    norms = [0.5, 3.0]
    study = fourier.fourier_heat_map(spec_of(model, "lin"), s, norms, progress=False)
    assert study.drops.shape == (2, 2, 36) and study.wrong.shape == (2, 2, 36)
    assert study.grid.shape == (36, 2) and study.size == 6
    assert (study.clipped == 0).all()                               # no clipping active
    np.testing.assert_allclose(study.drops, analytic_drops(model, s, norms), atol=1e-9)
    lo = (s.images.flatten(1) @ model.weight.detach()).numpy()
    np.testing.assert_allclose(study.clean_log_odds, lo, rtol=1e-12)
    np.testing.assert_array_equal(study.wrong, lo[:, None, None] - study.drops < 0)
    # the map in centred layout: row a is i = axis[a], column b is j = axis[b]
    drop_map = study.mean_drop_map(1)
    assert drop_map.shape == (6, 6)
    a, b = 1, 4
    f = study.grid.tolist().index([int(study.axis[a]), int(study.axis[b])])
    assert drop_map[a, b] == pytest.approx(study.drops[:, 1, f].mean())
    # coarse grid: its own small square, with the full grid's values there
    coarse = fourier.fourier_heat_map(spec_of(model, "lin"), s, norms, stride=2,
                                      progress=False)
    assert coarse.mean_drop_map(0).shape == (3, 3)
    np.testing.assert_array_equal(coarse.axis, [-2, 0, 2])
    rows = [study.grid.tolist().index(p) for p in coarse.grid.tolist()]
    np.testing.assert_allclose(coarse.drops, study.drops[:, :, rows], atol=1e-9)


def test_gradient_heat_map_is_the_rms_over_signs():
    shape, r = (3, 4, 4), 2.0
    model = Linear2(shape, seed=3)
    w = model.weight.detach().reshape(shape)
    predicted = r * fourier.gradient_heat_map(w)
    # exact: the root mean square over all 2**3 sign patterns
    grid = fourier.frequency_grid(4)
    a = torch.einsum("chw,fhw->fc", w, fourier.hartley_basis(4, grid[:, 0], grid[:, 1]))
    patterns = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)), dtype=torch.float64)
    rms = ((r / math.sqrt(3)) * (a @ patterns.T)).pow(2).mean(1).sqrt().numpy()
    np.testing.assert_allclose(predicted, rms, atol=1e-12)
    # measured: one image, 200 independent sign draws (one seed per "sample")
    n = 200
    x = torch.full((n, *shape), 128.0, dtype=torch.float64)
    s = SampleSet(images=x, labels=[0] * n, seeds=list(range(n)), ids=list(range(n)))
    study = fourier.fourier_heat_map(spec_of(model, "lin"), s, [r], progress=False)
    measured = np.sqrt((study.drops[:, 0] ** 2).mean(0))
    np.testing.assert_allclose(measured, predicted, rtol=0.2)
    assert np.mean(measured / predicted) == pytest.approx(1.0, abs=0.05)


def test_clipping_is_off_by_default_counted_always_and_applied_on_request():
    model = Linear2((3, 4, 4))
    x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)                # at the range's edge
    s = SampleSet(images=x, labels=[0], seeds=[1], ids=[0])
    unclipped = analytic_drops(model, s, [4.0])
    plain = fourier.fourier_heat_map(spec_of(model, "lin"), s, [4.0], progress=False)
    assert 0.3 < plain.clipped[0, 0] < 0.7                          # about half go below 0
    np.testing.assert_allclose(plain.drops, unclipped, atol=1e-9)  # the book's convention
    study = fourier.fourier_heat_map(spec_of(model, "lin"), s, [4.0], clip=True,
                                     progress=False)
    np.testing.assert_array_equal(study.clipped, plain.clipped)
    assert not np.allclose(study.drops, unclipped)


def test_band_shares():
    grid = fourier.frequency_grid(4)
    radial = np.hypot(grid[:, 0], grid[:, 1])
    drops = np.zeros((3, 1, 16))
    drops[0, 0, radial == 0] = 2.0                                   # all at zero frequency
    drops[1, 0, radial > 2] = 1.0                                    # all high
    drops[1, 0, radial == 1] = -5.0                                  # negative drops ignored
    study = fourier.FourierHeatMap(
        model="m", norms=np.array([1.0]), grid=grid, size=4, stride=1, ids=np.arange(3),
        labels=np.zeros(3, int), clean_log_odds=np.zeros(3), drops=drops,
        wrong=np.zeros((3, 1, 16), bool), clipped=np.zeros((3, 1)))
    shares = study.band_shares(0, cutoff=1.5)
    assert shares[0] == 0.0 and shares[1] == 1.0 and np.isnan(shares[2])
    assert study.error_rate_map(0).shape == (4, 4)


# ------------------------------------------------------------ caching, chunking
def test_second_run_reads_the_cache(tmp_path):
    model = Linear2((3, 4, 4))
    s = samples_of(2, (3, 4, 4))
    cache = ResultCache(tmp_path)
    first = fourier.fourier_heat_map(spec_of(model, "lin"), s, [1.0], cache=cache,
                                     progress=False)
    calls = model.calls
    again = fourier.fourier_heat_map(spec_of(model, "lin"), s, [1.0], cache=cache,
                                     progress=False)
    assert model.calls == calls and cache.hits == 2 and cache.misses == 2
    np.testing.assert_array_equal(again.drops, first.drops)
    np.testing.assert_array_equal(again.wrong, first.wrong)
    fourier.fourier_heat_map(spec_of(model, "lin"), s, [1.0], seed_offset=1, cache=cache,
                             progress=False)
    assert cache.misses == 4                                         # other signs: new units


def test_chunk_size_does_not_change_results():
    torch.manual_seed(0)
    net = TinyConvNet().eval()
    s = samples_of(1, (3, 8, 8), spread=200.0)
    s = SampleSet(images=s.images.float(), labels=[1], seeds=[3], ids=[0])
    small = fourier.fourier_heat_map(spec_of(net), s, [50.0, 400.0], batch_size=5,
                                     progress=False)
    large = fourier.fourier_heat_map(spec_of(net), s, [50.0, 400.0], batch_size=128,
                                     progress=False)
    np.testing.assert_allclose(small.drops, large.drops, atol=1e-5)
    np.testing.assert_array_equal(small.wrong, large.wrong)
    np.testing.assert_array_equal(small.clipped, large.clipped)
    assert small.clipped[0, 1] > 0                                   # the big norm clips


def test_bad_input_is_explained():
    model = spec_of(Linear2((3, 4, 4)), "lin")
    s = samples_of(1, (3, 4, 4))
    with pytest.raises(ValueError, match="norms"):
        fourier.fourier_heat_map(model, s, [], progress=False)
    with pytest.raises(ValueError, match="norms"):
        fourier.fourier_heat_map(model, s, [1.0, -2.0], progress=False)
    with pytest.raises(ValueError, match="stride"):
        fourier.fourier_heat_map(model, s, [1.0], stride=0, progress=False)
    with pytest.raises(ValueError, match="seed_offset"):
        fourier.fourier_heat_map(model, s, [1.0], seed_offset=-1, progress=False)
    wide = SampleSet(images=torch.zeros(1, 3, 4, 6), labels=[0], seeds=[0], ids=[0])
    with pytest.raises(ValueError, match="square"):
        fourier.fourier_heat_map(spec_of(Linear2((3, 4, 6))), wide, [1.0], progress=False)
    with pytest.raises(ValueError, match="square"):
        fourier.gradient_heat_map(torch.zeros(3, 4, 6))
    with pytest.raises(ValueError, match="stride"):
        fourier.frequency_grid(8, stride=0)
    with pytest.raises(TypeError, match="ModelSpec"):
        fourier.fourier_heat_map(Linear2((3, 4, 4)), s, [1.0], progress=False)


def test_first_conv_power_reads_the_kernels_spectrum_on_the_map_it_sees():
    """A 1x1 kernel of weight w has flat power w^2; a resize in front changes the side."""
    from torch import nn

    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
    net = nn.Sequential(nn.Upsample(size=(12, 12)), conv).double()
    grid = fourier.frequency_grid(8)
    np.testing.assert_allclose(fourier.first_conv_power(net, (3, 8, 8), grid), 4.0)
    smooth = nn.Conv2d(1, 1, 2, bias=False).double()
    with torch.no_grad():
        smooth.weight.fill_(1.0)                      # a box filter: gain 4 at 0, 0 at Nyquist
    power = fourier.first_conv_power(smooth, (1, 8, 8), grid)
    keys = {tuple(f): p for f, p in zip(grid, power)}
    assert keys[(0, 0)] == pytest.approx(16.0) and keys[(-4, 0)] == pytest.approx(0.0, abs=1e-12)
