"""Traits read off the layers, and the contrast rule per branch on constructed rows."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torchvision
from torch import nn

from localprops.models import gtsrb_nets
from localprops.report import families
from localprops.report.scorecard import Verdict


@pytest.mark.parametrize("name, expected", [
    ("gtsrb-ciresan", dict(residual=False, bn=False, inception=False, maxpool=True)),
    ("gtsrb-alexnet", dict(residual=False, bn=False, inception=False, maxpool=True)),
    ("gtsrb-vgg11bn", dict(residual=False, bn=True, inception=False, maxpool=True)),
    ("gtsrb-googlenet", dict(residual=False, bn=True, inception=True, maxpool=True)),
    ("gtsrb-resnet18", dict(residual=True, bn=True, inception=False, maxpool=True)),
])
def test_traits_are_read_off_the_layers(name, expected):
    traits = families.architecture_traits(gtsrb_nets.build(name))
    assert traits == {"residual": expected["residual"], "batch norm": expected["bn"],
                      "inception": expected["inception"], "max pooling": expected["maxpool"]}


def test_a_net_without_pooling_or_norm_has_no_traits():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    assert not any(families.architecture_traits(plain).values())
    assert families.architecture_traits(torchvision.models.resnet18())["residual"]


def row(intervals: dict[str, tuple[float, float]], claim: str = "C1") -> Verdict:
    return Verdict(claim, "paper", "measured", "rule", "supported", setting="l2; probability",
                   models={m: {"estimate": sum(iv) / 2, "interval": list(iv),
                               "outcome": "pass"} for m, iv in intervals.items()})


TRAITS = {"a": {"batch norm": True}, "b": {"batch norm": True},
          "c": {"batch norm": False}, "d": {"batch norm": False}}


def only_bn(contrasts):
    return [c for c in contrasts if c.trait == "batch norm"]


def test_contrast_higher_with_the_trait():
    (c,) = only_bn(families.trait_contrasts(
        [row({"a": (0.8, 0.9), "b": (0.7, 0.95), "c": (0.1, 0.5), "d": (0.3, 0.6)})], TRAITS))
    assert c.relation == "higher with" and c.with_trait == ("a", "b")
    assert "intervals separate" in c.sentence()


def test_contrast_lower_with_the_trait():
    (c,) = only_bn(families.trait_contrasts(
        [row({"a": (0.1, 0.2), "b": (0.0, 0.3), "c": (0.5, 0.9), "d": (0.4, 0.6)})], TRAITS))
    assert c.relation == "lower with"


def test_contrast_overlap_when_one_pair_of_intervals_meets():
    (c,) = only_bn(families.trait_contrasts(
        [row({"a": (0.8, 0.9), "b": (0.55, 0.95), "c": (0.1, 0.5), "d": (0.3, 0.6)})], TRAITS))
    assert c.relation == "overlap" and "overlap" in c.sentence()


def test_no_contrast_when_a_side_is_empty_or_lacks_an_interval():
    rows = [row({"a": (0.8, 0.9), "b": (0.7, 0.95)})]
    assert families.trait_contrasts(rows, TRAITS) == []
    missing = row({"a": (0.8, 0.9), "c": (0.1, 0.2)})
    missing.models["c"]["interval"] = [None, None]
    assert families.trait_contrasts([missing], TRAITS) == []


def test_models_outside_the_compared_set_are_left_out():
    (c,) = only_bn(families.trait_contrasts(
        [row({"a": (0.8, 0.9), "c": (0.1, 0.5), "imagenet-net": (0.85, 0.99)})],
        {k: TRAITS[k] for k in ("a", "c")}))
    assert c.with_trait == ("a",) and c.without == ("c",)


def test_per_model_outcomes_has_one_cell_per_model():
    table = families.per_model_outcomes([row({"a": (0.8, 0.9)})], ["a", "c"])
    assert table == [{"row": "C1 (l2, probability)", "a": "pass 0.85 [0.8, 0.9]", "c": ""}]


def prepared(name: str, dataset: str = "gtsrb"):
    return SimpleNamespace(spec=SimpleNamespace(name=name, dataset=dataset,
                                                model=gtsrb_nets.build(name)))


def test_across_families_markdown_names_separating_rows():
    rows = [row({"gtsrb-ciresan": (0.1, 0.2), "gtsrb-resnet18": (0.8, 0.9)})]
    text = families.across_families(rows, [prepared("gtsrb-ciresan"),
                                           prepared("gtsrb-resnet18")])
    assert "| gtsrb-resnet18 | yes | yes | no | yes |" in text
    assert "C1 (l2, probability), residual: higher with" in text
    # a trait every compared net shares (or none has) cannot separate anything
    untestable = text.split("Not testable here")[1].split(". ")[0]
    assert "inception (none has it)" in untestable and "max pooling (all have it)" in untestable
    assert "residual" not in untestable and "batch norm" not in untestable


def test_across_families_leaves_out_rows_about_other_nets():
    rows = [row({"gtsrb-ciresan": (0.1, 0.2), "gtsrb-resnet18": (0.8, 0.9)}),
            row({"gtsrb-ciresan-noise": (0.3, 0.4)}, claim="L2")]
    text = families.across_families(rows, [prepared("gtsrb-ciresan"),
                                           prepared("gtsrb-resnet18")])
    assert "| C1 (l2, probability) |" in text and "L2" not in text


def test_across_families_says_when_everything_overlaps_and_when_too_few_nets():
    rows = [row({"gtsrb-ciresan": (0.1, 0.9), "gtsrb-resnet18": (0.2, 0.8)})]
    text = families.across_families(rows, [prepared("gtsrb-ciresan"),
                                           prepared("gtsrb-resnet18")])
    assert "No trait separates its two groups" in text
    assert "no two nets can be told apart" in text
    assert "- C1 (l2, probability): all pass" in text
    assert "Fewer than two" in families.across_families(rows, [prepared("gtsrb-ciresan")])


def test_pairs_that_differ_are_named_even_when_no_trait_separates():
    rows = [row({"a": (0.8, 0.9), "b": (0.1, 0.3), "c": (0.5, 0.85), "d": (0.2, 0.6)})]
    assert families.pairwise_separations(rows, ["a", "b", "c", "d"]) == [
        ("C1 (l2, probability)", "a", ["b", "d"]), ("C1 (l2, probability)", "c", ["b"])]
    assert not [c for c in only_bn(families.trait_contrasts(rows, TRAITS))
                if c.relation != "overlap"]


def test_common_outcomes_need_the_same_outcome_from_every_net():
    same = row({"a": (0.8, 0.9), "b": (0.7, 0.95)})
    mixed = row({"a": (0.8, 0.9), "b": (0.1, 0.2)}, claim="C2")
    mixed.models["b"]["outcome"] = "fail"
    assert families.common_outcomes([same, mixed], ["a", "b"]) == [
        ("C1 (l2, probability)", "pass")]
    assert families.common_outcomes([same], ["a"]) == []     # one net is no agreement


def test_logical_rows_are_left_out_of_the_comparison():
    logical = Verdict("C6", "paper", "measured", "rule", "logical", setting="l2; probability",
                      models={"gtsrb-ciresan": {"interval": [0.0, 0.1], "outcome": "undecided"},
                              "gtsrb-resnet18": {"interval": [0.5, 0.6], "outcome": "undecided"}})
    text = families.across_families([logical], [prepared("gtsrb-ciresan"),
                                                prepared("gtsrb-resnet18")])
    assert "C6" not in text.split("Left out")[0] and "Left out: 1 row(s)" in text
