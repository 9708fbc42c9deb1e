"""Error rates in Gaussian noise and the distance a half-space would imply (beyond the paper).

Ford, Gilmer, Carlini and Cubuk, "Adversarial examples are a natural
consequence of test error in noise" (ICML 2019, arXiv:1901.10513): if the set
of misclassified points near ``x`` were the half-space ``{v : u . (v - x) >= d}``
(``||u||_2 = 1``), the error rate under Gaussian noise ``N(0, sigma^2 I)``
would be ``p(sigma) = Phi(-d / sigma)``. Measured error rates in noise thus
give a distance ``d``, in the same units (L2, grey levels on the [0, 255]
scale) as the adversarial radius of :func:`localprops.studies.attacks.deepfool`.
For a linear binary classifier the two are equal; how far apart they are for a
network says how far its error set is from a half-space.

- :func:`gaussian_rows`: standard normal values from Philox (Box-Muller), the
  same on every device and for every chunking.
- :func:`noise_errors`: how many of ``n_draws`` noisy copies ``x + sigma z`` a
  model misclassifies, per sigma; :func:`noise_error_study` runs it per sample,
  cached (:class:`NoiseErrorStudy`).
- :func:`halfspace_distance`: the maximum-likelihood ``d`` from the counts at
  all sigmas, with a likelihood-ratio interval; :func:`sigma_distances`: the
  direct estimate ``-sigma Phi^{-1}(k / n)`` per sigma, with Wilson bounds.

The noisy images are not clipped to [0, 255] by default: the half-space law
is about the function on all of R^D, and clipping makes the noise
non-Gaussian (a clipped pixel moves less than ``sigma z``). ``clip=True``
measures the error rate of valid images instead.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.engine import default_batch_size, model_device, model_dtype, run_chunked
from localprops.core.philox import uniform_rows
from localprops.core.stats import bootstrap_interval, wilson_interval
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.runner import run_units

#: modules (besides the shared ones) whose code determines this study's units
CODE_MODULES = ("halfspace",)

_STREAM_NOISE = 4         # after the sampling module's streams 1-3 (radial, base, order)
_DRAW_BITS = 24           # draw index < 2**24, the stream tag above it

__all__ = ["NoiseErrorStudy", "gaussian_rows", "halfspace_distance", "noise_error_study",
           "noise_errors", "sigma_distances"]


# ---------------------------------------------------------------- random draws

def gaussian_rows(seed: int, rows: torch.Tensor, n: int, *,
                  lanes: tuple[torch.Tensor | int, torch.Tensor | int] = (0, 0),
                  compiled: bool | None = None) -> torch.Tensor:
    """Standard normal values (float64), ``n`` per row, by Box-Muller on Philox uniforms.

    Uniforms ``2j`` and ``2j + 1`` of a row (:func:`~localprops.core.philox.uniform_rows`,
    odd multiples of ``2**-24`` in (-1, 1)) are mapped to ``v = (u + 1) / 2``
    in (0, 1), never 0 or 1, and give values ``2j`` and ``2j + 1``:
    ``sqrt(-2 log v0) cos(2 pi v1)`` and ``... sin(2 pi v1)``. Value ``j``
    depends only on (seed, row, lanes, j): never on ``n``, the device, or
    how rows are split into calls. With 24-bit uniforms ``|z| <= 5.9``
    (a tail of probability 4e-9 is cut off).

    Parameters
    ----------
    seed : the Philox key; rows : 1-D int64 tensor on the target device;
    n : values per row; lanes : two counter words, ints or one per row.
    """
    n = _checks.check_count(n, "n")
    pairs = (n + 1) // 2
    u = uniform_rows(seed, rows, 2 * pairs, lanes=lanes, compiled=compiled)
    v = (u + 1.0) / 2.0                                  # exact: in (0, 1)
    radius = torch.sqrt(-2.0 * torch.log(v[:, 0::2]))
    angle = 2.0 * math.pi * v[:, 1::2]
    z = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)
    return z.reshape(len(u), 2 * pairs)[:, :n]


def _sigma_lanes(sigmas: Sequence[float]) -> tuple[list[int], list[int]]:
    """Low and high 32-bit words of each sigma's float64 bits: draws keyed by value."""
    bits = [struct.unpack("<Q", struct.pack("<d", float(s)))[0] for s in sigmas]
    return [b & 0xFFFFFFFF for b in bits], [b >> 32 for b in bits]


