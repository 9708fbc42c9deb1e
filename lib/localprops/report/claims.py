"""The paper's claims C1-C10, each measured and judged by an explicit rule.

Each function takes study results and returns :class:`Verdict` rows: the
claim, what we measured, the rule that turns the measurement into a verdict,
and the verdict. A rule is applied in two steps (:mod:`localprops.report.rules`):
per model, a share or a median with its 95% interval is compared with a
threshold (pass, fail, or undecided when the interval straddles it or too
little lies above the noise floor); across models the outcomes are combined,
and undecided models that could change the verdict make it *inconclusive*.
Every row carries a sensitivity line: its verdict under a stated alternative
threshold. The chapters show these rows next to their figures and the
scorecard collects them, so no verdict is typed by hand. The rules are stated
in ``rule`` so a reader can disagree with them and change them.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from localprops.report import rules
from localprops.report.rules import Outcome, combine, every_model, most_models, verdict_row
from localprops.report.scorecard import (
    INCONCLUSIVE,
    LOGICAL,
    NOT_SUPPORTED,
    PARTLY,
    SUPPORTED,
    Verdict,
)
from localprops.studies.scores import NoiseFloor, ScoreStudy

#: a range counts as measured when it exceeds this multiple of its noise floor
FLOOR_MULTIPLE = 10.0
#: what "a large range" means at r = 10 (C4), per quantity
BIG_RANGE = {"probability": 0.1, "log_odds": 1.0}
#: C4's alternative threshold (the sensitivity line)
BIG_RANGE_ALTERNATIVE = {"probability": 0.01, "log_odds": 0.1}
#: C2's "not significant": a range below this, per quantity
SMALL_RANGE = {"probability": 1e-3, "log_odds": 1e-3}
QUANTITY = {"probability": "true-class probability", "log_odds": "true-class log-odds"}
#: a float64 probability near 1 moves in steps of 1.1e-16: a probability range
#: within a few such steps of 0 says nothing, whatever precision the network ran in
PROBABILITY_RESOLUTION = 4 * float(np.finfo(np.float64).epsneg)


def _range_floors(study: ScoreStudy, floors: Mapping[str, NoiseFloor], quantity: str
                  ) -> np.ndarray:
    """(S, R) floors of the study's ranges, with the probability's float64 resolution."""
    floor = study.range_floors(floors[study.model], quantity)
    return np.maximum(floor, PROBABILITY_RESOLUTION) if quantity == "probability" else floor


def _radius_index(study, r: float) -> int:
    idx = np.flatnonzero(np.isclose(study.radii, r))
    if not idx.size:
        raise ValueError(f"radius {r} is not among the study's radii "
                         f"{np.asarray(study.radii).tolist()}")
    return int(idx[0])


def _texts(outcomes: Sequence[Outcome], describe: Callable[[Outcome], str]) -> str:
    return "; ".join(f"{o.model}: {describe(o)}" + (f" ({o.outcome}: {o.note})" if o.note
                                                     else f" ({o.outcome})")
                     for o in outcomes)


def _verdicts(outcomes_at: Callable[..., list[Outcome]], rule=every_model, **alternatives
              ) -> dict[str, str]:
    return {label: combine(outcomes_at(**kwargs), rule)
            for label, kwargs in alternatives.items()}


# ------------------------------------------------------------ isotropy, C1-C4
def _eps_outcomes(studies: Sequence[ScoreStudy], floors: Mapping[str, NoiseFloor],
                  quantity: str, multiple: float = FLOOR_MULTIPLE, share: float = 0.5
                  ) -> list[Outcome]:
    """C1 per model: the share of samples whose range at eps is above the floor.

    A sample counts as anisotropic at eps when its range exceeds ``multiple``
    times its own floor. It counts against C1 (isotropic at eps within our
    resolution) when its range stays below that although first-order scaling
    from r = 1 (``range(1) * eps``) predicts ten times more; otherwise it is
    undecided (the floor hides the answer).
    """
    out = []
    for s in studies:
        stats = s.statistics_of(quantity)
        floor = _range_floors(s, floors, quantity)
        i1 = _radius_index(s, 1.0)
        eps = float(s.radii[0])
        r_eps, r_1 = stats.range[:, 0], stats.range[:, i1]
        above = r_eps > multiple * floor[:, 0]
        flat = ~above & (r_1 * eps / 1.0 > 10 * multiple * floor[:, 0])
        out.append(rules.share_outcome(s.model, above, flat, threshold=share,
                                       classes=s.classes))
    return out


def _growth_outcomes(studies, floors, quantity, share: float = 0.5) -> list[Outcome]:
    """C3's weaker reading per model: share of samples with a larger range at r = 1 than at eps.

    For a differentiable network this holds by first-order scaling (the range
    at r = 1 is about 1 / eps times the range at eps), so it is shown only as
    a sensitivity line; :func:`_significant_outcomes` is the rule.
    """
    out = []
    for s in studies:
        stats = s.statistics_of(quantity)
        floor = _range_floors(s, floors, quantity)
        i1 = _radius_index(s, 1.0)
        r_eps, r_1 = stats.range[:, 0], stats.range[:, i1]
        grows = (r_1 > r_eps) & (r_1 > FLOOR_MULTIPLE * floor[:, i1])
        shrinks = (r_1 <= r_eps) & (r_eps > FLOOR_MULTIPLE * floor[:, 0])
        out.append(rules.share_outcome(s.model, grows, shrinks, threshold=share,
                                       classes=s.classes))
    return out


def _significant_outcomes(studies, quantity, small: float, share: float = 0.5
                          ) -> list[Outcome]:
    """C3 per model: share of samples whose range at r = 1 is significant in C2's sense.

    C2 calls a range below ``small`` "not significant"; C3 says the network is
    (more) non-isotropic at r = 1, i.e. its range there reaches ``small``.
    Ranges far above every floor, so every sample is decided either way.
    """
    return [rules.share_outcome(s.model, s.statistics_of(quantity).range[
        :, _radius_index(s, 1.0)] >= small, threshold=share, classes=s.classes)
        for s in studies]


def _small_outcomes(studies, quantity, small: float, share: float = 0.8) -> list[Outcome]:
    """C2 per model: share of samples whose range at eps stays below ``small``."""
    return [rules.share_outcome(s.model, s.statistics_of(quantity).range[:, 0] < small,
                                threshold=share, classes=s.classes) for s in studies]


def _big_outcomes(studies, quantity, big: float, at: float = 10.0, share: float = 0.5
                  ) -> list[Outcome]:
    """C4 per model: share of samples whose range at ``at`` exceeds ``big``."""
    return [rules.share_outcome(s.model, s.statistics_of(quantity).range[:, _radius_index(
        s, at)] > big, threshold=share, classes=s.classes) for s in studies]


def _setting(studies: Sequence[ScoreStudy], quantity: str, scale: str = "[0, 255]") -> str:
    s = studies[0]
    n = [len(x.ids) for x in studies]
    return (f"{s.norm} radius in {scale} grey levels; {QUANTITY[quantity]}; "
            f"eps = {s.radii[0]:g}; T = {s.scores.shape[-1]}; {min(n)}-{max(n)} samples per model")


def isotropy_claims(studies: Sequence[ScoreStudy], floors: Mapping[str, NoiseFloor], *,
                    quantity: str = "probability") -> list[Verdict]:
    """C1-C4 from isotropy studies of several models (one norm, one quantity).

    ``floors`` maps a model to its per-sample noise floors
    (:func:`localprops.studies.scores.float32_noise_floor`); the study's
    float64 radii get float64's floor. The smallest radius is taken as the
    paper's eps; the studies must include r = 1 and r = 10. ``quantity`` is
    ``"probability"`` (the paper's score) or ``"log_odds"``.
    """
    if not studies:
        return []
    setting = _setting(studies, quantity)
    eps = float(studies[0].radii[0])
    small = SMALL_RANGE[quantity]

    c1 = _eps_outcomes(studies, floors, quantity)
    ratios = {s.model: np.median(s.statistics_of(quantity).range[:, 0]
                                 / np.maximum(s.statistics_of(quantity).range[
                                     :, _radius_index(s, 1.0)], 1e-300)) for s in studies}
    c1_row = verdict_row(
        "C1", "no ConvNet is perfectly isotropic, even at distance eps",
        _texts(c1, lambda o: f"{o.text()} of {o.counted} decided samples anisotropic at eps "
                             f"({o.samples - o.counted} below the floor); median "
                             f"range(eps)/range(1) {ratios[o.model]:.2g} (first order: "
                             f"{eps:g})"),
        "holds for any score whose gradient at x is not zero: to first order the range "
        "over T directions at eps is eps times the range at r = 1, and only a score that "
        "depends on nu through its norm alone (a radial basis unit centred at x) is "
        "isotropic; so the row shows that the range at eps is resolved, it cannot test the "
        "claim on a differentiable network, and is shown, not counted. "
        f"A sample is anisotropic at eps when its range exceeds {FLOOR_MULTIPLE:g}x its own "
        "noise floor, isotropic within resolution when it stays below although "
        "range(1) x eps predicts 10x more, undecided otherwise; per model pass when the "
        "share of anisotropic among decided samples is >= 50% (Wilson 95% interval); "
        "supported if every model passes, partly if some do. Rule verdict as measured: "
        + combine(c1),
        c1, verdict=LOGICAL, setting=setting,
        sensitivity=rules.sensitivity(_verdicts(
            lambda **k: _eps_outcomes(studies, floors, quantity, **k),
            **{"floor x3": dict(multiple=3.0), "share >= 90%": dict(share=0.9)})))

    c2 = _small_outcomes(studies, quantity, small)
    largest_eps = {s.model: small / max(float(np.median(s.statistics_of(quantity).range[
        :, _radius_index(s, 1.0)])), 1e-300) for s in studies}
    by_construction = quantity == "probability" and eps <= small
    c2_row = verdict_row(
        "C2", "at eps the score does not change significantly",
        _texts(c2, lambda o: f"{o.text()} of samples with a range at eps below {small:g}; "
                             f"the median range stays below it up to eps = "
                             f"{largest_eps[o.model]:.2g} (first-order scaling from r = 1)"),
        (f"holds by construction in this reading: a probability range is at most 1, so at "
         f"eps = {eps:g} it is about eps x range(1) <= {eps:g}, never above the threshold "
         f"{small:g}; the row is shown, not counted (the log-odds row can fail)"
         if by_construction else
         f"per model pass when at least 80% of samples keep the range at eps below {small:g} "
         "(Wilson 95% interval); supported if every model passes"),
        c2, verdict=LOGICAL if by_construction else combine(c2), setting=setting,
        sensitivity="" if by_construction else rules.sensitivity(_verdicts(
            lambda **k: _small_outcomes(studies, quantity, **k),
            **{"share >= 95%": dict(small=small, share=0.95),
               f"range below {small / 10:g}": dict(small=small / 10)})))

    c3 = _significant_outcomes(studies, quantity, small)
    c3_row = verdict_row(
        "C3", "at radius 1 every ConvNet is more non-isotropic than at eps",
        _texts(c3, lambda o: f"{o.text()} of samples with a range at r = 1 of at least "
                             f"{small:g} (significant in C2's sense)"),
        f"the range grows from eps to r = 1 for any differentiable network (about 1 / eps "
        f"times), so the rule asks more: per model pass when at least half the samples "
        f"reach a range of {small:g} at r = 1, the level C2 calls significant (Wilson 95%); "
        "supported if every model passes, partly if some do",
        c3, verdict=combine(c3), setting=setting,
        sensitivity=rules.sensitivity({
            "grows at all (range(1) > range(eps), above the floor)":
                combine(_growth_outcomes(studies, floors, quantity)),
            f"significant = {small * 10:g}": combine(_significant_outcomes(
                studies, quantity, small * 10))}))

    c4 = c4_claim(studies, quantity=quantity, setting=setting)
    return [c1_row, c2_row, c3_row, c4]


def c4_claim(studies: Sequence[ScoreStudy], *, quantity: str = "probability",
             at: float = 10.0, setting: str = "", label: str = "C4",
             reading: str = "") -> Verdict:
    """C4 (most ConvNets are very non-isotropic at radius 10) at radius ``at``.

    ``at`` is 10 in the book's [0, 255] units; the pixel-scale sensitivity run
    passes 2550 (r = 10 read in [0, 1] units) with ``reading`` saying so.
    """
    big, alt = BIG_RANGE[quantity], BIG_RANGE_ALTERNATIVE[quantity]
    outcomes = _big_outcomes(studies, quantity, big, at)
    wrong = {s.model: float(np.mean(s.statistics.any_misclassified[:, _radius_index(s, at)]))
             for s in studies}
    return verdict_row(
        label, "most ConvNets are very non-isotropic at radius 10" + reading,
        _texts(outcomes, lambda o: f"{o.text()} of samples with a range above {big:g} at "
                                   f"r = {at:g}; {wrong[o.model]:.0%} with a misclassified "
                                   "perturbation"),
        f"'very non-isotropic' = range above {big:g} in at least half the samples (Wilson "
        "95%); supported if that holds for more than half of the models, partly if for "
        "some",
        outcomes, verdict=combine(outcomes, most_models),
        setting=setting or _setting(studies, quantity),
        sensitivity=rules.sensitivity({f"range above {alt:g}": combine(
            _big_outcomes(studies, quantity, alt, at), most_models)}))


def worst_first_order_range(clean_log_odds: np.ndarray, gain: np.ndarray, radius: float,
                            quantity: str) -> np.ndarray:
    """First-order range over *all* directions at ``radius``: eq. 2's worst case.

    ``gain`` is the dual norm of the log-odds gradient at x (``||g||_2`` for an
    L2 radius, ``||g||_1`` for L-infinity): to first order the log-odds moves
    by at most ``radius * gain`` either way, so its range over the sphere is
    ``2 radius gain``; the probability's is ``sigmoid(lo + r G) - sigmoid(lo - r G)``.
    """
    from localprops.core.stats import sigmoid

    lo, g = np.asarray(clean_log_odds, float), np.asarray(gain, float)
    if quantity == "log_odds":
        return 2 * radius * g
    return sigmoid(lo + radius * g) - sigmoid(lo - radius * g)


def c4_worst_claim(studies: Sequence[ScoreStudy], gains: Mapping[str, np.ndarray],
                   clean_log_odds: Mapping[str, np.ndarray], *,
                   quantity: str = "probability", at: float = 10.0) -> Verdict:
    """C4 at its definition (all directions), to first order, beside the random-direction row.

    ``gains`` and ``clean_log_odds`` map a model to per-sample arrays in the
    order of its study's samples (:func:`worst_first_order_range`).
    """
    big, alt = BIG_RANGE[quantity], BIG_RANGE_ALTERNATIVE[quantity]

    def outcomes(threshold: float) -> list[Outcome]:
        out = []
        for s in studies:
            g = np.asarray(gains[s.model], float)
            if g.shape != (len(s.ids),):
                raise ValueError(f"gains[{s.model!r}] must have one value per sample of its "
                                 f"study ({len(s.ids)}), got shape {g.shape}")
            worst = worst_first_order_range(clean_log_odds[s.model], g, at, quantity)
            out.append(rules.share_outcome(s.model, worst > threshold, threshold=0.5,
                                           classes=s.classes))
        return out

    main = outcomes(big)
    return verdict_row(
        "C4", "most ConvNets are very non-isotropic at radius 10 (reading: eq. 2 over all "
        "directions, first order)",
        _texts(main, lambda o: f"{o.text()} of samples whose first-order worst-case range "
                               f"at r = {at:g} exceeds {big:g}"),
        f"the range over all directions at r = {at:g} to first order (2 r ||grad||, dual "
        f"norm, through the sigmoid for the probability); 'very non-isotropic' = above "
        f"{big:g} in at least half the samples (Wilson 95%); supported if that holds for "
        "more than half of the models, partly if for some. First order overstates the "
        "range where the score saturates or bends within r",
        main, verdict=combine(main, most_models),
        setting=_setting(studies, quantity).replace(
            QUANTITY[quantity], f"{QUANTITY[quantity]}, worst direction (first order)"),
        sensitivity=rules.sensitivity({f"range above {alt:g}": combine(outcomes(alt),
                                                                        most_models)}))


# ------------------------------------------------------------ symmetry, C5-C6
def _asymmetry_outcomes(symmetry, isotropy, floors, quantity, share: float = 0.5,
                        relative: float = 0.01) -> list[Outcome]:
    """C5 per model: share of decided (sample, r >= 1) pairs whose permutation range is real.

    Asymmetric: the permutation range exceeds ``FLOOR_MULTIPLE`` times its
    floor and ``relative`` times the isotropy range of the same pair.
    Symmetric within resolution: the permutation range is below ``relative``
    times an isotropy range that is itself far above the floor (so a
    permutation range of that size would have been measured). Otherwise
    undecided.
    """
    by_model = {s.model: s for s in isotropy}
    out = []
    for s in symmetry:
        iso = by_model[s.model]
        i1 = _radius_index(s, 1.0)
        perm = s.statistics_of(quantity).range[:, i1:]
        iso_range = iso.statistics_of(quantity).range[:, i1:]
        floor = _range_floors(s, floors, quantity)[:, i1:]
        asym = (perm > FLOOR_MULTIPLE * floor) & (perm >= relative * iso_range)
        sym = (perm < relative * iso_range) & (relative * iso_range > FLOOR_MULTIPLE * floor)
        out.append(rules.pooled_outcome(s.model, asym, asym | sym, threshold=share,
                                        classes=s.classes))
    return out


def symmetry_claims(symmetry: Sequence[ScoreStudy], isotropy: Sequence[ScoreStudy],
                    floors: Mapping[str, NoiseFloor], *, quantity: str = "probability"
                    ) -> list[Verdict]:
    """C5 and C6 from symmetry studies and the isotropy studies of the same samples."""
    if not symmetry:
        return []
    matched = {s.model for s in isotropy}
    symmetry = [s for s in symmetry if s.model in matched]
    if not symmetry:
        raise ValueError("C5 and C6 compare each symmetry study with the isotropy study of "
                         "the same model and samples: pass both")
    setting = _setting(symmetry, quantity)
    c5 = _asymmetry_outcomes(symmetry, isotropy, floors, quantity)
    c5_row = verdict_row(
        "C5", "except at distances below eps, no ConvNet is locally symmetric",
        _texts(c5, lambda o: f"{o.text()} of {o.counted} decided (sample, r >= 1) pairs "
                             "asymmetric"),
        "holds for any score whose gradient at x has unequal entries: to first order a "
        "permutation of nu moves g . nu as much as a new direction does (C6's ratio near "
        "1), so the row shows that the effect is resolved, it cannot test the claim, and is "
        "shown, not counted (the size reading below can fail). "
        "A pair is asymmetric when its permutation range exceeds 10x its noise floor and "
        "1% of the isotropy range of the same pair, symmetric within resolution when it is "
        "below 1% of a measurable isotropy range; per model pass when >= 50% of decided "
        "pairs are asymmetric (bootstrap over samples, widened to at least Wilson's "
        "interval over samples, 95%); supported if every model passes. Rule verdict as "
        "measured: " + combine(c5),
        c5, verdict=LOGICAL, setting=setting,
        sensitivity=rules.sensitivity(_verdicts(
            lambda **k: _asymmetry_outcomes(symmetry, isotropy, floors, quantity, **k),
            **{"share >= 90%": dict(share=0.9), "relative 10%": dict(relative=0.1)})))
    by_model = {s.model: s for s in isotropy}
    c6 = []
    for s in symmetry:
        i1 = _radius_index(s, 1.0)
        iso_study = by_model[s.model]
        iso = iso_study.statistics_of(quantity).range[:, i1:]
        perm = s.statistics_of(quantity).range[:, i1:]
        floor = FLOOR_MULTIPLE * _range_floors(s, floors, quantity)[:, i1:]
        measured = (perm > floor) & (iso > floor)         # both ranges above their floors
        ratio = np.where(measured, perm / np.maximum(iso, 1e-300), np.nan)
        c6.append(rules.median_outcome(s.model, ratio, threshold=1.0, above=False,
                                       classes=s.classes))
    c6_row = verdict_row(
        "C6", "an isotropic function is symmetric; the converse need not hold",
        "; ".join(f"{o.model}: median permutation range / isotropy range "
                  f"{o.text('.2f')} over {o.counted} pairs above their floors" for o in c6),
        "a logical statement (a permutation keeps every norm), illustrated, not tested: "
        "a ratio below 1 shows permutations moving the score less than directions do; "
        "to first order the ratio is near 1 for any gradient with unequal entries, "
        "so the illustration can fail without contradicting the statement",
        c6, verdict=LOGICAL, setting=setting)
    small = SMALL_RANGE[quantity]
    c5m = [rules.share_outcome(s.model, s.statistics_of(quantity).range[
        :, _radius_index(s, 1.0)] >= small, threshold=0.5, classes=s.classes)
        for s in symmetry]
    c5m_row = verdict_row(
        "C5", "except at distances below eps, no ConvNet is locally symmetric (reading: "
        "significantly, in C2's sense)",
        _texts(c5m, lambda o: f"{o.text()} of samples whose permutation range at r = 1 "
                              f"reaches {small:g}"),
        "asymmetry as a size rather than a difference: per model pass when at least half "
        f"the samples have a permutation range of at least {small:g} at r = 1 (Wilson 95%); "
        "supported if every model passes, partly if some do",
        c5m, verdict=combine(c5m), setting=setting.replace(
            QUANTITY[quantity], f"{QUANTITY[quantity]}, size at r = 1"))
    return [c5_row, c5m_row, c6_row]


# ------------------------------------------------------------ topology, C7-C8
def _per_sample_rho(rho: np.ndarray, radii) -> np.ndarray:
    """Per sample, the median rho over the radii >= 1 (S,): one Mantel score per image."""
    keep = np.asarray(radii) >= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # a sample without radii >= 1
        return np.nanmedian(np.asarray(rho, dtype=np.float64)[:, keep], axis=1)


def _in_band(model: str, rho: np.ndarray, radii, band: float, share: float | None,
             classes) -> Outcome:
    """One model's outcome for "rho lies in (-band, band)".

    ``share`` None (the rule): the median over samples of each sample's
    median rho over radii >= 1, with a bootstrap interval over samples,
    passes inside the band and fails outside it (:func:`rules.band_outcome`).
    A ``share`` (the sensitivity line): the share of (sample, radius >= 1)
    statistics inside the band, which passes at or above ``share``
    (:func:`rules.pooled_outcome`; a share of 90% needs 35 samples to pass).
    The eps radius is left out: there the perturbation is largely lost to
    float32 rounding of ``x + nu`` (for a 224 x 224 input each value moves by
    less than half a float32 step), so its statistic measures rounding, not
    the network.
    """
    if share is None:
        return rules.band_outcome(model, _per_sample_rho(rho, radii), low=-band, high=band,
                                  classes=classes)
    keep = np.asarray(radii) >= 1.0
    return rules.pooled_outcome(model, np.abs(np.asarray(rho)[:, keep]) < band,
                                threshold=share, classes=classes)


def _band_outcomes(studies, key: str, band: float, share: float | None, classes
                   ) -> list[Outcome]:
    """Per model: :func:`_in_band` of the topology statistics of ``key``."""
    return [_in_band(s.model, s.rho[key], s.radii, band, share, (classes or {}).get(s.model))
            for s in studies]


def _unreachable(outcomes: Sequence[Outcome], share: float) -> str:
    """A sentence naming the models whose sample count can never pass ``share``."""
    short = [o for o in outcomes if not rules.can_pass(o.samples, share)]
    if not short:
        return "Every model has enough samples to pass."
    need = rules.samples_needed(share)
    listed = ", ".join(f"{o.model} ({o.samples})" for o in short)
    return (f"With fewer than {need} samples even a share of 100% has a Wilson lower end "
            f"below {share:.0%}, so {listed} can never pass this line, whatever the data "
            "(they can still fail it)")


def _first_layer_outcomes(studies, depth, band: float, share: float | None, classes
                          ) -> list[Outcome]:
    """Per model: :func:`_in_band` of rho after the first layer of the depth study."""
    return [_in_band(s.model, depth[s.model].rho["model"][:, 0], depth[s.model].radii, band,
                     share, (classes or {}).get(s.model))
            for s in studies if s.model in depth]


def _c8_verdict(studies, depth, band: float, share: float | None, classes) -> str:
    """C8's verdict: the linearisation judged with C7's band, then depth when given."""
    base = combine(_band_outcomes(studies, "jacobian", band, share, classes))
    if base != SUPPORTED:
        return base
    first = _first_layer_outcomes(studies, depth or {}, band, share, classes)
    if not first or len(first) != len(studies):
        return PARTLY
    # affine maps suffice; depth is needed where the first layer is outside the band
    set_early = combine(first)
    return {SUPPORTED: PARTLY, NOT_SUPPORTED: SUPPORTED}.get(set_early, set_early)


def topology_claims(studies, *, classes: Mapping[str, int] | None = None,
                    band: float = 0.1, share: float = 0.9,
                    depth: Mapping[str, object] | None = None) -> list[Verdict]:
    """C7 and C8 from :class:`localprops.studies.topology.TopologyStudy` results.

    C7: per model the median over samples of each sample's median Mantel
    statistic over radii >= 1, with its bootstrap interval, against the band
    ``(-band, band)`` (:func:`_in_band`); the share of (sample, radius)
    statistics inside the band (at ``share`` and 75%) is the sensitivity
    line. C8 uses the same rule on the model's own linearisation at x (the
    Jacobian map): if that linear map also lands in the band, an affine map
    suffices to explain the low rho. "Compounded over layers" is a statement
    about depth: with ``depth`` (a mapping model ->
    :class:`localprops.studies.depth.DepthStudy`) C8 also asks whether rho is
    already in the band after the first convolution (one affine map): if it
    is, depth is not needed and the verdict is *partly*; if it lies outside
    the band there and falls into it by the feature layer, *supported*.
    Without ``depth`` the best verdict is *partly*. ``classes`` maps a model
    to the number of classes among its samples (for the scorecard). The eps
    radius is left out of both (see :func:`_band_outcomes`).
    """
    if not studies:
        return []
    setting = f"{studies[0].norm} radius >= 1; T points per radius; band |rho| < {band:g}"
    c7 = _band_outcomes(studies, "model", band, None, classes)
    shares = {f"share >= {q:.0%} of (sample, radius) statistics in the band": q
              for q in (share, 0.75)}
    c7_row = verdict_row(
        "C7", "-0.1 < rho < 0.1 for all ConvNets, even very close to x (reading: radii "
        ">= 1; 'even very close to x' is not decided)",
        _texts(c7, lambda o: f"median rho {o.text('.3f')}"),
        f"per sample the median of rho over the radii >= 1 (one Mantel score per image, as "
        f"the paper's Fig. 4 gives one per network and radius); per model pass when the "
        f"bootstrap 95% interval (over samples) of the median over samples lies inside "
        f"(-{band:g}, {band:g}), fail when it lies outside; supported if every model passes, "
        "partly if some do. The eps radius is left out (for a 224 x 224 input the "
        "perturbation is mostly float32 rounding there; the 32 x 32 nets are not run at eps "
        "in float64 here), so 'even very close to x' is not decided. Sensitivity: the share "
        f"of (sample, radius) statistics in the band, at {share:.0%} and 75% (bootstrap over "
        "samples, widened to at least Wilson's interval over samples). "
        + _unreachable(_band_outcomes(studies, "model", band, share, classes), share),
        c7, verdict=combine(c7), setting=setting,
        sensitivity=rules.sensitivity({label: combine(_band_outcomes(
            studies, "model", band, q, classes)) for label, q in shares.items()}))
    c8 = _band_outcomes(studies, "jacobian", band, None, classes)
    first = _first_layer_outcomes(studies, depth or {}, band, None, classes)

    def texts(o: Outcome) -> str:
        s = next(x for x in studies if x.model == o.model)
        keep = np.asarray(s.radii) >= 1.0
        return (f"linearisation: median rho {o.text('.3f')}; medians at radii >= 1: model "
                f"{np.median(s.rho['model'][:, keep]):.3f}, random linear map "
                f"{np.median(s.rho['linear'][:, keep]):.3f}; over mixed radii model "
                f"{np.median(s.mixed_rho):.3f}, random linear map "
                f"{np.median(s.mixed_linear_rho):.3f}")

    depth_text = ("; median rho after the first convolution: " + "; ".join(
        f"{o.model} {o.text('.3f')}" for o in first)) if first else ""
    c8_row = verdict_row(
        "C8", "the cause is the affine map of every layer, compounded over layers",
        _texts(c8, texts) + depth_text,
        "the model's own linearisation at x, nu -> J_x nu (its layers with the ReLU and "
        "pooling choices fixed at x: a linear map of nu, no activation pattern changes), is "
        "judged with C7's rule: pass when the interval of its median rho lies inside "
        f"(-{band:g}, {band:g}); not supported if no linearisation lands in the band (the "
        "low rho then needs the changing non-linearity). If every model passes, 'compounded "
        "over layers' is judged by depth: supported where rho after the first convolution "
        "lies outside the band for every model (depth is needed to reach the band), partly "
        "where it is already inside for some (one affine map suffices); without the depth "
        "study, at most partly. A random linear map of the same width (the 'random linear "
        "map' medians) is the control for 'any affine map': where it stays outside the band "
        "while the linearisation is inside, the low rho belongs to the learned maps (their "
        "few effective directions), not to affine maps as such",
        c8, verdict=_c8_verdict(studies, depth, band, None, classes), setting=setting,
        sensitivity=rules.sensitivity({label: _c8_verdict(studies, depth, band, q, classes)
                                       for label, q in shares.items()}))
    return [c7_row, c8_row]


# ------------------------------------------------------------ Lipschitz, C9-C10
def _contracting_outcomes(studies, reading: str, classes, share: float = 0.5,
                          factor: Mapping[str, float] | None = None) -> list[Outcome]:
    """Per model: the share of perturbed points at radii >= 1 with ``L_x < 1``.

    The eps radius is left out: both distances there are at float32 rounding.
    ``factor`` (model -> number) multiplies every ratio of that model first
    (the one-scalar-per-side reading: raw ratios times input range / feature
    range).
    """
    return [rules.pooled_outcome(
        s.model, s.ratio(reading)[:, np.asarray(s.radii) >= 1.0]
        * (1.0 if factor is None else factor[s.model]) < 1,
        threshold=share, classes=(classes or {}).get(s.model)) for s in studies]


def _c10_text(o: Outcome, worst_raw: Mapping[str, np.ndarray] | None) -> str:
    """C10's line for one model: local gain / product bound, and raw gains above 1."""
    text = f"largest local gain / global bound {o.estimate:.3g}"
    if worst_raw and o.model in worst_raw:
        raw = np.asarray(worst_raw[o.model])
        text += (f"; raw worst-case gain above 1 (expanding in grey levels in, "
                 f"activations out) on {int((raw > 1).sum())} of {raw.size} samples")
    return text


