"""The Taylor model of the score: gradients, slopes, curvatures and the linear regime."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SmoothNet
from localprops.core.cache import ResultCache
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.studies import firstorder
from localprops.studies.scores import score_study
from torch import nn


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
        lo = firstorder.true_class_log_odds(model(x[None]), torch.tensor([label]))
    return torch.sigmoid(lo)[0]


def test_log_odds_matches_softmax():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), 1)[torch.arange(2), labels]
    lo = firstorder.true_class_log_odds(logits, labels)
    assert torch.allclose(torch.sigmoid(lo), p, rtol=1e-12)
    # no saturation where the probability rounds to 1
    assert firstorder.true_class_log_odds(torch.tensor([[60.0, 0.0]]), torch.tensor([0])) \
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
    measured = score_study(model, s, radii=radii, T=T, norm=norm, model_name="lin",
                           progress=False)
    cache = ResultCache(tmp_path)
    study = firstorder.first_order_study(model, s, radii=radii, T=T, norm=norm,
                                         second_radii=[4.0], T_second=4, model_name="lin",
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
    again = firstorder.first_order_study(model, s, radii=radii, T=T, norm=norm,
                                         second_radii=[4.0], T_second=4, model_name="lin",
                                         cache=cache, progress=False)
    assert cache.hits == 2
    np.testing.assert_array_equal(again.slopes, study.slopes)


def test_second_order_improves_on_a_smooth_net():
    torch.manual_seed(0)
    model = SmoothNet().double().eval()
    s = samples(n=2)
    radii, T = [1.0, 30.0], 8
    measured = score_study(model, s, radii=radii, T=T, model_name="smooth", progress=False)
    study = firstorder.first_order_study(model, s, radii=radii, T=T, second_radii=radii,
                                         T_second=T, model_name="smooth", progress=False)
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
        firstorder.first_order_study(tiny_net, s, radii=[1.0], T=2, second_radii=[3.0],
                                     model_name="t", progress=False)
    with pytest.raises(ValueError, match="labels"):
        firstorder.gradients(tiny_net, s.images.float(), [0, 1, 2])
    with pytest.raises(ValueError, match=r"\(S, C, H, W\)"):
        firstorder.gradients(tiny_net, s.images[0], [0])
    with pytest.raises(ValueError, match="directions"):
        firstorder.directional_curvatures(tiny_net, s.images[0], 0, s.images[0])
    measured = score_study(tiny_net, s, radii=[1.0], T=3, model_name="t", progress=False)
    study = firstorder.first_order_study(tiny_net, s, radii=[1.0], T=4, model_name="t",
                                         progress=False)
    with pytest.raises(ValueError, match="same samples and parameters"):
        firstorder.range_ratios(measured, study)


def test_measurable_excludes_rounding_and_the_noise_floor(tiny_net):
    shape = (3, 12, 12)
    images = torch.full((2, *shape), 250.0)      # float32 step near 250 is ~1.5e-5
    s = SampleSet(images=images, labels=[0, 0], seeds=[1, 2], ids=[5, 6])
    study = score_study(tiny_net, s, radii=[1e-4, 1.0], T=4, model_name="t", progress=False)
    ok = firstorder.measurable(study, s, floor=0.0)
    assert ok.shape == (2, 2)
    assert not ok[:, 0].any()                    # eps in L2: the network sees rounding
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
    measured = score_study(model, s, radii=radii, T=T, model_name="lo", progress=False)
    study = firstorder.first_order_study(model, s, radii=radii, T=T, model_name="lo",
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
