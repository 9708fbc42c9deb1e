"""Random against adversarial directions at equal radius (beyond the paper).

The isotropy study (paper eq. 4) only ever looks along random directions.
This module asks how far those are from the worst case, in the same norm and
at the same radius:

- the first-order point (:func:`pgd_attack` with ``steps=0``): one step
  along the worst first-order direction, ``-g / ||g||_2`` (L2) or
  ``-sign(g)`` (L-infinity, FGSM of Goodfellow et al.), with ``g`` the
  gradient of the true-class log-odds (the direction of the gradient of the
  score, never saturated).
- :func:`pgd_attack`: projected gradient descent on the log-odds, constrained
  to the same L2 sphere or L-infinity box of radius ``r`` (Madry et al.).
- :func:`deepfool`: the smallest misclassifying perturbation found by
  DeepFool (Moosavi-Dezfooli et al.) in L2 or L-infinity, refined by a
  bisection along its direction; :func:`pgd_radius`: the smallest radius at
  which PGD misclassifies, by bisection. Both are upper bounds on the true
  smallest radius; the study keeps the smaller.
- :func:`random_flip_radius`: the smallest radius at which one of the ``T``
  random directions of the isotropy sampler misclassifies, refined by
  bisection along the misclassified rays (also an upper bound: a bisection
  finds a crossing of the boundary on a ray, not necessarily the first).
- :func:`linear_ratio`: what a linear classifier predicts for the ratio of the
  two radii, for this sampler and norm.

Images are not clipped to [0, 255], exactly as in the isotropy study, so the
random and adversarial perturbations are compared on the same footing. All
functions take batches and run on the model's device.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.checks import as_labels
from localprops.core.engine import (
    evaluate,
    gradient_batch_size,
    model_device,
    model_dtype,
    run_chunked,
    true_class_log_odds,
)
from localprops.core.sampling import RadialPerturbations
from localprops.core.stats import sigmoid
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.firstorder import gradients
from localprops.studies.runner import run_units
from localprops.studies.scores import ScoreStudy

#: modules (besides the shared ones) whose code determines this study's units
CODE_MODULES = ("scores", "firstorder", "attacks")


def _norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    flat = v.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *[1] * (like.ndim - 1))


def _steepest(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm direction that increases a linear function fastest."""
    if norm == "l2":
        return grad / _expand(_norm(grad, "l2").clamp_min(1e-30), grad)
    return grad.sign()


