"""The paper's claims C1-C10, each measured and judged by an explicit rule.

Each function takes study results and returns :class:`Verdict` rows: the
claim, what we measured, the rule that turns the measurement into a verdict
(supported / partly / not supported), and the verdict. The chapters show these
rows next to their figures and the scorecard collects them, so no verdict is
typed by hand. The rules are stated in ``rule`` so a reader can disagree with
them and change them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from localprops.report.scorecard import NOT_SUPPORTED, PARTLY, SUPPORTED, Verdict
from localprops.studies.scores import ScoreStudy


def _share_verdict(shares: Sequence[float], high: float = 0.5) -> str:
    """supported if every share >= high, partly if some are, else not supported."""
    hits = [s >= high for s in shares]
    return SUPPORTED if all(hits) else PARTLY if any(hits) else NOT_SUPPORTED


def _radius_index(study: ScoreStudy, r: float) -> int:
    idx = np.flatnonzero(np.isclose(study.radii, r))
    if not idx.size:
        raise ValueError(f"radius {r} is not among the study's radii {study.radii.tolist()}")
    return int(idx[0])


def isotropy_claims(studies: Sequence[ScoreStudy], floors: Mapping[str, float], *,
                    big_range: float = 0.1) -> list[Verdict]:
    """C1-C4 from isotropy studies of several models (one norm).

    ``floors`` maps a model to its float32 noise floor. The smallest radius is
    taken as the paper's eps.
    """
    if not studies:
        return []
    norm = studies[0].norm
    names = ", ".join(s.model for s in studies)
    setting = (f"{norm} radius, eps = {studies[0].radii[0]:g}, T = {studies[0].scores.shape[-1]}, "
               f"{min(len(s.ids) for s in studies)}-{max(len(s.ids) for s in studies)} samples")
    eps_ranges = {s.model: s.statistics.range[:, 0] for s in studies}
    above = [float(np.mean(eps_ranges[m] > 10 * floors.get(m, 0.0))) for m in eps_ranges]
    c1 = Verdict(
        "C1", "no ConvNet is perfectly isotropic, even at distance eps",
        "; ".join(f"{m}: median range at eps {np.median(v):.2e} (noise floor "
                  f"{floors.get(m, float('nan')):.1e}), {a:.0%} of samples above 10x floor"
                  for (m, v), a in zip(eps_ranges.items(), above)),
        "supported if, for every model, at least half the samples have a range at eps "
        "above 10x the float32 noise floor; partly if for some models",
        _share_verdict(above), names, setting)
    small = [float(np.mean(v < 1e-3)) for v in eps_ranges.values()]
    c2 = Verdict(
        "C2", "at eps the score does not change significantly",
        "; ".join(f"{m}: largest range at eps {v.max():.2e}" for m, v in eps_ranges.items()),
        "supported if every model keeps the range at eps below 1e-3 for all samples",
        _share_verdict(small, high=1.0), names, setting)
    measured, grows = [], []
    for s in studies:
        i1 = _radius_index(s, 1.0)
        r = s.statistics.range
        share = float(np.mean(r[:, i1] > r[:, 0]))
        grows.append(share)
        measured.append(f"{s.model}: median range {np.median(r[:, 0]):.2e} at eps, "
                        f"{np.median(r[:, i1]):.2e} at r = 1 ({share:.0%} of samples grow)")
    c3 = Verdict("C3", "at radius 1 every ConvNet is more non-isotropic than at eps",
                 "; ".join(measured),
                 "supported if for every model at least half the samples have a larger "
                 "range at r = 1 than at eps", _share_verdict(grows), names, setting)
    measured, big = [], []
    for s in studies:
        i10 = _radius_index(s, 10.0)
        r, wrong = s.statistics.range[:, i10], s.statistics.any_misclassified[:, i10]
        big.append(float(np.mean(r > big_range)))
        measured.append(f"{s.model}: median range {np.median(r):.2e} at r = 10, "
                        f"{np.mean(r > big_range):.0%} of samples above {big_range:g}, "
                        f"{np.mean(wrong):.0%} with a misclassified perturbation")
    very = [b >= 0.5 for b in big]
    c4 = Verdict("C4", "most ConvNets are very non-isotropic at radius 10",
                 "; ".join(measured),
                 f"'very non-isotropic' = range above {big_range:g} in at least half the "
                 "samples; supported if that holds for more than half of the models, "
                 "partly if for some",
                 SUPPORTED if sum(very) > len(very) / 2 else PARTLY if any(very)
                 else NOT_SUPPORTED, names, setting)
    return [c1, c2, c3, c4]


def symmetry_claims(symmetry: Sequence[ScoreStudy], isotropy: Sequence[ScoreStudy],
                    floors: Mapping[str, float]) -> list[Verdict]:
    """C5 and C6 from symmetry studies (and the isotropy studies of the same samples)."""
    if not symmetry:
        return []
    names = ", ".join(s.model for s in symmetry)
    setting = f"{symmetry[0].norm} radius, T = {symmetry[0].scores.shape[-1]}"
    measured, shares = [], []
    for s in symmetry:
        i1 = _radius_index(s, 1.0)
        r = s.statistics.range[:, i1:]
        share = float(np.mean(r > 10 * floors.get(s.model, 0.0)))
        shares.append(share)
        measured.append(f"{s.model}: {share:.0%} of (sample, r >= 1) ranges above 10x the "
                        f"noise floor; median range at eps {np.median(s.statistics.range[:, 0]):.2e}")
    c5 = Verdict("C5", "except at distances below eps, no ConvNet is locally symmetric",
                 "; ".join(measured),
                 "supported if, for every model, at least half the (sample, radius >= 1) "
                 "ranges exceed 10x the float32 noise floor", _share_verdict(shares),
                 names, setting)
    by_model = {s.model: s for s in isotropy}
    measured, ratios = [], []
    for s in symmetry:
        iso = by_model.get(s.model)
        if iso is None or iso.scores.shape[:2] != s.scores.shape[:2]:
            continue
        i1 = _radius_index(s, 1.0)
        ratio = float(np.median(s.statistics.range[:, i1:] /
                                np.maximum(iso.statistics.range[:, i1:], 1e-30)))
        ratios.append(ratio)
        measured.append(f"{s.model}: median (permutation range / isotropy range) {ratio:.2f}")
    c6 = Verdict("C6", "an isotropic function is symmetric; the converse need not hold",
                 "; ".join(measured) or "no matching isotropy study",
                 "a logical statement (a permutation keeps the norm); the data can only "
                 "illustrate it: permutation ranges are smaller than isotropy ranges when "
                 "the ratio is below 1", SUPPORTED, names, setting)
    return [c5, c6]


def topology_claims(studies) -> list[Verdict]:
    """C7 and C8 from :class:`localprops.studies.topology.TopologyStudy` results."""
    if not studies:
        return []
    names = ", ".join(s.model for s in studies)
    setting = f"{studies[0].norm} radius, T = points per radius"
    inside = [float(np.mean(np.abs(s.rho["model"]) < 0.1)) for s in studies]
    c7 = Verdict(
        "C7", "-0.1 < rho < 0.1 for all ConvNets, even very close to x",
        "; ".join(f"{s.model}: median rho {np.median(s.rho['model']):.3f}, "
                  f"{share:.0%} of (sample, radius) inside (-0.1, 0.1)"
                  for s, share in zip(studies, inside)),
        "supported if, for every model, at least 90% of the (sample, radius) statistics "
        "lie in (-0.1, 0.1); partly if at least half do for some model",
        SUPPORTED if all(v >= 0.9 for v in inside) else
        PARTLY if any(v >= 0.5 for v in inside) else NOT_SUPPORTED, names, setting)
    linear_low = [float(np.median(np.abs(s.rho["linear"]))) < 0.3 for s in studies]
    mixed_high = [float(np.median(s.mixed_rho)) > 0.5 for s in studies]
    c8 = Verdict(
        "C8", "the cause is the affine map of every layer, compounded over layers",
        "; ".join(f"{s.model}: median rho of a random linear map at one radius "
                  f"{np.median(s.rho['linear']):.3f}, of the Jacobian map "
                  f"{np.median(s.rho['jacobian']):.3f}; over mixed radii the model reaches "
                  f"{np.median(s.mixed_rho):.3f}, the linear map {np.median(s.mixed_linear_rho):.3f}; "
                  f"input distance spread (std/mean) {np.median(s.input_spread):.4f}"
                  for s in studies),
        "if a single random linear map already gives a low rho at one radius and the "
        "model's rho is high once the points span several radii, the low rho comes from "
        "the input distances being nearly equal (concentration), not from the depth of "
        "the network: then 'partly' (an affine map suffices, but nothing is compounded); "
        "'supported' only if the linear map keeps rho high while the model does not",
        PARTLY if all(linear_low) and all(mixed_high) else
        SUPPORTED if not any(linear_low) else NOT_SUPPORTED, names, setting)
    return [c7, c8]


def lipschitz_claims(studies, bounds: Mapping[str, float] | None = None) -> list[Verdict]:
    """C9 and C10 from :class:`localprops.studies.lipschitz.LipschitzStudy` results."""
    if not studies:
        return []
    names = ", ".join(s.model for s in studies)
    setting = f"{studies[0].norm} radius; normalizations minmax / raw / zscore"
    shares = {s.model: {r: float((s.ratio(r) < 1).mean()) for r in s.output_distance}
              for s in studies}
    c9 = Verdict(
        "C9", "ConvNets are in general locally contracting: L_x < 1 in most cases",
        "; ".join(f"{m}: share with L_x < 1: " + ", ".join(f"{r} {v:.0%}" for r, v in sh.items())
                  for m, sh in shares.items()),
        "with the paper's min-max normalizers: supported if more than half of the perturbed "
        "points of every model have L_x < 1; partly if of some models",
        _share_verdict([sh["minmax"] for sh in shares.values()], high=0.5 + 1e-12),
        names, setting)
    bounds = bounds or {}
    measured, gaps = [], []
    for s in studies:
        raw_max = float(np.max(s.ratio("raw"))) if s.ratio("raw").size else float("nan")
        bound = bounds.get(s.model)
        if bound is not None:
            gaps.append(raw_max / bound)
        measured.append(f"{s.model}: largest local ratio (raw) {raw_max:.3g}"
                        + (f", global bound {bound:.3g}" if bound is not None else
                           ", no global product bound (not a plain sequence of layers)"))
    c10 = Verdict(
        "C10", "hence explanations by global non-linearity may be inaccurate",
        "; ".join(measured),
        "an interpretation; what the data can show is whether the global bound describes "
        "local behaviour: supported if every model's largest local ratio lies below a "
        "tenth of its global bound, partly if below the bound, not supported otherwise",
        (SUPPORTED if gaps and all(g < 0.1 for g in gaps) else
         PARTLY if gaps and all(g < 1 for g in gaps) else NOT_SUPPORTED), names, setting)
    return [c9, c10]


def frequency_claims(gaps: Mapping[str, Sequence]) -> list[Verdict]:
    """The frequency-domain argument, from :class:`localprops.studies.frequency.ResponseGap` rows.

    ``gaps`` maps a model name to its gaps, labelled ``"convolution: ..."``,
    ``"activation: ..."``, ``"pooling: ..."`` or ``"block: ..."``.
    """
    if not gaps:
        return []
    names = ", ".join(gaps)
    measured, differ, slopes, pool_more = [], [], [], []
    for model, rows in gaps.items():
        kinds = {g.label.split(":")[0]: g for g in rows}
        conv = kinds["convolution"]
        big = conv.radii >= 0.1
        rel = float(np.median(conv.relative[big])) if big.any() else float("nan")
        slope = float(np.polyfit(np.log10(conv.radii[big]), np.log10(conv.absolute[big]), 1)[0]) \
            if big.sum() >= 2 else float("nan")
        differ.append(rel > 0.5)
        slopes.append(abs(slope - 1) < 0.05)
        text = f"{model}: first-convolution relative gap {rel:.2f}, log-log slope {slope:.3f}"
        if "pooling" in kinds:
            pool = float(np.median(kinds["pooling"].relative[big]))
            pool_more.append(pool > 1.05 * rel)
            text += f", after pooling {pool:.2f}"
        measured.append(text)
    f1 = Verdict(
        "F1", "a permutation changes the spectrum, hence the first layer's response",
        "; ".join(measured),
        "supported if for every model the response to a permutation differs from the "
        "response to the original by more than half the response itself (radii >= 0.1)",
        _share_verdict([float(d) for d in differ], high=1.0), names)
    f2 = Verdict(
        "F2", "the two responses become close as the norm goes to zero",
        "; ".join(measured),
        "supported if the absolute gap at the first convolution is proportional to r "
        "(log-log slope within 0.05 of 1); it then vanishes in absolute terms only",
        _share_verdict([float(v) for v in slopes], high=1.0), names)
    rows = [f1, f2]
    if pool_more:
        rows.append(Verdict(
            "F3", "max-pooling after the first layer makes the outputs more dissimilar",
            "; ".join(m for m in measured if "pooling" in m),
            "supported if the relative gap after pooling exceeds the convolution's by more "
            "than 5% for every model with a pooling layer, partly if for some",
            _share_verdict([float(v) for v in pool_more]), names))
    return rows


# ------------------------------------------------ beyond the paper (chapter 08)
def first_order_claims(measured: Sequence[ScoreStudy], studies: Sequence,
                       valid: Mapping[str, np.ndarray], *, factor: float = 2.0,
                       at: float = 1.0) -> list[Verdict]:
    """B1 (the paper's dismissal of a gradient test) and B2 (the linear regime ends in range).

    ``measured`` are isotropy studies and ``studies`` the
    :class:`localprops.studies.firstorder.FirstOrderStudy` results of the same samples
    (one norm). A sample agrees at a radius when its predicted range is within
    ``factor`` of the measured one. ``valid`` maps a model to its (S, R) mask
    of measurable ranges (:func:`localprops.studies.firstorder.measurable`); other
    (sample, radius) pairs say nothing and are left out of the shares (a
    model with no measurable sample counts as not agreeing). B2 is judged on
    the first-order model of the score; its text also gives the model of the
    log-odds, which separates the sigmoid's saturation from the network's
    own departure from linearity.
    """
    from localprops.studies.firstorder import departure_radii, range_ratios, within_factor

    if not studies:
        return []
    norm = studies[0].norm
    names = ", ".join(s.model for s in studies)
    setting = f"{norm} radius, agreement within a factor {factor:g}"
    shares, ends_in_range, texts_b1, texts_b2 = [], [], [], []

    def ends(iso, study, ok, through_log_odds):
        _, end = departure_radii(iso, study, ok, factor, through_log_odds=through_log_odds)
        text = (f"{int(np.isfinite(end).sum())} of {len(end)}, median "
                + (f"r = {np.median(end):g}" if len(end) and np.isfinite(np.median(end))
                   else "none"))
        return end, text

    for iso, study in zip(measured, studies):
        ratio = range_ratios(iso, study)
        ok = np.asarray(valid[study.model], bool)
        k = _radius_index(iso, at)
        agree = ok[:, k] & within_factor(ratio[:, k], factor=factor)
        counted = int(ok[:, k].sum())
        shares.append(agree.sum() / counted if counted else 0.0)
        end, text_s = ends(iso, study, ok, False)
        _, text_lo = ends(iso, study, ok, True)
        ends_in_range.append(float(np.isfinite(end).mean()) if len(end) else 0.0)
        texts_b1.append(f"{study.model}: {int(agree.sum())} of {counted} measurable samples "
                        f"(of {len(agree)}) within x{factor:g} at r = {at:g}")
        texts_b2.append(f"{study.model}: measurable samples whose prediction departs within "
                        f"r <= {study.radii.max():g}: score model {text_s}; log-odds model "
                        f"{text_lo}")
    b1 = Verdict(
        "B1", "a gradient-based test of isotropy (eq. 3) 'might not be promising' (Sec. 2.1)",
        "; ".join(texts_b1),
        f"not supported if for every model most measurable samples' first-order predicted "
        f"range lies within a factor {factor:g} of the measured one at r = {at:g} (the "
        "gradient predicts the measured anisotropy), partly if for some models, supported "
        "if for none",
        {SUPPORTED: NOT_SUPPORTED, NOT_SUPPORTED: SUPPORTED, PARTLY: PARTLY}[
            _share_verdict(shares)], names, setting)
    b2 = Verdict(
        "B2", "(beyond the paper) the first-order model of the score breaks down within the "
        "paper's radii",
        "; ".join(texts_b2),
        f"supported if for every model most measurable samples' first-order prediction of "
        f"the score departs by more than a factor {factor:g} at some radius of the grid, "
        "partly if for some models, not supported if for none",
        _share_verdict(ends_in_range), names, setting)
    return [b1, b2]


def attack_claims(studies: Sequence, *, factor: float = 2.0) -> list[Verdict]:
    """B3 (the linear law of random against adversarial radii) and B4 (random never closer).

    ``studies`` are :class:`localprops.studies.attacks.AttackStudy` results (one
    norm). The measured ratio is the best of ``T`` random directions over the
    adversarial radius; it is compared with what a linear classifier gives for
    the same sampler, norm and ``T`` (:func:`localprops.studies.attacks.linear_ratio`,
    from each sample's gradient). Samples with no random misclassification up
    to the cap count with their lower bound; samples with no adversarial
    point found are left out and counted.
    """
    from localprops.studies.attacks import linear_ratio
    from localprops.studies.firstorder import within_factor

    if not studies:
        return []
    norm = studies[0].norm
    names = ", ".join(s.model for s in studies)
    texts, within, above, below_texts = [], [], [], []
    for study in studies:
        ratio = study.ratio
        found = np.isfinite(ratio)
        measured = float(np.median(ratio[found])) if found.any() else float("nan")
        best = float(np.median(study.linear_ratio))
        typical = float(np.median(linear_ratio(norm, study.dimension, study.l1_over_l2)))
        censored = int(study.random_censored.sum())
        within.append(float(found.any() and within_factor(measured, best, factor)))
        above.append(float(np.all(ratio[found] >= 1)))
        texts.append(f"{study.model}: median ratio {measured:.3g}"
                     + (f" ({censored} lower bounds)" if censored else "")
                     + (f" ({int((~found).sum())} without an adversarial point)"
                        if not found.all() else "")
                     + f"; linear classifier: {best:.3g} for the best of {study.T} "
                     f"directions, {typical:.3g} for a typical one")
        below_texts.append(f"{study.model}: {int((ratio[found] < 1).sum())} of "
                           f"{int(found.sum())} samples below 1")
    b3 = Verdict(
        "B3", "(Fawzi et al. 2015, 2016) as for a linear classifier, random noise needs about "
        "sqrt(D) times the adversarial L2 radius to misclassify (here: the best of T "
        "directions of eq. 4, in both readings)",
        "; ".join(texts),
        f"supported if every model's median ratio of the smallest misclassifying radius, "
        f"best of T random directions over adversarial (DeepFool or PGD), lies within a "
        f"factor {factor:g} of the linear classifier's value for the same sampler, norm and "
        "T, partly if for some models, not supported if for none",
        _share_verdict(within, high=1.0), names, f"{norm} radius")
    b4 = Verdict(
        "B4", "(beyond the paper) no random direction misclassifies at a smaller radius "
        "than the adversarial one",
        "; ".join(below_texts),
        "supported if the ratio is at least 1 for every sample of every model, partly if "
        "for some models, not supported if for none",
        _share_verdict(above, high=1.0), names, f"{norm} radius")
    return [b3, b4]
