"""Worst-case local Lipschitz behaviour: the top singular value of the feature Jacobian.

Beyond the paper. The Lipschitz study (:mod:`localprops.studies.lipschitz`,
paper eq. 9) measures the ratio ``L_x = ||f(x + nu) - f(x)|| / ||nu||`` along
random directions ``nu``; a random direction in a space of thousands of
pixels sees only a small part of the largest stretch. This module measures
that largest stretch directly (GitHub issue 15):

- :func:`top_singular`: the largest singular value ``sigma`` of the Jacobian
  ``J`` of the feature map at ``x``, by the Lanczos method (ARPACK) on
  ``J^T J``, each product being one forward-mode product ``J v`` and one
  reverse-mode product ``J^T u`` (the power iteration is kept as a
  method). ``sigma`` is the ``r -> 0`` limit of the worst-case ratio
  ``sup_{||nu|| = r} L_x``; the full Jacobian is never formed, so it works
  for 224 x 224 ImageNet inputs.
- :func:`ratio_along`: the finite-radius ratio along one direction (e.g. the
  top singular direction), for many radii in one batched pass.
- :func:`max_ratio_search`: an independent cross-check, a projected gradient
  ascent of the ratio on the sphere of radius ``r``. Its result is a lower
  bound on the true supremum at that radius.

Units. ``scale`` (F,) divides every feature (the min-max normaliser ``g`` of
eq. 9, :attr:`localprops.studies.lipschitz.MinMaxNormalizer.scale`);
``input_scale`` (the input's ``h``, per pixel) optionally does the same for
the input. With both, the map studied is ``delta -> f(x + input_scale * delta)
/ scale``, whose Jacobian is ``diag(1 / scale) J diag(input_scale)``: the
"minmax" reading of the Lipschitz study. Directions and radii are then in
normalised input units. Without them everything is raw (pixels 0-255 in,
activations out).

A feature function ``feature_fn`` takes a batch ``(N, *x.shape)`` and returns
``(N, F)`` (or ``(N, ...)``, flattened here); :class:`FeatureMap` builds one
from a model and a layer name, in float64.
"""
from __future__ import annotations

import collections
import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse.linalg
import torch
from torch import nn

from localprops.core import checks as _checks
from localprops.core.engine import capture_layer, default_batch_size, model_device, run_chunked
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec
from localprops.studies.attacks import deepfool
from localprops.studies.runner import run_units

FeatureFn = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["FeatureMap", "SearchResult", "TopSingular", "WorstCaseStudy", "feature_jacobian_norm",
           "max_ratio_search", "ratio_along", "top_singular", "worst_case_study"]


@dataclass
class TopSingular:
    """What :func:`top_singular` returns.

    Attributes
    ----------
    sigma : the estimate ``||J v||`` for the returned unit direction ``v``; a
        lower bound on the largest singular value, approached from below.
    direction : ``v``, a unit (Euclidean) input vector of the shape of ``x``
        and in its dtype (in normalised input units when ``input_scale`` was
        given). Its sign is arbitrary.
    iterations : products with ``J^T J`` done (one ``J v`` and one ``J^T u`` each).
    converged : whether the stopping rule held before ``iterations`` ran out.
    history : the estimate of ``sigma`` after every power iteration (Lanczos:
        the final estimate only).
    """

    sigma: float
    direction: torch.Tensor
    iterations: int
    converged: bool
    history: np.ndarray


@dataclass
class SearchResult:
    """What :func:`max_ratio_search` returns.

    Attributes
    ----------
    ratio : the largest ratio found, a lower bound on ``sup_{||nu|| = r} L_x``.
    perturbation : the ``nu`` that reached it, of norm ``radius`` (shape of ``x``).
    restart_ratios : (restarts,) the best ratio of every restart.
    history : (steps + 1,) the best ratio over all restarts after every step.
    """

    ratio: float
    perturbation: torch.Tensor
    restart_ratios: np.ndarray
    history: np.ndarray


