"""Laws of later work, measured and judged like the paper's claims (L1-L3).

The paper explains adversarial examples by local properties; three later
papers turned related intuitions into laws that can be measured per sample:

- **L1** (Fawzi, Moosavi-Dezfooli, Frossard, NeurIPS 2016): the smallest
  perturbation that flips the class within a random m-dimensional subspace
  is about ``sqrt(D / m)`` times the adversarial one, when the decision
  boundary is flat near x: log(ratio) against log(m) has slope -1/2.
- **L2** (Yin, Gontijo Lopes, Shlens, Cubuk, Gilmer, NeurIPS 2019): training
  with Gaussian-noise augmentation moves a model's sensitivity from high to
  low spatial frequencies (its Fourier heat map).
- **L3** (Ford, Gilmer, Carlini, Cubuk, ICML 2019): if the error set near x
  were a half-space at distance d, the error rate in Gaussian noise of
  standard deviation sigma would be ``Phi(-d / sigma)``; the d that fits the
  measured rates then matches the adversarial distance.

Each function returns :class:`~localprops.report.scorecard.Verdict` rows built
with the two-step rules of :mod:`localprops.report.rules` (per model: an
estimate with a 95% interval against a threshold or a band; across models:
every model must pass), each with a sensitivity line, so the scorecard
treats them like C1-C10.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from localprops.core.stats import bootstrap_interval
from localprops.report import rules
from localprops.report.rules import Outcome, combine, verdict_row
from localprops.report.scorecard import Verdict

#: L1: the per-sample slope passes when its median lies within -1/2 +- this
SLOPE_TOLERANCE = 0.1
#: L1's alternative tolerance (the sensitivity line)
SLOPE_TOLERANCE_ALTERNATIVE = 0.2
#: L3: the half-space distance matches the adversarial one within this factor
RATIO_FACTOR = 2.0
RATIO_FACTOR_ALTERNATIVE = 1.5


def _texts(outcomes: Sequence[Outcome], fmt: str, extra: Mapping[str, str] | None = None
           ) -> str:
    extra = extra or {}
    return "; ".join(f"{o.model}: {o.text(fmt)}" + (f", {extra[o.model]}" if o.model in extra
                                                     else "")
                     + f" ({o.outcome}" + (f": {o.note})" if o.note else ")")
                     for o in outcomes)


# ----------------------------------------------------------------- L1
def sample_slopes(ratios: np.ndarray, dims: np.ndarray, dimension: int) -> np.ndarray:
    """Per sample, the least-squares slope of log(ratio) against log(m), m < D.

    ``ratios`` (S, M, repeats) are subspace over full-space radii; repeats
    are averaged in log space first. A sample needs finite positive ratios
    at two or more dims below ``D`` (NaN otherwise: no flip found within the
    cap in a subspace leaves that dim out).
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    dims = np.asarray(dims, dtype=np.float64)
    keep = dims < dimension
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN rows give NaN
        logs = np.log(np.where(ratios > 0, ratios, np.nan))
        logs = np.where(np.isfinite(logs), logs, np.nan)
        mean = np.nanmean(logs[:, keep], axis=2) if ratios.ndim == 3 else logs[:, keep]
    x = np.log(dims[keep])
    out = np.full(len(ratios), np.nan)
    for s, row in enumerate(mean):                  # per sample: a tiny fit over <= M dims
        ok = np.isfinite(row)
        if ok.sum() >= 2:
            out[s] = np.polyfit(x[ok], row[ok], 1)[0]
    return out


def linear_reference_slope(dims: Sequence[int], dimension: int) -> float:
    """The slope L1 expects on this grid: that of a linear classifier, exactly.

    For a linear binary classifier the ratio in a uniformly random subspace
    is ``B^(-1/2)`` with ``B ~ Beta(m/2, (D-m)/2)``, so
    ``E log(ratio) = -(psi(m/2) - psi(D/2)) / 2`` (``psi`` the digamma
    function). Its least-squares slope against ``log m`` over the dims below
    ``D`` is the flat-boundary law's prediction for a per-sample slope on
    this grid: -1/2 for large ``m``, steeper when small ``m`` (whose ratio
    has a heavy tail) are in the grid (about -0.57 for m = 1 ... 975 of 3072).
    """
    from scipy.special import digamma

    dims = np.asarray(dims, dtype=np.float64)
    dims = dims[dims < dimension]
    if len(dims) < 2:
        raise ValueError(f"need two dims below D = {dimension}, got {dims.tolist()}")
    expected = -0.5 * (digamma(dims / 2) - digamma(dimension / 2))
    return float(np.polyfit(np.log(dims), expected, 1)[0])


