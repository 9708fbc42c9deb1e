"""What the chapter beyond the paper reads off the first-order and attack studies.

:mod:`localprops.studies.firstorder` and :mod:`localprops.studies.attacks`
compute and cache per-sample results (gradients, slopes, curvatures, attack
radii). This module turns those results into the numbers the chapter reports:
where the first-order model of the score stops agreeing with the isotropy
study, how well it follows the measured scores direction by direction, what
the second-order term adds, and how far random directions are from the worst
case.

Nothing here is cached. The module is kept apart from the two study modules
on purpose: their code is part of their cached units' code version
(``CODE_MODULES``), this one's is not, so refining a summary never
invalidates the costly cached gradients and attacks.

All functions take the studies of one model and one norm, with ``valid``
the (S, R) mask of measurable (sample, radius) pairs
(:func:`localprops.studies.firstorder.measurable`); pairs that are not
measurable are left out of every median.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from localprops.models.samples import SampleSet
from localprops.studies.attacks import AttackStudy, linear_ratio
from localprops.studies.firstorder import (
    FirstOrderStudy,
    check_aligned,
    departure_radii,
    measurable,
    range_ratios,
)
from localprops.studies.scores import NoiseFloor, ScoreStudy


def median_or_nan(values: ArrayLike) -> float:
    """The median of ``values`` as a float; NaN (without a warning) when empty.

    A NaN among the values makes the median NaN; ``inf`` values count as
    large (the median of departure radii is ``inf`` when more than half the
    samples never depart).

    Examples
    --------
    >>> median_or_nan([3.0, 1.0, float("inf")]), median_or_nan([])
    (3.0, nan)
    """
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)) if values.size else float("nan")


def _radius_position(radii: np.ndarray, at: float) -> int | None:
    """Position of ``at`` in ``radii`` (exact match), None when absent."""
    found = np.flatnonzero(np.asarray(radii, dtype=np.float64) == at)
    return int(found[0]) if found.size else None


def direction_correlation(predicted: ArrayLike, measured: ArrayLike) -> np.ndarray:
    """Pearson correlation of two score sets over their last axis (the directions).

    Parameters
    ----------
    predicted, measured : array_like
        Scores of the same shape (..., T), one row per (sample, radius).

    Returns
    -------
    numpy.ndarray
        Shape (...): the correlation of each row of ``predicted`` with the
        same row of ``measured``; NaN (without a warning) where either row
        is constant.

    Examples
    --------
    >>> direction_correlation([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]],
    ...                       [[2.0, 4.0, 6.5], [3.0, 2.0, 1.0]]).round(4)
    array([ 0.9979, -1.    ])
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    if predicted.shape != measured.shape:
        raise ValueError(f"predicted {predicted.shape} and measured {measured.shape} differ")
    pred = predicted - predicted.mean(axis=-1, keepdims=True)
    meas = measured - measured.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (pred * meas).sum(-1) / np.sqrt((pred ** 2).sum(-1) * (meas ** 2).sum(-1))


def median_direction_correlation(measured: ScoreStudy, study: FirstOrderStudy,
                                 valid: ArrayLike, at: float = 1.0) -> float:
    """Median correlation of predicted with measured scores over the ``T`` directions.

    At radius ``at``, for every sample measurable there: the correlation
    (:func:`direction_correlation`) of the first-order predicted scores
    ``s(x) + r g . d_i`` with the measured ``s(x + r d_i)`` over the
    directions ``i``; then the median over those samples. A range can agree
    by chance, a correlation near 1 cannot.

    Parameters
    ----------
    measured : ScoreStudy
        The isotropy study.
    study : FirstOrderStudy
        The first-order study of the same samples, radii, ``T`` and norm.
    valid : array_like
        (S, R) bool, the measurable (sample, radius) pairs.
    at : float, optional
        The radius, one of ``study.radii`` (exactly; default 1).

    Returns
    -------
    float
        NaN when ``at`` is not among the radii or no sample is measurable there.
    """
    check_aligned(measured, study)
    k = _radius_position(study.radii, at)
    if k is None:
        return float("nan")
    ok = np.asarray(valid, bool)[:, k]
    if not ok.any():
        return float("nan")
    return float(np.median(direction_correlation(study.predicted_scores(1)[ok, k],
                                                 measured.scores[ok, k])))


