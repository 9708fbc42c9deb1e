"""Metrics of the four studies: score statistics, distances, Mantel, Lipschitz ratios.

- :func:`score_statistics`: per sample and radius, the range (max - min), mean,
  min and max of the true-class score over the ``T`` perturbations, and whether
  any perturbed image was misclassified (paper Figs. 1 and 3).
- :func:`pairwise_distances`: Euclidean distance matrices of perturbed points,
  at the input or at a feature layer (paper Sec. 2.3).
- :func:`mantel`: the Mantel test between two distance matrices (paper eq. 7,
  Fig. 4); implemented in :mod:`localprops.mantel`.
- :class:`MinMaxNormalizer` and :func:`local_lipschitz_ratios`: the paper's
  eq. 9 with min-max normalizers ``g`` (outputs) and ``h`` (inputs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import _checks
from .mantel import mantel

__all__ = ["ScoreStatistics", "score_statistics", "pairwise_distances", "mantel",
           "MinMaxNormalizer", "LipschitzRatios", "local_lipschitz_ratios"]

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@dataclass
class ScoreStatistics:
    """Statistics of the score over the last axis (the ``T`` perturbations).

    Every field has the input's shape without its last axis, e.g. ``(R,)``
    for one sample or ``(S, R)`` for ``S`` samples.
    """

    range: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    any_misclassified: np.ndarray | None


def score_statistics(scores: ArrayLike, predictions: ArrayLike | None = None,
                     label: int | ArrayLike | None = None) -> ScoreStatistics:
    """Range, mean, min, max of ``scores`` over ``T``, and any misclassification.

    Parameters
    ----------
    scores : (..., T) true-class scores ``s_i^r`` (paper eq. 4 or eq. 6).
    predictions : optional (..., T) predicted classes of the same images.
    label : the true class; an int, or an array broadcastable to
        ``predictions.shape[:-1]`` (one label per sample).

    Returns
    -------
    ScoreStatistics; ``any_misclassified`` is None without predictions.
    """
    s = _numpy(scores)
    if s.ndim < 1 or s.shape[-1] < 1:
        raise ValueError(f"scores must have a last axis of length T >= 1, got shape {s.shape}")
    _checks.check_finite(s, "scores")
    low, high = s.min(axis=-1), s.max(axis=-1)
    wrong = None
    if predictions is not None:
        if label is None:
            raise ValueError("pass the true label together with the predictions")
        p = _numpy(predictions, np.int64)
        if p.shape != s.shape:
            raise ValueError(f"predictions shape {p.shape} differs from scores shape {s.shape}")
        wrong = (p != np.asarray(label)[..., None]).any(axis=-1)
    return ScoreStatistics(range=high - low, mean=s.mean(axis=-1), min=low,
                           max=high, any_misclassified=wrong)


def pairwise_distances(points: ArrayLike) -> torch.Tensor:
    """Euclidean distance matrices of point sets, in float64.

    Parameters
    ----------
    points : (..., N, F) points (e.g. the ``T`` perturbed images of one radius,
        flattened, or their feature-layer activations).

    Returns
    -------
    (..., N, N) float64 tensor on the points' device: symmetric, with an exact
    zero diagonal.

    Notes
    -----
    Perturbed images lie within ``r`` of ``x``, whose norm is about
    ``255 sqrt(D)``: the textbook ``|a|^2 + |b|^2 - 2ab`` would cancel
    catastrophically. The points are centred on their mean first (distances do
    not change under translation), then the Gram identity is evaluated in
    float64, which keeps the relative error near 1e-12 even for tiny radii.
    """
    p = points if isinstance(points, torch.Tensor) else torch.as_tensor(np.asarray(points))
    if p.ndim < 2:
        raise ValueError(f"points must have shape (..., N, F), got {tuple(p.shape)}")
    _checks.check_finite(p, "points")
    p = p.to(torch.float64)
    p = p - p.mean(dim=-2, keepdim=True)
    sq = (p * p).sum(dim=-1)
    d2 = sq[..., :, None] + sq[..., None, :] - 2.0 * (p @ p.transpose(-1, -2))
    d = d2.clamp_min_(0.0).sqrt_()
    d = 0.5 * (d + d.transpose(-1, -2))
    d.diagonal(dim1=-2, dim2=-1).zero_()
    return d


class MinMaxNormalizer:
    """Min-max scaling ``(v - min) / (max - min)`` fitted on many samples.

    The paper's ``g`` (feature layer) and ``h`` (input) of eq. 9: their minima
    and maxima are collected by feeding thousands of clean images to the
    ConvNet. ``per_feature=True`` keeps one (min, max) per dimension (features
    that never vary get a scale of 1, not a division by zero);
    ``per_feature=False`` uses one global (min, max). Fit incrementally with
    :meth:`update` (one batch at a time), then :meth:`transform`.
    """

    def __init__(self, per_feature: bool = True) -> None:
        self.per_feature = per_feature
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None
        self.count = 0

    def update(self, batch: ArrayLike) -> "MinMaxNormalizer":
        """Widen the (min, max) with a batch ``(N, F)`` of vectors."""
        b = batch if isinstance(batch, torch.Tensor) else torch.as_tensor(np.asarray(batch))
        if b.ndim != 2 or b.shape[0] < 1:
            raise ValueError(f"fit the normalizer on a batch (N, F), got {tuple(b.shape)}")
        _checks.check_finite(b, "normalizer batch")
        b = b.detach().to("cpu", torch.float64)
        low = b.amin(dim=0) if self.per_feature else b.amin().reshape(1)
        high = b.amax(dim=0) if self.per_feature else b.amax().reshape(1)
        if self.low is not None and self.low.shape != low.shape:
            raise ValueError(f"batch has {b.shape[1]} features, the normalizer was "
                             f"fitted on {self.low.shape[0]}")
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)
        self.count += b.shape[0]
        return self

    fit = update

    @property
    def scale(self) -> torch.Tensor:
        """``max - min``, with 1 where a feature never varied."""
        if self.low is None:
            raise RuntimeError("the normalizer is not fitted: call update() first")
        span = self.high - self.low
        return torch.where(span > 0, span, torch.ones_like(span))

    def transform(self, v: ArrayLike) -> torch.Tensor:
        """Scale vectors ``(..., F)`` to the fitted range, in float64."""
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        scale = self.scale.to(t.device)
        return (t.to(torch.float64) - self.low.to(t.device)) / scale

    __call__ = transform


@dataclass
class LipschitzRatios:
    """Distances of eq. 9 for every perturbed point; shapes ``(..., T)``."""

    output_distance: torch.Tensor
    input_distance: torch.Tensor

    @property
    def ratio(self) -> torch.Tensor:
        """The local ratio ``L_x = output_distance / input_distance``."""
        return self.output_distance / self.input_distance

    def share_below(self, threshold: float = 1.0) -> torch.Tensor:
        """Share of points with ratio below ``threshold`` (contraction when 1)."""
        return (self.ratio < threshold).to(torch.float64).mean(dim=-1)


def local_lipschitz_ratios(clean_input: ArrayLike, perturbed_inputs: ArrayLike,
                           clean_output: ArrayLike, perturbed_outputs: ArrayLike,
                           g: MinMaxNormalizer | None = None,
                           h: MinMaxNormalizer | None = None) -> LipschitzRatios:
    """``||g(Phi(x + nu)) - g(Phi(x))||`` and ``||h(x + nu) - h(x)||`` (paper eq. 9).

    Parameters
    ----------
    clean_input : (D,) or (..., D) the clean image, flattened.
    perturbed_inputs : (..., T, D) the perturbed images, flattened.
    clean_output : (F,) or (..., F) feature-layer output of the clean image.
    perturbed_outputs : (..., T, F) feature-layer outputs of the perturbed images.
    g, h : fitted normalizers for outputs and inputs; None means no normalization.

    Returns
    -------
    LipschitzRatios with float64 distances of shape (..., T).
    """
    def distance(clean, perturbed, norm):
        c = clean if isinstance(clean, torch.Tensor) else torch.as_tensor(np.asarray(clean))
        p = perturbed if isinstance(perturbed, torch.Tensor) else torch.as_tensor(np.asarray(perturbed))
        if p.shape[-1] != c.shape[-1]:
            raise ValueError(f"clean vector has {c.shape[-1]} elements, perturbed "
                             f"ones {p.shape[-1]}")
        _checks.check_finite(p, "perturbed vectors")
        if norm is not None:
            c, p = norm(c), norm(p)
        diff = p.to(torch.float64) - c.to(torch.float64).unsqueeze(-2)
        return torch.linalg.vector_norm(diff, dim=-1)

    return LipschitzRatios(distance(clean_output, perturbed_outputs, g),
                           distance(clean_input, perturbed_inputs, h))
