"""A Taylor model of the true-class score along the isotropy study's directions.

Beyond the paper. Sec. 2.1 of the paper dismisses a gradient-based test of
isotropy (its eq. 3) as "might not be promising" without trying it. This
module tries it: around a clean image ``x`` with true-class score ``s(x)``
(the softmax probability of the true class), the score along a direction
``d = nu / r`` of the isotropy study (paper eq. 4) is predicted by

    s(x + r d) ~ s(x) + r g.d                     (first order)
               ~ s(x) + r g.d + r^2 / 2 d'Hd      (second order)

with ``g`` the gradient and ``H`` the Hessian of ``s`` at ``x``. The dot
products ``g.d`` for the very perturbations the isotropy study evaluated cost
no forward pass at all; ``d'Hd`` costs one double backward per direction,
batched.

Gradients are taken of the true-class log-odds ``lo = z_y - logsumexp_{k != y}
z_k`` in float64 (``s = sigmoid(lo)``): ``1 - s`` can be far below float32's
resolution (the 99% filter admits scores from 0.99 to 1 - 1e-15 and beyond),
and ``ds = s (1 - s) dlo`` with ``1 - s = sigmoid(-lo)`` keeps it exact.

The first-order model can be written for ``s`` (the paper's score) or for
``lo`` and passed through the sigmoid, ``s ~ sigmoid(lo + r dlo.d)``: where
the two differ, the departure from linearity is the sigmoid's saturation, not
the network's.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.checks import as_labels
from localprops.core.engine import (
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
from localprops.studies.runner import run_units
from localprops.studies.scores import NoiseFloor, ScoreStudy, rounding_distortion

#: modules (besides the shared ones) whose code determines this study's units
CODE_MODULES = ("scores", "firstorder")


def _rows(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


@dataclass
class Gradients:
    """True-class log-odds, score and their input gradients at clean images.

    ``log_odds_grad`` is (S, C, H, W) on the CPU; :attr:`score_grad` is the
    gradient of the probability ``s``, ``s (1 - s)`` times it, in float64.
    """

    log_odds: torch.Tensor       # (S,) float64
    log_odds_grad: torch.Tensor  # (S, C, H, W) float64

    @property
    def scores(self) -> torch.Tensor:
        """True-class probability ``s = sigmoid(lo)`` (S,), float64."""
        return torch.sigmoid(self.log_odds)

    @property
    def score_grad(self) -> torch.Tensor:
        """Gradient of ``s``: ``sigmoid(lo) sigmoid(-lo) grad lo`` (exact near s = 1)."""
        factor = torch.sigmoid(self.log_odds) * torch.sigmoid(-self.log_odds)
        return self.log_odds_grad * factor.reshape(-1, *[1] * (self.log_odds_grad.ndim - 1))


def gradients(model: nn.Module, images: torch.Tensor, labels, *,
              batch_size: int | None = None) -> Gradients:
    """Input gradients of the true-class log-odds, batched over images.

    Parameters
    ----------
    model : classifier, [0, 255] input, logits out (evaluated in eval mode).
    images : (S, C, H, W) clean images in [0, 255].
    labels : their true classes (S,).
    batch_size : images per backward pass (None: :func:`gradient_batch_size`).

    Returns
    -------
    Gradients on the CPU. Each image's gradient depends on that image only
    (eval mode), so one backward per chunk serves every image in it.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a tensor (S, C, H, W) in [0, 255]")
    _checks.check_finite(images, "images")
    device, dtype = model_device(model), model_dtype(model)
    labels = as_labels(labels, len(images), device)
    size = batch_size or gradient_batch_size(tuple(images.shape[1:]), device)
    was_training = model.training
    model.eval()

    def step(start: int, stop: int):
        x = images[start:stop].to(device=device, dtype=dtype).requires_grad_(True)
        with torch.enable_grad():
            lo = true_class_log_odds(model(x), labels[start:stop])
            (grad,) = torch.autograd.grad(lo.sum(), x)
        return lo.detach().cpu(), grad.detach().double().cpu()

    try:
        parts = run_chunked(len(images), size, step)
    finally:
        model.train(was_training)
    return Gradients(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def directional_slopes(gradient: torch.Tensor, source: RadialPerturbations, *,
                       batch_size: int = 256) -> np.ndarray:
    """``g . nu / r`` for every perturbation of ``source``: (R, T), float64.

    ``gradient`` is one image's (C, H, W) gradient; the perturbations are
    generated chunk by chunk on its device, exactly those the isotropy study
    evaluated, so the first-order prediction costs no forward pass.
    """
    if tuple(gradient.shape) != source.shape:
        raise ValueError(f"gradient shape {tuple(gradient.shape)} differs from the "
                         f"perturbations' {source.shape}")
    g = gradient.double().reshape(1, -1)
    radii = torch.tensor(source.radii, dtype=torch.float64).repeat_interleave(source.T)
    out = []
    for start, stop in _rows(len(source), batch_size):
        nu = source.rows(start, stop, device=g.device, dtype=torch.float64)
        out.append((nu.reshape(stop - start, -1) @ g.T)[:, 0].cpu())
    return (torch.cat(out) / radii).reshape(len(source.radii), source.T).numpy()


def directional_curvatures(model: nn.Module, x: torch.Tensor, label: int,
                           directions: torch.Tensor, *, batch_size: int | None = None
                           ) -> np.ndarray:
    """``d' H d`` of the true-class score ``s`` at ``x`` for each direction ``d``.

    One double backward per chunk of directions: the chunk holds copies of
    ``x``, ``grad s`` of each copy is formed with its graph, and the gradient
    of ``sum_b grad s_b . d_b`` with respect to the copies is ``H d_b``.

    Parameters
    ----------
    x : the clean image (C, H, W); label : its class.
    directions : (N, C, H, W); any length (the study uses unit-radius ones).

    Returns
    -------
    (N,) float64. For a piecewise-linear network (ReLU, max-pooling) the
    logits have zero Hessian almost everywhere, and ``d' H d`` comes from the
    softmax alone.
    """
    if directions.ndim != x.ndim + 1 or tuple(directions.shape[1:]) != tuple(x.shape):
        raise ValueError(f"directions must have shape (N, {', '.join(map(str, x.shape))}), "
                         f"got {tuple(directions.shape)}")
    device, dtype = model_device(model), model_dtype(model)
    size = batch_size or gradient_batch_size(tuple(x.shape), device)
    was_training = model.training
    model.eval()

    def step(start: int, stop: int) -> torch.Tensor:
        d = directions[start:stop].to(device=device, dtype=dtype)
        copies = x.to(device=device, dtype=dtype).expand_as(d).clone().requires_grad_(True)
        labels = as_labels(label, len(d), device)
        with torch.enable_grad():
            s = torch.sigmoid(true_class_log_odds(model(copies), labels))
            (g,) = torch.autograd.grad(s.sum(), copies, create_graph=True)
            (hd,) = torch.autograd.grad((g * d).sum(), copies)
        return (hd.double() * d.double()).flatten(1).sum(1).cpu()

    try:
        out = run_chunked(len(directions), size, step)
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


@dataclass
class FirstOrderStudy:
    """Taylor coefficients of one model along the isotropy study's directions.

    ``slopes[s, k, t]`` is ``g . d`` for direction ``t`` of radius ``radii[k]``
    (``d = nu / r``, the very perturbations of the isotropy study with the same
    seed); ``curvatures[s, j, t]`` is ``d' H d`` for the first ``T_second``
    directions of radius ``second_radii[j]``.
    """

    model: str
    norm: str
    radii: np.ndarray
    second_radii: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    clean_log_odds: np.ndarray   # (S,) float64
    slopes: np.ndarray           # (S, R, T)
    curvatures: np.ndarray       # (S, R2, T2)
    gradient_l2: np.ndarray      # (S,) ||g||_2 of the score
    gradient_l1: np.ndarray      # (S,) ||g||_1 of the score
    skipped: list[str] = field(default_factory=list)

    @property
    def clean_scores(self) -> np.ndarray:
        """True-class probability at the clean images, (S,)."""
        return sigmoid(self.clean_log_odds)

    def predicted_scores(self, order: int = 1, *, through_log_odds: bool = False
                         ) -> np.ndarray:
        """First order: (S, R, T) at every radius; second order: (S, R2, T2).

        ``through_log_odds`` (first order only): ``sigmoid(lo + r g_lo . d)``
        with ``g_lo . d = g . d / (s (1 - s))``, the linear model of the
        log-odds instead of the score.
        """
        if order == 1 and through_log_odds:
            lo = self.clean_log_odds[:, None, None]
            # s (1 - s), written as sigmoid(lo) / (1 + e^lo) to keep the results' bits
            factor = sigmoid(lo) / (1.0 + np.exp(lo))
            return sigmoid(lo + self.radii[None, :, None] * self.slopes / factor)
        if through_log_odds:
            raise ValueError("through_log_odds applies to the first order only")
        if order == 1:
            return self.clean_scores[:, None, None] + self.radii[None, :, None] * self.slopes
        if order == 2:
            r = self.second_radii[None, :, None]
            t2 = self.curvatures.shape[-1]
            return (self.clean_scores[:, None, None] + r * self.slopes[:, self.second_index, :t2]
                    + 0.5 * r ** 2 * self.curvatures)
        raise ValueError(f"order must be 1 or 2, got {order}")

    @property
    def second_index(self) -> np.ndarray:
        """Positions of ``second_radii`` in ``radii``."""
        return np.array([int(np.flatnonzero(np.isclose(self.radii, r))[0])
                         for r in self.second_radii], dtype=int)


def first_order_study(model: ModelSpec, samples: SampleSet, *, radii: list[float], T: int,
                      norm: str = "l2", second_radii: Sequence[float] = (),
                      T_second: int = 16,
                      batch_size: int | None = None, cache: ResultCache | None = None,
                      progress: bool = True) -> FirstOrderStudy:
    """Gradients, slopes ``g . d`` and curvatures ``d' H d`` per clean sample.

    The arguments ``radii, T, norm`` and the samples' seeds must be those of
    the isotropy study (:func:`localprops.studies.score_study`) it is compared
    with; ``second_radii`` (a subset of ``radii``) get the second-order term
    for the first ``T_second`` directions. One cached unit per sample.
    """
    spec = as_spec(model)
    model, model_name, weights = spec.model, spec.name, spec.weights
    radii = list(_checks.check_radii(radii))
    T = _checks.check_count(T, "T")
    norm = _checks.check_norm(norm)
    second_radii = [float(r) for r in second_radii]
    missing = [r for r in second_radii if not np.isclose(radii, r).any()]
    if missing:
        raise ValueError(f"second_radii {missing} are not among the radii {radii}")
    T_second = min(_checks.check_count(T_second, "T_second"), T)
    grads = {}

    def manifest(i: int) -> dict:
        return dict(study="first_order", model=model_name, weights=weights, radii=radii,
                    T=T, norm=norm, second_radii=second_radii, T_second=T_second,
                    seed=int(samples.seeds[i]), sample=int(samples.ids[i]),
                    label=int(samples.labels[i]))

    def compute(i: int) -> dict:
        if not grads:           # every sample's gradient in one batched pass
            grads.update(g=gradients(model, samples.images, samples.labels,
                                     batch_size=batch_size))
        lo, grad_lo = grads["g"].log_odds[i], grads["g"].log_odds_grad[i]
        if not torch.isfinite(grad_lo).all():
            raise ValueError("the gradient is not finite")
        g = grad_lo * torch.sigmoid(lo) * torch.sigmoid(-lo)
        device = model_device(model)
        source = RadialPerturbations(tuple(samples.images.shape[1:]), radii, T, norm,
                                     int(samples.seeds[i]))
        slopes = directional_slopes(g.to(device), source)
        curv = np.zeros((len(second_radii), T_second))
        for j, r in enumerate(second_radii):
            nu = RadialPerturbations(source.shape, [r], T_second, norm, int(samples.seeds[i])
                                     ).materialize(device=device, dtype=torch.float64)[0]
            curv[j] = directional_curvatures(model, samples.images[i], samples.labels[i],
                                             nu / r, batch_size=batch_size)
        return dict(clean_log_odds=np.float64(lo), slopes=slopes, curvatures=curv,
                    gradient_l2=np.float64(g.norm()), gradient_l1=np.float64(g.abs().sum()))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model_name} first order", progress=progress,
                                     study_modules=CODE_MODULES)

    def stack(key, shape):
        return np.stack([u[key] for u in units]) if units else np.zeros((0, *shape))

    return FirstOrderStudy(
        model=model_name, norm=norm, radii=np.asarray(radii),
        second_radii=np.asarray(second_radii), ids=np.asarray(samples.ids)[kept],
        labels=np.asarray(samples.labels)[kept], clean_log_odds=stack("clean_log_odds", ()),
        slopes=stack("slopes", (len(radii), T)),
        curvatures=stack("curvatures", (len(second_radii), T_second)),
        gradient_l2=stack("gradient_l2", ()), gradient_l1=stack("gradient_l1", ()),
        skipped=skipped)