def median_range_error(measured: ScoreStudy, study: FirstOrderStudy, valid: ArrayLike,
                       at: float = 1.0) -> float:
    """Median ``|predicted / measured - 1|`` of the first-order score range at radius ``at``.

    The median is over the samples measurable at ``at`` (NaN ratios, where
    both ranges vanish, are passed over). Parameters as in
    :func:`median_direction_correlation`; NaN when ``at`` is not among the
    radii or no sample is measurable there.
    """
    k = _radius_position(study.radii, at)
    valid = np.asarray(valid, bool)
    if k is None or not valid[:, k].any():
        return float("nan")
    ratio = range_ratios(measured, study)
    return float(np.nanmedian(np.where(valid, np.abs(ratio - 1), np.nan)[:, k]))


@dataclass(frozen=True)
class LinearRegime:
    """Where the first-order model of one model's score stops agreeing.

    ``ids`` are the samples measurable at some radius (the others say
    nothing); ``end`` and ``end_log_odds`` their first radius of departure by
    more than the factor, for the model linear in the score and the one
    linear in the log-odds (``inf``: no departure up to the largest radius;
    :func:`localprops.studies.firstorder.departure_radii`). ``range_error``
    and ``correlation`` are :func:`median_range_error` and
    :func:`median_direction_correlation` at radius ``at``.
    """

    ids: np.ndarray
    end: np.ndarray
    end_log_odds: np.ndarray
    at: float
    range_error: float
    correlation: float

    @property
    def median_end(self) -> float:
        """Median first radius of departure of the score model (inf, or NaN if no sample)."""
        return median_or_nan(self.end)

    @property
    def median_end_log_odds(self) -> float:
        """Median first radius of departure of the log-odds model."""
        return median_or_nan(self.end_log_odds)

    @property
    def smallest_end(self) -> float:
        """Smallest first radius of departure of the score model (NaN if no sample)."""
        return float(self.end.min()) if len(self.end) else float("nan")

    @property
    def never_departs(self) -> int:
        """Samples whose score model agrees at every measurable radius."""
        return int(np.isinf(self.end).sum())


def log_odds_measurable(measured: ScoreStudy, samples: SampleSet, floor: NoiseFloor, *,
                        max_rounding: float = 0.1, T: int = 8) -> np.ndarray:
    """Where a measured *log-odds* range says something: (S, R) bool.

    The rule of :func:`localprops.studies.firstorder.measurable` with the
    log-odds in place of the probability: the range lies above the sample's
    log-odds noise floor (scaled down at float64 radii) and the perturbed image
    is represented faithfully. A confident sample whose probability is 1 to
    machine precision has no measurable probability range, but its log-odds
    still moves; this mask keeps it.
    """
    if measured.log_odds is None:
        raise ValueError("this isotropy study holds no log-odds: recompute it")
    # a floor below every range leaves measurable's faithfulness test alone
    faithful = measurable(measured, samples, -1.0, max_rounding=max_rounding, T=T)
    return faithful & (np.ptp(measured.log_odds, axis=-1)
                       > measured.range_floors(floor, "log_odds"))


def linear_regime(measured: ScoreStudy, study: FirstOrderStudy, valid: ArrayLike,
                  factor: float = 2.0, at: float = 1.0) -> LinearRegime:
    """The first-order model of one model and norm against its isotropy study.

    Parameters
    ----------
    measured : ScoreStudy
        The isotropy study.
    study : FirstOrderStudy
        The first-order study of the same samples, radii, ``T`` and norm.
    valid : array_like
        (S, R) bool, the measurable (sample, radius) pairs.
    factor : float, optional
        Agreement means a predicted range within ``factor`` of the measured
        one (:func:`localprops.studies.firstorder.within_factor`).
    at : float, optional
        The radius of the range error and the direction correlation.

    Returns
    -------
    LinearRegime
    """
    valid = np.asarray(valid, bool)
    ids, end = departure_radii(measured, study, valid, factor)
    _, end_log_odds = departure_radii(measured, study, valid, factor, through_log_odds=True)
    return LinearRegime(ids=ids, end=end, end_log_odds=end_log_odds, at=float(at),
                        range_error=median_range_error(measured, study, valid, at),
                        correlation=median_direction_correlation(measured, study, valid, at))


