"""How a measurement becomes a verdict: per-model outcomes with intervals, then one verdict.

A claim is judged in two steps.

1. **Per model**, an estimate (a share or a median) with a 95% interval is
   compared with a threshold: the model *passes* when the whole interval is
   on the claim's side, *fails* when the whole interval is on the other side,
   and is *undecided* when the interval straddles the threshold or when too
   few measurements are above their noise floor to say anything
   (:class:`Outcome`, built by :func:`share_outcome`, :func:`pooled_outcome`
   or :func:`median_outcome`).
2. **Across models**, a rule such as "supported if every model passes, partly
   if some do" (:func:`every_model`, :func:`most_models`) is applied by
   :func:`combine` to every way the undecided models could fall. If all ways
   give the same verdict, that is the verdict (three passes and one
   undecided model under "some pass" is *partly* whatever the fourth does);
   otherwise the verdict is *inconclusive*.

So a verdict is never stronger than its least certain ingredient, and a
measurement below its noise floor can only make a verdict inconclusive, never
"not supported".
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from localprops.core.stats import bootstrap_interval, pooled_share, wilson_interval
from localprops.report.scorecard import INCONCLUSIVE, NOT_SUPPORTED, PARTLY, SUPPORTED, Verdict

PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"

#: fewest independent measurable units a per-model estimate needs: samples for a
#: share of samples; samples with at least one counted item for pooled shares
#: and medians (items of one sample are not independent)
MIN_COUNT = 10


@dataclass
class Outcome:
    """One model's estimate, its 95% interval and what it says about the threshold."""

    model: str
    estimate: float
    interval: tuple[float, float]
    threshold: float
    above: bool                 # the claim's side: estimate >= threshold (True) or below
    outcome: str                # PASS, FAIL or UNDECIDED
    counted: int                # measurable units behind the estimate
    samples: int                # samples (images) behind it
    classes: int | None = None  # distinct classes among the samples
    note: str = ""              # why undecided, when it is

    @property
    def margin(self) -> float:
        """How far the estimate lies on the claim's side of the threshold (negative: other side)."""
        sign = 1.0 if self.above else -1.0
        return sign * (self.estimate - self.threshold) if np.isfinite(self.estimate) else -np.inf

    def as_dict(self) -> dict:
        """The JSON form the scorecard stores for a model."""
        return {"samples": int(self.samples), "classes": self.classes,
                "estimate": finite_or_none(self.estimate),
                "interval": [finite_or_none(self.interval[0]), finite_or_none(self.interval[1])],
                "outcome": self.outcome, "counted": int(self.counted)}

    def text(self, fmt: str = ".0%") -> str:
        """``estimate [lo, hi]`` for the measured column."""
        lo, hi = self.interval
        if not np.isfinite(self.estimate):
            return "n/a"
        return f"{self.estimate:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def finite_or_none(value: float) -> float | None:
    """``float(value)``, or None where it is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if np.isfinite(value) else None


def decide(estimate: float, interval: tuple[float, float], threshold: float, *,
           above: bool = True) -> str:
    """PASS if the whole interval is on the claim's side of ``threshold``, FAIL if on the other.

    On the claim's side means ``>= threshold`` when ``above`` (else ``<``).
    Anything else, including a NaN estimate, is UNDECIDED.

    Examples
    --------
    >>> decide(0.8, (0.6, 0.9), 0.5), decide(0.4, (0.3, 0.45), 0.5), decide(0.5, (0.4, 0.6), 0.5)
    ('pass', 'fail', 'undecided')
    """
    lo, hi = interval
    if not (np.isfinite(estimate) and np.isfinite(lo) and np.isfinite(hi)):
        return UNDECIDED
    if above:
        return PASS if lo >= threshold else FAIL if hi < threshold else UNDECIDED
    return PASS if hi < threshold else FAIL if lo >= threshold else UNDECIDED


def _outcome(model, estimate, interval, threshold, above, counted, samples, classes,
             min_count, units: int | None = None) -> Outcome:
    """``units`` are the independent units behind ``counted`` (samples with a counted item)."""
    units = counted if units is None else units
    if units < min_count:
        what = "measurable" if units == counted else "samples with a measurable item"
        return Outcome(model, estimate, interval, threshold, above, UNDECIDED, counted, samples,
                       classes, f"only {units} {what} (need {min_count})")
    result = decide(estimate, interval, threshold, above=above)
    note = "interval straddles the threshold" if result == UNDECIDED else ""
    return Outcome(model, estimate, interval, threshold, above, result, counted, samples,
                   classes, note)


def best_bound(n: int, above: bool = True) -> float:
    """The most favourable Wilson 95% bound ``n`` samples can give a share.

    ``above``: the lower end when all ``n`` are positive; else the upper end
    when none is. It says whether a sample count can ever decide a share.
    """
    return wilson_interval(n, n)[0] if above else wilson_interval(0, n)[1]


def can_pass(n: int, threshold: float, above: bool = True) -> bool:
    """Whether some outcome of ``n`` samples passes ``threshold`` (see :func:`best_bound`)."""
    return _bound_passes(best_bound(n, above), threshold, above)


def _bound_passes(bound: float, threshold: float, above: bool) -> bool:
    return bound >= threshold if above else bound < threshold


def samples_needed(threshold: float, above: bool = True, limit: int = 10_000) -> int:
    """The fewest samples whose best outcome passes ``threshold`` (:func:`can_pass`)."""
    return next(n for n in range(1, limit + 1) if can_pass(n, threshold, above))


def share_outcome(model: str, positive: ArrayLike, negative: ArrayLike | None = None, *,
                  threshold: float, above: bool = True, classes: int | None = None,
                  min_count: int = MIN_COUNT) -> Outcome:
    """A share of samples with a Wilson 95% interval, against a threshold.

    ``positive`` and ``negative`` are boolean per-sample arrays: a sample is
    counted when it is one or the other; samples that are neither (below
    their noise floor) are left out of the share and reported in ``counted``.
    Without ``negative`` every sample that is not positive counts as negative.
    """
    positive = np.asarray(positive, bool)
    negative = ~positive if negative is None else np.asarray(negative, bool)
    if positive.shape != negative.shape or (positive & negative).any():
        raise ValueError("positive and negative must be disjoint boolean arrays of one shape")
    k, n = int(positive.sum()), int((positive | negative).sum())
    estimate = k / n if n else float("nan")
    out = _outcome(model, estimate, wilson_interval(k, n), threshold, above, n,
                   len(positive), classes, min_count)
    if out.outcome == UNDECIDED and n >= min_count:
        best = best_bound(n, above)
        if not _bound_passes(best, threshold, above):
            side = "at least" if above else "below"
            out.note = (f"{n} samples can never pass {side} {threshold:.0%}: even "
                        f"{n if above else 0} of {n} has a 95% bound of {best:.0%}")
    return out


def pooled_outcome(model: str, hits: ArrayLike, counted: ArrayLike | None = None, *,
                   threshold: float, above: bool = True, classes: int | None = None,
                   min_count: int = MIN_COUNT, seed: int = 0) -> Outcome:
    """A share pooled over (sample, ...) items with a bootstrap interval over samples.

    ``hits`` and ``counted`` have shape (S, ...): the items of one sample (its
    radii, its perturbations) are not independent, so the interval resamples
    whole samples (:func:`localprops.core.stats.bootstrap_interval`), and it
    is widened to at least the Wilson interval of the same share over the
    samples that count (a bootstrap of identical rows has zero width).
    """
    hits = np.asarray(hits, bool)
    counted = np.ones_like(hits) if counted is None else np.asarray(counted, bool)
    if hits.shape != counted.shape or hits.ndim < 1:
        raise ValueError("hits and counted must be arrays of one shape (S, ...)")
    rows = np.stack([hits, counted], axis=-1).reshape(len(hits), -1, 2).astype(float)
    estimate = pooled_share(hits, counted)
    units = int(counted.reshape(len(hits), -1).any(axis=1).sum())
    interval = (bootstrap_interval(rows, lambda r: pooled_share(r[..., 0] > 0, r[..., 1] > 0),
                                   seed=seed) if units else (float("nan"), float("nan")))
    if units:
        # never narrower than a Wilson interval with one unit per sample: when every item
        # agrees the bootstrap has zero width, but 24 samples cannot show more than 24 can
        w_lo, w_hi = wilson_interval(round(estimate * units), units)
        interval = (min(interval[0], w_lo), max(interval[1], w_hi))
    return _outcome(model, estimate, interval, threshold, above, int(counted.sum()),
                    len(hits), classes, min_count, units)


def median_outcome(model: str, values: ArrayLike, *, threshold: float, above: bool = True,
                   classes: int | None = None, min_count: int = MIN_COUNT,
                   seed: int = 0) -> Outcome:
    """A median over (sample, ...) values, NaN left out, with a bootstrap interval over samples."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 1:
        raise ValueError("values must be an array (S, ...)")
    counted = int(np.isfinite(values).sum())
    units = int(np.isfinite(values.reshape(len(values), -1)).any(axis=1).sum())
    estimate = float(np.nanmedian(values)) if counted else float("nan")
    interval = (bootstrap_interval(values.reshape(len(values), -1),
                                   lambda v: np.nanmedian(v) if np.isfinite(v).any()
                                   else np.nan, seed=seed)
                if counted else (float("nan"), float("nan")))
    return _outcome(model, estimate, interval, threshold, above, counted, len(values),
                    classes, min_count, units)


