"""Adversarial against random directions: closed forms, an independent library, invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import Affine, SmoothNet, spec_of
from localprops.core.cache import ResultCache
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.studies import attacks
from localprops.studies.scores import score_study


def images(n=3, shape=(3, 8, 8), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (80 + 100 * torch.rand(n, *shape, generator=g, dtype=torch.float64)).to(dtype)


def confident(model, x):
    """The classes the model predicts (the 'true' labels of these tests)."""
    with torch.no_grad():
        return model(x).argmax(dim=1)


def closed_form_distance(model, x, y, norm):
    """Distance to the nearest decision hyperplane of an affine model."""
    w = model.weight.detach() / 255.0
    with torch.no_grad():
        z = model(x[None])[0]
    f = (z - z[y]).numpy()
    diff = (w - w[y]).numpy()
    dual = np.linalg.norm(diff, ord=2 if norm == "l2" else 1, axis=1)
    dist = np.abs(f) / np.where(dual > 0, dual, np.inf)
    dist[y] = np.inf
    return dist.min()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_finds_the_nearest_hyperplane(norm):
    shape = (3, 8, 8)
    model = Affine(shape, classes=6).eval()
    x = images(4, shape)
    y = confident(model, x)
    out = attacks.deepfool(model, x, y, norm=norm, candidates=5, refine_steps=30)
    assert out.found.all()
    expected = [closed_form_distance(model, x[i], int(y[i]), norm) for i in range(4)]
    np.testing.assert_allclose(out.radius, expected, rtol=1e-4)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_result_is_misclassified_and_of_the_reported_norm(tiny_net, norm):
    x = images(4, (3, 12, 12), dtype=torch.float32)
    y = confident(tiny_net, x)
    out = attacks.deepfool(tiny_net, x, y, norm=norm)
    assert out.found.all()
    with torch.no_grad():
        pred = tiny_net(x + out.perturbations).argmax(dim=1)
    assert (pred != y).all()
    np.testing.assert_array_equal(pred.numpy(), out.predictions)
    flat = out.perturbations.double().flatten(1)
    size = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)
    np.testing.assert_allclose(size.numpy(), out.radius, rtol=1e-6)
    # the bisection keeps the boundary within a small step: a bit less is correct again
    with torch.no_grad():
        back = tiny_net(x + 0.99 * out.perturbations).argmax(dim=1)
    assert (back == y).float().mean() >= 0.75


def test_deepfool_agrees_with_the_adversarial_robustness_toolbox():
    """Cross-check against ART's DeepFool (L2, same overshoot, every class)."""
    art_classifiers = pytest.importorskip("art.estimators.classification")
    art_evasion = pytest.importorskip("art.attacks.evasion")
    torch.manual_seed(0)
    net = SmoothNet(classes=5).eval()
    x = images(6, (3, 6, 6), dtype=torch.float32)
    y = confident(net, x)
    classifier = art_classifiers.PyTorchClassifier(
        model=net, loss=nn.CrossEntropyLoss(), input_shape=(3, 6, 6), nb_classes=5,
        clip_values=None, device_type="cpu")
    art_adv = art_evasion.DeepFool(classifier, max_iter=50, epsilon=0.02, nb_grads=5,
                                   batch_size=6, verbose=False).generate(x.numpy())
    art_radius = np.linalg.norm((art_adv - x.numpy()).reshape(6, -1), axis=1)
    with torch.no_grad():
        art_wrong = net(torch.as_tensor(art_adv)).argmax(dim=1) != y
    ours = attacks.deepfool(net, x, y, norm="l2", candidates=4)
    unrefined = attacks.deepfool(net, x, y, norm="l2", candidates=4, refine_steps=0)
    assert ours.found.all() and art_wrong.all()
    # the same algorithm (ours adds DeepFool's 1e-4 to each step): ART's sizes
    np.testing.assert_allclose(unrefined.radius, art_radius, rtol=0.02)
    # the bisection only shortens them, by about the overshoot
    assert (ours.radius <= unrefined.radius * (1 + 1e-6)).all()
    assert (ours.radius >= unrefined.radius / 1.1).all()