@dataclass(frozen=True)
class OrderComparison:
    """First against second order at the second-order radii, each (R2,).

    ``first`` and ``second`` are the medians over measurable samples of
    ``|predicted / measured - 1|`` for the range over the first ``T_second``
    directions (NaN where no sample is measurable); ``samples`` counts them.
    """

    radii: np.ndarray
    first: np.ndarray
    second: np.ndarray
    samples: np.ndarray


def order_comparison(measured: ScoreStudy, study: FirstOrderStudy,
                     valid: ArrayLike) -> OrderComparison:
    """What the second-order term adds to the predicted range, per second-order radius.

    Both orders are compared on the same directions, the first ``T_second``
    of each radius (:func:`localprops.studies.firstorder.range_ratios`).
    Parameters as in :func:`linear_regime`; empty arrays when the study has
    no second-order radius.
    """
    check_aligned(measured, study)
    if not len(study.second_radii):
        empty = np.zeros(0)
        return OrderComparison(np.asarray(study.second_radii, float), empty, empty,
                               np.zeros(0, int))
    ok = np.asarray(valid, bool)[:, study.second_index]
    ratio1 = np.where(ok, range_ratios(measured, study, second_only=True), np.nan)
    ratio2 = np.where(ok, range_ratios(measured, study, order=2), np.nan)
    with warnings.catch_warnings():      # a radius with no measurable sample: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        first = np.nanmedian(np.abs(ratio1 - 1), axis=0)
        second = np.nanmedian(np.abs(ratio2 - 1), axis=0)
    return OrderComparison(study.second_radii, first, second, ok.sum(axis=0))


@dataclass(frozen=True)
class MomentComparison:
    """Mean and spread of the scores, measured against predicted, each (R2,).

    At each second-order radius, over the first ``T_second`` directions and
    the ``samples`` measurable samples (medians over them): ``spread`` is the
    first-order predicted standard deviation over the measured one;
    ``shift_measured``, ``shift_first`` and ``shift_second`` are the shift of
    the mean score from the clean score, measured and predicted to first
    (``r`` times the mean slope) and second order (plus ``r^2 / 2`` times the
    mean curvature); the predictions are computed as shifts, not as scores
    near 1 minus the clean score, so they carry no rounding of the score.
    ``error_first`` and ``error_second`` are the median over samples of
    ``|measured shift - predicted shift|`` in units of the sample's measured
    standard deviation: a per-sample comparison, where the medians of signed
    shifts can differ in sign between columns by chance. Radii with no
    measurable sample have ``samples`` 0 and NaN. ``shift_floor`` is the
    median noise floor of the measured scores at that radius, at least the
    float64 spacing of the clean score (NaN without floors): a measured shift
    below it is rounding, not a measurement (:attr:`shift_resolved`). A
    sample whose measured spread is 0 is left out of ``spread`` and the errors.
    """

    radii: np.ndarray
    samples: np.ndarray
    spread: np.ndarray
    shift_measured: np.ndarray
    shift_first: np.ndarray
    shift_second: np.ndarray
    shift_floor: np.ndarray
    error_first: np.ndarray
    error_second: np.ndarray

    @property
    def shift_resolved(self) -> np.ndarray:
        """(R2,) bool: the measured mean shift lies above its noise floor (True without floors)."""
        return ~(np.abs(self.shift_measured) <= self.shift_floor)


