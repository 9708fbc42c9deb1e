"""Adversarial perturbations inside random subspaces (beyond the paper).

Fawzi, Moosavi-Dezfooli and Frossard, "Robustness of classifiers: from
adversarial to random noise" (NeurIPS 2016, arXiv:1608.08967), show that the
smallest perturbation that changes the class within a uniformly random
``m``-dimensional subspace ``S`` of the input space ``R^D`` has a norm of
about ``sqrt(D / m)`` times the smallest one in the whole space, when the
decision boundary near ``x`` has small curvature. For a linear binary
classifier ``f(x) = w.x + b`` this is exact in distribution: the subspace
radius is ``|f(x)| / ||P_S w||``, the full one ``|f(x)| / ||w||``, and
``||P_S w||^2 / ||w||^2 ~ Beta(m / 2, (D - m) / 2)``, of mean ``m / D``.

- :func:`random_subspace`: an orthonormal basis of a uniformly random
  subspace, from Philox draws (the same on every device) and a sign-fixed QR.
- :func:`subspace_deepfool`: DeepFool (L2) restricted to the span of a basis,
  refined by a bisection on the scale of its perturbation.
- :func:`subspace_study`: per sample, the full-space DeepFool radius and the
  subspace radius for several ``m``; :meth:`SubspaceStudy.slope` fits the
  exponent of ``m`` (``-1/2`` for the law).

Images are not clipped to [0, 255]: the law is a statement about the
function on ``R^D``, and clipping would make the feasible set depend on ``x``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.engine import model_device, model_dtype
from localprops.core.philox import derive_seed, uniform_rows
from localprops.core.stats import bootstrap_interval
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.attacks import deepfool, is_wrong
from localprops.studies.runner import run_units

#: modules (besides the shared ones) whose code determines this study's units
CODE_MODULES = ("subspace", "attacks")

#: most entries ``D * m`` of a basis: 2**28 (2 GiB in float64; a QR needs about
#: twice that). EfficientNet-Lite0's D = 150528 inputs allow m <= 1783.
MAX_BASIS_ENTRIES = 2**28

#: Philox lane that tags the subspace stream (apart from the isotropy sampler's)
_STREAM = 0x5B5B
#: values per chunk when drawing the Gaussian matrix (bounds temporary memory)
_CHUNK_VALUES = 2**22


def _check_dims(dimension: int, m: int) -> int:
    """``m`` as an int in ``[1, D]``, with ``D * m`` within :data:`MAX_BASIS_ENTRIES` for
    ``m < D`` (the study needs no basis for the whole space)."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= dimension:
        raise ValueError(f"m must be an integer subspace dimension in [1, D] = [1, {dimension}], "
                         f"got {m!r}")
    if m < dimension and dimension * m > MAX_BASIS_ENTRIES:
        raise ValueError(f"a basis of m = {m} vectors in D = {dimension} would hold "
                         f"{dimension * m:.3g} values (> {MAX_BASIS_ENTRIES:.3g}): pass "
                         f"m <= {MAX_BASIS_ENTRIES // dimension}")
    return int(m)


