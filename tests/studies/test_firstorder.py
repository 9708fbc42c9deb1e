"""The Taylor model of the score: gradients, slopes, curvatures and the linear regime."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from conftest import SmoothNet, spec_of
from localprops.core.cache import ResultCache
from localprops.core.engine import true_class_log_odds
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.studies import firstorder
from localprops.studies.scores import score_study


class LinearScore(nn.Module):
    """Logits ``log s, log (1 - s)`` with ``s = a + w . x``: its class-0 score is linear."""

    def __init__(self, shape, scale: float = 1e-4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = nn.Parameter(scale * torch.randn(int(np.prod(shape)), generator=g,
                                                  dtype=torch.float64), requires_grad=False)

    def forward(self, x):
        s = 0.6 + (x.double().flatten(1) - 128.0) @ self.w
        return torch.stack([torch.log(s), torch.log1p(-s)], dim=1)


def samples(n=2, shape=(3, 6, 6), label=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = 100 + 50 * torch.rand(n, *shape, generator=g, dtype=torch.float64)
    return SampleSet(images=images, labels=[label] * n, seeds=[11 + i for i in range(n)],
                     ids=list(range(n)))


def score_of(model, x, label):
    with torch.no_grad():
        lo = true_class_log_odds(model(x[None]), torch.tensor([label]))
    return torch.sigmoid(lo)[0]


def test_log_odds_matches_softmax():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), 1)[torch.arange(2), labels]
    lo = true_class_log_odds(logits, labels)
    assert torch.allclose(torch.sigmoid(lo), p, rtol=1e-12)
    # no saturation where the probability rounds to 1
    assert true_class_log_odds(torch.tensor([[60.0, 0.0]]), torch.tensor([0])) \
        == pytest.approx(60.0)


def test_gradient_matches_central_differences():
    torch.manual_seed(0)
    model = SmoothNet().double().eval()
    s = samples(n=2)
    grads = firstorder.gradients(model, s.images, s.labels, batch_size=1)
    h = 1e-4
    g = torch.Generator().manual_seed(5)
    for i in range(2):
        x = s.images[i]
        for _ in range(4):               # random coordinates and one random direction
            e = torch.zeros_like(x).flatten()
            e[torch.randint(e.numel(), (1,), generator=g)] = 1.0
            e = e.reshape(x.shape)
            fd = (score_of(model, x + h * e, 0) - score_of(model, x - h * e, 0)) / (2 * h)
            assert float((grads.score_grad[i] * e).sum()) == pytest.approx(float(fd), rel=1e-5,
                                                                           abs=1e-12)
        d = torch.randn(x.shape, generator=g, dtype=torch.float64)
        fd = (score_of(model, x + h * d, 0) - score_of(model, x - h * d, 0)) / (2 * h)
        assert float((grads.score_grad[i] * d).sum()) == pytest.approx(float(fd), rel=1e-5)


def test_gradients_do_not_depend_on_batching(tiny_net):
    s = samples(n=3, shape=(3, 12, 12))
    one = firstorder.gradients(tiny_net, s.images.float(), [0, 1, 2], batch_size=1)
    all_ = firstorder.gradients(tiny_net, s.images.float(), [0, 1, 2], batch_size=3)
    assert torch.allclose(one.log_odds_grad, all_.log_odds_grad, rtol=1e-5, atol=1e-9)
    assert torch.allclose(one.log_odds, all_.log_odds)


def test_slopes_are_dot_products_with_the_study_perturbations():
    g = torch.randn(3, 5, 5, dtype=torch.float64)
    source = RadialPerturbations((3, 5, 5), [0.5, 2.0], 7, "linf", 4)
    slopes = firstorder.directional_slopes(g, source, batch_size=3)
    nu = source.materialize(dtype=torch.float64)
    brute = np.array([[float((g * nu[k, t]).sum()) / r for t in range(7)]
                      for k, r in enumerate([0.5, 2.0])])
    np.testing.assert_allclose(slopes, brute, rtol=1e-12)


def test_curvature_matches_second_differences():
    torch.manual_seed(1)
    model = SmoothNet().double().eval()
    x = samples(n=1).images[0]
    g = torch.Generator().manual_seed(2)
    d = torch.randn(3, *x.shape, generator=g, dtype=torch.float64)
    d = d / d.flatten(1).norm(dim=1)[:, None, None, None]
    curv = firstorder.directional_curvatures(model, x, 0, d, batch_size=2)
    h = 1e-2
    for k in range(3):
        fd = (score_of(model, x + h * d[k], 0) - 2 * score_of(model, x, 0)
              + score_of(model, x - h * d[k], 0)) / h ** 2
        assert curv[k] == pytest.approx(float(fd), rel=1e-3, abs=1e-9)
    assert np.abs(curv).max() > 0


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_first_order_prediction_is_exact_for_a_linear_score(tmp_path, norm):
    shape = (3, 6, 6)
    model = LinearScore(shape).eval()
    s = samples(n=2, shape=shape)
    radii, T = [0.5, 1.0, 4.0], 6
    measured = score_study(spec_of(model, "lin"), s, radii=radii, T=T, norm=norm,
                           progress=False)
    cache = ResultCache(tmp_path)
    study = firstorder.first_order_study(spec_of(model, "lin"), s, radii=radii, T=T, norm=norm,
                                         second_radii=[4.0], T_second=4,
                                         cache=cache, progress=False)
    np.testing.assert_allclose(study.predicted_scores(1), measured.scores, rtol=0, atol=1e-10)
    np.testing.assert_allclose(study.curvatures, 0.0, atol=1e-10)
    np.testing.assert_allclose(firstorder.range_ratios(measured, study), 1.0, rtol=1e-6)
    np.testing.assert_allclose(firstorder.range_ratios(measured, study, order=2), 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(study.gradient_l2, float(model.w.norm()), rtol=1e-10)
    np.testing.assert_allclose(study.gradient_l1, float(model.w.abs().sum()), rtol=1e-10)
    np.testing.assert_allclose(firstorder.range_ratios(measured, study, second_only=True),
                               1.0, rtol=1e-6)
    mask = np.ones((2, 3), bool)
    mask[1] = False                              # sample 1 measurable nowhere: left out
    ids, ends = firstorder.departure_radii(measured, study, mask)
    np.testing.assert_array_equal(ids, [0])
    np.testing.assert_array_equal(ends, [np.inf])
    again = firstorder.first_order_study(spec_of(model, "lin"), s, radii=radii, T=T, norm=norm,
                                         second_radii=[4.0], T_second=4,
                                         cache=cache, progress=False)
    assert cache.hits == 2
    np.testing.assert_array_equal(again.slopes, study.slopes)


def test_second_order_improves_on_a_smooth_net():
    torch.manual_seed(0)
    model = SmoothNet().double().eval()
    s = samples(n=2)
    radii, T = [1.0, 30.0], 8
    measured = score_study(spec_of(model, "smooth"), s, radii=radii, T=T, progress=False)
    study = firstorder.first_order_study(spec_of(model, "smooth"), s, radii=radii, T=T, second_radii=radii,
                                         T_second=T, progress=False)
    err1 = np.abs(study.predicted_scores(1) - measured.scores).max(axis=(0, 2))
    err2 = np.abs(study.predicted_scores(2) - measured.scores).max(axis=(0, 2))
    assert (err2 < err1).all()


def test_linear_regime_end():
    ratios = np.array([[1.0, 1.5, 3.0, 1.0],      # departs at the third radius
                       [1.0, 1.0, 1.0, 1.0],      # never
                       [0.4, 1.0, 1.0, 1.0],      # at the first, but it is not valid
                       [np.nan, 1.0, 0.3, 1.0]])
    valid = np.ones_like(ratios, bool)
    valid[2, 0] = False
    valid[3, 0] = False
    end = firstorder.linear_regime_end(ratios, [1, 2, 5, 10], valid)
    np.testing.assert_array_equal(end, [5, np.inf, np.inf, 5])
    with pytest.raises(ValueError, match="ascending"):
        firstorder.linear_regime_end(ratios, [1, 5, 2, 10], valid)
    with pytest.raises(ValueError, match="do not match"):
        firstorder.linear_regime_end(ratios, [1, 2], valid)


def test_bad_input_is_explained(tiny_net):
    s = samples(n=2, shape=(3, 12, 12))
    with pytest.raises(ValueError, match="second_radii"):
        firstorder.first_order_study(spec_of(tiny_net, "t"), s, radii=[1.0], T=2, second_radii=[3.0], progress=False)
    with pytest.raises(ValueError, match="labels"):
        firstorder.gradients(tiny_net, s.images.float(), [0, 1, 2])
    with pytest.raises(ValueError, match=r"\(S, C, H, W\)"):
        firstorder.gradients(tiny_net, s.images[0], [0])
    with pytest.raises(ValueError, match="directions"):
        firstorder.directional_curvatures(tiny_net, s.images[0], 0, s.images[0])
    measured = score_study(spec_of(tiny_net, "t"), s, radii=[1.0], T=3, progress=False)
    study = firstorder.first_order_study(spec_of(tiny_net, "t"), s, radii=[1.0], T=4,
                                         progress=False)
    with pytest.raises(ValueError, match="same samples and parameters"):
        firstorder.range_ratios(measured, study)


def test_measurable_excludes_rounding_and_the_noise_floor(tiny_net):
    shape = (3, 12, 12)
    images = torch.full((2, *shape), 250.0)      # float32 step near 250 is ~1.5e-5
    s = SampleSet(images=images, labels=[0, 0], seeds=[1, 2], ids=[5, 6])
    study = score_study(spec_of(tiny_net, "t"), s, radii=[1e-4, 1.0], T=4, progress=False,
                        precise=[])
    ok = firstorder.measurable(study, s, floor=0.0)
    assert ok.shape == (2, 2)
    assert not ok[:, 0].any()                    # eps in L2 in float32: the net sees rounding
    precise = score_study(spec_of(tiny_net, "t"), s, radii=[1e-4, 1.0], T=4, progress=False)
    assert precise.float64.tolist() == [True, False]
    assert firstorder.measurable(precise, s, floor=0.0)[:, 0].all()   # float64: faithful
    spread = np.ptp(study.scores, axis=-1)[:, 1]
    np.testing.assert_array_equal(ok[:, 1], spread > 0)
    assert not firstorder.measurable(study, s, floor=1.0).any()
    other = SampleSet(images=images, labels=[0, 0], seeds=[1, 2], ids=[5, 7])
    with pytest.raises(ValueError, match="not in `samples`"):
        firstorder.measurable(study, other, floor=0.0)


class LinearLogOdds(nn.Module):
    """Two classes with logits ``0`` and ``w . (x - 128)``: the log-odds is linear."""

    def __init__(self, shape) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.w = nn.Parameter(0.01 * torch.randn(int(np.prod(shape)), generator=g,
                                                 dtype=torch.float64), requires_grad=False)

    def forward(self, x):
        z = (x.double().flatten(1) - 128.0) @ self.w
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def test_log_odds_model_is_exact_where_the_score_model_saturates():
    shape = (3, 6, 6)
    model = LinearLogOdds(shape).eval()
    s = samples(n=2, shape=shape)
    labels = [int(model(s.images[i][None]).argmax()) for i in range(2)]
    s = SampleSet(images=s.images, labels=labels, seeds=s.seeds, ids=s.ids)
    radii, T = [1.0, 50.0], 8
    measured = score_study(spec_of(model, "lo"), s, radii=radii, T=T, progress=False)
    study = firstorder.first_order_study(spec_of(model, "lo"), s, radii=radii, T=T,
                                         progress=False)
    np.testing.assert_allclose(study.predicted_scores(1, through_log_odds=True),
                               measured.scores, rtol=1e-9, atol=1e-15)
    ratio = firstorder.range_ratios(measured, study, through_log_odds=True)
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-6)
    assert np.abs(firstorder.range_ratios(measured, study)[:, 1] - 1).max() > 0.01
    with pytest.raises(ValueError, match="first order only"):
        study.predicted_scores(2, through_log_odds=True)


def test_curvature_of_a_relu_net_is_the_softmax_term(tiny_net):
    """Piecewise-linear logits z(x + t d) = z + t v near x: d'Hd = v' (Hessian of p_y in z) v."""
    x = samples(n=1, shape=(3, 12, 12)).images[0].float()
    model = tiny_net.double()
    x64 = x.double()
    d = torch.randn(2, *x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    curv = firstorder.directional_curvatures(model, x64, 1, d)
    for k in range(2):
        _, v = torch.func.jvp(lambda inp: model(inp[None])[0], (x64,), (d[k],))
        v = v.detach()
        with torch.no_grad():
            p = torch.softmax(model(x64[None])[0], 0)
        e = torch.zeros_like(p)
        e[1] = 1.0
        hessian = p[1] * (torch.outer(e - p, e - p) - (torch.diag(p) - torch.outer(p, p)))
        assert curv[k] == pytest.approx(float((v @ hessian @ v).detach()), rel=1e-8, abs=1e-15)


# ------------------------------------------- the agreement rule and the chapter's summaries
def test_within_factor_is_the_inclusive_band():
    values = np.array([0.0, 0.49, 0.5, 0.7, 1.0, 2.0, 2.01, np.inf, -1.0, np.nan])
    expected = [bool(0.5 <= v <= 2.0) for v in values]          # NaN compares False
    np.testing.assert_array_equal(firstorder.within_factor(values), expected)
    np.testing.assert_array_equal(firstorder.within_factor(values, factor=1.0), values == 1.0)
    # against a reference: measured within a factor 3 of a prediction, broadcast
    pred, meas = np.array([[1.0], [10.0]]), np.array([0.3, 3.0, 4.0, 30.0, 31.0])
    brute = [[bool(p / 3 <= m <= p * 3) for m in meas] for p in pred[:, 0]]
    np.testing.assert_array_equal(firstorder.within_factor(meas, pred, 3.0), brute)
    assert bool(firstorder.within_factor(20.0, 10.0)) and not firstorder.within_factor(21.0, 10.0)
    with pytest.raises(ValueError, match="at least 1"):
        firstorder.within_factor(values, factor=0.5)


def constructed(S=5, T=6, T2=4, radii=(1e-3, 1.0, 5.0, 20.0), second=(1.0, 20.0), seed=0):
    """An isotropy study and a first-order study that agree at small radii only."""
    from localprops.studies.firstorder import FirstOrderStudy
    from localprops.studies.scores import ScoreStudy

    rng = np.random.default_rng(seed)
    radii, second = np.asarray(radii), np.asarray(second)
    lo = rng.uniform(3, 8, S)
    slopes = rng.normal(size=(S, len(radii), T)) * 1e-4
    curv = rng.normal(size=(S, len(second), T2)) * 1e-5
    clean = 1 / (1 + np.exp(-lo))
    # measured: the first-order prediction plus a curvature and noise growing with r
    measured = (clean[:, None, None] + radii[None, :, None] * slopes
                + radii[None, :, None] ** 2 * rng.normal(size=slopes.shape) * 2e-6)
    iso = ScoreStudy("m", "isotropy", "l2", radii, np.arange(S) + 10, np.zeros(S, int),
                     measured, np.zeros(measured.shape, np.int16))
    study = FirstOrderStudy("m", "l2", radii, second, np.arange(S) + 10, np.zeros(S, int), lo,
                            slopes, curv, np.ones(S), np.ones(S))
    valid = rng.random((S, len(radii))) < 0.75
    valid[0] = False                     # a sample that is measurable nowhere
    return iso, study, valid


def brute_ratio(iso, study, s, k, order=1, t=None):
    """Predicted over measured range of one (sample, radius), from the Taylor formula."""
    r, clean = study.radii[k], 1 / (1 + np.exp(-study.clean_log_odds[s]))
    t = t or iso.scores.shape[-1]
    pred = [clean + r * study.slopes[s, k, i] for i in range(t)]
    if order == 2:
        j = list(study.second_radii).index(r)
        pred = [p + r * r / 2 * study.curvatures[s, j, i] for i, p in enumerate(pred)]
    meas = iso.scores[s, k, :t]
    return (max(pred) - min(pred)) / (meas.max() - meas.min())


def test_linear_regime_against_a_loop():
    from localprops.studies import beyond

    iso, study, valid = constructed(S=7)
    factor = 1.5
    got = beyond.linear_regime(iso, study, valid, factor=factor, at=1.0)
    seen = [s for s in range(7) if valid[s].any()]
    np.testing.assert_array_equal(got.ids, study.ids[seen])
    end = []
    for s in seen:
        bad = [r for k, r in enumerate(study.radii) if valid[s, k]
               and not 1 / factor <= brute_ratio(iso, study, s, k) <= factor]
        end.append(bad[0] if bad else np.inf)
    np.testing.assert_array_equal(got.end, end)
    assert got.median_end == (float(np.median(end)) if end else np.nan)
    assert got.smallest_end == min(end) and got.never_departs == sum(np.isinf(end))
    k = 1
    errors = [abs(brute_ratio(iso, study, s, k) - 1) for s in range(7) if valid[s, k]]
    assert got.range_error == pytest.approx(np.median(errors), rel=1e-9)
    assert got.end_log_odds.shape == got.end.shape and got.at == 1.0


def test_median_direction_correlation_against_corrcoef():
    """The number behind the README's "per-direction correlation 0.88 to 1.00"."""
    from localprops.studies import beyond

    iso, study, valid = constructed(S=6, T=9)
    for at, k in ((1.0, 1), (20.0, 3)):
        per_sample = [np.corrcoef(study.predicted_scores(1)[s, k], iso.scores[s, k])[0, 1]
                      for s in range(6) if valid[s, k]]
        assert beyond.median_direction_correlation(iso, study, valid, at) == pytest.approx(
            np.median(per_sample), rel=1e-12)
    # closed form: a measured score affine in the prediction correlates +-1
    predicted = study.predicted_scores(1)
    for sign in (1.0, -1.0):
        iso.scores[:] = 0.5 + sign * 3.0 * (predicted - 0.9)
        assert beyond.median_direction_correlation(iso, study, valid, 1.0) == pytest.approx(
            sign, abs=1e-12)
    # a radius not in the grid, or nothing measurable there: NaN
    assert np.isnan(beyond.median_direction_correlation(iso, study, valid, 2.0))
    assert np.isnan(beyond.median_direction_correlation(iso, study, np.zeros_like(valid), 1.0))
    assert np.isnan(beyond.median_range_error(iso, study, np.zeros_like(valid), 1.0))