def subspace_claim(studies: Sequence, *, tolerance: float = SLOPE_TOLERANCE,
                   center: float | None = None,
                   classes: Mapping[str, int] | None = None) -> list[Verdict]:
    """L1: the random-subspace radius scales as m^(-1/2) (Fawzi et al. 2016).

    ``studies`` are :class:`localprops.studies.subspace.SubspaceStudy`. Per
    model, each sample's slope of log(subspace / full-space radius) against
    log(m) (:func:`sample_slopes`) is computed; the model passes when the
    median slope's bootstrap 95% interval lies inside ``center +- tolerance``,
    ``center`` being the exact linear-classifier slope on the model's grid
    (:func:`linear_reference_slope`; -1/2 asymptotically) unless given,
    fails when it lies entirely outside, and is undecided otherwise (or with
    fewer than 10 samples with a slope). Supported when every model passes.
    """
    if not studies:
        return []
    classes = classes or {}

    centers = {s.model: (center if center is not None
                         else linear_reference_slope(s.dims, s.dimension)) for s in studies}

    def outcomes(tol: float) -> list[Outcome]:
        return [rules.band_outcome(s.model, sample_slopes(s.ratios(), s.dims, s.dimension),
                                   low=centers[s.model] - tol, high=centers[s.model] + tol,
                                   classes=classes.get(s.model)) for s in studies]

    main = outcomes(tolerance)
    extra = {}
    for s in studies:
        try:
            slope, (lo, hi) = s.slope()
            extra[s.model] = (f"linear-classifier slope on this grid {centers[s.model]:.3f}; "
                              f"slope of the median ratio {slope:.3f} [{lo:.3f}, {hi:.3f}] "
                              f"over m = {', '.join(str(int(m)) for m in s.dims)} "
                              f"of D = {s.dimension}")
        except ValueError as error:
            extra[s.model] = str(error)
    alt = SLOPE_TOLERANCE_ALTERNATIVE
    return [verdict_row(
        "L1", "(Fawzi et al. 2016) in a random m-dimensional subspace the smallest "
              "misclassifying perturbation is about sqrt(D/m) times the adversarial one: "
              "slope -1/2 of log(ratio) against log(m)",
        "median per-sample slope " + _texts(main, ".3f", extra),
        f"per model pass when the bootstrap 95% interval of the median per-sample slope lies "
        f"inside the linear-classifier slope on the same grid (Beta law; -0.5 for large m) "
        f"+- {tolerance:g}, fail when entirely outside; supported if every model passes, "
        "partly if some do",
        main, verdict=combine(main), setting="l2 radius in [0, 255] grey levels; subspace "
                                             "DeepFool, not clipped",
        sensitivity=rules.sensitivity({f"tolerance {alt:g}": combine(outcomes(alt)),
                                       "tolerance 0.05": combine(outcomes(0.05))}))]


# ----------------------------------------------------------------- L2
def band_share(drops: np.ndarray, radial: np.ndarray, cutoff: float) -> np.ndarray:
    """Per sample, the share of the sensitivity ``|drop|`` at radial frequencies above ``cutoff``.

    ``drops`` (S, F) are log-odds drops at one norm; the absolute value is
    used because with random signs a first-order drop is positive or
    negative with equal odds, and both mean the model responds. NaN for a
    sample with no response at all.
    """
    size = np.abs(np.asarray(drops, dtype=np.float64))
    total = size.sum(axis=1)
    high = size[:, np.asarray(radial) > cutoff].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, high / total, np.nan)