#: A local gain below this share of C10's product bound: the bound is too loose for
#: the comparison with a tenth of it to go either way.
LOOSE_BOUND = 1e-2


def lipschitz_claims(studies, bounds: Mapping[str, float] | None = None, *,
                     worst_minmax: Mapping[str, np.ndarray] | None = None,
                     worst_raw: Mapping[str, np.ndarray] | None = None,
                     scalar_scale: Mapping[str, float] | None = None,
                     worst_along: Mapping[str, np.ndarray] | None = None,
                     along_radius: float | None = None,
                     classes: Mapping[str, int] | None = None) -> list[Verdict]:
    """C9 (both readings of eq. 9) and C10 from Lipschitz studies.

    ``studies`` are :class:`localprops.studies.lipschitz.LipschitzStudy`
    results (random directions). ``worst_minmax`` and ``worst_raw`` map a
    model to its per-sample worst-case local gain (the largest singular value
    of the feature map's Jacobian at x, min-max normalised and raw); without
    them the worst-case rows are inconclusive. ``bounds`` maps a model to its
    global product bound. ``scalar_scale`` maps a model to (input range /
    feature range) of the one-scalar-per-side min-max reading, which turns a
    raw gain into that reading's (for the sensitivity line). ``worst_along``
    maps a model to its per-sample min-max ratio ``L_x`` at the finite radius
    ``along_radius``, along the top singular direction: a witness of the
    worst case at that radius (a lower bound on it), read in the worst-case
    row's sensitivity line.
    """
    if not studies:
        return []
    setting = f"{studies[0].norm} radius; random directions, min-max units per feature"
    c9 = _contracting_outcomes(studies, "minmax", classes)
    rows = [verdict_row(
        "C9", "ConvNets are in general locally contracting: L_x < 1 in most cases "
        "(reading: random directions, as the paper measured)",
        _texts(c9, lambda o: f"{o.text()} of perturbed points with L_x < 1"),
        "with the paper's min-max normalizers: per model pass when more than half of the "
        "perturbed points have L_x < 1 (bootstrap over samples, widened to at least "
        "Wilson's interval over samples, 95%); supported if every model passes, partly if "
        "some do",
        c9, verdict=combine(c9), setting=setting,
        sensitivity=rules.sensitivity({
            **{f"share > {share:.0%}": combine(_contracting_outcomes(
                studies, "minmax", classes, share=share)) for share in (0.75, 0.9)},
            **{f"{reading} normalisation": combine(_contracting_outcomes(studies, reading,
                                                                         classes))
               for reading in ("raw", "zscore") if reading in studies[0].output_distance},
            **({"one min-max scalar per side": combine(_contracting_outcomes(
                studies, "raw", classes, factor=scalar_scale))}
               if scalar_scale and all(s.model in scalar_scale for s in studies)
               and "raw" in studies[0].output_distance else {})}))]
    worst_minmax, worst_raw = worst_minmax or {}, worst_raw or {}

    def worst_outcomes(gains: Mapping[str, np.ndarray]) -> list[Outcome]:
        return [rules.share_outcome(s.model, np.asarray(gains[s.model]) < 1,
                                    threshold=0.5, classes=(classes or {}).get(s.model))
                if s.model in gains else
                Outcome(s.model, float("nan"), (float("nan"), float("nan")), 0.5, True,
                        rules.UNDECIDED, 0, len(s.ids), (classes or {}).get(s.model),
                        "worst-case gain not computed")
                for s in studies]

    worst = worst_outcomes(worst_minmax)
    alternatives = {}
    if worst_raw:
        alternatives["raw units (grey levels in, activations out)"] = combine(
            worst_outcomes(worst_raw))
        if scalar_scale:
            alternatives["one min-max scalar per side"] = combine(worst_outcomes(
                {m: np.asarray(g) * scalar_scale[m] for m, g in worst_raw.items()
                 if m in scalar_scale}))
    if worst_along:
        alternatives[f"finite radius r = {along_radius:g}, along the top direction (a "
                     "lower bound on the worst case there)"] = combine(
            worst_outcomes(worst_along))
    rows.append(verdict_row(
        "C9", "ConvNets are locally contracting (reading: eq. 9's bound over all "
        "directions, the worst case)",
        _texts(worst, lambda o: f"{o.text()} of samples whose largest local gain "
                                "(top singular value of the normalised Jacobian) is "
                                "below 1"),
        "per model pass when more than half of the samples have a worst-case gain "
        "below 1 (Wilson 95%); supported if every model passes. The answer depends on the "
        "units (the sensitivity line): in raw units even the worst direction may contract",
        worst, verdict=combine(worst), sensitivity=rules.sensitivity(alternatives),
        setting=f"{studies[0].norm} radius; worst direction at r -> 0, min-max units"))
    bounds = bounds or {}
    c10 = []
    for s in studies:
        bound = bounds.get(s.model)
        if bound is None:
            continue
        if worst_raw and s.model in worst_raw:
            gain, kind = float(np.max(worst_raw[s.model])), "worst-case"
        else:
            gain, kind = float(np.max(s.ratio("raw"))), "random-direction (a lower bound)"
        ratio = gain / bound
        enough = len(s.ids) >= rules.MIN_COUNT
        result = (rules.FAIL if ratio >= 0.1 else
                  rules.PASS if kind == "worst-case" and enough else rules.UNDECIDED)
        # a maximum over samples: no sampling interval (NaN, stored as null)
        c10.append(Outcome(s.model, ratio, (float("nan"), float("nan")), 0.1, False, result,
                           len(s.ids), len(s.ids), (classes or {}).get(s.model),
                           "" if result != rules.UNDECIDED else
                           f"only a {kind} gain is known" if kind != "worst-case" else
                           f"only {len(s.ids)} samples (need {rules.MIN_COUNT}): a larger "
                           "gain may be missed"))
    loose = bool(c10) and all(o.estimate < LOOSE_BOUND for o in c10)
    c10_row = verdict_row(
        "C10", "hence explanations by global non-linearity may be inaccurate",
        _texts(c10, lambda o: _c10_text(o, worst_raw))
        or "no model with a global product bound (not a plain sequence of layers)",
        "an interpretation, shown and not counted: the product of layer norms is an upper "
        "bound on the global constant whose looseness is not measured, so a local gain far "
        "below it says how loose the bound is as much as how the network behaves; and the "
        f"claim follows from C9 (worst-case reading in min-max units: {combine(worst)}). The "
        "measurement: per model, the largest worst-case local gain over at least 10 samples "
        "against a tenth of the product bound (a random-direction ratio is only a lower "
        "bound on the gain). Rule verdict as measured: " + (combine(c10) if c10 else
                                                           INCONCLUSIVE)
        + (f"; every ratio is below {LOOSE_BOUND:g}: the bound is so loose that this "
           "comparison could not have failed, and it decides nothing about the network"
           if loose else "")
        + "; models without a product bound (not a plain sequence of layers) are not "
        "assessed: " + (", ".join(s.model for s in studies if s.model not in bounds)
                        or "none"),
        c10, verdict=LOGICAL if c10 else INCONCLUSIVE,
        setting=f"{studies[0].norm} radius; raw feature units")
    return rows + [c10_row]


