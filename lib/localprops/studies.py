"""The paper's studies as functions of (model, clean samples, parameters).

Each study runs sample by sample (one cached unit per sample, see
:mod:`localprops.cache`), evaluates ``R x T`` perturbed images through
:func:`localprops.engine.evaluate` in bounded chunks, and returns plain arrays
that the plots and the scorecard read. Every sample carries its own seed, so
all models of a dataset see the same perturbations of the same image.

- :func:`score_study` with ``kind="isotropy"`` (paper eq. 4, Fig. 1) or
  ``kind="symmetry"`` (eq. 6, Fig. 3).
- :func:`float32_noise_floor`: how much of a score range is float32 rounding.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import _checks
from .cache import ResultCache, code_version
from .engine import evaluate, model_device
from .metrics import ScoreStatistics, score_statistics
from .progress import progress_bar
from .sampling import PermutedPerturbations, RadialPerturbations

KINDS = {"isotropy": RadialPerturbations, "symmetry": PermutedPerturbations}


@dataclass
class SampleSet:
    """Clean samples of one dataset: images in [0, 255], labels, seeds, ids.

    ``ids`` are the samples' indices in their source dataset; ``seeds`` their
    own perturbation seeds (``localprops.philox.derive_seed(seed, id)``).
    """

    images: torch.Tensor
    labels: list[int]
    seeds: list[int]
    ids: list[int]

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            raise ValueError("images must be a tensor (S, C, H, W) in [0, 255]")
        n = self.images.shape[0]
        if not (len(self.labels) == len(self.seeds) == len(self.ids) == n):
            raise ValueError(f"{n} images but {len(self.labels)} labels, "
                             f"{len(self.seeds)} seeds and {len(self.ids)} ids")

    def __len__(self) -> int:
        return self.images.shape[0]


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


def run_units(samples: SampleSet, manifest: Callable[[int], Mapping],
              compute: Callable[[int], Mapping[str, np.ndarray]], *,
              cache: ResultCache | None, desc: str, progress: bool = True,
              errors: tuple[type[Exception], ...] = (ValueError,)
              ) -> tuple[list[int], list[dict[str, np.ndarray]], list[str]]:
    """Compute (or read from the cache) one unit per sample; skip failing samples.

    Parameters
    ----------
    samples : the clean samples; unit ``i`` is sample ``i``.
    manifest : sample index -> what determines the unit (the code version is added).
    compute : sample index -> arrays of the finished unit.
    cache : where finished units are kept (None: nothing is kept).
    desc, progress : the progress bar over samples.
    errors : exceptions that skip a sample (reported with a warning) instead of
        stopping the run; a long run never loses the samples already done.

    Returns
    -------
    (indices of the samples kept, their units, messages for the skipped ones).
    """
    cache = cache or ResultCache(None)
    version = code_version()
    kept, units, skipped = [], [], []
    for i in progress_bar(range(len(samples)), enabled=progress, desc=desc):
        try:
            units.append(cache.get_or_compute({**manifest(i), "code": version},
                                              lambda i=i: compute(i)))
            kept.append(i)
        except errors as error:
            skipped.append(f"sample {samples.ids[i]}: {error}")
            warnings.warn(f"{desc}: sample {samples.ids[i]} skipped: {error}", stacklevel=2)
    return kept, units, skipped


def score_study(model: nn.Module, samples: SampleSet, *, kind: str = "isotropy",
                radii: list[float], T: int, norm: str = "l2", model_name: str,
                weights: str = "", batch_size: int | None = None,
                cache: ResultCache | None = None, progress: bool = True) -> ScoreStudy:
    """Run the isotropy (eq. 4) or symmetry (eq. 6) study of one model.

    Parameters
    ----------
    model : classifier, [0, 255] input, logits output.
    samples : the clean samples (each with its own seed).
    kind : ``"isotropy"`` (independent directions) or ``"symmetry"``
        (permutations of one perturbation per radius).
    radii, T, norm : the radii, perturbations per radius and norm of ``r``.
    model_name, weights : identify the model in the cache key.
    batch_size : images per forward pass.
    cache : finished samples are read from and written to it.
    progress : a progress bar over samples.

    Returns
    -------
    ScoreStudy. A sample that fails (e.g. the model returns NaN) is reported
    with a warning, listed in ``skipped`` and left out; the rest stand.
    """
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
                                     desc=f"{model_name} {kind}", progress=progress)
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
