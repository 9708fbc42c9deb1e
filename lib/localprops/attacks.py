"""Random against adversarial directions at equal radius (beyond the paper).

The isotropy study (paper eq. 4) only ever looks along random directions.
This module asks how far those are from the worst case, in the same norm and
at the same radius:

- :func:`first_order_attack`: one step along the worst first-order direction,
  ``-g / ||g||_2`` (L2) or ``-sign(g)`` (L-infinity, FGSM of Goodfellow et
  al.), with ``g`` the gradient of the true-class log-odds (the direction of
  the gradient of the score, never saturated).
- :func:`pgd_attack`: projected gradient descent on the log-odds, constrained
  to the same L2 sphere or L-infinity box of radius ``r`` (Madry et al.).
- :func:`deepfool`: the smallest misclassifying perturbation found by
  DeepFool (Moosavi-Dezfooli et al.) in L2 or L-infinity, refined by a
  bisection along its direction.
- :func:`random_flip_radius`: the smallest radius at which any of the ``T``
  random directions of the isotropy sampler misclassifies, refined by
  bisection along the misclassified rays.

Images are not clipped to [0, 255], exactly as in the isotropy study, so the
random and adversarial perturbations are compared on the same footing. All
functions take batches and run on the model's device.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import _checks
from .cache import ResultCache, code_version
from .engine import evaluate, model_device, model_dtype
from .firstorder import _labels, _rows, gradient_batch_size, true_class_log_odds
from .sampling import RadialPerturbations
from .studies import SampleSet, ScoreStudy, run_units

#: modules (besides the shared ones) whose code determines this study's units
CODE_MODULES = ("firstorder.py", "attacks.py")


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


def _log_odds_and_grad(model, x, labels):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        lo = true_class_log_odds(logits, labels)
        (grad,) = torch.autograd.grad(lo.sum(), x)
    return lo.detach(), grad.detach(), logits.detach().argmax(dim=1)


@dataclass
class AttackResult:
    """Scores reached at given radii: the lowest true-class probability found."""

    scores: np.ndarray          # (N,) float64
    predictions: np.ndarray     # (N,) predicted class at that point
    norms: np.ndarray           # (N,) norm of the perturbation used


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
        _labels(labels, len(images), device)


def first_order_attack(model: nn.Module, images: torch.Tensor, labels, radii, *,
                       norm: str = "l2", batch_size: int | None = None) -> AttackResult:
    """True-class score at ``x - r u``, ``u`` the steepest descent direction of the log-odds.

    ``u = g / ||g||_2`` in L2 and ``sign(g)`` in L-infinity (FGSM); one
    radius per image (pass the same image several times for several radii).
    """
    return pgd_attack(model, images, labels, radii, norm=norm, steps=0,
                      batch_size=batch_size)


def pgd_attack(model: nn.Module, images: torch.Tensor, labels, radii, *, norm: str = "l2",
               steps: int = 10, step_size: float = 0.25,
               batch_size: int | None = None) -> AttackResult:
    """Lowest true-class score found by projected gradient descent at radius ``r``.

    Starts at the first-order point ``-r u`` (see :func:`first_order_attack`),
    then ``steps`` steps of length ``step_size * r`` along the steepest
    descent direction of the log-odds, each projected back onto the L2
    sphere or into the L-infinity box of radius ``r``. The best iterate is
    kept, so the result is never worse than the first-order point.

    Parameters
    ----------
    images : (N, C, H, W); labels : (N,) or one int; radii : (N,) or one value.
    steps : 0 gives the first-order point alone.
    """
    norm, device, dtype, radii, labels = _prepare(model, images, labels, radii, norm)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    size = batch_size or gradient_batch_size(tuple(images.shape[1:]), device)
    was_training = model.training
    model.eval()
    scores, predictions, norms = [], [], []
    try:
        for start, stop in _rows(len(images), size):
            x = images[start:stop].to(device=device, dtype=dtype)
            y, r = labels[start:stop], radii[start:stop]
            _, grad, _ = _log_odds_and_grad(model, x, y)
            delta = _project(-_steepest(grad, norm) * _expand(r, grad), r, norm)
            best_lo = torch.full((len(x),), float("inf"), dtype=torch.float64, device=device)
            best_pred = torch.zeros(len(x), dtype=torch.int64, device=device)
            best_delta = delta.clone()
            for step in range(steps + 1):
                lo, grad, pred = _log_odds_and_grad(model, x + delta, y)
                better = lo < best_lo
                best_lo = torch.where(better, lo, best_lo)
                best_pred = torch.where(better, pred, best_pred)
                best_delta[better] = delta[better]
                if step < steps:
                    delta = _project(delta - step_size * _expand(r, grad)
                                     * _steepest(grad, norm), r, norm)
            scores.append(torch.sigmoid(best_lo).cpu())
            predictions.append(best_pred.cpu())
            norms.append(_norm(best_delta.double(), norm).cpu())
    finally:
        model.train(was_training)
    return AttackResult(torch.cat(scores).numpy(), torch.cat(predictions).numpy(),
                        torch.cat(norms).numpy())


@dataclass
class MinimalAttack:
    """Smallest misclassifying perturbations found, one per image."""

    radius: np.ndarray          # (N,) norm of the perturbation; inf where none found
    found: np.ndarray           # (N,) bool: a misclassified point was reached
    predictions: np.ndarray     # (N,) class predicted at x + perturbation
    iterations: np.ndarray      # (N,) DeepFool steps taken
    perturbations: torch.Tensor = field(repr=False)  # (N, C, H, W) on the CPU


def _is_wrong(model, x, y, size):
    out = []
    with torch.no_grad():
        for start, stop in _rows(len(x), size):
            out.append(model(x[start:stop]).argmax(dim=1) != y[start:stop])
    return torch.cat(out)


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
    n, k_all = len(images), None
    size = batch_size or gradient_batch_size(tuple(images.shape[1:]), device)
    was_training = model.training
    model.eval()
    out = {"delta": [], "found": [], "pred": [], "iters": []}
    try:
        for start, stop in _rows(n, size):
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
            found = _is_wrong(model, x + delta, y, size)
            low = torch.zeros(len(x), dtype=dtype, device=device)
            high = torch.ones(len(x), dtype=dtype, device=device)
            for _ in range(refine_steps):
                mid = (low + high) / 2
                wrong = _is_wrong(model, x + _expand(mid, x) * delta, y, size)
                high = torch.where(wrong, mid, high)
                low = torch.where(wrong, low, mid)
            delta = torch.where(_expand(found, x), _expand(high, x) * delta, delta)
            with torch.no_grad():
                pred = model(x + delta).argmax(dim=1)
            out["delta"].append(delta.cpu())
            out["found"].append((found & (pred != y)).cpu())
            out["pred"].append(pred.cpu())
            out["iters"].append(iters.cpu())
    finally:
        model.train(was_training)
    delta = torch.cat(out["delta"])
    found = torch.cat(out["found"]).numpy()
    radius = np.where(found, _norm(delta.double(), norm).numpy(), np.inf)
    return MinimalAttack(radius, found, torch.cat(out["pred"]).numpy(),
                         torch.cat(out["iters"]).numpy(), delta)


def search_radii(grid, cap: float) -> list[float]:
    """The grid, then doubling from its largest radius, ending with ``cap``."""
    radii = sorted(float(r) for r in _checks.check_radii(grid))
    if cap <= radii[-1]:
        return radii
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
        if grid_predictions is not None and k < len(grid) and r == sorted(grid)[k]:
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

    ``first_order``, ``pgd`` and ``random_min`` are (S, R) true-class scores at
    the isotropy study's radii (``random_min``: the lowest of its ``T``
    random directions); ``adversarial_radius`` and ``random_radius`` are (S,)
    smallest misclassifying radii, ``random_censored`` where no random
    direction misclassified up to ``cap`` (the radius is then a lower bound).
    """

    model: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    dimension: int
    T: int
    cap: float
    first_order: np.ndarray
    pgd: np.ndarray
    pgd_misclassified: np.ndarray
    random_min: np.ndarray
    adversarial_radius: np.ndarray
    random_radius: np.ndarray
    random_censored: np.ndarray
    skipped: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> np.ndarray:
        """Random over adversarial smallest misclassifying radius (lower bound if censored)."""
        return self.random_radius / self.adversarial_radius