def frequency_claims(studies: Mapping, pooling: Mapping | None = None, *,
                     gap_threshold: float = 0.5, share_threshold: float = 0.5,
                     min_radius: float = 0.1, slope_tolerance: float = 0.05,
                     margin: float = 0.01) -> list[Verdict]:
    """F1-F3, the frequency-domain argument, from per-sample first-layer measurements.

    ``studies`` maps a model name to its
    :class:`localprops.studies.frequency.FrequencyStudy` on the radius grid of
    F1 and F2 (L2 radii spanning decades); ``pooling`` maps a model name to
    its study at the radii of F3 (L-infinity radii where activation patterns
    and pooling winners change; default: ``studies``). Every per-model
    estimate has a 95% interval over samples (:mod:`localprops.report.rules`).

    - F1, per model: the share of samples whose median relative gap at the
      first convolution over radii ``>= min_radius`` exceeds
      ``gap_threshold``; passes when the Wilson interval of the share lies at
      or above ``share_threshold``.
    - F2, per model: per sample the log-log slope of the absolute
      first-convolution gap against r (radii ``>= min_radius``); passes when
      the bootstrap interval of the median slope lies inside
      ``1 +- slope_tolerance``, fails when it lies outside.
    - F3, per model with a max-pooling layer among its first layers: per
      (sample, radius) the correlation distance ``1 - cos(delta_1, delta_t)``
      between the changes of a perturbation and of its permutations, after
      the first max-pooling minus at the pooling's own input (the shared rise
      of window maxima under any noise is part of what pooling does and
      counts). A model passes when the bootstrap interval of the median lies
      above ``margin``, the smallest rise counted (0.01), and fails when it
      lies below, so a measured null fails instead of staying undecided at
      any sample size; margins 0, ``margin / 2`` and ``2 margin`` are the
      sensitivity line, with, where the studies have them, the same against
      independent directions (``e = d(independent) - d(permutation)``, at
      the input minus after pooling), which is about 0 by construction: a
      permutation of i.i.d. noise is, for the network, another independent
      draw.

    Every rule is then "supported if every model passes, partly if some do"
    (:func:`localprops.report.rules.combine`: undecided models make the row
    inconclusive only if they could change it).
    """
    if not studies:
        return []
    pooling = studies if pooling is None else pooling

    def row(claim, paper, outcomes, texts, rule, setting, sensitivity, fmt, verdict=None):
        best = rules.deciding(outcomes)
        return Verdict(
            claim=claim, paper=paper,
            measured="; ".join(f"{o.model}: {o.text(fmt)}{t}" for o, t in zip(outcomes, texts)),
            rule=rule, verdict=verdict or rules.combine(outcomes),
            models={o.model: o.as_dict() for o in outcomes}, setting=setting,
            estimate=None if best is None else rules.finite_or_none(best.estimate),
            interval=None if best is None else [rules.finite_or_none(v)
                                                 for v in best.interval],
            sensitivity=sensitivity)

    def verdict_at(make) -> str:
        return rules.combine([make(m, s) for m, s in studies.items()])

    def quiet_median(values, axis=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(values, axis=axis)

    def big(study):
        return study.radii >= min_radius

    # F1: a permutation changes the first convolution's response
    def median_gap(study):
        keep = big(study)
        if not keep.any():
            return np.full(len(study), np.nan)
        return quiet_median(study.per_sample("relative", "convolution")[:, keep], axis=1)

    def f1(model, study, gap=gap_threshold, share=share_threshold):
        g = median_gap(study)
        return rules.share_outcome(model, g > gap, g <= gap, threshold=share,
                                   classes=study.classes)

    outcomes = [f1(m, s) for m, s in studies.items()]
    texts = [f" of {len(s)} samples above {gap_threshold:g} (median gap "
             f"{quiet_median(median_gap(s)):.2f})"
             for s in studies.values()]
    first = next(iter(studies.values()))
    setting = (f"{first.norm} radii >= {min_radius:g}, T = {first.T}, first convolution")
    rows = [row(
        "F1", "a permutation changes the spectrum, hence the first layer's response",
        outcomes, texts,
        f"per sample, the median over radii >= {min_radius:g} of "
        f"||f(x + nu_1) - f(x + nu_t)|| / ||f(x + nu_1) - f(x)|| at the first convolution; a "
        f"model passes when the 95% Wilson interval of the share of samples above "
        f"{gap_threshold:g} lies at or above {share_threshold:g}. Logical, not counted: for "
        "i.i.d. noise any linear map that is not invariant to permutations gives a relative "
        "gap near sqrt 2 (uncorrelated responses), so the measurement shows the size of the "
        "effect but cannot test the claim. Rule verdict as measured: "
        + rules.combine(outcomes), setting,
        rules.sensitivity({
            "gap threshold 0.25": verdict_at(lambda m, s: f1(m, s, gap=0.25)),
            "gap threshold 1.0": verdict_at(lambda m, s: f1(m, s, gap=1.0)),
            "share threshold 0.9": verdict_at(lambda m, s: f1(m, s, share=0.9))}), ".0%",
        verdict=LOGICAL)]

    # F2: the absolute gap shrinks in proportion to r
    def slopes(study):
        keep = big(study) & (study.radii > 0)
        absolute = study.per_sample("absolute", "convolution")[:, keep]
        log_r = np.log10(study.radii[keep])
        out = np.full(len(study), np.nan)
        for i, a in enumerate(absolute):           # one straight-line fit per sample
            ok = np.isfinite(a) & (a > 0)
            if ok.sum() >= 2:
                out[i] = np.polyfit(log_r[ok], np.log10(a[ok]), 1)[0]
        return out

    def f2(model, study, tolerance=slope_tolerance):
        return rules.band_outcome(model, slopes(study), low=1 - tolerance, high=1 + tolerance,
                                  classes=study.classes)

    outcomes = [f2(m, s) for m, s in studies.items()]
    texts = [f" (median relative gap {quiet_median(median_gap(s)):.2f}: it does not shrink)"
             for s in studies.values()]
    rows.append(row(
        "F2", "the two responses become close as the norm goes to zero", outcomes, texts,
        f"per sample, the slope of log ||f(x + nu_1) - f(x + nu_t)|| against log r at the "
        f"first convolution (radii >= {min_radius:g}); a model passes when the bootstrap 95% "
        f"interval of the median slope lies inside [{1 - slope_tolerance:g}, "
        f"{1 + slope_tolerance:g}] (fails when outside); "
        "logical, not counted: the first convolution is linear and its bias cancels in the "
        "difference, so a slope of 1 holds by construction (the measurement checks the "
        "arithmetic). The gap vanishes in absolute terms only: relative to the response it "
        "stays (F1). Rule verdict as measured: " + rules.combine(outcomes), setting,
        rules.sensitivity({"tolerance 0.01": verdict_at(lambda m, s: f2(m, s, 0.01)),
                           "tolerance 0.2": verdict_at(lambda m, s: f2(m, s, 0.2))}), ".4f",
        verdict=LOGICAL))

    # F3: max-pooling makes the changes more dissimilar
    pooled = {m: s for m, s in pooling.items()
              if s.pooling == "max" and {"convolution", "pooling"} <= set(s.distance)}
    if not pooled:
        return rows

    def before_pooling(study) -> str:
        for kind in ("pooling_input", "activation"):
            if kind in study.distance:
                return kind
        return "convolution"

    def has(study, what: str) -> bool:
        return {"pooling", before_pooling(study)} <= set(getattr(study, what, None) or {})

    def rise(study, reading: str) -> np.ndarray:
        """(S, R): how much more dissimilar pooling makes the changes, in one reading."""
        before = before_pooling(study)
        if reading == "reference":       # the permutations' extra likeness, input minus after
            def excess(kind):
                return study.per_sample("independent", kind) - study.per_sample("distance", kind)
            return excess(before) - excess("pooling")
        return study.per_sample("distance", "pooling") - study.per_sample("distance", before)

    def f3(model, study, threshold=margin, reading="raw"):
        out = rules.median_outcome(model, rise(study, reading), threshold=threshold,
                                   above=True, classes=study.classes)
        if out.outcome == rules.PASS and not out.interval[0] > threshold:
            out.outcome, out.note = rules.UNDECIDED, "interval touches the margin"
        return out

    def describe(study):
        kinds = ("convolution", "activation", before_pooling(study), "pooling")
        d = {k: quiet_median(study.per_sample("distance", k), axis=0)
             for k in dict.fromkeys(kinds) if k in study.distance}
        parts = [" (per radius " + ", ".join(f"{r:g}" for r in study.radii) + ": distance to "
                 "the permutations " + "; ".join(f"{k.replace('_', ' ')} " + "/".join(
                     f"{v:.3f}" for v in d[k]) for k in d)]
        if has(study, "independent"):
            parts.append("to independent directions " + "; ".join(
                f"{k.replace('_', ' ')} " + "/".join(
                    f"{v:.3f}" for v in quiet_median(study.per_sample("independent", k), axis=0))
                for k in (before_pooling(study), "pooling")))
        if study.winners is not None:
            parts.append("changed pooling winners " + "/".join(
                f"{v:.0%}" for v in quiet_median(study.per_sample("winners"), axis=0)))
        if study.pattern is not None:
            parts.append("changed activation signs " + "/".join(
                f"{v:.0%}" for v in quiet_median(study.per_sample("pattern"), axis=0)))
        return "; ".join(parts) + ")"

    outcomes = [f3(m, s) for m, s in pooled.items()]
    some = next(iter(pooled.values()))
    alternatives = {f"margin {m:g}": rules.combine([f3(mo, st, m) for mo, st in pooled.items()])
                    for m in (0.0, margin / 2, margin * 2)}
    if all(has(s, "independent") for s in pooled.values()):
        alternatives["relative to independent directions (about 0 by construction: a "
                     "permutation of i.i.d. noise acts as another independent draw)"] = \
            rules.combine([f3(m, s, reading="reference") for m, s in pooled.items()])
    rows.append(row(
        "F3", "max-pooling after the first layer makes the outputs more dissimilar",
        outcomes, [describe(s) for s in pooled.values()],
        "per (sample, radius), the correlation distance 1 - cos(delta_1, delta_t) of the "
        "changes delta = f(x + nu) - f(x) of a perturbation and of its permutations, after "
        "the first max-pooling minus that at the pooling's own input (a rise of every "
        "window's maximum under any noise, which makes the changes more alike, is part of "
        "what pooling does and counts); a model passes when the bootstrap 95% interval (over "
        f"samples) of the median lies above {margin:g} (the smallest rise counted), fails "
        "when it lies below; supported if every model with a max-pooling layer among its "
        "first layers passes, partly if some do. Centring the changes on their mean over the "
        "T draws would not isolate what is specific to permutations: the centred changes sum "
        "to zero, which pins the mean distance at 1 + 1/(T - 1)",
        f"{some.norm} radii {', '.join(f'{r:g}' for r in some.radii)}, T = {some.T}",
        rules.sensitivity(alternatives), "+.3f"))
    return rows


# ------------------------------------------------ beyond the paper (chapter 08)
#: B1 and B2's sensitivity line: a range counts only at this many times its noise floor
FLOOR_MARGIN = 10.0


def first_order_claims(measured: Sequence[ScoreStudy], studies: Sequence,
                       valid: Mapping[str, np.ndarray], *, factor: float = 2.0,
                       at: float = 1.0, floors: Mapping[str, NoiseFloor] | None = None,
                       valid_log_odds: Mapping[str, np.ndarray] | None = None
                       ) -> list[Verdict]:
    """B1 (the paper's dismissal of a gradient test) and B2 (the linear regime ends in range).

    ``measured`` are isotropy studies and ``studies`` the
    :class:`localprops.studies.firstorder.FirstOrderStudy` results of the same samples
    (one norm). A sample agrees at a radius when its predicted range is within
    ``factor`` of the measured one. ``valid`` maps a model to its (S, R) mask
    of measurable ranges (:func:`localprops.studies.firstorder.measurable`); other
    (sample, radius) pairs say nothing and are left out of the shares (too few
    measurable samples make a model undecided). B1 is read at radius ``at``
    (its sensitivity line reads it at 10 and 20 too, where they are on the
    grid). B2 is judged on the first-order model of the score; its text also
    gives the model of the log-odds, which separates the sigmoid's saturation
    from the network's own departure from linearity. Sensitivity lines: other
    factors; with ``floors`` (model -> its :class:`NoiseFloor`), ranges only at
    :data:`FLOOR_MARGIN` times their floor (a range just above its floor
    carries a rounding error of its own size, enough to fake a departure);
    with ``valid_log_odds`` (model -> (S, R) mask of measurable log-odds
    ranges, :func:`localprops.studies.beyond.log_odds_measurable`), both rows
    on the log-odds ranges, where a saturated sample, whose probability does
    not move, is still measured.
    """
    from localprops.core.stats import sigmoid
    from localprops.studies.firstorder import linear_regime_end, range_ratios, within_factor

    if not studies:
        return []
    norm = studies[0].norm
    setting = f"{norm} radius; agreement within a factor {factor:g}"
    pairs = list(zip(measured, studies))

    def ratios(iso, study, kind: str) -> np.ndarray:
        """(S, R) predicted over measured range: of the score, or of the log-odds."""
        if kind == "log-odds ranges":
            lo = study.clean_log_odds[:, None]
            slope = np.ptp(study.slopes, axis=-1) / (sigmoid(lo) / (1.0 + np.exp(lo)))
            with np.errstate(divide="ignore", invalid="ignore"):
                return study.radii[None, :] * slope / np.ptp(iso.log_odds, axis=-1)
        return range_ratios(iso, study, through_log_odds=kind == "log-odds model")

    def b1_outcomes(f: float, masks=valid, kind: str = "score", radius: float = at
                    ) -> list[Outcome]:
        out = []
        for iso, study in pairs:
            k = _radius_index(iso, radius)
            ok = np.asarray(masks[study.model], bool)[:, k]
            agree = ok & within_factor(ratios(iso, study, kind)[:, k], factor=f)
            out.append(rules.share_outcome(study.model, agree, ok & ~agree, threshold=0.5,
                                           classes=iso.classes))
        return out

    def departures(iso, study, f: float, masks, kind: str) -> np.ndarray:
        """First radius of departure of the samples measurable at some radius (inf: none)."""
        ok = np.asarray(masks[study.model], bool)
        return linear_regime_end(ratios(iso, study, kind), study.radii, ok, f)[ok.any(axis=1)]

    def b2_outcomes(f: float, masks=valid, kind: str = "score") -> list[Outcome]:
        return [rules.share_outcome(study.model,
                                    np.isfinite(departures(iso, study, f, masks, kind)),
                                    threshold=0.5, classes=iso.classes)
                for iso, study in pairs]

    def ends(iso, study, kind: str) -> str:
        end = departures(iso, study, factor, valid, kind)
        return (f"{int(np.isfinite(end).sum())} of {len(end)}, median "
                + (f"r = {np.median(end):g}" if len(end) and np.isfinite(np.median(end))
                   else "none"))

    margin = ({iso.model: np.asarray(valid[iso.model], bool)
               & (np.ptp(iso.scores, axis=-1)
                  > FLOOR_MARGIN * _range_floors(iso, floors, "probability"))
               for iso in measured} if floors else None)
    alternatives_b1 = {"factor 1.5": combine(b1_outcomes(1.5), invert=True)}
    alternatives_b2 = {"first-order model of the log-odds (no sigmoid saturation)":
                       combine(b2_outcomes(factor, kind="log-odds model")),
                       **{f"factor {f:g}": combine(b2_outcomes(f)) for f in (1.5, 3.0)}}
    for radius in (10.0, 20.0):
        if radius != at and all(np.isclose(iso.radii, radius).any() for iso in measured):
            alternatives_b1[f"at r = {radius:g}"] = combine(b1_outcomes(factor, radius=radius),
                                                            invert=True)
    if margin:
        line = f"ranges at least {FLOOR_MARGIN:g}x their noise floor"
        alternatives_b1[line] = combine(b1_outcomes(factor, margin), invert=True)
        alternatives_b2[line] = combine(b2_outcomes(factor, margin))
    if valid_log_odds:
        line = "log-odds ranges (saturated samples measured)"
        alternatives_b1[line] = combine(b1_outcomes(factor, valid_log_odds,
                                                    "log-odds ranges"), invert=True)
        alternatives_b2[line] = combine(b2_outcomes(factor, valid_log_odds,
                                                    "log-odds ranges"))
    b1, b2 = b1_outcomes(factor), b2_outcomes(factor)
    texts_b2 = {study.model: f"score model {ends(iso, study, 'score')}; log-odds model "
                             f"{ends(iso, study, 'log-odds model')}" for iso, study in pairs}
    b1_row = verdict_row(
        "B1", "a gradient-based test of isotropy (eq. 3) 'might not be promising' (Sec. 2.1)",
        _texts(b1, lambda o: f"{o.text()} of {o.counted} measurable samples within "
                             f"x{factor:g} at r = {at:g}"),
        f"per model pass when most measurable samples' first-order predicted range lies "
        f"within a factor {factor:g} of the measured one at r = {at:g} (Wilson 95%): the "
        "gradient then predicts the measured anisotropy; not supported if every model "
        "passes, partly if some do, supported if none",
        b1, verdict=combine(b1, invert=True), setting=f"{setting} at r = {at:g}",
        sensitivity=rules.sensitivity(alternatives_b1))
    b2_row = verdict_row(
        "B2", "(beyond the paper) the first-order model of the score breaks down within the "
        "paper's radii",
        _texts(b2, lambda o: f"{o.text()} of measurable samples depart within "
                             f"r <= {studies[0].radii.max():g} ({texts_b2[o.model]})"),
        f"per model pass when most measurable samples' first-order prediction of the score "
        f"departs by more than a factor {factor:g} at some radius of the grid (Wilson 95%); "
        "supported if every model passes, partly if some do",
        b2, verdict=combine(b2), setting=setting,
        sensitivity=rules.sensitivity(alternatives_b2))
    return [b1_row, b2_row]


def attack_claims(studies: Sequence, *, factor: float = 2.0,
                  classes: Mapping[str, int] | None = None) -> list[Verdict]:
    """B3 (the linear law of random against adversarial radii) and B4 (random never closer).

    ``studies`` are :class:`localprops.studies.attacks.AttackStudy` results (one
    norm). The measured ratio is the best of ``T`` random directions over the
    adversarial radius; it is compared with what a linear classifier gives for
    the same sampler, norm and ``T`` (``AttackStudy.linear_ratio``, from each
    sample's gradient): B3 passes a model when the median over samples of
    log(measured / linear) has its bootstrap interval inside ±log(factor).
    Samples with no random misclassification up to the cap count with their
    lower bound; samples with no adversarial point found are left out.
    """
    from localprops.studies.attacks import linear_ratio

    if not studies:
        return []
    norm = studies[0].norm
    classes = classes or {}
    def log_gap(study) -> np.ndarray:
        found = np.isfinite(study.ratio)
        return np.where(found, np.log(np.where(found, study.ratio, 1.0) / study.linear_ratio),
                        np.nan)

    def b3_outcomes(f: float) -> list[Outcome]:
        return [rules.band_outcome(s.model, log_gap(s), low=-np.log(f), high=np.log(f),
                                   classes=classes.get(s.model)) for s in studies]

    b3, b4, notes = b3_outcomes(factor), [], {}
    for study in studies:
        ratio = study.ratio
        found = np.isfinite(ratio)
        below = found & (ratio < 1)
        out = rules.share_outcome(study.model, found & ~below, below, threshold=1.0,
                                  classes=classes.get(study.model))
        out.outcome = (rules.FAIL if below.any() else rules.PASS
                       if out.counted >= rules.MIN_COUNT else rules.UNDECIDED)
        out.note = ("" if out.outcome != rules.UNDECIDED else
                    f"only {out.counted} samples with an adversarial point (need "
                    f"{rules.MIN_COUNT})")
        b4.append(out)
        typical = float(np.median(linear_ratio(norm, study.dimension, study.l1_over_l2)))
        censored = int(study.random_censored.sum())
        notes[study.model] = (
            f"median ratio {np.median(ratio[found]) if found.any() else np.nan:.3g}"
            + (f" ({censored} lower bounds)" if censored else "")
            + (f" ({int((~found).sum())} without an adversarial point)" if not found.all()
               else "")
            + f"; linear classifier: {np.median(study.linear_ratio):.3g} for the best of "
            f"{study.T} directions, {typical:.3g} for a typical one")
    b3_row = verdict_row(
        "B3", "(Fawzi et al. 2015, 2016) as for a linear classifier, random noise needs far "
        "more than the adversarial radius to misclassify (about sqrt(D) times it for a typical "
        "L2 direction; here: the best of T directions of eq. 4 against a linear classifier's "
        "best of T, in both readings)",
        _texts(b3, lambda o: f"{notes[o.model]}; median log(measured / linear) "
                             f"{o.text('.2f')}"),
        f"per model pass when the median over samples of log(ratio / linear classifier's "
        f"ratio) has its bootstrap 95% interval inside +-log {factor:g}, fail when entirely "
        "outside; supported if every model passes, partly if some do",
        b3, verdict=combine(b3), setting=f"{norm} radius",
        sensitivity=rules.sensitivity({f"factor {f:g}": combine(b3_outcomes(f))
                                       for f in (1.5, 3.0)}))
    b4_row = verdict_row(
        "B4", "(beyond the paper; a check of the attacks) no random direction misclassifies "
        "at a smaller radius than the adversarial one (both are upper bounds on the smallest "
        "misclassifying radius: a failure would mean the attacks missed a nearer error that "
        "random search found)",
        _texts(b4, lambda o: f"{o.counted - round(o.estimate * o.counted) if o.counted else 0}"
                             f" of {o.counted} samples below 1; share at or above 1 "
                             f"{o.text()}"),
        "a universal statement: a model passes when none of at least 10 samples has a ratio "
        "below 1 (one counterexample fails it); supported if every model passes, partly if "
        "some do",
        b4, verdict=combine(b4), setting=f"{norm} radius")
    return [b3_row, b4_row]