def moment_comparison(measured: ScoreStudy, study: FirstOrderStudy,
                      valid: ArrayLike, floors: ArrayLike | None = None) -> MomentComparison:
    """Predicted against measured mean shift and spread of the scores.

    Over many directions symmetric about 0 the first-order term of the mean
    averages out, so the shift of the mean score is a second-order effect,
    ``r^2 / 2`` times the mean of ``d' H d``. ``measured``, ``study`` and
    ``valid`` as in :func:`linear_regime`; ``floors`` (S, R) the noise floors
    of the measured score ranges
    (:meth:`localprops.studies.scores.ScoreStudy.range_floors`), which say
    which measured shifts are resolved. With fewer than two directions per
    second-order radius there is no spread: every radius then has ``samples`` 0.
    """
    check_aligned(measured, study)
    radii = np.asarray(study.second_radii, float)
    out = {key: np.full(len(radii), np.nan) for key in
           ("spread", "shift_measured", "shift_first", "shift_second", "shift_floor",
            "error_first", "error_second")}
    samples = np.zeros(len(radii), int)
    t2 = study.curvatures.shape[-1]
    if len(radii) and t2 >= 2:
        ok = np.asarray(valid, bool)[:, study.second_index]
        clean = study.clean_scores
        r = radii[None, :]
        measured_scores = measured.scores[:, study.second_index, :t2]
        slopes = study.slopes[:, study.second_index, :t2]
        first = r * slopes.mean(axis=-1)                               # (S, R2) shifts
        shifts = {"measured": measured_scores.mean(axis=-1) - clean[:, None],
                  "first": first, "second": first + 0.5 * r ** 2 * study.curvatures.mean(-1)}
        sd = measured_scores.std(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = r * slopes.std(axis=-1) / sd
            errors = {name: np.abs(shifts["measured"] - shifts[name]) / sd
                      for name in ("first", "second")}
        # one radius at a time: each keeps its own samples, all of them at once
        for j in np.flatnonzero(ok.any(axis=0)):
            keep = ok[:, j]
            samples[j] = int(keep.sum())
            spread_kept = keep & np.isfinite(spread[:, j])
            out["spread"][j] = (np.median(spread[spread_kept, j]) if spread_kept.any()
                                else np.nan)
            for name, values in shifts.items():
                out[f"shift_{name}"][j] = np.median(values[keep, j])
            for name, values in errors.items():
                out[f"error_{name}"][j] = (np.median(values[spread_kept, j])
                                           if spread_kept.any() else np.nan)
            if floors is not None:      # float64 spacing of the clean score at least
                out["shift_floor"][j] = np.median(np.maximum(
                    np.asarray(floors, float)[keep, study.second_index[j]],
                    np.spacing(clean[keep])))
    return MomentComparison(radii=radii, samples=samples, **out)


@dataclass(frozen=True)
class AttackSummary:
    """Random against adversarial for one model and norm: medians over samples.

    Radii: ``deepfool_radius``, ``pgd_radius``, ``random_radius`` (smallest
    misclassifying radius); ``censored`` samples had no random flip up to the
    cap (their radius is a lower bound); ``not_found`` samples had no
    adversarial point. ``ratio`` is the median random over adversarial radius
    (over samples with an adversarial point; NaN if none), ``below_one`` the
    samples whose ratio is below 1; ``linear_best`` and ``linear_typical``
    what a linear classifier gives for the best of ``T`` and a typical
    direction (:func:`localprops.studies.attacks.linear_ratio`). At the
    largest radius ``radius``: ``random_drop``, ``first_order_drop`` and
    ``pgd_drop``, the median ``1 - s`` for the worst random direction, after
    the first-order step and after PGD.
    """

    deepfool_radius: float
    pgd_radius: float
    random_radius: float
    censored: int
    not_found: int
    ratio: float
    below_one: int
    linear_best: float
    linear_typical: float
    radius: float
    random_drop: float
    first_order_drop: float
    pgd_drop: float


def attack_summary(study: AttackStudy) -> AttackSummary:
    """Medians of an attack study over its samples (NaN for a study without samples).

    Parameters
    ----------
    study : AttackStudy
        One model and norm (:func:`localprops.studies.attacks.attack_study`).

    Returns
    -------
    AttackSummary
    """
    ratio = study.ratio
    found = np.isfinite(ratio)
    return AttackSummary(
        deepfool_radius=median_or_nan(study.deepfool_radius),
        pgd_radius=median_or_nan(study.pgd_radius),
        random_radius=median_or_nan(study.random_radius),
        censored=int(study.random_censored.sum()),
        not_found=int((~found).sum()),
        ratio=median_or_nan(ratio[found]),
        below_one=int((ratio[found] < 1).sum()),
        linear_best=median_or_nan(study.linear_ratio),
        linear_typical=median_or_nan(linear_ratio(study.norm, study.dimension,
                                                  study.l1_over_l2)),
        radius=float(study.radii[-1]),
        random_drop=median_or_nan(study.random_drops[:, -1]),
        first_order_drop=median_or_nan(study.first_order_drops[:, -1]),
        pgd_drop=median_or_nan(study.pgd_drops[:, -1]))