def test_direction_correlation_rows():
    from localprops.studies import beyond

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(3, 4, 10)), rng.normal(size=(3, 4, 10))
    got = beyond.direction_correlation(a, b)
    for index in np.ndindex(3, 4):
        assert got[index] == pytest.approx(np.corrcoef(a[index], b[index])[0, 1], rel=1e-12)
    assert np.isnan(beyond.direction_correlation(np.ones((1, 5)), b[0, :1, :5]))[0]
    with pytest.raises(ValueError, match="differ"):
        beyond.direction_correlation(a, b[..., :3])


def test_order_comparison_against_a_loop():
    from localprops.studies import beyond

    iso, study, valid = constructed(S=6)
    valid[:, 3] = False                                     # r = 20: nothing measurable
    got = beyond.order_comparison(iso, study, valid)
    np.testing.assert_array_equal(got.radii, [1.0, 20.0])
    np.testing.assert_array_equal(got.samples, [valid[:, 1].sum(), 0])
    rows = [s for s in range(6) if valid[s, 1]]             # r = 1 is radius 1 of the grid
    first = [abs(brute_ratio(iso, study, s, 1, 1, t=4) - 1) for s in rows]
    second = [abs(brute_ratio(iso, study, s, 1, 2, t=4) - 1) for s in rows]
    assert got.first[0] == pytest.approx(np.median(first), rel=1e-9)
    assert got.second[0] == pytest.approx(np.median(second), rel=1e-9)
    assert np.isnan(got.first[1]) and np.isnan(got.second[1])
    # the vectorised median is the per-radius median, bit for bit
    ok = valid[:, study.second_index]
    ratio = np.where(ok, firstorder.range_ratios(iso, study, second_only=True), np.nan)
    assert got.first[0] == np.nanmedian(np.abs(ratio[:, 0] - 1))
    without = dataclasses.replace(study, second_radii=np.array([]),
                                  curvatures=np.zeros((6, 0, 0)))
    none = beyond.order_comparison(iso, without, valid)
    assert none.first.shape == none.samples.shape == (0,)