def test_binary_linear_model_first_order_step_is_optimal():
    """For a binary affine model the log-odds is linear: FGSM and PGD reach its minimum."""
    shape = (3, 6, 6)
    model = Affine(shape, classes=2, seed=4).eval()
    x = images(2, shape)
    y = confident(model, x)
    w = ((model.weight[1] - model.weight[0]) / 255.0).detach()
    for norm, dual in (("l2", float(w.norm())), ("linf", float(w.abs().sum()))):
        radii = np.array([0.5, 3.0])
        rows, labels = x.repeat_interleave(2, 0), y.repeat_interleave(2)
        first = attacks.pgd_attack(model, rows, labels, np.tile(radii, 2), norm=norm, steps=0)
        pgd = attacks.pgd_attack(model, rows, labels, np.tile(radii, 2), norm=norm, steps=5)
        with torch.no_grad():
            z = model(rows)
        lo = (z[torch.arange(4), labels] - z[torch.arange(4), 1 - labels]).numpy()
        expected = 1 / (1 + np.exp(-(lo - np.tile(radii, 2) * dual)))
        np.testing.assert_allclose(first.scores, expected, rtol=1e-9)
        np.testing.assert_allclose(pgd.scores, expected, rtol=1e-9)
        np.testing.assert_allclose(first.norms, np.tile(radii, 2), rtol=1e-9)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_never_above_first_order_nor_random(tiny_net, norm):
    x = images(3, (3, 12, 12), dtype=torch.float32)
    y = confident(tiny_net, x)
    radii = [5.0, 40.0] if norm == "l2" else [1.0, 8.0]
    rows, labels = x.repeat_interleave(2, 0), y.repeat_interleave(2)
    first = attacks.pgd_attack(tiny_net, rows, labels, radii * 3, norm=norm, steps=0)
    pgd = attacks.pgd_attack(tiny_net, rows, labels, radii * 3, norm=norm, steps=8,
                             batch_size=4)
    assert (pgd.scores <= first.scores + 1e-12).all()
    np.testing.assert_array_equal(pgd.first_log_odds, first.log_odds)
    # norms: on the sphere in L2, inside the box in L-infinity
    if norm == "l2":
        np.testing.assert_allclose(pgd.norms, radii * 3, rtol=1e-5)
    else:
        assert (pgd.norms <= np.array(radii * 3) * (1 + 1e-6)).all()
    s = SampleSet(images=x, labels=y.tolist(), seeds=[1, 2, 3], ids=[0, 1, 2])
    random = score_study(spec_of(tiny_net, "t"), s, radii=radii, T=16, norm=norm,
                         progress=False)
    assert (pgd.scores.reshape(3, 2) <= random.scores.min(axis=-1) + 1e-9).all()


def test_random_flip_radius_on_a_binary_linear_model():
    """Along ray d the log-odds is lo + r w.d: it flips at r = lo / (-w.d)."""
    shape = (3, 6, 6)
    model = Affine(shape, classes=2, seed=1).eval()
    x = images(1, shape)[0]
    y = int(confident(model, x[None])[0])
    w = ((model.weight[1 - y] - model.weight[y]) / 255.0).detach()
    with torch.no_grad():
        z = model(x[None])[0]
    lo = float(z[y] - z[1 - y])
    grid, T = [1.0, 2.0], 20
    radius, censored = attacks.random_flip_radius(model, x, y, seed=7, norm="l2", T=T,
                                                  radii=grid, cap=1e6, bisect_steps=40)
    assert not censored
    # the bracket the search stopped at, and its misclassified rays
    for r in attacks.search_radii(grid, 1e6):
        nu = RadialPerturbations(shape, [r], T, "l2", 7).materialize(dtype=torch.float64)[0]
        slope = (nu.flatten(1) @ w) / r            # how fast the log-odds falls along d
        flips = lo / slope
        hit = (slope > 0) & (flips <= r)
        if hit.any():                              # its flipped rays, bisected on [0, r]
            expected = float(flips[hit].min())
            break
    assert radius == pytest.approx(expected, rel=1e-9)
    adversarial = attacks.deepfool(model, x[None], [y], norm="l2").radius[0]
    assert adversarial == pytest.approx(lo / float(w.norm()), rel=1e-4)
    assert adversarial <= radius


def test_random_search_reuses_grid_predictions_and_censors(tiny_net):
    x = images(1, (3, 12, 12), dtype=torch.float32)[0]
    y = int(confident(tiny_net, x[None])[0])
    s = SampleSet(images=x[None], labels=[y], seeds=[5], ids=[0])
    study = score_study(spec_of(tiny_net, "t"), s, radii=[10.0, 100.0], T=8, progress=False)
    fresh = attacks.random_flip_radius(tiny_net, x, y, seed=5, norm="l2", T=8,
                                       radii=[10.0, 100.0], cap=1e5)
    reused = attacks.random_flip_radius(tiny_net, x, y, seed=5, norm="l2", T=8,
                                        radii=[10.0, 100.0], cap=1e5,
                                        grid_predictions=study.predictions[0])
    assert fresh == reused
    assert attacks.random_flip_radius(tiny_net, x, y, seed=5, norm="l2", T=8, radii=[1e-3],
                                      cap=2e-3) == (2e-3, True)


