"""Where the architecture families differ and where they agree, from a chapter's verdict rows.

The paper studies six ConvNets of different families; the book adds the four
ImageNet families trained on GTSRB (:mod:`localprops.models.gtsrb_families`)
to its two GTSRB nets, so that each claim can be read across architectures
that differ in what the paper's explanations turn on: residual connections,
batch normalisation, inception branches, max pooling, depth.

:func:`architecture_traits` reads those traits off a loaded network's
modules (not off its name). :func:`per_model_outcomes` lays a chapter's
verdict rows out as claim x model, and :func:`trait_contrasts` says, for each
trait and each row, whether the per-model intervals of the nets with the
trait and of those without it **separate** (every interval of one group lies
above every interval of the other) or **overlap**. Only nets trained on the
same data are compared (GTSRB by default): an ImageNet network differs from
them in data, resolution and number of classes at once.

This is a description of a handful of networks, not a test of the trait:
a group holds one to four nets, and the traits go together (here every net
with batch normalisation is also one of torchvision's deeper definitions), so
"separate" says that these nets differ on this row, not why.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

#: The binary traits compared, in display order.
TRAITS = ("residual", "batch norm", "inception", "max pooling")

#: Class names of blocks with an identity (or projection) shortcut.
_RESIDUAL_BLOCKS = ("BasicBlock", "Bottleneck", "InvertedResidual", "MBConvBlock",
                    "DepthwiseSeparableConv", "EdgeResidual")
_INCEPTION_BLOCKS = ("Inception",)


def architecture_traits(model: nn.Module) -> dict[str, bool]:
    """The traits of ``model`` read off its modules' types.

    Residual: a block class of torchvision's or timm's residual families
    (:data:`_RESIDUAL_BLOCKS`); inception: torchvision's ``Inception``
    block; batch norm: any batch-normalisation layer; max pooling: any max
    pooling layer.
    """
    modules = list(model.modules())
    names = {type(m).__name__ for m in modules}
    return {
        "residual": bool(names & set(_RESIDUAL_BLOCKS)),
        "batch norm": any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules),
        "inception": bool(names & set(_INCEPTION_BLOCKS)),
        "max pooling": any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d))
                           for m in modules),
    }


def _models_of(row) -> Mapping[str, Mapping]:
    return row.get("models", {}) if isinstance(row, Mapping) else row.models


def _field(row, name: str):
    return row.get(name, "") if isinstance(row, Mapping) else getattr(row, name)


def _cell(entry: Mapping) -> str:
    estimate, interval = entry.get("estimate"), entry.get("interval")
    if estimate is None:
        return entry.get("outcome", "")
    text = f"{estimate:.3g}"
    if interval and None not in interval:
        text += f" [{interval[0]:.3g}, {interval[1]:.3g}]"
    return f"{entry.get('outcome', '')} {text}".strip()


def _label(row) -> str:
    """A row's claim with its reading (:func:`localprops.report.scorecard.reading`)."""
    from localprops.report.scorecard import reading

    return f"{_field(row, 'claim')} ({reading(_field(row, 'setting'))})"


def per_model_outcomes(rows: Sequence, models: Sequence[str]) -> list[dict[str, str]]:
    """Claim rows x models: each model's outcome, estimate and 95% interval.

    One dict per row, ``{"row": claim (reading), model: cell, ...}``; a model
    missing from a row has an empty cell. For
    :func:`localprops.report.scorecard.as_table`.
    """
    table = []
    for row in rows:
        per_model = _models_of(row)
        table.append({"row": _label(row),
                      **{m: _cell(per_model[m]) if m in per_model else "" for m in models}})
    return table


@dataclass(frozen=True)
class Contrast:
    """One trait on one verdict row: the two groups and whether their intervals separate."""

    row: str
    trait: str
    with_trait: tuple[str, ...]
    without: tuple[str, ...]
    relation: str          # "higher with", "lower with", "overlap"

    def sentence(self) -> str:
        """One line for the chapter."""
        groups = f"{', '.join(self.with_trait)} against {', '.join(self.without)}"
        if self.relation == "overlap":
            return f"{self.row}, {self.trait}: the intervals overlap ({groups})"
        return f"{self.row}, {self.trait}: {self.relation} ({groups}; intervals separate)"


def _intervals(row, models) -> dict[str, tuple[float, float]]:
    """``model -> interval`` of the row's entries for ``models`` that have a finite one."""
    per_model = _models_of(row)
    return {m: per_model[m]["interval"] for m in models
            if m in per_model and per_model[m].get("interval")
            and None not in per_model[m]["interval"]}


def trait_contrasts(rows: Sequence, traits: Mapping[str, Mapping[str, bool]]
                    ) -> list[Contrast]:
    """For every row and trait with nets on both sides: separate or overlapping intervals.

    Parameters
    ----------
    rows : verdict rows (:class:`~localprops.report.scorecard.Verdict` or
        their dicts) whose ``models`` entries carry ``estimate`` and
        ``interval``.
    traits : model name -> :func:`architecture_traits`, for the nets to
        compare (the others in a row are left out).

    Returns
    -------
    list of Contrast. "higher with": the lowest interval bound among the nets
    with the trait lies above the highest bound among those without; "lower
    with" the converse; otherwise "overlap". A row or trait where one side
    has no net with an interval gives no contrast.
    """
    out = []
    for row in rows:
        label = _label(row)
        intervals = _intervals(row, traits)
        for trait in TRAITS:
            have = tuple(m for m in intervals if traits[m].get(trait))
            lack = tuple(m for m in intervals if not traits[m].get(trait))
            if not have or not lack:
                continue
            low_have = min(intervals[m][0] for m in have)
            high_have = max(intervals[m][1] for m in have)
            low_lack = min(intervals[m][0] for m in lack)
            high_lack = max(intervals[m][1] for m in lack)
            relation = ("higher with" if low_have > high_lack else
                        "lower with" if high_have < low_lack else "overlap")
            out.append(Contrast(label, trait, have, lack, relation))
    return out


