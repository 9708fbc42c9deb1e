"""Error rates in Gaussian noise and half-space distances: closed forms and predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from conftest import SmoothNet, spec_of
from localprops.core.cache import ResultCache
from localprops.models.samples import SampleSet
from localprops.studies import attacks
from localprops.studies.halfspace import (
    NoiseErrorStudy,
    gaussian_rows,
    halfspace_distance,
    noise_error_study,
    noise_errors,
    sigma_distances,
)

SHAPE = (3, 4, 4)                     # D = 48


def unit_vector(seed: int, d: int = 48) -> torch.Tensor:
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return w / w.norm()


def image(seed: int = 0, shape=SHAPE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 80 + 100 * torch.rand(shape, generator=g, dtype=torch.float64)


def binomial_close(k: np.ndarray, n: int, p: np.ndarray) -> bool:
    """Counts within 4 binomial standard deviations (plus one) of ``n p``."""
    p = np.asarray(p, dtype=np.float64)
    return bool((np.abs(k - n * p) <= 4 * np.sqrt(n * p * (1 - p)) + 1).all())


class Linear2(nn.Module):
    """Two classes, logits ``(0, w . x + b)``: the error set of class 1 is a half-space."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.double())
        self.b = nn.Parameter(torch.tensor(float(b), dtype=torch.float64))

    def forward(self, x):
        lo = x.double().flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(lo), lo], dim=1)