# ---------------------------------------------------------------- checks

def _check_sigmas(sigmas: ArrayLike) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in np.asarray(sigmas, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as error:
        raise ValueError(f"sigmas must be a list of positive numbers (noise standard "
                         f"deviations in grey levels), got {sigmas!r}") from error
    if not values:
        raise ValueError("sigmas is empty: pass at least one noise standard deviation "
                         "in grey levels, e.g. sigmas=[4.0, 8.0, 16.0]")
    bad = [s for s in values if not (math.isfinite(s) and s > 0)]
    if bad:
        raise ValueError(f"every sigma must be a positive finite number of grey levels, "
                         f"got {bad}; sigma = 0 is the clean image itself")
    return values


def _check_draws(n_draws: int) -> int:
    try:
        n_draws = _checks.check_count(n_draws, "n_draws")
    except TypeError as error:
        raise ValueError(str(error)) from error
    if n_draws >= 2**_DRAW_BITS:
        raise ValueError(f"n_draws must be below {2**_DRAW_BITS}, got {n_draws}")
    return n_draws


def _check_counts(errors: ArrayLike, n_draws: int, sigmas: ArrayLike
                  ) -> tuple[np.ndarray, int, np.ndarray]:
    n = _check_draws(n_draws)
    s = np.asarray(_check_sigmas(sigmas))
    k = np.asarray(errors, dtype=np.float64).reshape(-1)
    if k.shape != s.shape:
        raise ValueError(f"{len(k)} error counts but {len(s)} sigmas: pass one count "
                         "per sigma")
    if not (np.all(k == np.round(k)) and np.all((k >= 0) & (k <= n))):
        raise ValueError(f"error counts must be integers in [0, n_draws={n}], got {k}")
    return k, n, s


# ---------------------------------------------------------------- measurement

def noise_errors(model: nn.Module, x: torch.Tensor, label: int, sigmas: ArrayLike, *,
                 n_draws: int, seed: int, clip: bool = False,
                 batch_size: int | None = None) -> np.ndarray:
    """How many of ``n_draws`` images ``x + sigma z`` the model misclassifies, per sigma.

    Draw ``t`` at ``sigma`` uses :func:`gaussian_rows` with key ``seed``,
    row ``t`` (tagged with its own stream) and the bits of ``sigma`` as lanes,
    so every sigma gets independent noise (the likelihood of
    :func:`halfspace_distance` treats the counts as independent), and the
    counts depend neither on the chunk size nor on the device.

    Parameters
    ----------
    model : a classifier on [0, 255] images returning logits (N, K).
    x : the clean image (C, H, W); label : its class.
    sigmas : noise standard deviations per pixel, in grey levels.
    clip : clamp ``x + sigma z`` to [0, 255] (the noise is then not Gaussian).

    Returns
    -------
    (n_sigma,) int64 counts of draws whose argmax differs from ``label``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError("x must be one clean image, a tensor (C, H, W) in [0, 255]")
    sig = _check_sigmas(sigmas)
    n_draws = _check_draws(n_draws)
    seed = _checks.check_seed(seed)
    device, dtype = model_device(model), model_dtype(model)
    shape = tuple(x.shape)
    size = (default_batch_size(shape, device) if batch_size is None
            else _checks.check_count(batch_size, "batch_size"))
    flat = x.to(device=device, dtype=torch.float64).reshape(1, -1)
    sigma_t = torch.tensor(sig, dtype=torch.float64, device=device)
    lane0, lane1 = (torch.tensor(lane, dtype=torch.int64, device=device)
                    for lane in _sigma_lanes(sig))

    def step(start: int, stop: int) -> torch.Tensor:
        k = torch.arange(start, stop, dtype=torch.int64, device=device)
        j = torch.div(k, n_draws, rounding_mode="floor")
        rows = (k - j * n_draws) | (_STREAM_NOISE << _DRAW_BITS)
        z = gaussian_rows(seed, rows, flat.shape[1], lanes=(lane0[j], lane1[j]))
        noisy = flat + sigma_t[j, None] * z
        if clip:
            noisy.clamp_(0.0, 255.0)
        logits = model(noisy.to(dtype).reshape(stop - start, *shape))
        if logits.ndim != 2 or not 0 <= label < logits.shape[1]:
            raise ValueError(f"the model must return logits (N, K) with label {label} < K, "
                             f"got shape {tuple(logits.shape)}")
        wrong = logits.argmax(dim=1) != label
        return torch.bincount(j[wrong], minlength=len(sig)).cpu()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = run_chunked(len(sig) * n_draws, size, step)
    finally:
        model.train(was_training)
    return torch.stack(parts).sum(dim=0).numpy().astype(np.int64)


# ---------------------------------------------------------------- estimation

def _log_likelihood(d: float, k: np.ndarray, n: int, sigmas: np.ndarray) -> float:
    """Binomial log-likelihood (without the constant) of ``p = Phi(-d / sigma)``."""
    from scipy.special import log_ndtr

    t = d / sigmas
    wrong = np.where(k > 0, k * log_ndtr(-t), 0.0)
    right = np.where(k < n, (n - k) * log_ndtr(t), 0.0)
    return float(np.sum(wrong + right))


def _score(d: float, k: np.ndarray, n: int, sigmas: np.ndarray) -> float:
    """Derivative of :func:`_log_likelihood` in ``d`` (decreasing: the likelihood is concave)."""
    from scipy.special import log_ndtr
    from scipy.stats import norm

    t = d / sigmas

    def mills(a):                          # phi(a) / Phi(a), stable in both tails
        return np.exp(norm.logpdf(a) - log_ndtr(a))

    return float(np.sum((-k * mills(-t) + (n - k) * mills(t)) / sigmas))


def _root(f, start: float, step: float, direction: float) -> float:
    """Where a monotone ``f`` with ``f(start) >= 0`` turns negative, beyond ``start``.

    The bracket grows by doubling steps in ``direction`` (+1 or -1), then
    Brent's method finds the root to about ``1e-12`` of the first step.
    """
    from scipy.optimize import brentq

    xtol = 1e-12 * step
    near, far = start, start + direction * step
    for _ in range(200):
        if f(far) < 0:
            return float(brentq(f, min(near, far), max(near, far), xtol=xtol,
                                rtol=1e-15, maxiter=500))
        near, step = far, 2 * step
        far = near + direction * step
    raise RuntimeError("no root found: the likelihood does not fall off in this direction")


def _censored_bounds(k: np.ndarray, n: int, s: np.ndarray, confidence: float
                     ) -> tuple[float, float]:
    """Bounds on ``d`` from counts that are all 0 or ``n`` (see :func:`halfspace_distance`)."""
    floor, scale = math.log(1 - confidence), float(s.max())
    low, high = -math.inf, math.inf
    if (k == 0).any():                     # P(no error at all | d) rises with d
        zero = s[k == 0]
        low = _root(lambda d: floor - _log_likelihood(d, np.zeros_like(zero), n, zero),
                    -40.0 * scale, scale, +1.0)
    if (k == n).any():                     # P(every draw wrong | d) falls with d
        full = s[k == n]
        high = _root(lambda d: floor - _log_likelihood(d, np.full_like(full, n), n, full),
                     40.0 * scale, scale, -1.0)
    return low, high


def halfspace_distance(errors: ArrayLike, n_draws: int, sigmas: ArrayLike, *,
                       confidence: float = 0.95
                       ) -> tuple[float, tuple[float, float], bool]:
    """Maximum-likelihood distance ``d`` of the half-space model ``p(sigma) = Phi(-d / sigma)``.

    The counts ``k_i`` of ``n_draws`` at every sigma are independent
    binomials; their log-likelihood is concave in ``d``, so the maximum is
    the one root of its derivative (``d = -sigma Phi^{-1}(k / n)`` for one
    sigma). ``d`` may come out negative (error rates above 1/2). The interval
    holds the ``d`` whose log-likelihood is within ``chi2_1(confidence) / 2``
    (1.92 at 95%) of the maximum (likelihood ratio, profile).

    Where no sigma has a count strictly between 0 and ``n_draws`` the rate is
    not measured at any sigma, ``d`` is not estimated (NaN) and ``usable`` is
    False. The bounds then say what the counts still show: with no errors at
    the sigmas ``S0``, ``low`` is the ``d`` at which seeing no error at all
    has probability ``1 - confidence`` (``prod_{S0} Phi(d / sigma)^n``; the
    rule of three for one sigma), so ``d >= low``; with every draw wrong at
    ``S1``, ``high`` bounds ``d`` from above alike. Missing sides are -inf / inf;
    ``low > high`` (no errors at small sigma, all wrong at large sigma) means
    the counts contradict the half-space model.

    Returns
    -------
    (d_hat, (low, high), usable), in the units of ``sigmas``.
    """
    from scipy.stats import chi2, norm

    k, n, s = _check_counts(errors, n_draws, sigmas)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    inner = (k > 0) & (k < n)
    if not inner.any():
        return math.nan, _censored_bounds(k, n, s, confidence), False
    scale = float(s.max())
    # concave: the score is positive below the maximum and negative above it;
    # counts of 0 or n_draws can push the maximum beyond the direct estimates
    below = float(np.min(-s[inner] * norm.ppf(k[inner] / n)))
    step = scale
    while _score(below, k, n, s) < 0:
        below, step = below - step, 2 * step
    d_hat = _root(lambda d: _score(d, k, n, s), below, scale, +1.0)
    top = _log_likelihood(d_hat, k, n, s)
    drop = float(chi2.ppf(confidence, 1)) / 2

    def above_cut(d: float) -> float:
        return _log_likelihood(d, k, n, s) - (top - drop)

    step = max(scale * 1e-3, abs(d_hat) * 1e-3)
    low = _root(above_cut, d_hat, step, -1.0)
    high = _root(above_cut, d_hat, step, +1.0)
    return float(d_hat), (low, high), True


def sigma_distances(errors: ArrayLike, n_draws: int, sigmas: ArrayLike, *,
                    confidence: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sigma, the direct estimate ``d = -sigma Phi^{-1}(k / n)`` and its bounds.

    The bounds map the Wilson interval ``(p_lo, p_hi)`` of ``k / n``
    through the same formula: ``low = -sigma Phi^{-1}(p_hi)``, ``high =
    -sigma Phi^{-1}(p_lo)``. ``k = 0`` gives ``d = inf`` (only ``low`` says
    something), ``k = n`` gives ``d = -inf``. A half-space would give the
    same ``d`` at every sigma; a trend across sigma shows the departure.

    Returns
    -------
    (d, low, high), each (n_sigma,).
    """
    from scipy.stats import norm

    k, n, s = _check_counts(errors, n_draws, sigmas)
    bounds = np.array([wilson_interval(int(c), n, confidence) for c in k]).reshape(-1, 2)
    with np.errstate(divide="ignore"):
        d = -s * norm.ppf(k / n)
        low = -s * norm.ppf(bounds[:, 1])
        high = -s * norm.ppf(bounds[:, 0])
    return d, low, high


# ---------------------------------------------------------------- the study

@dataclass
class NoiseErrorStudy:
    """Error counts in Gaussian noise, per sample and sigma, for one model.

    ``errors`` (S, n_sigma) counts the draws of ``n_draws`` that the model
    misclassifies at each sigma (grey levels per pixel); ``clip`` says whether
    the noisy images were clamped to [0, 255].
    """

    model: str
    sigmas: np.ndarray
    n_draws: int
    clip: bool
    ids: np.ndarray
    labels: np.ndarray
    errors: np.ndarray
    skipped: list[str] = field(default_factory=list)

    @property
    def rates(self) -> np.ndarray:
        """Error rates ``errors / n_draws`` (S, n_sigma)."""
        return self.errors / self.n_draws

    def distances(self, confidence: float = 0.95
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per sample (S,): ``d_hat``, ``low``, ``high``, ``usable`` (:func:`halfspace_distance`)."""
        out = [halfspace_distance(row, self.n_draws, self.sigmas, confidence=confidence)
               for row in self.errors]
        d = np.array([o[0] for o in out], dtype=np.float64)
        low = np.array([o[1][0] for o in out], dtype=np.float64)
        high = np.array([o[1][1] for o in out], dtype=np.float64)
        return d, low, high, np.array([o[2] for o in out], dtype=bool)

    def sigma_distances(self, confidence: float = 0.95
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sample and sigma (S, n_sigma): direct ``d``, ``low``, ``high`` (:func:`sigma_distances`)."""
        out = [sigma_distances(row, self.n_draws, self.sigmas, confidence=confidence)
               for row in self.errors]
        shape = (len(self.errors), len(self.sigmas))
        return tuple(np.array([o[i] for o in out]).reshape(shape) for i in range(3))

    def compare(self, adversarial_radius: ArrayLike, *, n_boot: int = 2000,
                seed: int = 0) -> dict:
        """Half-space distances against adversarial radii, over samples.

        ``adversarial_radius`` (S,), in the samples' order, is an L2 distance in
        grey levels (e.g. ``attacks.deepfool(..., norm="l2").radius`` or
        ``AttackStudy.adversarial_radius`` for norm l2), the units of ``d``.
        For a linear binary classifier ``d_hat`` estimates it exactly. Only
        samples with a usable ``d_hat`` and a finite positive radius count.

        Returns
        -------
        dict with ``samples``, ``usable`` (a finite ``d_hat``),
        ``lower_bounded`` (no error at any sigma: only ``d >= low`` is known),
        ``compared``; ``spearman`` (rank correlation of ``d_hat`` and the radius,
        NaN below 3 samples) and ``spearman_interval``; ``median_ratio``
        (``d_hat / radius``) and ``ratio_interval`` (bootstrap over samples).
        """
        from scipy.stats import spearmanr

        radius = np.asarray(adversarial_radius, dtype=np.float64).reshape(-1)
        if radius.shape != (len(self.errors),):
            raise ValueError(f"adversarial_radius must hold one radius per sample "
                             f"({len(self.errors)}), got {radius.shape[0]}")
        d, _, _, usable = self.distances()
        both = usable & np.isfinite(radius) & (radius > 0)
        pairs = np.stack([d[both], radius[both]], axis=1)

        def rank_correlation(rows: np.ndarray) -> float:
            if len(rows) < 3 or np.ptp(rows[:, 0]) == 0 or np.ptp(rows[:, 1]) == 0:
                return math.nan
            return float(spearmanr(rows[:, 0], rows[:, 1]).statistic)

        def median_ratio(rows: np.ndarray) -> float:
            return float(np.median(rows[:, 0] / rows[:, 1])) if len(rows) else math.nan

        no_interval = (math.nan, math.nan)
        return dict(
            samples=len(radius), usable=int(usable.sum()),
            lower_bounded=int((self.errors == 0).all(axis=1).sum()), compared=int(both.sum()),
            spearman=rank_correlation(pairs),
            spearman_interval=(bootstrap_interval(pairs, rank_correlation, n_boot=n_boot,
                                                  seed=seed) if len(pairs) >= 3
                               else no_interval),
            median_ratio=median_ratio(pairs),
            ratio_interval=bootstrap_interval(pairs, median_ratio, n_boot=n_boot, seed=seed))


def noise_error_study(model: ModelSpec, samples: SampleSet, sigmas: list[float], *,
                      n_draws: int = 200, clip: bool = False,
                      cache: ResultCache | None = None, progress: bool = True,
                      batch_size: int | None = None) -> NoiseErrorStudy:
    """Misclassified draws in Gaussian noise, per sample and sigma; one cached unit per sample.

    Each sample draws its noise with its own seed (:func:`noise_errors`), so
    every model of a dataset sees the same noise for the same image.
    ``clip=False`` (default) keeps the noise Gaussian, as the half-space law
    assumes; ``clip=True`` clamps the noisy images to [0, 255].
    """
    spec = as_spec(model)
    sig = _check_sigmas(sigmas)
    n_draws = _check_draws(n_draws)
    clip = bool(clip)

    def manifest(i: int) -> dict:
        return dict(study="halfspace-noise", model=spec.name, weights=spec.weights,
                    sigmas=list(sig), n_draws=n_draws, clip=clip,
                    seed=int(samples.seeds[i]), sample=int(samples.ids[i]),
                    label=int(samples.labels[i]))

    def compute(i: int) -> dict:
        return dict(errors=noise_errors(spec.model, samples.images[i], int(samples.labels[i]),
                                        sig, n_draws=n_draws, seed=int(samples.seeds[i]),
                                        clip=clip, batch_size=batch_size))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{spec.name} noise errors", progress=progress,
                                     study_modules=CODE_MODULES)
    errors = (np.stack([u["errors"] for u in units]).astype(np.int64) if units
              else np.zeros((0, len(sig)), dtype=np.int64))
    return NoiseErrorStudy(model=spec.name, sigmas=np.asarray(sig), n_draws=n_draws,
                           clip=clip, ids=np.asarray(samples.ids)[kept],
                           labels=np.asarray(samples.labels)[kept], errors=errors,
                           skipped=skipped)