def check_aligned(measured: ScoreStudy, study: FirstOrderStudy) -> None:
    """Raise a ValueError unless both studies hold the same samples, radii, T and norm."""
    if (measured.norm != study.norm or not np.array_equal(measured.ids, study.ids)
            or not np.allclose(measured.radii, study.radii)
            or measured.scores.shape[-1] != study.slopes.shape[-1]):
        raise ValueError(
            "the isotropy study and the first-order study differ (samples, radii, T or "
            "norm): run both with the same samples and parameters")


def range_ratios(measured: ScoreStudy, study: FirstOrderStudy, order: int = 1, *,
                 second_only: bool = False, through_log_odds: bool = False) -> np.ndarray:
    """Predicted over measured score range, per sample and radius.

    Order 1: (S, R) over all ``T`` directions. Order 2, or order 1 with
    ``second_only``: (S, R2) over the first ``T_second`` directions of the
    second-order radii, so the two orders can be compared on the same
    directions (the measured range is taken over them too).
    ``through_log_odds``: the first-order model of the log-odds (see
    :meth:`FirstOrderStudy.predicted_scores`).
    """
    check_aligned(measured, study)
    predicted = study.predicted_scores(order, through_log_odds=through_log_odds)
    scores = measured.scores
    if order == 2 or second_only:
        t2 = study.curvatures.shape[-1]
        scores = scores[:, study.second_index, :t2]
        if order == 1:
            predicted = predicted[:, study.second_index, :t2]
    measured_range = np.ptp(scores, axis=-1)
    predicted_range = np.ptp(predicted, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return predicted_range / measured_range


def within_factor(value: ArrayLike, reference: ArrayLike = 1.0, factor: float = 2.0
                  ) -> np.ndarray | np.bool_:
    """Whether ``value`` lies within ``factor`` of ``reference``, elementwise.

    The agreement rule of the chapter beyond the paper: a prediction agrees
    with a measurement when ``reference / factor <= value <= reference * factor``.
    With the default ``reference = 1`` it reads a ratio (predicted over
    measured): ``1 / factor <= ratio <= factor``.

    Parameters
    ----------
    value : array_like
        The values to judge (a ratio, or a prediction to compare with
        ``reference``); NaN never agrees.
    reference : array_like, optional
        What ``value`` should be close to, broadcast against it (default 1).
    factor : float, optional
        How far is still close, at least 1 (default 2).

    Returns
    -------
    numpy.ndarray or numpy.bool_
        Boolean, of the broadcast shape of ``value`` and ``reference``.

    Examples
    --------
    >>> within_factor([0.4, 0.5, 1.0, 2.0, 2.5, float("nan")])
    array([False,  True,  True,  True, False, False])
    >>> bool(within_factor(30.0, reference=20.0, factor=2.0))
    True
    """
    factor = float(factor)
    if not factor >= 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (value >= reference / factor) & (value <= reference * factor)


def linear_regime_end(ratios: np.ndarray, radii: Sequence[float], valid: np.ndarray,
                      factor: float = 2.0) -> np.ndarray:
    """First radius where a prediction departs from the measurement by more than ``factor``.

    Parameters
    ----------
    ratios : (S, R) predicted / measured range (:func:`range_ratios`).
    radii : the R radii, ascending.
    valid : (S, R) where the measurement says something (range above the
        float32 noise floor); other radii are passed over.
    factor : agreement means ``1 / factor <= ratio <= factor`` (:func:`within_factor`).

    Returns
    -------
    (S,) the radius, ``inf`` where the prediction holds at every valid radius.
    """
    ratios, valid = np.asarray(ratios, float), np.asarray(valid, bool)
    radii = np.asarray(radii, float)
    if ratios.shape != valid.shape or ratios.shape[-1] != len(radii):
        raise ValueError(f"ratios {ratios.shape}, valid {valid.shape} and {len(radii)} "
                         "radii do not match")
    if np.any(np.diff(radii) <= 0):
        raise ValueError("radii must be ascending")
    departs = valid & ~within_factor(ratios, factor=factor)
    first = np.where(departs.any(axis=1), departs.argmax(axis=1), -1)
    return np.where(first >= 0, radii[np.maximum(first, 0)], np.inf)


def measurable(measured: ScoreStudy, samples: SampleSet, floor: NoiseFloor | float, *,
               max_rounding: float = 0.1, T: int = 8) -> np.ndarray:
    """Where a measured score range says something about the network: (S, R) bool.

    A range counts when it lies above its sample's noise floor
    (:func:`localprops.studies.scores.float32_noise_floor`, scaled down at the
    radii the study evaluated in float64; a plain number is one floor for all)
    and when the perturbed image is represented faithfully: in float32, the
    median share of the perturbation lost to rounding of ``x + nu``
    (:func:`localprops.studies.scores.rounding_distortion`, ``T`` draws) is at
    most ``max_rounding``; float64 radii are faithful.
    """
    position = {int(i): k for k, i in enumerate(samples.ids)}
    if any(int(i) not in position for i in measured.ids):
        raise ValueError("the isotropy study holds samples that are not in `samples`")
    rows = [position[int(i)] for i in measured.ids]
    distortion = np.stack([rounding_distortion(samples, radius=float(r), T=T,
                                               norm=measured.norm) for r in measured.radii],
                          axis=1)[rows]
    precise = (measured.float64 if measured.float64 is not None
               else np.zeros(len(measured.radii), bool))
    floors = (measured.range_floors(floor) if isinstance(floor, NoiseFloor)
              else np.full(distortion.shape, float(floor)))
    return (np.ptp(measured.scores, axis=-1) > floors) & ((distortion <= max_rounding)
                                                          | precise[None, :])


def departure_radii(measured: ScoreStudy, study: FirstOrderStudy, valid: np.ndarray,
                    factor: float = 2.0, *, through_log_odds: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`linear_regime_end` for the samples measurable at some radius.

    Returns (their ids, their first radius of departure; ``inf`` where the
    first-order model of the score, or of the log-odds with
    ``through_log_odds``, agrees at every measurable radius). Samples with no
    measurable radius say nothing and are left out.
    """
    valid = np.asarray(valid, bool)
    ratio = range_ratios(measured, study, through_log_odds=through_log_odds)
    seen = valid.any(axis=1)
    end = linear_regime_end(ratio, study.radii, valid, factor)
    return study.ids[seen], end[seen]