class FeatureMap:
    """``feature_fn`` of a model: a batch of images -> flattened ``layer`` outputs.

    The model is copied and cast to ``dtype`` (float64 by default: the book's
    models run in float32, whose rounding would limit ``sigma`` to about 1e-7
    relative), put in eval mode and its parameters frozen, so that
    the products with the Jacobian differentiate with respect to the input only.

    Parameters
    ----------
    spec_or_model : a :class:`~localprops.models.wrappers.ModelSpec` or a bare
        ``nn.Module`` taking images (N, C, H, W).
    feature_layer : a name of ``model.named_modules()``; None takes the spec's
        ``feature_layer`` (the layer before the classifier).
    dtype : the floating dtype of the copy.
    """

    def __init__(self, spec_or_model: ModelSpec | nn.Module, feature_layer: str | None = None,
                 *, dtype: torch.dtype = torch.float64) -> None:
        if isinstance(spec_or_model, ModelSpec):
            model = spec_or_model.model
            feature_layer = feature_layer or spec_or_model.feature_layer
        elif isinstance(spec_or_model, nn.Module):
            model = spec_or_model
        else:
            raise TypeError("pass a ModelSpec or an nn.Module, got "
                            f"{type(spec_or_model).__name__}")
        if not feature_layer:
            raise ValueError("name the feature layer (a name of model.named_modules())")
        self.model = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
        self.layer = feature_layer
        self.dtype = dtype
        self.device = model_device(self.model)
        with capture_layer(self.model, feature_layer, []):
            pass                                   # an unknown name raises here

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """The flattened ``layer`` outputs (N, F) of a batch of images (N, C, H, W)."""
        sink: list[torch.Tensor] = []
        with capture_layer(self.model, self.layer, sink, detach=False):
            self.model(batch)
        if not sink:
            raise RuntimeError(f"feature_layer {self.layer!r} was not called in the forward pass")
        return sink[-1]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the copy's device and in its dtype."""
        return x.to(device=self.device, dtype=self.dtype)