class Around(nn.Module):
    """Two classes around ``x0``; class 0 (correct at ``x0``) unless ``s(x) > 0``.

    With ``t = u . (x - x0)`` (``u`` a unit vector, grey levels):
    ``"outside"``: errors where ``t >= a`` or ``t <= -b`` (the correct set is a slab);
    ``"inside"``: errors where ``a <= t <= a + b`` (a thin slab of errors);
    ``"ball"``: errors where ``||x - x0|| >= a``.
    The nearest error is at distance ``a`` in all three.
    """

    def __init__(self, x0: torch.Tensor, u: torch.Tensor, kind: str, a: float,
                 b: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("x0", x0.double().flatten())
        self.register_buffer("u", u.double())
        self.kind, self.a, self.b = kind, a, b

    def forward(self, x):
        v = x.double().flatten(1) - self.x0
        t = v @ self.u
        if self.kind == "outside":
            s = torch.maximum(t - self.a, -self.b - t)
        elif self.kind == "inside":
            s = torch.minimum(t - self.a, self.a + self.b - t)
        else:
            s = v.norm(dim=1) - self.a
        return torch.stack([torch.zeros_like(s), s], dim=1)


# ---------------------------------------------------------------- random draws

def test_gaussian_rows_are_standard_normal():
    z = gaussian_rows(3, torch.arange(400), 101)          # odd n: the last pair is cut
    assert z.shape == (400, 101) and z.dtype == torch.float64
    values = z.flatten().numpy()
    n = len(values)
    assert abs(values.mean()) < 5 / np.sqrt(n)
    assert abs(values.var() - 1) < 5 * np.sqrt(2 / n)
    assert stats.kstest(values, "norm").pvalue > 1e-3
    # the cosine and sine of one pair are independent, and so are the rows
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.2
    assert abs(np.corrcoef(z[:-1, 0], z[1:, 0])[0, 1]) < 0.2
    assert abs(stats.kurtosis(values)) < 0.1


def test_gaussian_rows_do_not_depend_on_chunks_or_length():
    rows = torch.arange(50, 90)
    whole = gaussian_rows(7, rows, 9, lanes=(5, 6))
    split = torch.cat([gaussian_rows(7, rows[:13], 9, lanes=(5, 6)),
                       gaussian_rows(7, rows[13:], 9, lanes=(5, 6))])
    torch.testing.assert_close(split, whole, rtol=0, atol=0)
    torch.testing.assert_close(gaussian_rows(7, rows, 4, lanes=(5, 6)), whole[:, :4],
                               rtol=0, atol=0)
    torch.testing.assert_close(gaussian_rows(7, rows, 9, lanes=(5, 6), compiled=False),
                               whole, rtol=0, atol=0)
    assert not torch.equal(gaussian_rows(7, rows, 9, lanes=(5, 7)), whole)
    assert not torch.equal(gaussian_rows(8, rows, 9, lanes=(5, 6)), whole)


# ---------------------------------------------------------------- linear classifier

def linear_samples(distances, seed=0):
    """Images at signed log-odds ``d`` of a unit-norm linear model: distance exactly ``d``."""
    w = unit_vector(seed)
    b = -float(w @ image(99).flatten())
    x = torch.stack([image(i).flatten() for i in range(len(distances))])
    x = x + (torch.tensor(distances, dtype=torch.float64) - (x @ w + b))[:, None] * w
    samples = SampleSet(images=x.reshape(-1, *SHAPE), labels=[1] * len(distances),
                        seeds=[11 + i for i in range(len(distances))],
                        ids=list(range(len(distances))))
    return Linear2(w, b).eval(), samples


def test_linear_error_rates_follow_the_half_space_law():
    distances, sigmas, n = [6.0, 9.0, 12.0, 15.0], [4.0, 8.0, 16.0], 400
    model, samples = linear_samples(distances)
    study = noise_error_study(spec_of(model, "linear"), samples, sigmas, n_draws=n,
                              progress=False)
    assert study.errors.shape == (4, 3) and study.errors.dtype == np.int64
    expected = stats.norm.cdf(-np.asarray(distances)[:, None] / np.asarray(sigmas))
    assert binomial_close(study.errors, n, expected)
    d_hat, low, high, usable = study.distances(confidence=0.999)
    assert usable.all()
    assert ((low <= distances) & (np.asarray(distances) <= high)).all()
    np.testing.assert_allclose(d_hat, distances, rtol=0.15)
    # the adversarial (L2) radius of a linear binary model is the same d
    radius = attacks.deepfool(model, samples.images, [1] * 4, norm="l2").radius
    np.testing.assert_allclose(radius, distances, rtol=1e-4)
    summary = study.compare(radius, n_boot=200)
    assert summary["compared"] == summary["usable"] == 4
    assert summary["median_ratio"] == pytest.approx(1.0, abs=0.15)
    assert summary["ratio_interval"][0] <= summary["median_ratio"] <= summary["ratio_interval"][1]
    assert summary["spearman"] > 0


def test_chunk_size_does_not_change_counts():
    torch.manual_seed(0)
    net = SmoothNet(classes=5).eval()                   # float32, sensitive to noise
    x = image(1, (3, 6, 6)).float()
    with torch.no_grad():
        y = int(net(x[None]).argmax())
    counts = [noise_errors(net, x, y, [20.0, 60.0], n_draws=30, seed=5, batch_size=size)
              for size in (7, 60, None)]
    assert 0 < counts[0].sum() < 60
    np.testing.assert_array_equal(counts[0], counts[1])
    np.testing.assert_array_equal(counts[0], counts[2])


def test_clip_keeps_the_noisy_images_in_range():
    class OutOfRange(nn.Module):          # class 1 for any value outside [0, 255]
        def forward(self, x):
            out = ((x < 0) | (x > 255)).flatten(1).any(dim=1).double()
            return torch.stack([torch.zeros_like(out), out], dim=1)

    x = torch.full(SHAPE, 250.0, dtype=torch.float64)
    free = noise_errors(OutOfRange(), x, 0, [10.0], n_draws=20, seed=1)
    clipped = noise_errors(OutOfRange(), x, 0, [10.0], n_draws=20, seed=1, clip=True)
    assert free.tolist() == [20] and clipped.tolist() == [0]


# ---------------------------------------------------------------- departures

@pytest.mark.parametrize("kind, b, law, direction", [
    # two error half-spaces: noise finds both, more errors than one -> d_hat < a
    ("outside", 12.0, lambda a, b, s: stats.norm.cdf(-a / s) + stats.norm.cdf(-b / s), -1),
    # a thin error slab: noise passes through it, fewer errors -> d_hat > a
    ("inside", 5.0, lambda a, b, s: stats.norm.cdf(-a / s) - stats.norm.cdf(-(a + b) / s), +1),
])
def test_slabs_depart_from_the_adversarial_distance_as_predicted(kind, b, law, direction):
    a, sigmas, n = 10.0, np.array([5.0, 10.0, 20.0]), 400
    x0 = image(3)
    model = Around(x0, unit_vector(4), kind, a, b).eval()
    errors = noise_errors(model, x0, 0, sigmas, n_draws=n, seed=9)
    assert binomial_close(errors, n, law(a, b, sigmas))
    radius = attacks.deepfool(model, x0[None], [0], norm="l2").radius[0]
    assert radius == pytest.approx(a, rel=1e-4)
    d_hat, (low, high), usable = halfspace_distance(errors, n, sigmas)
    assert usable
    assert (high < radius) if direction < 0 else (low > radius)
    if kind == "outside":     # the second plane weighs more as sigma grows
        d_sigma, _, _ = sigma_distances(errors, n, sigmas)
        assert d_sigma[0] > d_sigma[1] > d_sigma[2]


def test_a_ball_of_correct_points_looks_much_closer_in_noise():
    """Errors outside a ball of radius R: noise of norm ~ sigma sqrt(D) reaches them at
    sigma ~ R / sqrt(D), where the half-space reading gives d ~ sigma, far below R."""
    R, sigmas, n = 30.0, np.array([3.5, 4.0, 4.5]), 300
    x0 = image(5)
    model = Around(x0, unit_vector(6), "ball", R).eval()
    errors = noise_errors(model, x0, 0, sigmas, n_draws=n, seed=2)
    assert binomial_close(errors, n, stats.chi2.sf(R**2 / sigmas**2, df=48))
    d_hat, (low, high), usable = halfspace_distance(errors, n, sigmas)
    assert usable and high < R / 4


# ---------------------------------------------------------------- estimation

def test_mle_is_the_closed_form_for_one_sigma_and_the_interval_a_likelihood_ratio():
    k, n, sigma = 37, 200, 5.0
    d_hat, (low, high), usable = halfspace_distance([k], n, [sigma])
    assert usable
    assert d_hat == pytest.approx(-sigma * stats.norm.ppf(k / n), rel=1e-9)
    top = stats.binom.logpmf(k, n, k / n)
    for end in (low, high):
        drop = top - stats.binom.logpmf(k, n, stats.norm.cdf(-end / sigma))
        assert drop == pytest.approx(stats.chi2.ppf(0.95, 1) / 2, rel=1e-6)
    assert low < d_hat < high
    direct, dlow, dhigh = sigma_distances([k], n, [sigma])
    assert direct[0] == pytest.approx(d_hat, rel=1e-9) and dlow[0] < d_hat < dhigh[0]


def test_mle_recovers_d_from_exact_rates_at_many_sigmas():
    d, sigmas, n = 7.0, np.array([2.0, 4.0, 8.0, 16.0]), 10**6
    errors = np.round(n * stats.norm.cdf(-d / sigmas))
    d_hat, (low, high), usable = halfspace_distance(errors, n, sigmas)
    assert usable and d_hat == pytest.approx(d, rel=1e-3) and low < d < high
    assert high - low < 0.05


def test_no_errors_anywhere_gives_only_a_lower_bound():
    n, sigmas = 100, np.array([1.0, 2.0, 4.0])
    d_hat, (low, high), usable = halfspace_distance([0, 0, 0], n, sigmas)
    assert not usable and np.isnan(d_hat) and high == np.inf
    # at d = low, seeing no error at all has probability 5%
    assert np.prod(stats.norm.cdf(low / sigmas) ** n) == pytest.approx(0.05, rel=1e-6)
    assert low > 0
    d_hat, (low, high), usable = halfspace_distance([n, n, n], n, sigmas)
    assert not usable and np.isnan(d_hat) and low == -np.inf
    assert np.prod(stats.norm.cdf(-high / sigmas) ** n) == pytest.approx(0.05, rel=1e-6)
    d, dlow, dhigh = sigma_distances([0, n, 3], n, sigmas)
    assert d[0] == np.inf and dhigh[0] == np.inf and 0 < dlow[0]
    assert d[1] == -np.inf and dlow[1] == -np.inf and np.isfinite(dhigh[1])


def test_compare_counts_unusable_samples():
    n, sigmas = 1000, np.array([4.0, 8.0])
    d = np.array([3.0, 5.0, 8.0, 12.0, 40.0])
    errors = np.round(n * stats.norm.cdf(-d[:, None] / sigmas)).astype(np.int64)
    assert (errors[-1] == 0).all()
    study = NoiseErrorStudy("m", sigmas, n, False, np.arange(5), np.zeros(5, int), errors)
    radius = np.array([3.0, 5.0, 8.0, np.inf, 40.0])        # no attack point for sample 3
    out = study.compare(2 * radius, n_boot=200)
    assert (out["samples"], out["usable"], out["lower_bounded"], out["compared"]) == (5, 4, 1, 3)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["median_ratio"] == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError, match="one radius per sample"):
        study.compare(radius[:4])