def band_level(drops: np.ndarray, radial: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per sample, the mean ``|drop|`` over the frequencies with ``low <= |k| <= high``."""
    radial = np.asarray(radial)
    band = (radial >= low) & (radial <= high)
    return np.abs(np.asarray(drops, dtype=np.float64))[:, band].mean(axis=1)


def difference_outcome(label: str, treated: np.ndarray, base: np.ndarray, *,
                       statistic=np.nanmedian, above: bool, min_count: int = rules.MIN_COUNT,
                       n_boot: int = 2000, seed: int = 0, paired: bool = False) -> Outcome:
    """``statistic(treated) - statistic(base)`` against 0, with a two-sample bootstrap.

    Unpaired (default), the two models' samples are independent sets and
    each is resampled on its own; ``paired`` (the same images, in the same
    order, for both) resamples the pairs together, which removes the
    image-to-image spread from the difference. PASS when the interval lies entirely on the claim's side of 0
    (above 0 if ``above``, else below), FAIL when entirely on the other
    side, UNDECIDED when it contains 0 or either model has fewer than
    ``min_count`` measurable samples.
    """
    treated = np.asarray(treated, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    if paired:
        if treated.shape != base.shape:
            raise ValueError("paired samples need arrays of one shape (the same images)")
        both = np.isfinite(treated) & np.isfinite(base)
        treated, base = treated[both], base[both]
    else:
        treated, base = treated[np.isfinite(treated)], base[np.isfinite(base)]
    n = min(len(treated), len(base))
    if n == 0:
        return Outcome(label, float("nan"), (float("nan"), float("nan")), 0.0, above,
                       rules.UNDECIDED, 0, 0, None, "no measurable samples")
    estimate = float(statistic(treated) - statistic(base))
    rng = np.random.default_rng(seed)
    if paired:
        picks = [rng.integers(0, n, n) for _ in range(n_boot)]
        boots = np.array([statistic(treated[p]) - statistic(base[p]) for p in picks])
    else:
        boots = np.array([statistic(treated[rng.integers(0, len(treated), len(treated))])
                          - statistic(base[rng.integers(0, len(base), len(base))])
                          for _ in range(n_boot)])
    interval = tuple(float(v) for v in np.quantile(boots, [0.025, 0.975]))
    if n < min_count:
        return Outcome(label, estimate, interval, 0.0, above, rules.UNDECIDED, n, n, None,
                       f"only {n} measurable samples (need {min_count})")
    lo, hi = interval
    if above:
        result = rules.PASS if lo > 0 else rules.FAIL if hi < 0 else rules.UNDECIDED
    else:
        result = rules.PASS if hi < 0 else rules.FAIL if lo > 0 else rules.UNDECIDED
    return Outcome(label, estimate, interval, 0.0, above, result, n, n, None,
                   "interval contains 0" if result == rules.UNDECIDED else "")


def paired_difference(label: str, base_ids, base: np.ndarray, treated_ids, treated: np.ndarray,
                      *, statistic=np.nanmedian, seed: int = 0) -> Outcome:
    """``statistic(treated) - statistic(base)`` over the images both sets hold, paired.

    ``base`` and ``treated`` are per-sample values of two models, indexed by
    their own ``ids``; the images in both are aligned by id and resampled
    together (:func:`difference_outcome` with ``paired=True``). A description,
    not a claim: its ``outcome`` says whether the interval lies below 0 (PASS)
    or above (FAIL).
    """
    _, ib, it = np.intersect1d(np.asarray(base_ids), np.asarray(treated_ids),
                               return_indices=True)
    return difference_outcome(label, np.asarray(treated, dtype=np.float64)[it],
                              np.asarray(base, dtype=np.float64)[ib], statistic=statistic,
                              above=False, paired=True, seed=seed)


def augmentation_claims(base, treated, *, norm_index: int, cutoff: float,
                        alternatives: Sequence[float] = ()) -> list[Verdict]:
    """L2: Gaussian-noise augmentation lowers high-frequency and raises low-frequency sensitivity.

    ``base`` and ``treated`` are :class:`localprops.studies.fourier.FourierHeatMap`
    of one architecture trained without and with noise augmentation, on the
    same grid and norms. Two rows, at ``norms[norm_index]``:

    - the high-frequency share (:func:`band_share` above ``cutoff``): passes
      when the difference of medians (treated - base) has its two-sample
      bootstrap interval entirely below 0, fails when entirely above;
    - the low-frequency level (mean ``|drop|`` for ``1 <= |k| <= cutoff / 2``)
      in log: passes when ``log median(treated) - log median(base)`` is
      entirely above 0, fails when entirely below.

    ``alternatives`` are other cutoffs for the sensitivity line.
    """
    label = f"{treated.model} vs {base.model}"
    r = float(base.norms[norm_index])
    paired = bool(len(base.ids) == len(treated.ids) and np.array_equal(base.ids, treated.ids))
    if (np.shape(base.norms) != np.shape(treated.norms)
            or not np.allclose(base.norms, treated.norms)
            or not np.array_equal(base.grid, treated.grid)):
        raise ValueError("the two heat maps must share their norms and frequency grid")

    def share_outcome(cut: float) -> Outcome:
        return difference_outcome(label, band_share(treated.drops[:, norm_index],
                                                    treated.radial, cut),
                                  band_share(base.drops[:, norm_index], base.radial, cut),
                                  above=False, paired=paired)

    def level_outcome(cut: float) -> Outcome:
        def logs(study):
            level = band_level(study.drops[:, norm_index], study.radial, 1.0, cut / 2)
            return np.log(np.where(level > 0, level, np.nan))
        return difference_outcome(label, logs(treated), logs(base), above=True, paired=paired)

    setting = (f"l2 norm {r:g} in [0, 255] grey levels; {{what}} of the Fourier heat map; "
               f"cutoff |k| = {cutoff:g} cycles per image")
    test = "paired" if paired else "two-sample"

    def row(paper: str, measured: str, rule: str, what: str,
            outcome_at: Callable[[float], Outcome]) -> Verdict:
        """One L2 row: the outcome at ``cutoff``, the alternatives in its sensitivity line."""
        out = outcome_at(cutoff)
        note = f": {out.note})" if out.note else ")"
        return verdict_row(
            "L2", "(Yin et al. 2019) noise augmentation " + paper,
            f"{label}: {measured} {out.text('+.3f')} ({out.outcome}" + note,
            f"pass when the {test} bootstrap 95% interval of {rule}", [out],
            verdict=combine([out]), setting=setting.format(what=what),
            sensitivity=rules.sensitivity({f"cutoff {c:g}": combine([outcome_at(c)])
                                           for c in alternatives}))

    return [
        row("lowers the share of a model's sensitivity at high spatial frequencies",
            "median high-frequency share of |log-odds drop|, treated - base",
            "the difference of medians lies entirely below 0, fail when entirely above; one "
            "pair of models", "high-frequency share", share_outcome),
        row("raises a model's sensitivity at low spatial frequencies",
            "log ratio of median low-frequency |log-odds drop|",
            "log median(treated) - log median(base) lies entirely above 0, fail when "
            "entirely below", "low-frequency level", level_outcome),
    ]


# ----------------------------------------------------------------- L3
def halfspace_fit(study, max_rate: float | None = 0.5, *, intervals: bool = False
                  ) -> tuple[np.ndarray, ...]:
    """Per sample (S,), the half-space distance fitted to the counts with rate <= ``max_rate``.

    A half-space at distance ``d > 0`` gives error rates ``Phi(-d/sigma) < 1/2``
    at every sigma, so counts above half the draws lie outside the model
    (several error half-spaces, a bounded region of correct points) and are
    left out of the fit by default; ``max_rate=None`` fits every sigma.
    Returns ``(d_hat, usable)``, or ``(d_hat, low, high, usable)`` with the
    likelihood-ratio 95% interval when ``intervals``
    (:func:`localprops.studies.halfspace.halfspace_distance`).
    """
    from localprops.studies.halfspace import halfspace_distance

    n = len(study.errors)
    d, low, high = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    usable = np.zeros(n, bool)
    sigmas = np.asarray(study.sigmas, dtype=np.float64)
    for s, row in enumerate(np.asarray(study.errors)):
        keep = (np.ones_like(row, bool) if max_rate is None
                else row <= max_rate * study.n_draws)
        if keep.sum() == 0:
            continue
        d[s], (low[s], high[s]), usable[s] = halfspace_distance(row[keep], study.n_draws,
                                                                sigmas[keep])
    return (d, low, high, usable) if intervals else (d, usable)


def halfspace_comparison(study, adversarial_radius: np.ndarray, *,
                         max_rate: float | None = 0.5, seed: int = 0) -> dict:
    """The fitted half-space distance against the adversarial radius, over samples.

    What L3 reads (:func:`halfspace_fit` with ``max_rate``), for tables:
    ``samples``, ``usable`` (a finite ``d_hat``), ``lower_bounded`` (no error
    at any sigma), ``compared``; ``median_ratio`` of ``d_hat / radius`` and
    ``spearman`` (rank correlation, NaN below 3 samples), each with a
    bootstrap 95% interval over samples (``ratio_interval``,
    ``spearman_interval``).
    """
    from scipy.stats import spearmanr

    radius = np.asarray(adversarial_radius, dtype=np.float64).reshape(-1)
    if radius.shape != (len(study.errors),):
        raise ValueError(f"adversarial_radius must hold one radius per sample "
                         f"({len(study.errors)}), got {radius.shape[0]}")
    d, usable = halfspace_fit(study, max_rate)
    both = usable & np.isfinite(radius) & (radius > 0)
    pairs = np.stack([d[both], radius[both]], axis=1)

    def rank_correlation(rows: np.ndarray) -> float:
        if len(rows) < 3 or np.ptp(rows[:, 0]) == 0 or np.ptp(rows[:, 1]) == 0:
            return float("nan")
        return float(spearmanr(rows[:, 0], rows[:, 1]).statistic)

    def median_ratio(rows: np.ndarray) -> float:
        return float(np.median(rows[:, 0] / rows[:, 1])) if len(rows) else float("nan")

    nothing = (float("nan"), float("nan"))
    return dict(samples=len(radius), usable=int(usable.sum()),
                lower_bounded=int((np.asarray(study.errors) == 0).all(axis=1).sum()),
                compared=int(both.sum()),
                median_ratio=median_ratio(pairs),
                ratio_interval=(bootstrap_interval(pairs, median_ratio, seed=seed)
                                if len(pairs) else nothing),
                spearman=rank_correlation(pairs),
                spearman_interval=(bootstrap_interval(pairs, rank_correlation, seed=seed)
                                   if len(pairs) >= 3 else nothing))


def halfspace_claim(studies: Sequence, adversarial: Mapping[str, np.ndarray], *,
                    factor: float = RATIO_FACTOR, max_rate: float | None = 0.5,
                    classes: Mapping[str, int] | None = None) -> list[Verdict]:
    """L3: the half-space distance fitted to error rates in noise matches the adversarial one.

    ``studies`` are :class:`localprops.studies.halfspace.NoiseErrorStudy`;
    ``adversarial[model]`` the per-sample L2 adversarial radii (same order).
    Per model, the median over samples of ``log(d_hat / radius)`` passes when
    its bootstrap 95% interval lies inside ``+- log(factor)``, fails when
    entirely outside. ``d_hat`` is fitted to the sigmas whose error rate is
    at most ``max_rate`` (:func:`halfspace_fit`; the half-space model cannot
    give more than 1/2); the sensitivity line refits on every sigma. Samples
    without a measurable error rate (no estimate) are left out and counted.
    """
    if not studies:
        return []
    classes = classes or {}
    def log_ratios(study, rate) -> np.ndarray:
        d, usable = halfspace_fit(study, rate)
        radius = np.asarray(adversarial[study.model], dtype=np.float64)
        ok = usable & np.isfinite(radius) & (radius > 0) & (d > 0)
        return np.where(ok, np.log(np.where(ok, d, 1.0) / np.where(ok, radius, 1.0)), np.nan)

    logs = {s.model: log_ratios(s, max_rate) for s in studies}
    extra = {}
    for s in studies:
        compared = s.compare(np.asarray(adversarial[s.model], dtype=np.float64))
        lo, hi = compared["spearman_interval"]
        extra[s.model] = (f"{int(np.isfinite(logs[s.model]).sum())} of {len(s.errors)} samples "
                          f"with an estimate; Spearman (all sigmas) {compared['spearman']:.2f} "
                          f"[{lo:.2f}, {hi:.2f}]")

    def outcomes(f: float, values=None) -> list[Outcome]:
        values = values or logs
        return [rules.band_outcome(s.model, values[s.model], low=-np.log(f), high=np.log(f),
                                   classes=classes.get(s.model)) for s in studies]

    every_sigma = {s.model: log_ratios(s, None) for s in studies}
    main = outcomes(factor)
    return [verdict_row(
        "L3", "(Ford et al. 2019) the error set near x acts like a half-space: the distance "
              "d fitted to error rates in Gaussian noise, Phi(-d/sigma), equals the "
              "adversarial distance",
        "median log(d_hat / adversarial radius) " + _texts(main, "+.2f", extra),
        f"d_hat fitted to the sigmas with error rate <= {max_rate:g} (a half-space gives at "
        f"most 1/2); per model pass when the bootstrap 95% interval of the median log ratio "
        f"lies inside +-log {factor:g}, fail when entirely outside; supported if every model "
        "passes, partly if some do",
        main, verdict=combine(main),
        setting="l2 radius in [0, 255] grey levels; Gaussian noise, not clipped",
        sensitivity=rules.sensitivity({
            **{f"factor {f:g}": combine(outcomes(f)) for f in (RATIO_FACTOR_ALTERNATIVE, 3.0)},
            "fit on every sigma": combine(outcomes(factor, every_sigma))}))]