def _gaussian_matrix(seed: int, dimension: int, m: int,
                     device: torch.device) -> torch.Tensor:
    """Standard normal (D, m) in float64: Box-Muller on Philox uniforms.

    Column ``j`` comes from row ``j`` of :func:`uniform_rows` (lane
    :data:`_STREAM`): its ``2 ceil(D / 2)`` uniforms in (0, 1) (never 0) give
    ``r cos`` and ``r sin`` halves. The uniforms are bit-identical on every
    device; the normals differ only by the rounding of log, cos and sin.
    """
    half = (dimension + 1) // 2
    out = torch.empty((dimension, m), dtype=torch.float64, device=device)
    per_chunk = max(1, _CHUNK_VALUES // (2 * half))
    for start in range(0, m, per_chunk):
        stop = min(start + per_chunk, m)
        rows = torch.arange(start, stop, dtype=torch.int64, device=device)
        u = (uniform_rows(seed, rows, 2 * half, lanes=(_STREAM, 0)).to(device) + 1) / 2
        radius = torch.sqrt(-2 * torch.log(u[:, :half]))
        angle = (2 * math.pi) * u[:, half:]
        z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
        out[:, start:stop] = z[:, :dimension].T
    return out


def random_subspace(seed: int, dimension: int, m: int, *, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal basis (D, m) of a uniformly random ``m``-dimensional subspace of ``R^D``.

    The QR factorisation of a Gaussian matrix spans a uniformly distributed
    subspace (its law is invariant under rotations); the signs of ``Q``'s
    columns are fixed so that ``R`` has a positive diagonal, which makes ``Q``
    a function of the Gaussian matrix alone (the Gram-Schmidt basis), hence of
    the seed. Computed in float64 and then cast to ``dtype``. ``m == D``
    returns the identity (the whole space; any orthonormal basis would do).

    Memory: ``D * m`` values (8 bytes each in float64), about twice that
    during the QR; ``D * m`` may not exceed :data:`MAX_BASIS_ENTRIES`
    (ValueError), nor ``D * D`` for ``m == D``.
    """
    seed = _checks.check_seed(seed)
    dimension = _checks.check_count(dimension, "dimension")
    m = _check_dims(dimension, m)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if m == dimension:
        if dimension * dimension > MAX_BASIS_ENTRIES:
            raise ValueError(f"the whole space (m = D = {dimension}) as a basis would hold "
                             f"{dimension ** 2:.3g} values: it needs none, use "
                             f"attacks.deepfool, or pass m <= {MAX_BASIS_ENTRIES // dimension}")
        return torch.eye(dimension, dtype=dtype, device=device)
    q, r = torch.linalg.qr(_gaussian_matrix(seed, dimension, m, device))
    signs = torch.sign(torch.diagonal(r))
    return (q * torch.where(signs == 0, 1.0, signs)).to(dtype)


def subspace_seed(seed: int, m: int, repeat: int) -> int:
    """The seed of subspace ``repeat`` of dimension ``m`` for a sample of seed ``seed``.

    ``derive_seed(derive_seed(seed, m), repeat)``: every model of a dataset
    draws the same subspaces for the same sample, and any number of repeats.
    """
    return derive_seed(derive_seed(seed, int(m)), int(repeat))


def default_cap(dimension: int) -> float:
    """Where :func:`subspace_deepfool` gives up: ``10 * 255 sqrt(D)``.

    Ten times the norm of a change of the full pixel range in every input.
    """
    return 10 * 255.0 * math.sqrt(dimension)


def _candidate_gradients(model: nn.Module, x: torch.Tensor, y: int, cand: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``f_k = z_k - z_y`` for the candidates, their input gradients (K, D), the prediction.

    One forward and backward pass of ``K`` copies of ``x`` (row ``k`` carries
    ``f_k``), rather than ``K`` backward passes through one image.
    """
    xa = x.expand(len(cand), *x.shape).clone().requires_grad_(True)
    with torch.enable_grad():
        z = model(xa)
        rows = torch.arange(len(cand), device=z.device)
        f = (z[rows, cand] - z[:, y]).double()
        (grad,) = torch.autograd.grad(f.sum(), xa)
    return f.detach(), grad.flatten(1).double(), z[0].detach().argmax()


def subspace_deepfool(model: nn.Module | ModelSpec, x: torch.Tensor, label: int,
                      basis: torch.Tensor, *, candidates: int = 10, overshoot: float = 0.02,
                      max_iter: int = 50, refine_steps: int = 20, cap: float | None = None
                      ) -> tuple[float, bool, torch.Tensor]:
    """Smallest misclassifying perturbation within ``span(basis)`` found by DeepFool (L2).

    Each iteration linearises ``f_k = z_k - z_y`` for the ``candidates``
    classes ranked highest at the clean image, projects their gradients onto
    the subspace (coordinates ``c_k = B^T g_k``, so ``P g_k = B c_k``) and
    steps to the nearest linearised boundary within it, ``|f_k| / ||c_k||``
    away. The step is accumulated in float64 subspace coordinates; the
    perturbation ``(1 + overshoot) B a`` is then shrunk by ``refine_steps``
    bisections on its scale in ``(0, 1]`` (as :func:`attacks.deepfool`), so
    the returned perturbation is misclassified and its norm is the radius.
    Not clipped to [0, 255]: the law concerns the function on ``R^D``.

    Parameters
    ----------
    model : a network (or ModelSpec) taking (N, C, H, W) and returning logits.
    x : the clean image (C, H, W); label : its class.
    basis : orthonormal (D, m) with ``D = x.numel()`` (:func:`random_subspace`),
        used in float64 on the model's device.
    cap : give up once the perturbation's norm exceeds it; default
        :func:`default_cap` (``10 * 255 sqrt(D)``).

    Returns
    -------
    (radius, found, perturbation): radius ``inf`` and found False where no
    class change was reached within ``max_iter`` steps or ``cap``;
    perturbation (C, H, W) on the CPU in the model's dtype (unrefined where
    not found).
    """
    model = model.model if isinstance(model, ModelSpec) else model
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError("x must be one image, a tensor (C, H, W)")
    dimension = x.numel()
    if not isinstance(basis, torch.Tensor) or basis.ndim != 2 or basis.shape[0] != dimension:
        raise ValueError(f"basis must be a tensor (D, m) with D = {dimension} (the image's "
                         f"size), e.g. random_subspace(seed, {dimension}, m)")
    candidates = _checks.check_count(candidates, "candidates")
    max_iter = _checks.check_count(max_iter, "max_iter")
    if refine_steps < 0 or overshoot < 0:
        raise ValueError(f"refine_steps and overshoot must be >= 0, got {refine_steps} "
                         f"and {overshoot}")
    cap = default_cap(dimension) if cap is None else float(cap)
    device, dtype = model_device(model), model_dtype(model)
    x = x.to(device=device, dtype=dtype)
    basis = basis.to(device=device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        return _subspace_deepfool(model, x, int(label), basis, candidates, overshoot,
                                  max_iter, refine_steps, cap)
    finally:
        model.train(was_training)


def _subspace_deepfool(model, x, y, basis, candidates, overshoot, max_iter, refine_steps, cap):
    with torch.no_grad():
        logits = model(x[None])[0]
    order = logits.argsort(descending=True)
    cand = order[order != y][:min(candidates, len(logits) - 1)]
    coords = torch.zeros(basis.shape[1], dtype=torch.float64, device=x.device)

    def perturbation(scale: float | torch.Tensor) -> torch.Tensor:
        return (scale * (basis @ coords)).reshape(x.shape).to(x.dtype)

    capped = False
    for _ in range(max_iter):
        f, grad, pred = _candidate_gradients(model, x + perturbation(1 + overshoot), y, cand)
        if pred != y:
            break
        c = grad @ basis                                       # (K, m) coordinates
        norms = c.norm(dim=1)
        dist = torch.where(norms > 0, f.abs() / norms.clamp_min(1e-300), torch.inf)
        best = int(dist.argmin())
        if not torch.isfinite(dist[best]):
            break                                              # flat within the subspace
        coords = coords + (f[best].abs() + 1e-4) / norms[best] ** 2 * c[best]
        if (1 + overshoot) * float(coords.norm()) > cap:
            capped = True
            break
    delta = perturbation(1 + overshoot)
    y_t = torch.tensor([y], device=x.device)
    found = not capped and bool(is_wrong(model, (x + delta)[None], y_t, 1)[0])
    if not found:
        return math.inf, False, delta.cpu()
    low, high = 0.0, 1.0
    for _ in range(refine_steps):
        mid = (low + high) / 2
        if bool(is_wrong(model, (x + mid * delta)[None], y_t, 1)[0]):
            high = mid
        else:
            low = mid
    delta = high * delta
    if not bool(is_wrong(model, (x + delta)[None], y_t, 1)[0]):
        return math.inf, False, delta.cpu()
    return float(delta.double().norm()), True, delta.cpu()


def dims_grid(dimension: int, n: int = 8, max_dim: int | None = None) -> list[int]:
    """About ``n`` log-spaced subspace dimensions from 1 to ``min(D, max_dim)``.

    Rounded and deduplicated (so fewer than ``n`` for small ``D``); the last is
    ``D`` when ``max_dim`` is None. Pass ``max_dim`` to stay within
    :data:`MAX_BASIS_ENTRIES` for large inputs.
    """
    dimension = _checks.check_count(dimension, "dimension")
    n = _checks.check_count(n, "n")
    top = dimension if max_dim is None else min(dimension, _checks.check_count(max_dim, "max_dim"))
    grid = np.rint(np.geomspace(1, top, n)).astype(np.int64) if n > 1 else np.array([top])
    return sorted({int(v) for v in grid} | {top})


@dataclass
class SubspaceStudy:
    """Full-space and random-subspace DeepFool radii, per sample, for one model.

    ``radius_full`` (S,) is :func:`attacks.deepfool`'s L2 radius; ``radius``
    (S, M, repeats) the :func:`subspace_deepfool` radius in ``repeats`` random
    subspaces of every dimension in ``dims`` (``inf`` where none was found;
    for ``m == D`` a copy of ``radius_full``: the subspace is the whole space).
    """

    model: str
    ids: np.ndarray
    dims: np.ndarray
    dimension: int
    candidates: int
    radius_full: np.ndarray     # (S,)
    found_full: np.ndarray      # (S,) bool
    radius: np.ndarray          # (S, M, repeats)
    found: np.ndarray           # (S, M, repeats) bool
    skipped: list[str] = field(default_factory=list)

    @property
    def repeats(self) -> int:
        """Random subspaces per dimension."""
        return self.radius.shape[2]

    def ratios(self) -> np.ndarray:
        """Subspace over full-space radius (S, M, repeats); NaN where the full one is missing."""
        full = np.where(np.isfinite(self.radius_full), self.radius_full, np.nan)
        return self.radius / full[:, None, None]

    def predicted(self) -> np.ndarray:
        """The law's ratio ``sqrt(D / m)`` for every dim (M,)."""
        return np.sqrt(self.dimension / self.dims.astype(np.float64))

    def slope(self, n_boot: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float]]:
        """Exponent of ``m`` in the median ratio, and its bootstrap 95% interval.

        Least-squares slope of ``log(median ratio)`` against ``log m`` over the
        dims below ``D`` (the law: ``-1/2``). The median pools samples and
        repeats (NaN ignored, ``inf`` counted as large); the interval resamples
        whole samples.
        """
        keep = self.dims < self.dimension
        if keep.sum() < 2:
            raise ValueError(f"slope needs at least two dims below D = {self.dimension}; "
                             f"this study has dims {self.dims.tolist()}")
        ratios, dims = self.ratios()[:, keep], self.dims[keep]
        return (_log_slope(ratios, dims),
                bootstrap_interval(ratios, lambda r: _log_slope(r, dims), n_boot=n_boot,
                                   seed=seed))


def _log_slope(ratios: np.ndarray, dims: np.ndarray) -> float:
    """Slope of log(median over samples and repeats) against log(dims); NaN if undefined."""
    if len(ratios) == 0:
        return float("nan")
    with np.errstate(all="ignore"):
        medians = np.nanmedian(np.moveaxis(ratios, 1, 0).reshape(len(dims), -1), axis=1)
    if not (np.isfinite(medians).all() and (medians > 0).all()):
        return float("nan")
    return float(np.polyfit(np.log(dims.astype(np.float64)), np.log(medians), 1)[0])


def _check_dim_list(dims: Sequence[int], dimension: int) -> list[int]:
    dims = list(dims)
    if not dims:
        raise ValueError(f"dims must list at least one subspace dimension in [1, {dimension}], "
                         f"e.g. dims_grid({dimension})")
    return sorted({_check_dims(dimension, m) for m in dims})


def subspace_study(model: ModelSpec, samples: SampleSet, dims: Sequence[int], *,
                   repeats: int = 1, candidates: int = 10, cache: ResultCache | None = None,
                   progress: bool = True, batch_size: int | None = None) -> SubspaceStudy:
    """Full-space and random-subspace DeepFool radii of every sample.

    Per sample: :func:`attacks.deepfool` (L2) in the whole space, and
    :func:`subspace_deepfool` in ``repeats`` random subspaces per ``m`` in
    ``dims`` (sorted, duplicates dropped), subspace ``rep`` of dimension ``m``
    drawn with :func:`subspace_seed` of the sample's seed. One cached unit per
    sample. ``batch_size`` goes to :func:`attacks.deepfool`.
    """
    spec = as_spec(model)
    net = spec.model
    shape = tuple(samples.images.shape[1:])
    dimension = int(np.prod(shape))
    dims = _check_dim_list(dims, dimension)
    repeats = _checks.check_count(repeats, "repeats")
    candidates = _checks.check_count(candidates, "candidates")
    device = model_device(net)

    def manifest(i: int) -> dict:
        return dict(study="subspace", model=spec.name, weights=spec.weights, dims=dims,
                    repeats=repeats, candidates=candidates, seed=int(samples.seeds[i]),
                    sample=int(samples.ids[i]), label=int(samples.labels[i]))

    def compute(i: int) -> dict:
        x, y, seed = samples.images[i], int(samples.labels[i]), int(samples.seeds[i])
        full = deepfool(net, x[None], y, norm="l2", candidates=candidates,
                        batch_size=batch_size)
        radius = np.full((len(dims), repeats), np.inf)
        found = np.zeros((len(dims), repeats), dtype=bool)
        for j, m in enumerate(dims):
            for rep in range(repeats):
                if m == dimension:
                    radius[j, rep], found[j, rep] = full.radius[0], full.found[0]
                    continue
                basis = random_subspace(subspace_seed(seed, m, rep), dimension, m,
                                        device=device)
                radius[j, rep], found[j, rep], _ = subspace_deepfool(
                    net, x, y, basis, candidates=candidates)
        return dict(radius_full=np.float64(full.radius[0]), found_full=np.bool_(full.found[0]),
                    radius=radius, found=found)

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{spec.name} subspace", progress=progress,
                                     study_modules=CODE_MODULES)

    def stack(key: str, shape_: tuple[int, ...] = ()) -> np.ndarray:
        return np.stack([u[key] for u in units]) if units else np.zeros((0, *shape_))

    return SubspaceStudy(
        model=spec.name, ids=np.asarray(samples.ids)[kept], dims=np.asarray(dims),
        dimension=dimension, candidates=candidates, radius_full=stack("radius_full"),
        found_full=stack("found_full").astype(bool),
        radius=stack("radius", (len(dims), repeats)),
        found=stack("found", (len(dims), repeats)).astype(bool), skipped=skipped)