def _project(delta: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """Onto the L2 sphere of radius ``r`` or into the L-infinity box ``[-r, r]^D``."""
    r = _expand(radius, delta)
    if norm == "l2":
        return delta * (r / _expand(_norm(delta, "l2").clamp_min(1e-30), delta))
    return torch.maximum(torch.minimum(delta, r), -r)


OBJECTIVES = ("log_odds", "margin")


def _objective_and_grad(model, x, labels, objective):
    """The objective to lower, its input gradient, the log-odds and the prediction.

    ``log_odds``: the true-class log-odds (lowers the true-class score);
    ``margin``: ``z_y - max_{k != y} z_k`` (aims at a class change: in a
    multiclass problem the log-odds can be negative while ``y`` still wins).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        lo = true_class_log_odds(logits, labels)
        if objective == "margin":
            z = logits.double()
            index = labels.reshape(-1, 1)
            value = z.gather(1, index)[:, 0] - z.scatter(1, index, float("-inf")).amax(dim=1)
        else:
            value = lo
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad.detach(), lo.detach(), logits.detach().argmax(dim=1)


@dataclass
class AttackResult:
    """What an attack reached at given radii: the lowest true-class log-odds found."""

    log_odds: np.ndarray        # (N,) float64, lowest true-class log-odds
    first_log_odds: np.ndarray  # (N,) float64, log-odds at the first-order point
    predictions: np.ndarray     # (N,) predicted class at that point
    misclassified: np.ndarray   # (N,) bool: some iterate was misclassified
    norms: np.ndarray           # (N,) norm of the perturbation at the lowest point

    @property
    def scores(self) -> np.ndarray:
        """True-class probability ``sigmoid(log_odds)`` at the lowest point."""
        return sigmoid(self.log_odds)

    @property
    def drops(self) -> np.ndarray:
        """``1 - s`` computed as ``sigmoid(-log_odds)``: exact where ``s`` rounds to 1."""
        return sigmoid(-self.log_odds)


def _prepare(model, images, labels, radii, norm):
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a tensor (N, C, H, W) in [0, 255]")
    norm = _checks.check_norm(norm)
    device, dtype = model_device(model), model_dtype(model)
    radii = torch.as_tensor(np.asarray(radii, dtype=np.float64)).reshape(-1)
    if radii.numel() == 1:
        radii = radii.expand(len(images))
    if radii.numel() != len(images) or not (torch.isfinite(radii).all() and (radii > 0).all()):
        raise ValueError(f"radii must be {len(images)} positive finite values (one per image)")
    return norm, device, dtype, radii.to(device=device, dtype=dtype), \
        as_labels(labels, len(images), device)


def pgd_attack(model: nn.Module, images: torch.Tensor, labels, radii, *, norm: str = "l2",
               steps: int = 10, step_size: float = 0.25, objective: str = "log_odds",
               batch_size: int | None = None) -> AttackResult:
    """Lowest true-class score found by projected gradient descent at radius ``r``.

    Starts at the first-order point ``-r u``, ``u = g / ||g||_2`` in L2 and
    ``sign(g)`` in L-infinity (FGSM),
    then ``steps`` steps of length ``step_size * r`` along the steepest
    descent direction of the log-odds, each projected back onto the L2
    sphere or into the L-infinity box of radius ``r``. The best iterate is
    kept, so the result is never worse than the first-order point (whose
    log-odds is returned too, as ``first_log_odds``); an image
    counts as misclassified when any iterate is (in a multiclass problem a
    negative log-odds does not imply a wrong class, nor the reverse).

    Parameters
    ----------
    images : (N, C, H, W); labels : (N,) or one int; radii : (N,) or one value.
    steps : 0 gives the first-order point alone.
    objective : ``"log_odds"`` (lower the true-class score) or ``"margin"``
        (aim at a class change), see :data:`OBJECTIVES`.
    """
    norm, device, dtype, radii, labels = _prepare(model, images, labels, radii, norm)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    size = batch_size or gradient_batch_size(tuple(images.shape[1:]), device)
    was_training = model.training
    model.eval()

    def chunk(start: int, stop: int) -> tuple[torch.Tensor, ...]:
        x = images[start:stop].to(device=device, dtype=dtype)
        y, r = labels[start:stop], radii[start:stop]
        _, grad, _, _ = _objective_and_grad(model, x, y, objective)
        delta = _project(-_steepest(grad, norm) * _expand(r, grad), r, norm)
        best = torch.full((len(x),), float("inf"), dtype=torch.float64, device=device)
        best_lo = torch.zeros(len(x), dtype=torch.float64, device=device)
        best_pred = torch.zeros(len(x), dtype=torch.int64, device=device)
        best_delta = delta.clone()
        any_wrong = torch.zeros(len(x), dtype=torch.bool, device=device)
        first_lo = None
        for step in range(steps + 1):
            value, grad, lo, pred = _objective_and_grad(model, x + delta, y, objective)
            first_lo = lo if first_lo is None else first_lo
            any_wrong |= pred != y
            better = value < best
            best = torch.where(better, value, best)
            best_lo = torch.where(better, lo, best_lo)
            best_pred = torch.where(better, pred, best_pred)
            best_delta[better] = delta[better]
            if step < steps:
                delta = _project(delta - step_size * _expand(r, grad)
                                 * _steepest(grad, norm), r, norm)
        return (best_lo.cpu(), first_lo.cpu(), best_pred.cpu(), any_wrong.cpu(),
                _norm(best_delta.double(), norm).cpu())

    try:
        parts = run_chunked(len(images), size, chunk)
    finally:
        model.train(was_training)
    return AttackResult(*(torch.cat(column).numpy() for column in zip(*parts)))


@dataclass
class MinimalAttack:
    """Smallest misclassifying perturbations found, one per image."""

    radius: np.ndarray          # (N,) norm of the perturbation; inf where none found
    found: np.ndarray           # (N,) bool: a misclassified point was reached
    predictions: np.ndarray     # (N,) class predicted at x + perturbation
    iterations: np.ndarray      # (N,) DeepFool steps taken
    perturbations: torch.Tensor = field(repr=False)  # (N, C, H, W) on the CPU


def is_wrong(model, x, y, size):
    """Whether ``model`` misclassifies each image of ``x`` (labels ``y``), in chunks of ``size``."""
    def chunk(start: int, stop: int) -> torch.Tensor:
        with torch.no_grad():
            return model(x[start:stop]).argmax(dim=1) != y[start:stop]

    return torch.cat(run_chunked(len(x), size, chunk))


def deepfool(model: nn.Module, images: torch.Tensor, labels, *, norm: str = "l2",
             candidates: int = 10, overshoot: float = 0.02, max_iter: int = 50,
             refine_steps: int = 20, batch_size: int | None = None) -> MinimalAttack:
    """DeepFool (L2 or L-infinity), then a bisection along its perturbation.

    Each iteration linearises the logit differences ``f_k = z_k - z_y`` for the
    ``candidates`` classes ranked highest at the clean image (the DeepFool
    paper uses 10 for ImageNet) and steps to the nearest linearised boundary:
    ``|f_k| / ||grad f_k||_q`` with ``q`` the dual norm (2 for L2, 1 for
    L-infinity). The accumulated step is scaled by ``1 + overshoot``. Once a
    misclassified point is reached, ``refine_steps`` bisections on the scale
    ``c`` in ``(0, 1]`` of that perturbation keep the smallest ``c`` found that
    still misclassifies, so the reported perturbation is misclassified and
    its norm is the reported radius.
    """
    norm, device, dtype, _, labels = _prepare(model, images, labels, 1.0, norm)
    candidates = _checks.check_count(candidates, "candidates")
    max_iter = _checks.check_count(max_iter, "max_iter")
    if refine_steps < 0 or overshoot < 0:
        raise ValueError(f"refine_steps and overshoot must be >= 0, got {refine_steps} "
                         f"and {overshoot}")
    size = batch_size or gradient_batch_size(tuple(images.shape[1:]), device)
    was_training = model.training
    model.eval()

    def chunk(start: int, stop: int) -> tuple[torch.Tensor, ...]:
        x = images[start:stop].to(device=device, dtype=dtype)
        y = labels[start:stop]
        with torch.no_grad():
            logits = model(x)
        k_all = logits.shape[1]
        top = logits.argsort(dim=1, descending=True)
        others = top[top != y[:, None]].reshape(len(x), k_all - 1)
        cand = others[:, :min(candidates, k_all - 1)]
        total = torch.zeros_like(x)
        active = torch.ones(len(x), dtype=torch.bool, device=device)
        iters = torch.zeros(len(x), dtype=torch.int64, device=device)
        for _ in range(max_iter):
            xa = (x + (1 + overshoot) * total).detach().requires_grad_(True)
            with torch.enable_grad():
                z = model(xa)
                active = active & (z.argmax(dim=1) == y)
                if not active.any():
                    break
                f = (z.gather(1, cand) - z.gather(1, y[:, None])).double()
                w = torch.stack([torch.autograd.grad(f[:, j].sum(), xa,
                                                     retain_graph=j < cand.shape[1] - 1)[0]
                                 for j in range(cand.shape[1])], dim=1).double()
            flat = w.flatten(2)
            dual = flat.norm(dim=2) if norm == "l2" else flat.abs().sum(dim=2)
            dual = dual.clamp_min(1e-30)
            dist = f.detach().abs() / dual
            best = dist.argmin(dim=1)
            pick = torch.arange(len(x), device=device)
            wb, fb, db = w[pick, best], f.detach()[pick, best], dual[pick, best]
            if norm == "l2":
                step = _expand((fb.abs() + 1e-4) / db ** 2, wb) * wb
            else:
                step = _expand((fb.abs() + 1e-4) / db, wb) * wb.sign()
            total = total + _expand(active, step).to(dtype) * step.to(dtype)
            iters += active.long()
        delta = (1 + overshoot) * total
        found = is_wrong(model, x + delta, y, size)
        low = torch.zeros(len(x), dtype=dtype, device=device)
        high = torch.ones(len(x), dtype=dtype, device=device)
        for _ in range(refine_steps):
            mid = (low + high) / 2
            wrong = is_wrong(model, x + _expand(mid, x) * delta, y, size)
            high = torch.where(wrong, mid, high)
            low = torch.where(wrong, low, mid)
        delta = torch.where(_expand(found, x), _expand(high, x) * delta, delta)
        with torch.no_grad():
            pred = model(x + delta).argmax(dim=1)
        return delta.cpu(), (found & (pred != y)).cpu(), pred.cpu(), iters.cpu()

    try:
        parts = run_chunked(len(images), size, chunk)
    finally:
        model.train(was_training)
    delta, found, pred, iters = (torch.cat(column) for column in zip(*parts))
    found = found.numpy()
    radius = np.where(found, _norm(delta.double(), norm).numpy(), np.inf)
    return MinimalAttack(radius, found, pred.numpy(), iters.numpy(), delta)


def pgd_radius(model: nn.Module, images: torch.Tensor, labels, high, *, norm: str = "l2",
               steps: int = 10, bisect_steps: int = 10,
               batch_size: int | None = None) -> np.ndarray:
    """Smallest radius at which PGD misclassifies, by bisection on ``(0, high]``.

    ``high`` (one per image) is a radius known to be enough, e.g. DeepFool's.
    Each bisection step runs :func:`pgd_attack` on the margin objective at the
    middle radius for every image at once. Returns the smallest radius found
    at which PGD reached a misclassified point; ``inf`` where PGD fails even
    at ``high``. Like
    DeepFool's, it is an upper bound on the true smallest radius.
    """
    norm = _checks.check_norm(norm)
    high = np.broadcast_to(np.asarray(high, dtype=np.float64), (len(images),)).copy()
    finite = np.isfinite(high) & (high > 0)
    out = np.full(len(images), np.inf)
    if not finite.any():
        return out
    x = images[torch.as_tensor(finite)]
    y = as_labels(labels, len(images), "cpu")[torch.as_tensor(finite)]
    hi = high[finite]
    ok = pgd_attack(model, x, y, hi, norm=norm, steps=steps, objective="margin",
                    batch_size=batch_size).misclassified
    lo = np.zeros_like(hi)
    for _ in range(bisect_steps):
        mid = (lo + hi) / 2
        wrong = pgd_attack(model, x, y, mid, norm=norm, steps=steps, objective="margin",
                           batch_size=batch_size).misclassified
        hi = np.where(wrong, mid, hi)
        lo = np.where(wrong, lo, mid)
    out[finite] = np.where(ok, hi, np.inf)
    return out


def expected_max_normal(n: int) -> float:
    """E[max of ``n`` independent standard normals] (numerical integral).

    About 2.25 for n = 50, where the asymptotic sqrt(2 ln n) gives 2.80.
    """
    from scipy import integrate, stats

    n = _checks.check_count(n, "n")
    value, _ = integrate.quad(
        lambda t: t * n * stats.norm.pdf(t) * stats.norm.cdf(t) ** (n - 1), -12, 12)
    return float(value)


def linear_ratio(norm: str, dimension: int, l1_over_l2: np.ndarray | float = 1.0,
                 T: int | None = None) -> np.ndarray:
    """Random over adversarial radius of a linear classifier, for this book's sampler.

    With log-odds ``l + w . nu``, the adversarial radius is ``l / ||w||_2`` (L2)
    or ``l / ||w||_1`` (L-infinity), and a random direction ``d`` flips the
    class at ``l / (-w . d)``. For the sampler of eq. 4 (``u ~ U(-1, 1)^D``
    rescaled), ``w . d`` is close to normal with standard deviation
    ``||w||_2 / sqrt(D)`` (L2: ``||u||_2 ~ sqrt(D / 3)``) or ``||w||_2 / sqrt(3)``
    (L-infinity: ``||u||_inf ~ 1``). A typical direction therefore needs
    ``sqrt(D)`` (L2) or ``sqrt(3) ||w||_1 / ||w||_2`` (L-infinity) times the
    adversarial radius, the law of Fawzi et al. for L2; the best of ``T``
    directions (``T`` given) that divided by :func:`expected_max_normal`.

    ``l1_over_l2`` is ``||w||_1 / ||w||_2`` (the gradient's), used in L-infinity.
    """
    norm = _checks.check_norm(norm)
    typical = (np.sqrt(float(dimension)) * np.ones_like(np.asarray(l1_over_l2, float))
               if norm == "l2" else np.sqrt(3.0) * np.asarray(l1_over_l2, float))
    return typical / expected_max_normal(T) if T is not None else typical


def search_radii(grid, cap: float) -> list[float]:
    """The grid radii up to ``cap``, then doubling from the largest, ending with ``cap``."""
    radii = sorted(float(r) for r in _checks.check_radii(grid) if r < cap)
    if not radii:
        return [float(cap)]
    r = radii[-1] * 2
    while r < cap:
        radii.append(r)
        r *= 2
    return radii + [float(cap)]


def random_flip_radius(model: nn.Module, x: torch.Tensor, label: int, *, seed: int,
                       norm: str, T: int, radii, cap: float,
                       grid_predictions: np.ndarray | None = None, bisect_steps: int = 16,
                       batch_size: int | None = None) -> tuple[float, bool]:
    """Smallest radius at which one of ``T`` random directions misclassifies ``x``.

    The radii of :func:`search_radii` are tried in turn with the isotropy
    sampler (eq. 4, this seed); at the first radius ``hi`` where some of the
    ``T`` perturbations misclassify, each misclassified ray ``d = nu / hi`` is
    bisected on ``[0, hi]`` and the smallest misclassifying radius is
    returned. (The sampler draws new directions at every radius, so a ray of
    ``hi`` may already misclassify below the radius tried before it.) ``grid_predictions``
    (R, T), the isotropy study's predictions at ``radii``, saves evaluating
    the grid again.

    Returns
    -------
    (radius, censored): censored is True when no direction misclassifies up
    to ``cap``, and the radius is then ``cap`` (a lower bound).
    """
    norm = _checks.check_norm(norm)
    grid = [float(r) for r in _checks.check_radii(radii)]
    shape = tuple(x.shape)
    hi, wrong = None, None
    for k, r in enumerate(search_radii(grid, cap)):
        if grid_predictions is not None and r in grid:
            row = np.asarray(grid_predictions)[grid.index(r)]
            miss = torch.as_tensor(row != label)
        else:
            out = evaluate(model, x, RadialPerturbations(shape, [r], T, norm, seed),
                           labels=label, batch_size=batch_size, progress=False)
            miss = out.predictions[0] != label
        if miss.any():
            hi, wrong = r, miss
            break
    if hi is None:
        return float(cap), True
    rays = RadialPerturbations(shape, [hi], T, norm, seed).materialize(
        dtype=torch.float64)[0][wrong] / hi
    low = torch.zeros(len(rays), dtype=torch.float64)
    high = torch.full((len(rays),), hi, dtype=torch.float64)
    for _ in range(bisect_steps):
        mid = (low + high) / 2
        out = evaluate(model, x, (rays * _expand(mid, rays))[None], labels=label,
                       batch_size=batch_size, progress=False)
        miss = out.predictions[0] != label
        high = torch.where(miss, mid, high)
        low = torch.where(miss, low, mid)
    return float(high.min()), False


@dataclass
class AttackStudy:
    """Random against adversarial, per sample, for one model and norm.

    At the isotropy study's radii (S, R): ``random_min`` is the lowest
    true-class score among its ``T`` random directions, ``first_order_log_odds``
    and ``pgd_log_odds`` the true-class log-odds after the first-order step
    and after PGD (:attr:`first_order`, :attr:`pgd` give the scores).
    Per sample (S,): ``deepfool_radius`` and ``pgd_radius`` (bisection), the
    adversarial radius as the smaller of the two (both are upper bounds on the
    true smallest radius; ``inf`` where neither found one), ``random_radius``
    with ``random_censored`` where no random direction misclassified up to
    ``cap`` (the radius is then a lower bound), and ``l1_over_l2``, the
    gradient's ``||g||_1 / ||g||_2`` that the linear prediction needs.
    """

    model: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    dimension: int
    T: int
    cap: float
    first_order_log_odds: np.ndarray
    pgd_log_odds: np.ndarray
    random_min: np.ndarray
    deepfool_radius: np.ndarray
    pgd_radius: np.ndarray
    random_radius: np.ndarray
    random_censored: np.ndarray
    l1_over_l2: np.ndarray
    skipped: list[str] = field(default_factory=list)

    @property
    def first_order(self) -> np.ndarray:
        """True-class probability after the first-order step (S, R)."""
        return sigmoid(self.first_order_log_odds)

    @property
    def pgd(self) -> np.ndarray:
        """True-class probability after PGD (S, R)."""
        return sigmoid(self.pgd_log_odds)

    @property
    def random_drops(self) -> np.ndarray:
        """``1 - s`` for the worst of the ``T`` random directions (S, R), in float64.

        Computed from the score, so values below about 1e-16 round to 0.
        """
        return 1.0 - self.random_min

    @property
    def first_order_drops(self) -> np.ndarray:
        """``1 - s`` after the first-order step (S, R): ``sigmoid(-log_odds)``, exact near 1."""
        return sigmoid(-self.first_order_log_odds)

    @property
    def pgd_drops(self) -> np.ndarray:
        """``1 - s`` after PGD (S, R): ``sigmoid(-log_odds)``, exact near ``s = 1``."""
        return sigmoid(-self.pgd_log_odds)

    @property
    def adversarial_radius(self) -> np.ndarray:
        """The smaller of the DeepFool and PGD radii (``inf`` where neither found one)."""
        return np.minimum(self.deepfool_radius, self.pgd_radius)

    @property
    def ratio(self) -> np.ndarray:
        """Random over adversarial radius; NaN where no adversarial point was found."""
        adversarial = self.adversarial_radius
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isfinite(adversarial), self.random_radius / adversarial, np.nan)

    @property
    def linear_ratio(self) -> np.ndarray:
        """Per sample, what a linear classifier gives for the best of ``T`` directions."""
        return linear_ratio(self.norm, self.dimension, self.l1_over_l2, self.T)


def default_cap(image_shape: tuple[int, ...], norm: str) -> float:
    """Where the random search stops: noise as large as the pixel range.

    L-infinity: 255 (every value may move by the full range); L2: 255 sqrt(D)
    (a typical change of 255 per value).
    """
    d = int(np.prod(image_shape))
    return 255.0 if norm == "linf" else 255.0 * float(np.sqrt(d))


def attack_study(model: ModelSpec, samples: SampleSet, isotropy: ScoreStudy, *,
                 pgd_steps: int = 10,
                 candidates: int = 10, cap: float | None = None, bisect_steps: int = 16,
                 batch_size: int | None = None, cache: ResultCache | None = None,
                 progress: bool = True) -> AttackStudy:
    """Attacks and random searches around the samples of an isotropy study.

    ``isotropy`` fixes the norm, radii, ``T`` and the samples (its ``ids``
    must be those of ``samples``, in order); its random scores and
    predictions are reused, not recomputed. One cached unit per sample.
    """
    spec = as_spec(model)
    model, model_name, weights = spec.model, spec.name, spec.weights
    if not np.array_equal(np.asarray(isotropy.ids), np.asarray(samples.ids)):
        raise ValueError("the isotropy study's samples differ from these samples: "
                         "pass the samples the isotropy study ran on")
    norm, radii = isotropy.norm, [float(r) for r in isotropy.radii]
    T = isotropy.scores.shape[-1]
    shape = tuple(samples.images.shape[1:])
    cap = float(cap) if cap is not None else default_cap(shape, norm)

    def manifest(i: int) -> dict:
        return dict(study="attacks", model=model_name, weights=weights, radii=radii, T=T,
                    norm=norm, pgd_steps=pgd_steps, candidates=candidates, cap=cap,
                    bisect_steps=bisect_steps, seed=int(samples.seeds[i]),
                    sample=int(samples.ids[i]), label=int(samples.labels[i]))

    def compute(i: int) -> dict:
        x, y = samples.images[i], int(samples.labels[i])
        rows = x.expand(len(radii), *shape)
        pgd = pgd_attack(model, rows, y, radii, norm=norm, steps=pgd_steps,
                         batch_size=batch_size)      # its first iterate: the first-order step
        fool = deepfool(model, x[None], y, norm=norm, candidates=candidates,
                        batch_size=batch_size)
        # PGD by bisection below DeepFool's radius (or the cap where DeepFool failed)
        start = fool.radius[0] if fool.found[0] else cap
        by_pgd = pgd_radius(model, x[None], y, start, norm=norm, steps=pgd_steps,
                            bisect_steps=bisect_steps // 2, batch_size=batch_size)
        rand, censored = random_flip_radius(
            model, x, y, seed=int(samples.seeds[i]), norm=norm, T=T, radii=radii, cap=cap,
            grid_predictions=isotropy.predictions[i], bisect_steps=bisect_steps,
            batch_size=batch_size)
        grad = gradients(model, x[None], [y], batch_size=batch_size).log_odds_grad[0]
        return dict(first_order_log_odds=pgd.first_log_odds, pgd_log_odds=pgd.log_odds,
                    random_min=isotropy.scores[i].min(axis=-1),
                    deepfool_radius=np.float64(fool.radius[0]),
                    pgd_radius=np.float64(by_pgd[0]),
                    random_radius=np.float64(rand), random_censored=np.bool_(censored),
                    l1_over_l2=np.float64(grad.abs().sum() / grad.norm()))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model_name} attacks {norm}", progress=progress,
                                     study_modules=CODE_MODULES)

    def stack(key, shape_=()):
        return np.stack([u[key] for u in units]) if units else np.zeros((0, *shape_))

    r = len(radii)
    return AttackStudy(
        model=model_name, norm=norm, radii=np.asarray(radii),
        ids=np.asarray(samples.ids)[kept], dimension=int(np.prod(shape)), T=T, cap=cap,
        first_order_log_odds=stack("first_order_log_odds", (r,)),
        pgd_log_odds=stack("pgd_log_odds", (r,)),
        random_min=stack("random_min", (r,)), deepfool_radius=stack("deepfool_radius"),
        pgd_radius=stack("pgd_radius"), random_radius=stack("random_radius"),
        random_censored=stack("random_censored").astype(bool),
        l1_over_l2=stack("l1_over_l2"), skipped=skipped)