def median_text(values: ArrayLike, fmt: str = ".3g") -> str:
    """``"median [lo, hi]"``: the median over (sample, ...) values, NaN left out.

    The 95% interval resamples whole samples (the first axis), as the rules'
    intervals do; ``"n/a"`` when no value is finite. For the tables beside a
    verdict, whose medians must carry an interval too.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or not np.isfinite(values).any():
        return "n/a"
    rows = values.reshape(len(values), -1)
    rows = rows[np.isfinite(rows).any(axis=1)]
    lo, hi = bootstrap_interval(rows, lambda v: np.nanmedian(v))
    return f"{np.nanmedian(rows):{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


# ------------------------------------------------------------ across models
def every_model(passes: Sequence[bool]) -> str:
    """supported if every model passes, partly if some do, not supported if none."""
    return SUPPORTED if all(passes) else PARTLY if any(passes) else NOT_SUPPORTED


def most_models(passes: Sequence[bool]) -> str:
    """supported if more than half the models pass, partly if some do, not supported if none."""
    return (SUPPORTED if sum(passes) > len(passes) / 2 else PARTLY if any(passes)
            else NOT_SUPPORTED)


def combine(outcomes: Sequence[Outcome], rule: Callable[[Sequence[bool]], str] = every_model,
            *, invert: bool = False) -> str:
    """One verdict from per-model outcomes: the rule's value if undecided models cannot change it.

    Every way the undecided models could fall (pass or fail) is tried; when
    they all give the same verdict it is returned, otherwise INCONCLUSIVE.
    ``invert`` swaps supported and not supported (for a claim that the
    measurement contradicts when models pass, e.g. "a gradient test is not
    promising" against "the gradient predicts the range").

    Examples
    --------
    >>> o = lambda result: Outcome("m", 0.5, (0.4, 0.6), 0.5, True, result, 10, 10)
    >>> combine([o(PASS), o(PASS)]), combine([o(PASS), o(UNDECIDED)])
    ('supported', 'inconclusive')
    >>> combine([o(PASS), o(FAIL), o(UNDECIDED)]), combine([])
    ('partly', 'inconclusive')
    """
    if not outcomes:
        return INCONCLUSIVE
    open_ = [i for i, o in enumerate(outcomes) if o.outcome == UNDECIDED]
    if len(open_) > 12:
        return INCONCLUSIVE
    seen = set()
    for guess in itertools.product((True, False), repeat=len(open_)):
        passes = [o.outcome == PASS for o in outcomes]
        for i, value in zip(open_, guess):
            passes[i] = value
        seen.add(rule(passes))
    if len(seen) != 1:
        return INCONCLUSIVE
    verdict = seen.pop()
    if invert:
        verdict = {SUPPORTED: NOT_SUPPORTED, NOT_SUPPORTED: SUPPORTED}.get(verdict, verdict)
    return verdict


def deciding(outcomes: Sequence[Outcome]) -> Outcome | None:
    """The outcome closest to (or furthest across) its threshold: the row's headline estimate."""
    finite = [o for o in outcomes if np.isfinite(o.estimate)]
    return min(finite, key=lambda o: o.margin) if finite else None


def band_outcome(model: str, values: ArrayLike, *, low: float, high: float,
                 classes: int | None = None, min_count: int = MIN_COUNT,
                 seed: int = 0) -> Outcome:
    """A median with a bootstrap interval against a band ``[low, high]``.

    PASS when the whole interval lies inside the band, FAIL when it lies
    entirely outside (above ``high`` or below ``low``), UNDECIDED otherwise.
    ``threshold`` records the band's upper end.
    """
    out = median_outcome(model, values, threshold=high, above=False, classes=classes,
                         min_count=min_count, seed=seed)
    if out.outcome == UNDECIDED and out.note.startswith("only"):
        return out
    lo, hi = out.interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        result = UNDECIDED
    elif low <= lo and hi <= high:
        result = PASS
    elif lo > high or hi < low:
        result = FAIL
    else:
        result = UNDECIDED
    out.outcome = result
    out.note = "interval straddles the band's edge" if result == UNDECIDED else ""
    return out


def sensitivity(alternatives: dict[str, str]) -> str:
    """``"label: verdict; label: verdict"`` for the scorecard's sensitivity column."""
    return "; ".join(f"{label}: {verdict}" for label, verdict in alternatives.items())


def verdict_row(claim: str, paper: str, measured: str, rule: str, outcomes: Sequence[Outcome], *,
                verdict: str, setting: str = "", sensitivity: str = "") -> Verdict:
    """A scorecard row: the verdict, every model's outcome and the deciding estimate.

    The row's ``estimate`` and ``interval`` are those of :func:`deciding`'s
    outcome (None without one; non-finite values become None for JSON).
    """
    lead = deciding(outcomes)
    return Verdict(claim, paper, measured, rule, verdict,
                   models={o.model: o.as_dict() for o in outcomes}, setting=setting,
                   estimate=None if lead is None else finite_or_none(lead.estimate),
                   interval=None if lead is None else [finite_or_none(v)
                                                       for v in lead.interval],
                   sensitivity=sensitivity)