# ---------------------------------------------------------------- study plumbing

def test_study_is_cached_per_sample(tiny_net, tmp_path):
    x = torch.stack([image(i, (3, 12, 12)) for i in range(2)]).float()
    with torch.no_grad():
        y = tiny_net(x).argmax(dim=1).tolist()
    samples = SampleSet(images=x, labels=y, seeds=[3, 4], ids=[10, 11])
    cache = ResultCache(tmp_path)
    spec = spec_of(tiny_net, "t")
    first = noise_error_study(spec, samples, [30.0, 90.0], n_draws=12, cache=cache,
                              progress=False)
    assert (cache.hits, cache.misses) == (0, 2)
    again = noise_error_study(spec, samples, [30.0, 90.0], n_draws=12, cache=cache,
                              progress=False)
    assert (cache.hits, cache.misses) == (2, 2)
    np.testing.assert_array_equal(again.errors, first.errors)
    np.testing.assert_array_equal(again.ids, [10, 11])
    noise_error_study(spec, samples, [30.0, 90.0], n_draws=12, clip=True, cache=cache,
                      progress=False)
    assert cache.misses == 4


def test_bad_input_is_explained(tiny_net):
    samples = SampleSet(images=image(0, (3, 12, 12)).float()[None], labels=[0], seeds=[1],
                        ids=[0])
    spec = spec_of(tiny_net, "t")
    with pytest.raises(ValueError, match="sigmas is empty"):
        noise_error_study(spec, samples, [], progress=False)
    with pytest.raises(ValueError, match="positive finite"):
        noise_error_study(spec, samples, [1.0, 0.0], progress=False)
    with pytest.raises(ValueError, match="n_draws must be at least 1"):
        noise_error_study(spec, samples, [1.0], n_draws=0, progress=False)
    with pytest.raises(ValueError, match="n_draws must be an integer"):
        noise_error_study(spec, samples, [1.0], n_draws=2.5, progress=False)
    with pytest.raises(TypeError, match="ModelSpec"):
        noise_error_study(tiny_net, samples, [1.0], progress=False)
    with pytest.raises(ValueError, match="one count per sigma"):
        halfspace_distance([1, 2], 10, [1.0])
    with pytest.raises(ValueError, match="integers in"):
        halfspace_distance([11], 10, [1.0])
    with pytest.raises(ValueError, match="positive finite"):
        halfspace_distance([1], 10, [-1.0])


def test_counts_are_the_same_on_cuda(cuda_device):
    model, samples = linear_samples([6.0, 9.0])
    cpu = noise_errors(model, samples.images[0], 1, [4.0, 8.0], n_draws=50, seed=3)
    gpu = noise_errors(model.to(cuda_device), samples.images[0], 1, [4.0, 8.0], n_draws=50,
                       seed=3)
    np.testing.assert_array_equal(gpu, cpu)