def test_search_radii():
    assert attacks.search_radii([1, 5], 30) == [1.0, 5.0, 10.0, 20.0, 30.0]
    assert attacks.search_radii([1, 5], 4) == [1.0, 2.0, 4.0]     # never beyond the cap
    assert attacks.search_radii([5, 10], 3) == [3.0]
    assert attacks.default_cap((3, 4, 4), "linf") == 255.0
    assert attacks.default_cap((3, 4, 4), "l2") == pytest.approx(255 * np.sqrt(48))


def test_attack_study_end_to_end(tiny_net, tmp_path):
    x = images(2, (3, 12, 12), dtype=torch.float32)
    y = confident(tiny_net, x).tolist()
    s = SampleSet(images=x, labels=y, seeds=[3, 4], ids=[10, 11])
    cache = ResultCache(tmp_path)
    for norm in ("l2", "linf"):
        iso = score_study(spec_of(tiny_net, "t"), s, radii=[1.0, 10.0], T=6, norm=norm,
                          progress=False)
        study = attacks.attack_study(spec_of(tiny_net, "t"), s, iso, cache=cache,
                                     progress=False)
        assert study.pgd.shape == (2, 2) and study.dimension == 3 * 12 * 12
        assert (study.pgd <= study.first_order + 1e-12).all()
        assert np.isfinite(study.adversarial_radius).all()
        assert (study.adversarial_radius <= study.random_radius).all()
        assert (study.ratio >= 1).all()
        np.testing.assert_array_equal(study.random_min, iso.scores.min(axis=-1))
        again = attacks.attack_study(spec_of(tiny_net, "t"), s, iso, cache=cache,
                                     progress=False)
        np.testing.assert_array_equal(again.random_radius, study.random_radius)
    assert cache.hits == 4
    other = SampleSet(images=x, labels=y, seeds=[3, 4], ids=[10, 12])
    with pytest.raises(ValueError, match="samples"):
        attacks.attack_study(spec_of(tiny_net, "t"), other, iso, progress=False)