def _as_scale(scale: torch.Tensor | np.ndarray | None, like: torch.Tensor, name: str,
              shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
    """A positive finite scale on ``like``'s device and dtype (reshaped to ``shape``)."""
    if scale is None:
        return None
    s = torch.as_tensor(scale).to(device=like.device, dtype=like.dtype)
    _checks.check_finite(s, name)
    if not (s > 0).all():
        raise ValueError(f"{name} must be positive (a feature that never varies gets 1)")
    if shape is not None:
        if s.numel() != math.prod(shape):
            raise ValueError(f"{name} has {s.numel()} values, the input has "
                             f"{math.prod(shape)} ({tuple(shape)})")
        s = s.reshape(shape)
    return s


def _displacement_map(feature_fn: FeatureFn, x: torch.Tensor, scale, input_scale) -> FeatureFn:
    """``delta (N, *x.shape) -> f(x + input_scale * delta) / scale`` as (N, F).

    Every function of this module works on this map at ``delta = 0``: its
    Jacobian is ``diag(1 / scale) J diag(input_scale)``, so one code path
    serves the raw and the normalised readings.
    """
    out_scale = _as_scale(scale, x, "scale")
    in_scale = _as_scale(input_scale, x, "input_scale", tuple(x.shape))

    def phi(delta: torch.Tensor) -> torch.Tensor:
        step = delta if in_scale is None else delta * in_scale
        out = feature_fn(x + step).flatten(1)
        if out_scale is None:
            return out
        if out.shape[1] != out_scale.numel():
            raise ValueError(f"scale has {out_scale.numel()} values, the features have "
                             f"{out.shape[1]}")
        return out / out_scale

    return phi


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating tensor (one input, e.g. an image (C, H, W))")
    _checks.check_finite(x, "x")


def _start_vector(shape: tuple[int, ...], seed: int, like: torch.Tensor,
                  count: int | None = None) -> torch.Tensor:
    """Seeded standard normal vectors, drawn on the CPU (identical on any device)."""
    gen = torch.Generator().manual_seed(_checks.check_seed(seed))
    full = shape if count is None else (count, *shape)
    return torch.randn(full, generator=gen, dtype=torch.float64).to(like.device, like.dtype)


#: Lanczos vectors ARPACK keeps (``ncv``). On test spectra of 3000 dimensions
#: 8 needed 9 products with a clear gap and 17-21 with sigma_2 / sigma_1 =
#: 0.97-0.99 to reach ``tol = 1e-4``; 16 needed 17-25.
LANCZOS_VECTORS = 8
METHODS = ("lanczos", "power")


def top_singular(feature_fn: FeatureFn, x: torch.Tensor, *, scale=None, input_scale=None,
                 iterations: int = 200, tol: float = 1e-6, seed: int = 0,
                 method: str = "lanczos") -> TopSingular:
    """Largest singular value of the feature Jacobian at ``x``, matrix-free.

    Both methods only ever apply ``A = J^T J`` to a vector: ``u = J v`` by
    forward mode (:func:`torch.func.jvp`), then ``J^T u`` by reverse mode (a
    :func:`torch.func.vjp` whose forward pass is done once). The Jacobian is
    never formed. The start vector is a seeded normal vector, so the result
    is deterministic.

    ``method="lanczos"`` (the default) hands ``A`` to ARPACK's implicitly
    restarted Lanczos method (:func:`scipy.sparse.linalg.eigsh`, largest
    eigenvalue). It stops when its residual test says the eigenvalue
    ``sigma^2`` is accurate to ``tol`` relative (so ``sigma`` to about
    ``tol / 2``). Lanczos builds its estimate from the whole Krylov space, not
    only the last vector, so it needs far fewer products than the power
    iteration when the top two singular values are close. At most
    ``iterations`` products are done; if ARPACK has not converged by then
    (``converged`` False), the direction is the best one in the span of the
    last ``2 * LANCZOS_VECTORS`` vectors it was given (Rayleigh-Ritz), not a
    random one. Inputs of at most ``LANCZOS_VECTORS`` values are solved
    exactly from the explicit ``A`` (one product per value, whatever
    ``iterations``).

    ``method="power"`` is the textbook power iteration, kept because it is
    the idea in two lines: ``v_{k+1} = A v_k / ||A v_k||``, with ``sigma_k =
    ||J v_k||``. It stops (``converged`` True) after iteration ``k >= 2`` when
    both the relative change ``|sigma_k - sigma_{k-1}| <= tol * sigma_k`` and
    the sine of the angle between ``v_k`` and ``v_{k+1}`` (the relative
    residual of ``A``) is ``<= tol``. The sine is asked to be as small as
    ``tol`` itself, not its square root, because of close singular values:
    when ``v`` still mixes the top two directions, both become small long
    before ``sigma`` is right (with ``sigma_2 / sigma_1 = 0.999`` a rule
    ``sine <= sqrt(tol)`` stopped 6e-5 below ``sigma`` for ``tol = 1e-6``).
    Its error then shrinks only by ``(sigma_2 / sigma_1)^2`` per iteration.

    Either way ``sigma`` is ``||J v||`` for the returned unit ``direction``
    ``v``, so it never exceeds the true value (up to rounding). In float32
    the products carry relative errors of about 1e-7, enough for ``tol`` down
    to about 1e-5; use float64 for more. A Jacobian that is exactly zero gives ``sigma = 0``.

    Parameters
    ----------
    feature_fn : batch ``(N, *x.shape)`` -> features ``(N, F)``, differentiable
        (e.g. a :class:`FeatureMap`). Computations run in ``x``'s dtype and on
        its device: pass float64 for a precise value.
    x : the point (e.g. an image (C, H, W), raw pixels).
    scale : (F,) per-feature divisor (min-max: ``max - min``), or None for raw features.
    input_scale : per-pixel divisor of the input (shape of ``x`` or flattened), or None.
    iterations : the most products with ``A`` (power: iterations).
    tol : the stopping tolerance; the two methods read it differently (see above).
    seed : seed of the start vector.
    method : ``"lanczos"`` or ``"power"``.

    Returns
    -------
    TopSingular; ``iterations`` counts the products with ``A`` done.
    """
    _check_input(x)
    iterations = _checks.check_count(iterations, "iterations")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
    phi = _displacement_map(feature_fn, x, scale, input_scale)

    def single(delta: torch.Tensor) -> torch.Tensor:
        return phi(delta.unsqueeze(0))[0]

    zero = torch.zeros_like(x)
    _, vjp_fn = torch.func.vjp(single, zero)

    def forward(v: torch.Tensor) -> torch.Tensor:
        """``J v``."""
        return torch.func.jvp(single, (zero,), (v,))[1].detach()

    v = _start_vector(tuple(x.shape), seed, x)
    v = v / torch.linalg.vector_norm(v)
    if method == "lanczos":
        return _lanczos(forward, lambda u: vjp_fn(u)[0].detach(), v, iterations, tol)
    history: list[float] = []
    converged = False
    for _ in range(iterations):
        u = forward(v)
        sigma = float(torch.linalg.vector_norm(u))
        history.append(sigma)
        w = vjp_fn(u)[0].detach()
        w_norm = torch.linalg.vector_norm(w)
        if sigma == 0 or w_norm == 0:
            converged = True
            break
        v_next = w / w_norm
        if len(history) >= 2 and _settled(history, v, v_next, tol):
            converged = True
            break
        v = v_next
    return TopSingular(sigma=history[-1], direction=v.detach(), iterations=len(history),
                       converged=converged, history=np.asarray(history))


class _OutOfProducts(Exception):
    """Raised inside ARPACK's loop when the product budget is spent."""


def _lanczos(forward: Callable[[torch.Tensor], torch.Tensor],
             backward: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
             iterations: int, tol: float) -> TopSingular:
    """Top eigenvector of ``A = J^T J`` by ARPACK (see :func:`top_singular`).

    ARPACK works in float64 numpy; each product moves the vector to the
    device and dtype of ``start`` and back. The last ``2 * LANCZOS_VECTORS``
    products are kept for the Rayleigh-Ritz fallback.
    """
    shape, like = tuple(start.shape), start
    size = start.numel()
    seen: collections.deque = collections.deque(maxlen=2 * LANCZOS_VECTORS)
    products = [0]
    exact = size <= LANCZOS_VECTORS         # tiny input: the explicit A, solved exactly
    budget = max(iterations, size) if exact else iterations

    def gram(flat: np.ndarray) -> np.ndarray:
        if products[0] >= budget:
            raise _OutOfProducts
        products[0] += 1
        flat = np.ascontiguousarray(flat, dtype=np.float64).reshape(-1)
        v = torch.as_tensor(flat.reshape(shape)).to(like.device, like.dtype)
        image = backward(forward(v)).double().cpu().numpy().reshape(-1)
        seen.append((flat.copy(), image))
        return image

    converged = True
    if exact:
        a = np.stack([gram(e) for e in np.eye(size)], axis=1)
        top = np.linalg.eigh((a + a.T) / 2)[1][:, -1]
    else:
        operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=gram,
                                                      dtype=np.float64)
        try:
            top = scipy.sparse.linalg.eigsh(
                operator, k=1, which="LA", tol=tol, v0=start.double().cpu().numpy().reshape(-1),
                ncv=LANCZOS_VECTORS, maxiter=max(iterations, 1))[1][:, 0]
        except (_OutOfProducts, scipy.sparse.linalg.ArpackNoConvergence):
            converged = False
            top = _rayleigh_ritz(list(seen))
    direction = torch.as_tensor(top / np.linalg.norm(top)).reshape(shape)
    direction = direction.to(like.device, like.dtype)
    sigma = float(torch.linalg.vector_norm(forward(direction)))
    return TopSingular(sigma=sigma, direction=direction, iterations=products[0],
                       converged=converged, history=np.asarray([sigma]))


