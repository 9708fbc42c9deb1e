"""The paper's studies as functions of (model, clean samples, parameters).

Each study runs sample by sample (one cached unit per sample, see
:mod:`localprops.core.cache`), evaluates ``R x T`` perturbed images through
:func:`localprops.core.engine.evaluate` in bounded chunks, and returns plain arrays
that the plots and the scorecard read. Every sample carries its own seed, so
all models of a dataset see the same perturbations of the same image.

- :func:`score_study` with ``kind="isotropy"`` (paper eq. 4, Fig. 1) or
  ``kind="symmetry"`` (eq. 6, Fig. 3).
- :func:`float32_noise_floor`: how much of a score range is float32 rounding,
  per sample, for the probability and the log-odds.
- :func:`float64_radii`: the radii at which rounding ``x + nu`` to float32
  would eat a measurable share of the perturbation; the study evaluates
  those in float64 (model and input).
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


#: rounding error of float64 relative to float32 (unit roundoffs 2**-53 and 2**-24)
FLOAT64_GAIN = 2.0 ** -29

#: a radius is evaluated in float64 when rounding x + nu to float32 changes the
#: perturbation by more than this share of its norm (median over a sample's draws)
ROUNDING_TOLERANCE = 1e-2

#: radii below this (grey levels) are always evaluated in float64: the paper's eps,
#: where ranges are about 1e-3 of those at r = 1 and within reach of float32 rounding
FLOAT64_BELOW = 1e-2

QUANTITIES = ("probability", "log_odds")


@dataclass
class ScoreStudy:
    """True-class scores of ``T`` perturbations per (sample, radius) for one model.

    ``scores`` is the true-class probability of the paper; ``log_odds`` the
    true-class log-odds ``log(s / (1 - s))`` computed from the logits, which
    keeps resolving differences where a confident model's probability is 1 to
    machine precision. ``float64`` marks the radii evaluated in float64.
    """

    model: str
    kind: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray          # (S, R, T) true-class probability (float64)
    predictions: np.ndarray     # (S, R, T) predicted class
    log_odds: np.ndarray | None = None   # (S, R, T) true-class log-odds
    float64: np.ndarray | None = None    # (R,) bool: radius evaluated in float64
    skipped: list[str] = field(default_factory=list)

    @property
    def statistics(self) -> ScoreStatistics:
        """Range, mean, min, max and any-misclassified per (sample, radius)."""
        return score_statistics(self.scores, self.predictions, self.labels[:, None])

    def statistics_of(self, quantity: str = "probability") -> ScoreStatistics:
        """:attr:`statistics` of the probability or of the log-odds."""
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
        if quantity == "probability":
            return self.statistics
        if self.log_odds is None:
            raise ValueError("this study has no log-odds (computed before they were stored)")
        return score_statistics(self.log_odds, self.predictions, self.labels[:, None])

    @property
    def classes(self) -> int:
        """How many distinct classes the samples cover."""
        return len(set(np.asarray(self.labels).tolist()))

    def range_floors(self, floor: "NoiseFloor", quantity: str = "probability") -> np.ndarray:
        """(S, R) noise floor of every range: float32's per sample, scaled down where float64.

        A float64 evaluation rounds ``2**-29`` times more finely than float32, so
        its floor is the sample's float32 floor times :data:`FLOAT64_GAIN`.
        """
        per_sample = floor.for_samples(self.ids, quantity)
        scale = np.where(self.float64 if self.float64 is not None
                         else np.zeros(len(self.radii), bool), FLOAT64_GAIN, 1.0)
        return per_sample[:, None] * scale[None, :]


def float64_radii(samples: SampleSet, radii: list[float], norm: str = "l2", *,
                  T: int = 8, tolerance: float = ROUNDING_TOLERANCE,
                  below: float = FLOAT64_BELOW) -> list[float]:
    """The radii a study evaluates in float64 (model and input).

    Every radius below ``below`` (the paper's eps, 1e-3: ranges there are
    about a thousandth of those at r = 1, within reach of the float32 noise
    floor), and every radius at which, for some sample, the median of
    :func:`rounding_distortion` over ``T`` draws exceeds ``tolerance`` (1%):
    rounding ``x + nu`` to float32 would change the perturbation the network
    sees by a measurable share. For the book's models and radii that is eps
    alone, in both readings.
    """
    if not len(samples):
        return []
    return [float(r) for r in radii
            if float(r) < below
            or rounding_distortion(samples, radius=float(r), T=T, norm=norm).max() > tolerance]


def _as_float64(model: nn.Module) -> nn.Module:
    """A float64 copy of the model (its parameters and buffers), left on its device."""
    return copy.deepcopy(model).to(dtype=torch.float64)


def score_study(model: ModelSpec, samples: SampleSet, *, kind: str = "isotropy",
                radii: list[float], T: int, norm: str = "l2", batch_size: int | None = None,
                cache: ResultCache | None = None, progress: bool = True,
                precise: list[float] | str = "auto") -> ScoreStudy:
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
    precise : radii evaluated in float64 (model and input): ``"auto"`` for
        :func:`float64_radii`, or a list (``[]`` for none).

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
    precise = float64_radii(samples, radii, norm) if precise == "auto" else \
        [float(r) for r in precise]
    wide = np.isin(np.asarray(radii, dtype=np.float64), np.asarray(precise, dtype=np.float64))
    copies: dict[str, nn.Module] = {}

    def manifest(i: int) -> dict:
        return dict(study=kind, model=model_name, weights=weights, radii=radii, T=T,
                    norm=norm, seed=int(samples.seeds[i]), sample=int(samples.ids[i]),
                    label=int(samples.labels[i]), float64=[float(r) for r in
                                                           np.asarray(radii)[wide]])

    def compute(i: int) -> dict:
        parts = {}
        for in64 in (False, True):
            group = [r for r, w in zip(radii, wide) if w == in64]
            if not group:
                continue
            if in64 and "float64" not in copies:
                copies["float64"] = _as_float64(model)
            net = copies["float64"] if in64 else model
            image = samples.images[i].double() if in64 else samples.images[i]
            source = KINDS[kind](tuple(samples.images.shape[1:]), group, T, norm,
                                 int(samples.seeds[i]))
            parts[in64] = evaluate(net, image, source, labels=samples.labels[i],
                                   batch_size=batch_size, progress=False)
        row = np.where(wide, np.cumsum(wide) - 1, np.cumsum(~wide) - 1)  # within its group

        def merged(name: str, dtype) -> np.ndarray:
            return np.stack([getattr(parts[bool(w)], name)[int(k)].numpy()
                             for w, k in zip(wide, row)]).astype(dtype)

        return dict(scores=merged("scores", np.float64),
                    log_odds=merged("log_odds", np.float64),
                    predictions=merged("predictions", np.int16))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model_name} {kind}", progress=progress,
                                     study_modules=CODE_MODULES)
    r = len(radii)

    def stack(key: str, dtype) -> np.ndarray:
        return (np.stack([u[key] for u in units]) if units
                else np.zeros((0, r, T), dtype))

    return ScoreStudy(
        model=model_name, kind=kind, norm=norm, radii=np.asarray(radii),
        ids=np.asarray(samples.ids)[kept], labels=np.asarray(samples.labels)[kept],
        scores=stack("scores", np.float64), predictions=stack("predictions", np.int16),
        log_odds=stack("log_odds", np.float64), float64=wide, skipped=skipped)


@dataclass
class NoiseFloor:
    """Per-sample float32 noise floors of one model: ranges at or below them say nothing.

    ``probability`` and ``log_odds`` are (S,) arrays: the largest absolute
    difference, over the same perturbed images, between a float32 and a
    float64 evaluation, for each sample in ``ids``.
    """

    ids: np.ndarray
    probability: np.ndarray
    log_odds: np.ndarray

    def for_samples(self, ids, quantity: str = "probability") -> np.ndarray:
        """The floors of the samples ``ids`` (in that order)."""
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
        values = dict(zip(np.asarray(self.ids).tolist(), getattr(self, quantity).tolist()))
        missing = [i for i in np.asarray(ids).tolist() if i not in values]
        if missing:
            raise KeyError(f"no noise floor measured for samples {missing[:5]}: measure the "
                           "floor on the same SampleSet as the study")
        return np.asarray([values[i] for i in np.asarray(ids).tolist()], dtype=np.float64)


def float32_noise_floor(model: nn.Module | ModelSpec, samples: SampleSet, *, radius: float,
                        T: int, norm: str = "l2", batch_size: int | None = None,
                        cache: ResultCache | None = None) -> NoiseFloor:
    """Largest |float32 - float64| of the true-class probability and log-odds, per sample.

    The model is copied to float64 and both copies see the very same perturbed
    images (radius ``radius``, the samples' own seeds). Score ranges at or
    below this floor cannot be told apart from rounding noise. The floor is
    per sample: it varies by orders of magnitude between images (it scales
    with ``s (1 - s)`` for the probability), so a model-wide maximum would
    declare most samples unmeasurable. With a ``cache`` (and a
    :class:`~localprops.models.wrappers.ModelSpec`, whose name and weights key
    it) each sample's floor is computed once for all chapters.

    Returns
    -------
    NoiseFloor with (S,) arrays.
    """
    spec = model if isinstance(model, ModelSpec) else None
    net = spec.model if spec is not None else model
    copies: dict[str, nn.Module] = {}

    def compute(i: int) -> dict[str, np.ndarray]:
        if "float64" not in copies:
            copies["float64"] = _as_float64(net)
        source = RadialPerturbations(tuple(samples.images.shape[1:]), [radius], T, norm,
                                     int(samples.seeds[i]))
        nu = source.materialize(dtype=torch.float32).to(model_device(net))
        o32 = evaluate(net, samples.images[i], nu, labels=samples.labels[i],
                       batch_size=batch_size, progress=False)
        o64 = evaluate(copies["float64"], samples.images[i].double(), nu.double(),
                       labels=samples.labels[i], batch_size=batch_size, progress=False)
        return dict(probability=np.asarray([(o32.scores.double() - o64.scores).abs().max()]),
                    log_odds=np.asarray([(o32.log_odds - o64.log_odds).abs().max()]))

    def manifest(i: int) -> dict:
        return dict(study="floor", model=spec.name if spec else "unnamed",
                    weights=spec.weights if spec else "", radius=float(radius), T=T,
                    norm=norm, seed=int(samples.seeds[i]), sample=int(samples.ids[i]),
                    label=int(samples.labels[i]))

    kept, units, skipped = run_units(samples, manifest, compute,
                                     cache=cache if spec is not None else None,
                                     desc="noise floor", progress=False,
                                     study_modules=CODE_MODULES)
    if skipped:
        raise RuntimeError(f"the noise floor failed for some samples: {skipped}")
    return NoiseFloor(np.asarray(samples.ids),
                      np.asarray([float(u["probability"][0]) for u in units]),
                      np.asarray([float(u["log_odds"][0]) for u in units]))


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