def test_bad_input_is_explained(tiny_net):
    x = images(2, (3, 12, 12), dtype=torch.float32)
    with pytest.raises(ValueError, match="radii"):
        attacks.pgd_attack(tiny_net, x, [0, 1], [1.0, -2.0])
    with pytest.raises(ValueError, match="norm"):
        attacks.pgd_attack(tiny_net, x, [0, 1], 1.0, norm="l3")
    with pytest.raises(ValueError, match="steps"):
        attacks.pgd_attack(tiny_net, x, [0, 1], 1.0, steps=-1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        attacks.deepfool(tiny_net, x[0], [0])
    with pytest.raises(ValueError, match="candidates must be at least 1"):
        attacks.deepfool(tiny_net, x, [0, 1], candidates=0)
    with pytest.raises(ValueError, match="overshoot"):
        attacks.deepfool(tiny_net, x, [0, 1], overshoot=-0.1)
    with pytest.raises(ValueError, match="objective"):
        attacks.pgd_attack(tiny_net, x, [0, 1], 1.0, objective="loss")


@pytest.fixture
def no_tf32():
    """IEEE float32 on the GPU: TF32 convolutions would change the numbers compared."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_gradients_and_attacks_agree_on_cuda(tiny_net, cuda_device, no_tf32):
    from localprops.studies import firstorder

    x = images(3, (3, 12, 12), dtype=torch.float32)
    directions = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    curv_cpu = firstorder.directional_curvatures(tiny_net, x[0], 0, directions)
    y = confident(tiny_net, x)
    cpu = firstorder.gradients(tiny_net, x, y)
    fool_cpu = attacks.deepfool(tiny_net, x, y, norm="linf")
    pgd_cpu = attacks.pgd_attack(tiny_net, x, y, 20.0, steps=3)
    net = tiny_net.to(cuda_device)
    gpu = firstorder.gradients(net, x, y)
    torch.testing.assert_close(gpu.log_odds_grad, cpu.log_odds_grad, rtol=1e-3, atol=1e-7)
    fool = attacks.deepfool(net, x, y, norm="linf")
    assert fool.found.all()
    np.testing.assert_allclose(fool.radius, fool_cpu.radius, rtol=1e-2)
    np.testing.assert_allclose(attacks.pgd_attack(net, x, y, 20.0, steps=3).scores,
                               pgd_cpu.scores, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(firstorder.directional_curvatures(net, x[0], 0, directions),
                               curv_cpu, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_radius_is_the_closed_form_for_a_binary_linear_model(norm):
    shape = (3, 6, 6)
    model = Affine(shape, classes=2, seed=4).eval()
    x = images(3, shape)
    y = confident(model, x)
    w = ((model.weight[1] - model.weight[0]) / 255.0).detach()
    with torch.no_grad():
        z = model(x)
    lo = (z[torch.arange(3), y] - z[torch.arange(3), 1 - y]).numpy()
    dual = float(w.norm()) if norm == "l2" else float(w.abs().sum())
    exact = np.abs(lo) / dual
    found = attacks.pgd_radius(model, x, y, 2 * exact, norm=norm, steps=2, bisect_steps=30)
    np.testing.assert_allclose(found, exact, rtol=1e-6)
    # not enough radius: nothing found
    assert np.isinf(attacks.pgd_radius(model, x, y, exact / 2, norm=norm, steps=2)).all()
    pgd = attacks.pgd_attack(model, x, y, 1.01 * exact, norm=norm, steps=2)
    assert pgd.misclassified.all() and (pgd.predictions != y.numpy()).all()
    np.testing.assert_allclose(pgd.drops, 1 - pgd.scores, rtol=1e-9)


def test_linf_deepfool_and_pgd_radius_on_a_nonlinear_net():
    """Both are upper bounds; each result is misclassified at its radius."""
    torch.manual_seed(0)
    net = SmoothNet(classes=5).eval()
    x = images(6, (3, 6, 6), dtype=torch.float32)
    y = confident(net, x)
    fool = attacks.deepfool(net, x, y, norm="linf")
    by_pgd = attacks.pgd_radius(net, x, y, fool.radius, norm="linf", steps=10)
    assert fool.found.all() and np.isfinite(by_pgd).all()
    assert (by_pgd <= fool.radius * (1 + 1e-9)).all()
    again = attacks.pgd_attack(net, x, y, by_pgd, norm="linf", steps=10, objective="margin")
    assert again.misclassified.all()


def test_expected_max_normal():
    assert attacks.expected_max_normal(1) == pytest.approx(0.0, abs=1e-9)
    assert attacks.expected_max_normal(2) == pytest.approx(1 / np.sqrt(np.pi), rel=1e-7)
    draws = np.random.default_rng(0).standard_normal((20000, 50)).max(axis=1)
    assert attacks.expected_max_normal(50) == pytest.approx(draws.mean(), rel=0.01)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_ratio_matches_the_sampler(norm):
    """Best of T random rays against the adversarial radius, for a linear log-odds."""
    shape, T = (3, 16, 16), 50
    g = torch.Generator().manual_seed(0)
    w = torch.randn(int(np.prod(shape)), generator=g, dtype=torch.float64) ** 3
    dual = float(w.norm()) if norm == "l2" else float(w.abs().sum())
    ratios = []
    for seed in range(300):
        nu = RadialPerturbations(shape, [1.0], T, norm, seed).materialize(
            dtype=torch.float64)[0].flatten(1)
        fall = nu @ w                                  # log-odds fall per unit radius
        ratios.append(dual / float(fall.max()))        # (l / max fall) / (l / dual)
    predicted = attacks.linear_ratio(norm, int(np.prod(shape)),
                                     float(w.abs().sum() / w.norm()), T)
    assert np.median(ratios) == pytest.approx(float(predicted), rel=0.08)


def test_ratio_is_nan_where_no_adversarial_point_was_found():
    study = attacks.AttackStudy(
        "m", "l2", np.array([1.0]), np.arange(2), 48, 10, 100.0,
        first_order_log_odds=np.zeros((2, 1)), pgd_log_odds=np.zeros((2, 1)),
        random_min=np.ones((2, 1)), deepfool_radius=np.array([4.0, np.inf]),
        pgd_radius=np.array([2.0, np.inf]), random_radius=np.array([40.0, 50.0]),
        random_censored=np.zeros(2, bool), l1_over_l2=np.ones(2))
    np.testing.assert_array_equal(study.adversarial_radius, [2.0, np.inf])
    np.testing.assert_array_equal(study.ratio, [20.0, np.nan])


def test_out_of_memory_halves_the_chunk_of_every_gradient_pass(tiny_net):
    """Gradients, curvatures, PGD and DeepFool adapt their chunk, as evaluate does."""
    from conftest import OutOfMemoryOnce
    from localprops.studies import firstorder

    x = images(6, (3, 12, 12), dtype=torch.float32)
    y = confident(tiny_net, x)
    d = torch.randn(6, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    small = OutOfMemoryOnce(tiny_net, limit=2)
    torch.testing.assert_close(firstorder.gradients(small, x, y, batch_size=6).log_odds_grad,
                               firstorder.gradients(tiny_net, x, y).log_odds_grad)
    np.testing.assert_allclose(
        firstorder.directional_curvatures(small, x[0], int(y[0]), d, batch_size=6),
        firstorder.directional_curvatures(tiny_net, x[0], int(y[0]), d), rtol=1e-5,
        atol=1e-12)
    np.testing.assert_allclose(attacks.pgd_attack(small, x, y, 30.0, batch_size=6).log_odds,
                               attacks.pgd_attack(tiny_net, x, y, 30.0).log_odds, rtol=1e-5)
    np.testing.assert_allclose(attacks.deepfool(small, x, y, batch_size=6).radius,
                               attacks.deepfool(tiny_net, x, y).radius, rtol=1e-5)
    assert small.calls[:3] == [6, 3, 1]              # 6 and 3 fail, then it halves to 1
    with pytest.raises(torch.cuda.OutOfMemoryError):
        firstorder.gradients(OutOfMemoryOnce(tiny_net, limit=0), x, y)


def constructed_study(seed=0, S=5, R=3):
    """An AttackStudy of random numbers, one sample without an adversarial point."""
    rng = np.random.default_rng(seed)
    deepfool, pgd = rng.uniform(1, 5, S), rng.uniform(1, 5, S)
    deepfool[:1] = pgd[:1] = np.inf
    return attacks.AttackStudy(
        "m", "linf", np.array([1.0, 5.0, 20.0])[:R], np.arange(S), 3 * 8 * 8, 6, 255.0,
        rng.normal(5, 10, (S, R)), rng.normal(-2, 30, (S, R)),
        1 - 10.0 ** rng.uniform(-12, -1, (S, R)), deepfool, pgd, rng.uniform(0.5, 80, S),
        rng.random(S) < 0.4, rng.uniform(5, 40, S))


def test_drops_are_one_minus_the_scores_and_exact_near_one():
    study = constructed_study()
    np.testing.assert_allclose(study.first_order_drops, 1 - study.first_order, atol=1e-15)
    np.testing.assert_allclose(study.pgd_drops, 1 - study.pgd, atol=1e-15)
    np.testing.assert_array_equal(study.random_drops, 1.0 - study.random_min)
    study.pgd_log_odds[:] = 50.0                # s rounds to 1; 1 - s does not vanish
    assert (study.pgd == 1.0).all()
    np.testing.assert_allclose(study.pgd_drops, np.exp(-50.0), rtol=1e-14)


def test_attack_summary_against_a_loop():
    from localprops.studies import beyond

    study = constructed_study(S=7)
    got = beyond.attack_summary(study)
    adversarial = [min(study.deepfool_radius[s], study.pgd_radius[s]) for s in range(7)]
    found = [study.random_radius[s] / a for s, a in enumerate(adversarial) if np.isfinite(a)]
    assert got.ratio == pytest.approx(np.median(found), rel=1e-12)
    assert got.not_found == 1 and got.below_one == sum(r < 1 for r in found)
    assert got.censored == int(study.random_censored.sum())
    for name in ("deepfool_radius", "pgd_radius", "random_radius"):
        assert getattr(got, name) == np.median(getattr(study, name))
    assert got.linear_best == pytest.approx(np.median(
        [attacks.linear_ratio("linf", 192, study.l1_over_l2[s], 6) for s in range(7)]))
    assert got.linear_typical == pytest.approx(np.median(
        [attacks.linear_ratio("linf", 192, study.l1_over_l2[s]) for s in range(7)]))
    assert got.radius == 20.0
    assert got.random_drop == pytest.approx(np.median([1 - study.random_min[s, -1]
                                                       for s in range(7)]), rel=1e-12)
    for name, lo in (("first_order_drop", study.first_order_log_odds),
                     ("pgd_drop", study.pgd_log_odds)):
        closed = [np.exp(-lo[s, -1]) / (1 + np.exp(-lo[s, -1])) for s in range(7)]
        assert getattr(got, name) == pytest.approx(np.median(closed), rel=1e-12)


def test_attack_summary_without_adversarial_points_or_samples():
    from localprops.studies import beyond

    study = constructed_study(S=3)
    study.deepfool_radius[:] = study.pgd_radius[:] = np.inf
    got = beyond.attack_summary(study)
    assert np.isnan(got.ratio) and got.not_found == 3 and got.below_one == 0
    empty = beyond.attack_summary(constructed_study(S=0))
    assert np.isnan(empty.deepfool_radius) and np.isnan(empty.pgd_drop) and empty.censored == 0
