"""The paper's studies as functions of (model, clean samples, parameters).

Each study runs sample by sample (one cached unit per sample, see
:mod:`localprops.core.cache`), evaluates ``R x T`` perturbed images through
:func:`localprops.core.engine.evaluate` in bounded chunks, and returns plain arrays
that the plots and the scorecard read. Every sample carries its own seed, so
all models of a dataset see the same perturbations of the same image.

- :func:`score_study` with ``kind="isotropy"`` (paper eq. 4, Fig. 1) or
  ``kind="symmetry"`` (eq. 6, Fig. 3).
- :func:`float32_noise_floor`: how much of a score range is float32 rounding.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.engine import evaluate, model_device
from localprops.core.sampling import PermutedPerturbations, RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.runner import run_units

ArrayLike = np.ndarray | torch.Tensor

#: The studies modules whose code computes this study's cached units.
CODE_MODULES = ("scores",)
KINDS = {"isotropy": RadialPerturbations, "symmetry": PermutedPerturbations}


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


@dataclass
class ScoreStudy:
    """True-class scores of ``T`` perturbations per (sample, radius) for one model."""

    model: str
    kind: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray          # (S, R, T) true-class probability (float64)
    predictions: np.ndarray     # (S, R, T) predicted class
    skipped: list[str] = field(default_factory=list)

    @property
    def statistics(self) -> ScoreStatistics:
        """Range, mean, min, max and any-misclassified per (sample, radius)."""
        return score_statistics(self.scores, self.predictions, self.labels[:, None])


def score_study(model: ModelSpec, samples: SampleSet, *, kind: str = "isotropy",
                radii: list[float], T: int, norm: str = "l2", batch_size: int | None = None,
                cache: ResultCache | None = None, progress: bool = True) -> ScoreStudy:
    """Run the isotropy (eq. 4) or symmetry (eq. 6) study of one model.

    Parameters
    ----------
    model : the loaded model (:func:`localprops.models.load` or
        :func:`~localprops.models.from_module`): [0, 255] input, logits out;
        its name and weights key the cache.
    samples : the clean samples (each with its own seed).
    kind : ``"isotropy"`` (independent directions) or ``"symmetry"``
        (permutations of one perturbation per radius).
    radii, T, norm : the radii, perturbations per radius and norm of ``r``.
    batch_size : images per forward pass.
    cache : finished samples are read from and written to it.
    progress : a progress bar over samples.

    Returns
    -------
    ScoreStudy. A sample that fails (e.g. the model returns NaN) is reported
    with a warning, listed in ``skipped`` and left out; the rest stand.
    """
    spec = as_spec(model)
    model, model_name, weights = spec.model, spec.name, spec.weights
    if kind not in KINDS:
        raise ValueError(f"unknown study kind {kind!r}: use one of {sorted(KINDS)}")
    radii = list(_checks.check_radii(radii))
    T = _checks.check_count(T, "T")
    norm = _checks.check_norm(norm)

    def manifest(i: int) -> dict:
        return dict(study=kind, model=model_name, weights=weights, radii=radii, T=T,
                    norm=norm, seed=int(samples.seeds[i]), sample=int(samples.ids[i]),
                    label=int(samples.labels[i]))

    def compute(i: int) -> dict:
        source = KINDS[kind](tuple(samples.images.shape[1:]), radii, T, norm,
                             int(samples.seeds[i]))
        out = evaluate(model, samples.images[i], source, labels=samples.labels[i],
                       batch_size=batch_size, progress=False)
        return dict(scores=out.scores.numpy(),
                    predictions=out.predictions.numpy().astype(np.int16))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model_name} {kind}", progress=progress,
                                     study_modules=CODE_MODULES)
    scores = [u["scores"] for u in units]
    predictions = [u["predictions"] for u in units]
    r = len(radii)
    return ScoreStudy(
        model=model_name, kind=kind, norm=norm, radii=np.asarray(radii),
        ids=np.asarray(samples.ids)[kept], labels=np.asarray(samples.labels)[kept],
        scores=np.stack(scores) if scores else np.zeros((0, r, T)),
        predictions=np.stack(predictions) if predictions else np.zeros((0, r, T), np.int16),
        skipped=skipped)


def float32_noise_floor(model: nn.Module, samples: SampleSet, *, radius: float,
                        T: int, norm: str = "l2", batch_size: int | None = None) -> np.ndarray:
    """Largest |score in float32 - score in float64| per sample, same inputs.

    The model is copied to float64 and both copies see the very same perturbed
    images (radius ``radius``, the samples' own seeds). Score ranges at or
    below this floor cannot be told apart from rounding noise.

    Returns
    -------
    (S,) array of the largest absolute difference over the ``T`` images.
    """
    model64 = copy.deepcopy(model).to(dtype=torch.float64)
    floors = []
    for i in range(len(samples)):
        source = RadialPerturbations(tuple(samples.images.shape[1:]), [radius], T, norm,
                                     int(samples.seeds[i]))
        nu = source.materialize(dtype=torch.float32).to(model_device(model))
        s32 = evaluate(model, samples.images[i], nu, labels=samples.labels[i],
                       batch_size=batch_size, progress=False).scores
        s64 = evaluate(model64, samples.images[i].double(), nu.double(),
                       labels=samples.labels[i], batch_size=batch_size,
                       progress=False).scores
        floors.append((s32.double() - s64).abs().max().item())
    return np.asarray(floors)


def rounding_distortion(samples: SampleSet, *, radius: float, T: int, norm: str = "l2",
                        dtype: torch.dtype = torch.float32) -> np.ndarray:
    """How much of the perturbation the network sees is rounding error.

    Returns, per sample, the median over ``T`` perturbations of
    ``||(fl(x + nu) - x) - nu|| / r`` (in the same norm), where ``fl`` rounds
    to ``dtype``: near 0 when ``x + nu`` is represented faithfully, of order 1
    when the entries of ``nu`` are no larger than the float32 step at ``x``
    (about 1.5e-5 for a value near 255), so that the perturbation the network
    receives is mostly rounding.
    """
    out = []
    for i in range(len(samples)):
        x = samples.images[i].to(dtype)
        nu = RadialPerturbations(tuple(x.shape), [radius], T, norm,
                                 int(samples.seeds[i])).materialize(dtype=torch.float64)[0]
        seen = (x + nu.to(dtype)).double() - x.double()
        error = (seen - nu).flatten(1)
        size = error.norm(dim=1) if norm == "l2" else error.abs().amax(dim=1)
        out.append(float((size / radius).median()))
    return np.asarray(out)