def _rayleigh_ritz(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The top Ritz vector of ``A`` in the span of the ``x`` of pairs ``(x, A x)``.

    With ``X = U S V^T`` (directions of singular values above 1e-10 of the
    largest kept), ``U^T A U = U^T (A X) V S^-1``; its top eigenvector ``y``
    gives ``U y``, the unit vector of that span with the largest ``v^T A v``.
    """
    x = np.stack([p[0] for p in pairs], axis=1)
    ax = np.stack([p[1] for p in pairs], axis=1)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > 1e-10 * s[0]
    u, s, vt = u[:, keep], s[keep], vt[keep]
    small = u.T @ ax @ vt.T / s
    return u @ np.linalg.eigh((small + small.T) / 2)[1][:, -1]


def _settled(history: list[float], v: torch.Tensor, v_next: torch.Tensor, tol: float) -> bool:
    """The stopping rule of :func:`top_singular`."""
    change = abs(history[-1] - history[-2]) <= tol * history[-1]
    # the sine as the norm of v_next's part orthogonal to v: exact near 0,
    # where sqrt(1 - cos^2) would lose half the digits
    sine = float(torch.linalg.vector_norm(v_next - torch.sum(v * v_next) * v))
    return change and sine <= tol


def feature_jacobian_norm(spec_or_model: ModelSpec | nn.Module, x: torch.Tensor,
                          feature_layer: str | None = None, *, scale=None, input_scale=None,
                          dtype: torch.dtype = torch.float64, iterations: int = 200,
                          tol: float = 1e-6, seed: int = 0, method: str = "lanczos"
                          ) -> TopSingular:
    """:func:`top_singular` of a model's ``feature_layer`` at the image ``x``.

    Builds a :class:`FeatureMap` (a copy of the model in ``dtype``, float64 by
    default) and moves ``x`` to it. ``feature_layer`` None takes the spec's
    layer before the classifier, as the Lipschitz study does. For many images,
    build the FeatureMap once and call :func:`top_singular` on each.
    """
    fmap = FeatureMap(spec_or_model, feature_layer, dtype=dtype)
    return top_singular(fmap, fmap.prepare(x), scale=scale, input_scale=input_scale,
                        iterations=iterations, tol=tol, seed=seed, method=method)


def _unit(direction: torch.Tensor, norm: str) -> torch.Tensor:
    """``direction`` scaled to norm 1 in ``norm`` (``l2`` or ``linf``)."""
    size = (torch.linalg.vector_norm(direction) if norm == "l2"
            else direction.abs().max())
    if not size > 0:
        raise ValueError("the direction is zero")
    return direction / size


def ratio_along(feature_fn: FeatureFn, x: torch.Tensor, direction: torch.Tensor,
                radii: float | Sequence[float], *, norm: str = "l2", scale=None,
                input_scale=None, batch_size: int | None = None) -> np.ndarray:
    """The local Lipschitz ratio ``L_x(r)`` along one direction, for every radius.

    ``nu = r d / ||d||`` with the norm ``norm`` (``l2``: Euclidean radius,
    ``linf``: largest change of any input value), and

        L_x(r) = ||f(x + nu) - f(x)||_2 / ||nu||_2,

    the ratio of eq. 9 as :func:`~localprops.studies.lipschitz.lipschitz_study`
    computes it (Euclidean distances on both sides; ``norm`` sets only what the
    radius measures). With ``scale`` / ``input_scale`` both distances are in
    normalised units and ``direction`` is in normalised input units. Along the
    top singular direction ``L_x(r) -> sigma`` as ``r -> 0`` (first order in ``r``
    for a smooth map, exactly for a linear one).

    All radii are evaluated as one batch (in chunks of ``batch_size``) without
    autograd. Returns an array (R,) of float64.
    """
    _check_input(x)
    norm = _checks.check_norm(norm)
    radii = _checks.check_radii(radii)
    if tuple(direction.shape) != tuple(x.shape):
        raise ValueError(f"direction must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(direction.shape)}")
    phi = _displacement_map(feature_fn, x, scale, input_scale)
    unit = _unit(direction.to(device=x.device, dtype=x.dtype), norm)
    r = torch.tensor(radii, device=x.device, dtype=x.dtype).reshape(-1, *[1] * x.ndim)
    nu = r * unit                                              # (R, *x.shape)
    size = batch_size or default_batch_size(tuple(x.shape), x.device)
    with torch.no_grad():
        clean = phi(torch.zeros_like(x).unsqueeze(0))
        chunks = run_chunked(len(radii), size, lambda a, b: phi(nu[a:b]) - clean)
        out = torch.linalg.vector_norm(torch.cat(chunks), dim=1)
    return (out / torch.linalg.vector_norm(nu.flatten(1), dim=1)).double().cpu().numpy()


def _project(nu: torch.Tensor, radius: float, norm: str) -> torch.Tensor:
    """Rescale every row of ``nu`` (K, ...) radially onto the sphere of ``radius``."""
    flat = nu.flatten(1)
    size = (torch.linalg.vector_norm(flat, dim=1) if norm == "l2"
            else flat.abs().amax(dim=1))
    return nu * (radius / size).reshape(-1, *[1] * (nu.ndim - 1))


def _ratios_and_grad(phi: FeatureFn, clean: torch.Tensor,
                     nu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ratios (K,) of every row of ``nu`` and their gradients with respect to ``nu``."""
    nu = nu.detach().requires_grad_(True)
    with torch.enable_grad():
        diff = phi(nu) - clean
        ratio = (torch.linalg.vector_norm(diff, dim=1)
                 / torch.linalg.vector_norm(nu.flatten(1), dim=1))
        (grad,) = torch.autograd.grad(ratio.sum(), nu)
    return ratio.detach(), grad


def _starts(start, feature_fn, x, restarts, seed, scale, input_scale) -> torch.Tensor:
    """(restarts, *x.shape) start directions: the first from ``start``, the rest random."""
    shape = tuple(x.shape)
    starts = _start_vector(shape, seed + 1, x, count=restarts)
    if isinstance(start, torch.Tensor):
        first = start.to(device=x.device, dtype=x.dtype).reshape(shape)
    elif start == "top":
        first = top_singular(feature_fn, x, scale=scale, input_scale=input_scale,
                             seed=seed).direction
    elif start == "random":
        return starts
    else:
        raise ValueError(f"start must be 'top', 'random' or a direction tensor, got {start!r}")
    return torch.cat([first.unsqueeze(0), starts[1:]])


def max_ratio_search(feature_fn: FeatureFn, x: torch.Tensor, radius: float, *,
                     norm: str = "l2", steps: int = 50, step_size: float = 0.5,
                     restarts: int = 1, start: str | torch.Tensor = "top", seed: int = 0,
                     scale=None, input_scale=None) -> SearchResult:
    """Projected gradient ascent of ``L_x`` on the sphere ``||nu|| = radius``.

    The independent cross-check of :func:`top_singular` (issue 15): it looks
    for the largest ratio ``||f(x + nu) - f(x)||_2 / ||nu||_2`` (the ratio of
    :func:`ratio_along`) among perturbations of norm ``radius`` in ``norm``.
    Every step moves each ``nu`` by ``step_size * ||nu||_2`` along the
    normalised gradient of its ratio, then rescales it radially back onto the
    sphere (on the l2 sphere, the ratio is ``||f(x + nu) - f(x)|| / radius``).
    A step is kept only if it raises the ratio; otherwise that restart's step
    is halved, so every restart's ratio increases monotonically and the result
    is at least the ratio of its start.

    What the result means: a lower bound on ``sup_{||nu|| = radius} L_x``
    (gradient ascent finds a local maximum). ``sigma`` of :func:`top_singular`
    is the ``radius -> 0`` limit of that supremum, not a bound at a finite
    radius: a non-linear map can stretch more (or less) at a finite radius.

    Parameters
    ----------
    feature_fn, x, scale, input_scale : as for :func:`top_singular`.
    radius : the radius, in ``norm`` (normalised input units with ``input_scale``).
    steps : gradient steps (one forward and backward pass of all restarts each).
    step_size : step length as a fraction of ``||nu||_2``.
    restarts : directions searched together, as one batch.
    start : the first restart's start: ``"top"`` (the top singular direction,
        one :func:`top_singular` call), ``"random"``, or a direction tensor; the
        other restarts start from seeded random directions.
    seed : seed of the random starts (and of the power iteration).
    """
    _check_input(x)
    norm = _checks.check_norm(norm)
    (radius,) = _checks.check_radii(radius)
    steps = _checks.check_count(steps, "steps") if steps else 0
    restarts = _checks.check_count(restarts, "restarts")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    phi = _displacement_map(feature_fn, x, scale, input_scale)
    nu = _project(_starts(start, feature_fn, x, restarts, seed, scale, input_scale),
                  radius, norm)
    with torch.no_grad():
        clean = phi(torch.zeros_like(x).unsqueeze(0))
    ratio, grad = _ratios_and_grad(phi, clean, nu)
    alpha = torch.full_like(ratio, float(step_size))
    history = [float(ratio.max())]
    expand = (-1, *[1] * x.ndim)
    for _ in range(steps):
        g = grad / torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp_min(
            torch.finfo(x.dtype).tiny).reshape(expand)
        length = alpha * torch.linalg.vector_norm(nu.flatten(1), dim=1)
        proposal = _project(nu + length.reshape(expand) * g, radius, norm)
        new_ratio, new_grad = _ratios_and_grad(phi, clean, proposal)
        better = new_ratio > ratio
        keep = better.reshape(expand)
        nu = torch.where(keep, proposal, nu)
        grad = torch.where(keep, new_grad, grad)
        ratio = torch.where(better, new_ratio, ratio)
        alpha = torch.where(better, alpha, alpha / 2)
        history.append(float(ratio.max()))
    best = int(ratio.argmax())
    return SearchResult(ratio=float(ratio[best]), perturbation=nu[best].detach(),
                        restart_ratios=ratio.double().cpu().numpy(), history=np.asarray(history))


# ------------------------------------------------------------ per-sample study
#: The studies modules whose code computes this study's cached units.
CODE_MODULES = ("worstcase", "lipschitz", "attacks", "firstorder", "scores")


@dataclass
class WorstCaseStudy:
    """The worst direction at every sample, next to the random ones of eq. 9.

    Per reading (``"raw"``: pixels in, activations out; ``"minmax"``: the
    Lipschitz study's min-max normalised units): ``sigma[reading]`` (S,) is
    the largest singular value of the feature Jacobian at x (the r -> 0 limit
    of the worst-case ratio), ``converged[reading]`` (S,) whether
    :func:`top_singular` met its stopping rule, ``products[reading]`` (S,) how
    many products with ``J^T J`` it took, and ``along[reading]`` (S, R) the
    finite-radius ratio ``L_x`` along that reading's top singular direction,
    rescaled to each radius of the chapter (raw pixel units, in ``norm``), and
    ``along_attack[reading]`` (S, R) the same along the sample's DeepFool
    perturbation (:func:`localprops.studies.attacks.deepfool`), the direction
    an attack on the class takes; NaN where DeepFool found no misclassified
    point. ``frobenius[reading]`` (S,) is ``||J||_F / sqrt(D)``, estimated from
    ``probes`` random Gaussian directions: what a random direction's squared
    gain averages to.
    """

    model: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    sigma: dict[str, np.ndarray]
    converged: dict[str, np.ndarray]
    along: dict[str, np.ndarray]
    along_attack: dict[str, np.ndarray]
    frobenius: dict[str, np.ndarray]
    products: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list = field(default_factory=list)


READINGS = ("raw", "minmax")


def _rms_gain(single, x: torch.Tensor, probes: int, seed: int) -> float:
    """``||J||_F / sqrt(D)`` estimated as the RMS of ``||J g|| / ||g||`` over Gaussian ``g``."""
    zero = torch.zeros_like(x)
    gains = []
    for g in _start_vector(tuple(x.shape), seed + 1, x, count=probes):
        _, u = torch.func.jvp(single, (zero,), (g / torch.linalg.vector_norm(g),))
        gains.append(float(torch.linalg.vector_norm(u)) ** 2)
    return math.sqrt(sum(gains) / len(gains))


def worst_case_study(model: ModelSpec, samples: SampleSet, normalizers, *, radii: Sequence[float],
                     norm: str = "l2", dtype: torch.dtype = torch.float32,
                     iterations: int = 100, tol: float = 1e-4, probes: int = 8, seed: int = 0,
                     method: str = "lanczos", cache=None, progress: bool = True
                     ) -> WorstCaseStudy:
    """Top singular values and ratios along the top directions for every sample.

    Parameters
    ----------
    model : the loaded model (a ModelSpec; its ``feature_layer`` is used).
    samples : the clean samples (a :class:`localprops.models.samples.SampleSet`).
    normalizers : the Lipschitz study's fitted
        :class:`localprops.studies.lipschitz.Normalizers` (its ``minmax``
        scales define the normalised reading).
    radii, norm : where the finite-radius ratio along the top direction is
        evaluated (raw pixel units, the chapter's radii).
    dtype : precision of the Jacobian products. float32 (the default) is
        3-4x faster than float64 and resolves ``sigma`` to about 1e-5
        relative, far below the differences the chapter reads; the stopping
        rule's ``tol`` must then stay above about 1e-7 sqrt(D).
    iterations, tol, method : see :func:`top_singular`.
    probes : random directions for the Frobenius estimate.
    cache : finished samples are read from and written to it.
    """
    radii = [float(r) for r in _checks.check_radii(radii)]
    norm = _checks.check_norm(norm)
    fmap = FeatureMap(model, dtype=dtype)
    scales = {"raw": (None, None),
              "minmax": (normalizers.output_scale["minmax"], normalizers.input_scale["minmax"])}

    def ratios_along(x, clean, raw_direction, g, h) -> np.ndarray:
        """L_x at every radius along a raw pixel direction, in the reading of (g, h)."""
        nu = torch.stack([_unit(raw_direction, norm) * r for r in radii])
        with torch.no_grad():
            moved = fmap(x.unsqueeze(0) + nu) - clean
        out_scale = _as_scale(g, x, "scale")
        in_scale = _as_scale(h, x, "input_scale", tuple(x.shape))
        top_out = torch.linalg.vector_norm(moved if out_scale is None else moved / out_scale,
                                           dim=-1)
        top_in = torch.linalg.vector_norm((nu if in_scale is None else nu / in_scale)
                                          .flatten(1), dim=-1)
        return (top_out / top_in).double().cpu().numpy()

    def compute(i: int) -> dict[str, np.ndarray]:
        x = fmap.prepare(samples.images[i])
        with torch.no_grad():
            clean = fmap(x.unsqueeze(0))[0]
        attack = deepfool(model.model, samples.images[i:i + 1], [int(samples.labels[i])],
                          norm=norm)
        attack_dir = (attack.perturbations[0].to(device=x.device, dtype=x.dtype)
                      if attack.found[0] and attack.radius[0] > 0 else None)
        out: dict[str, np.ndarray] = {}
        for reading, (g, h) in scales.items():
            top = top_singular(fmap, x, scale=g, input_scale=h, iterations=iterations,
                               tol=tol, seed=seed, method=method)
            phi = _displacement_map(fmap, x, g, h)
            out[f"sigma_{reading}"] = np.asarray([top.sigma])
            out[f"converged_{reading}"] = np.asarray([top.converged])
            out[f"products_{reading}"] = np.asarray([top.iterations])
            out[f"frobenius_{reading}"] = np.asarray([_rms_gain(
                lambda d: phi(d.unsqueeze(0))[0], x, probes, seed)])
            # the top direction as a raw pixel perturbation, rescaled to each radius
            raw_dir = top.direction if h is None else top.direction * _as_scale(
                h, x, "input_scale", tuple(x.shape))
            out[f"along_{reading}"] = ratios_along(x, clean, raw_dir, g, h)
            out[f"attack_{reading}"] = (ratios_along(x, clean, attack_dir, g, h)
                                        if attack_dir is not None
                                        else np.full(len(radii), np.nan))
        return out

    fingerprint = normalizers.fingerprint()

    def manifest(i: int) -> dict:
        return dict(study="worstcase", model=model.name, weights=model.weights, radii=radii,
                    norm=norm, layer=model.feature_layer, normalizers=fingerprint,
                    dtype=str(dtype), iterations=iterations, tol=tol, probes=probes,
                    seed=seed, method=method, sample=int(samples.ids[i]))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model.name} worst case", progress=progress,
                                     study_modules=CODE_MODULES)

    def stack(key: str, width: int | None = None) -> np.ndarray:
        if not units:
            return np.zeros((0,) if width is None else (0, width))
        values = np.stack([u[key] for u in units])
        return values[:, 0] if width is None else values

    return WorstCaseStudy(
        model=model.name, norm=norm, radii=np.asarray(radii),
        ids=np.asarray(samples.ids)[kept],
        sigma={r: stack(f"sigma_{r}") for r in READINGS},
        converged={r: stack(f"converged_{r}").astype(bool) for r in READINGS},
        along={r: stack(f"along_{r}", len(radii)) for r in READINGS},
        along_attack={r: stack(f"attack_{r}", len(radii)) for r in READINGS},
        frobenius={r: stack(f"frobenius_{r}") for r in READINGS},
        products={r: stack(f"products_{r}") for r in READINGS}, skipped=skipped)