def pairwise_separations(rows: Sequence, models: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """Per row, each net whose interval lies wholly above other nets' intervals.

    Returns ``(row label, net, [nets below it])`` triples, in row order; a
    net whose interval overlaps every other's gives none. Unlike
    :func:`trait_contrasts`, which compares groups, this finds two nets that
    differ even when their traits' groups overlap.
    """
    out = []
    for row in rows:
        intervals = _intervals(row, models)
        for net, (low, _) in intervals.items():
            below = [m for m, (_, high) in intervals.items() if m != net and high < low]
            if below:
                out.append((_label(row), net, below))
    return out


def common_outcomes(rows: Sequence, models: Sequence[str]) -> list[tuple[str, str]]:
    """Rows on which every compared net has the same outcome: ``(row label, outcome)``."""
    out = []
    for row in rows:
        per_model = _models_of(row)
        outcomes = {per_model[m].get("outcome") for m in models if m in per_model}
        if len(outcomes) == 1 and None not in outcomes and \
                sum(m in per_model for m in models) >= 2:
            out.append((_label(row), outcomes.pop()))
    return out


def across_families(rows: Sequence, prepared: Sequence, dataset: str = "gtsrb") -> str:
    """Markdown for a chapter: the nets' traits, their outcomes per row, where they differ.

    Parameters
    ----------
    rows : the chapter's verdict rows; rows whose verdict is *logical* (shown,
        not counted: true by construction or an interpretation) are left out.
    prepared : the chapter's :class:`localprops.models.samples.Prepared`
        models (their ``spec`` gives the network and its dataset).
    dataset : only the nets trained on this dataset are compared.

    The text says, in this order: whether a trait separates its two groups
    (:func:`trait_contrasts`); which pairs of nets differ on a row whatever
    their traits (:func:`pairwise_separations`); and on which rows every net
    has the same outcome (:func:`common_outcomes`). Overlapping group ranges
    alone do not show that the nets agree.
    """
    specs = [p.spec for p in prepared if p.spec.dataset == dataset]
    if len(specs) < 2:
        return (f"*Fewer than two {dataset} networks ran in this build: nothing to "
                "compare across families.*")
    traits = {s.name: architecture_traits(s.model) for s in specs}
    nets = list(traits)
    # rows about other nets only (e.g. an intervention on one architecture) say nothing here
    rows = [r for r in rows if set(_models_of(r)) & set(nets)]
    logical = [r for r in rows if _field(r, "verdict") == "logical"]
    rows = [r for r in rows if _field(r, "verdict") != "logical"]
    head = "| net | " + " | ".join(TRAITS) + " |\n|---|" + "---|" * len(TRAITS)
    lines = [head] + [f"| {name} | " + " | ".join("yes" if t[k] else "no" for k in TRAITS)
                      + " |" for name, t in traits.items()]
    from localprops.report.scorecard import as_table

    table = as_table(per_model_outcomes(rows, nets), columns=["row", *nets])
    contrasts = trait_contrasts(rows, traits)
    separate = [c for c in contrasts if c.relation != "overlap"]
    text = ["**The networks compared** (read off their layers):", "", *lines, "",
            "**Each net's outcome per row** (estimate and 95% interval of the row's "
            "statistic; pass, fail or undecided by the row's rule):", "",
            table, ""]
    if logical:
        text += [f"Left out: {len(logical)} row(s) whose verdict is *logical*: shown and "
                 "not counted (true by construction, or an interpretation that follows from "
                 "another row), so not compared across nets here.", ""]
    text.append("**By trait.** ")
    shared = [t for t in TRAITS if len({bool(traits[n].get(t)) for n in nets}) == 1]
    if shared:
        text[-1] += ("Not testable here, every net compared being alike in it: "
                     + ", ".join(f"{t} ({'all have it' if traits[nets[0]].get(t) else 'none has it'})"
                                 for t in shared) + ". ")
    if not contrasts:
        text[-1] += "No row has nets on both sides of a trait with an interval."
    elif not separate:
        text[-1] += (f"No trait separates its two groups: on all {len(contrasts)} "
                     "row-and-trait comparisons some interval of the nets with the trait "
                     "overlaps one of the nets without it. That does not make the nets "
                     "alike; the pairs below can still differ.")
    else:
        text[-1] += (f"{len(separate)} of {len(contrasts)} row-and-trait comparisons "
                     "separate (every interval on one side above every interval on the "
                     "other); the rest overlap:")
        text.append("")
        text += [f"- {c.sentence()}" for c in separate]
    pairs = pairwise_separations(rows, nets)
    text += ["", "**Where the nets differ** (pairs whose 95% intervals do not overlap on "
             "a row, whatever their traits):"]
    if pairs:
        text.append("")
        text += [f"- {label}: {net} above {', '.join(below)}" for label, net, below in pairs]
    else:
        text[-1] += " none: at these sample sizes no two nets can be told apart on any row."
    same = common_outcomes(rows, nets)
    text += ["", "**Where they agree** (every net the same outcome):"]
    if same:
        text.append("")
        text += [f"- {label}: all {outcome}" for label, outcome in same]
    else:
        text[-1] += " on no row."
    return "\n".join(text)