def default_cap(image_shape: tuple[int, ...], norm: str) -> float:
    """Where the random search stops: noise as large as the pixel range.

    L-infinity: 255 (every value may move by the full range); L2: 255 sqrt(D)
    (a typical change of 255 per value).
    """
    d = int(np.prod(image_shape))
    return 255.0 if norm == "linf" else 255.0 * float(np.sqrt(d))


def attack_study(model: nn.Module, samples: SampleSet, isotropy: ScoreStudy, *,
                 model_name: str, weights: str = "", pgd_steps: int = 10,
                 candidates: int = 10, cap: float | None = None, bisect_steps: int = 16,
                 batch_size: int | None = None, cache: ResultCache | None = None,
                 progress: bool = True) -> AttackStudy:
    """Attacks and random searches around the samples of an isotropy study.

    ``isotropy`` fixes the norm, radii, ``T`` and the samples (its ``ids``
    must be those of ``samples``, in order); its random scores and
    predictions are reused, not recomputed. One cached unit per sample.
    """
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
                    sample=int(samples.ids[i]), label=int(samples.labels[i]),
                    code_extra=code_version(CODE_MODULES))

    def compute(i: int) -> dict:
        x, y = samples.images[i], int(samples.labels[i])
        rows = x.expand(len(radii), *shape)
        first = first_order_attack(model, rows, y, radii, norm=norm, batch_size=batch_size)
        pgd = pgd_attack(model, rows, y, radii, norm=norm, steps=pgd_steps,
                         batch_size=batch_size)
        fool = deepfool(model, x[None], y, norm=norm, candidates=candidates,
                        batch_size=batch_size)
        rand, censored = random_flip_radius(
            model, x, y, seed=int(samples.seeds[i]), norm=norm, T=T, radii=radii, cap=cap,
            grid_predictions=isotropy.predictions[i], bisect_steps=bisect_steps,
            batch_size=batch_size)
        return dict(first_order=first.scores, pgd=pgd.scores,
                    pgd_misclassified=pgd.predictions != y,
                    random_min=isotropy.scores[i].min(axis=-1),
                    adversarial_radius=np.float64(fool.radius[0]),
                    random_radius=np.float64(rand), random_censored=np.bool_(censored))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model_name} attacks {norm}", progress=progress)

    def stack(key, shape_=()):
        return np.stack([u[key] for u in units]) if units else np.zeros((0, *shape_))

    r = len(radii)
    return AttackStudy(
        model=model_name, norm=norm, radii=np.asarray(radii),
        ids=np.asarray(samples.ids)[kept], dimension=int(np.prod(shape)), T=T, cap=cap,
        first_order=stack("first_order", (r,)), pgd=stack("pgd", (r,)),
        pgd_misclassified=stack("pgd_misclassified", (r,)).astype(bool),
        random_min=stack("random_min", (r,)),
        adversarial_radius=stack("adversarial_radius"), random_radius=stack("random_radius"),
        random_censored=stack("random_censored").astype(bool), skipped=skipped)