def test_moment_comparison_against_a_loop():
    from localprops.studies import beyond

    iso, study, valid = constructed(S=6)
    valid[:, 1] = False                                     # r = 1: nothing measurable
    got = beyond.moment_comparison(iso, study, valid)
    np.testing.assert_array_equal(got.samples, [0, valid[:, 3].sum()])
    assert np.isnan([got.spread[0], got.shift_measured[0]]).all()
    j, k, t2 = 1, 3, 4
    clean = 1 / (1 + np.exp(-study.clean_log_odds))
    spreads, shifts = [], {"measured": [], "first": [], "second": []}
    for s in range(6):
        if not valid[s, k]:
            continue
        r = study.radii[k]
        first = [clean[s] + r * study.slopes[s, k, i] for i in range(t2)]
        second = [f + r * r / 2 * study.curvatures[s, j, i] for i, f in enumerate(first)]
        meas = list(iso.scores[s, k, :t2])
        spreads.append(np.std(first) / np.std(meas))
        for name, values in (("measured", meas), ("first", first), ("second", second)):
            shifts[name].append(sum(values) / t2 - clean[s])
    assert got.spread[j] == pytest.approx(np.median(spreads), rel=1e-9)
    for name, values in shifts.items():
        assert getattr(got, f"shift_{name}")[j] == pytest.approx(np.median(values), rel=1e-6,
                                                                 abs=1e-15)
    # per-sample errors in units of the measured spread, then the median
    rows_k = [s for s in range(6) if valid[s, k]]
    sds = [np.std(iso.scores[s, k, :t2]) for s in rows_k]
    for name in ("first", "second"):
        expected = [abs(m - p) / sd for m, p, sd in zip(shifts["measured"], shifts[name], sds)]
        assert getattr(got, f"error_{name}")[j] == pytest.approx(np.median(expected),
                                                                 rel=1e-6, abs=1e-12)
    # without floors every shift counts as resolved; the floor is NaN
    assert got.shift_resolved.all() and np.isnan(got.shift_floor).all()
    # floors: the median over the kept samples (at least the clean score's float64
    # spacing); a shift below its floor is not resolved, one above it is
    rows = valid[:, k]
    high = np.full(valid.shape, 10 * abs(got.shift_measured[j]) + 1e-3)
    above = beyond.moment_comparison(iso, study, valid, floors=high)
    assert above.shift_floor[j] == pytest.approx(high[rows, k].max())
    assert not above.shift_resolved[j]
    low = beyond.moment_comparison(iso, study, valid, floors=np.zeros(valid.shape))
    assert low.shift_floor[j] == np.median(np.spacing(clean[rows]))
    assert low.shift_resolved[j] == (abs(got.shift_measured[j]) > low.shift_floor[j])
    # a sample with no measured spread (0 / 0) is left out of the spread's median
    flat = dataclasses.replace(iso, scores=iso.scores.copy())
    first_kept = int(np.flatnonzero(rows)[0])
    flat.scores[first_kept, k, :t2] = flat.scores[first_kept, k, 0]
    kept_spreads = [v for s, v in zip(np.flatnonzero(rows), spreads) if s != first_kept]
    assert beyond.moment_comparison(flat, study, valid).spread[j] == pytest.approx(
        np.median(kept_spreads), rel=1e-9)
    # one direction per radius has no spread: nothing to report
    one = dataclasses.replace(study, curvatures=study.curvatures[..., :1])
    assert not beyond.moment_comparison(iso, one, valid).samples.any()


def test_median_or_nan():
    from localprops.studies import beyond

    assert beyond.median_or_nan([4.0, 1.0, 2.0, np.inf]) == 3.0
    assert beyond.median_or_nan([1.0, np.inf, np.inf]) == np.inf
    assert np.isnan(beyond.median_or_nan(np.array([])))
