"""Which code keys a cached unit: the shared layers, the study's modules, the net's definition."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from localprops.core import cache
from localprops.models import gtsrb_nets
from localprops.models.samples import SampleSet
from localprops.studies.runner import run_units


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the package's sources that ``code_version`` reads instead."""
    copy = tmp_path / "localprops"
    shutil.copytree(cache.PACKAGE_DIR, copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pt", "_assets"))
    monkeypatch.setattr(cache, "PACKAGE_DIR", copy)
    return copy


def append_code(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_a_net_definition_does_not_key_every_result(package_copy):
    before = cache.code_version(("scores",))
    for module in cache.DEFINITION_MODULES:
        append_code(package_copy / module, "CHANGED_FOR_THE_TEST = 1")
    assert cache.code_version(("scores",)) == before


def test_a_shared_module_or_the_study_module_keys_the_result(package_copy):
    before = cache.code_version(("scores",))
    append_code(package_copy / "core" / "engine.py", "CHANGED_FOR_THE_TEST = 1")
    after_core = cache.code_version(("scores",))
    assert after_core != before
    append_code(package_copy / "studies" / "scores.py", "CHANGED_FOR_THE_TEST = 1")
    assert cache.code_version(("scores",)) != after_core
    other = cache.code_version(("halfspace",))
    append_code(package_copy / "studies" / "scores.py", "CHANGED_AGAIN = 1")
    assert cache.code_version(("halfspace",)) == other     # another study's module


def test_docstrings_and_comments_do_not_key_the_result(package_copy):
    before = cache.code_version(("scores",))
    append_code(package_copy / "core" / "engine.py", "# a comment only")
    assert cache.code_version(("scores",)) == before


def test_definition_version_is_per_net_and_none_for_other_models(monkeypatch):
    ciresan = gtsrb_nets.definition_version("gtsrb-ciresan")
    resnet = gtsrb_nets.definition_version("gtsrb-resnet18")
    assert ciresan and resnet and ciresan != resnet     # the families' module counts too
    assert gtsrb_nets.definition_version("gtsrb-alexnet") == resnet   # same two modules
    assert gtsrb_nets.definition_version("efficientnet-lite0") is None
    assert gtsrb_nets.definition_version("my-model") is None


def test_definition_version_follows_the_defining_module(tmp_path, monkeypatch):
    families = Path(gtsrb_nets.inspect.getfile(gtsrb_nets.FAMILIES["gtsrb-alexnet"]))
    edited = tmp_path / families.name
    edited.write_text(families.read_text() + "\nCHANGED_FOR_THE_TEST = 1\n")
    before_family = gtsrb_nets.definition_version("gtsrb-alexnet")
    before_ciresan = gtsrb_nets.definition_version("gtsrb-ciresan")
    real_getfile = gtsrb_nets.inspect.getfile
    monkeypatch.setattr(gtsrb_nets.inspect, "getfile",
                        lambda obj: edited if real_getfile(obj) == str(families)
                        else real_getfile(obj))
    assert gtsrb_nets.definition_version("gtsrb-alexnet") != before_family
    assert gtsrb_nets.definition_version("gtsrb-ciresan") == before_ciresan


@pytest.mark.parametrize("model, keyed", [("gtsrb-resnet18", True), ("gtsrb-ciresan", True),
                                          ("efficientnet-lite0", False)])
def test_run_units_keys_own_nets_by_their_definition(tmp_path, model, keyed):
    samples = SampleSet(images=torch.full((1, 3, 4, 4), 100.0), labels=[0], seeds=[1],
                        ids=[0])
    store = cache.ResultCache(tmp_path)
    run_units(samples, lambda i: {"study": "test", "model": model, "i": i},
              lambda i: {"v": np.zeros(1)}, cache=store, desc="test", progress=False,
              study_modules=())
    (path,) = (tmp_path / "test" / model).glob("*.npz")
    with np.load(path) as stored:
        manifest = str(stored["manifest"])
    assert ('"definition"' in manifest) is keyed
    if keyed:
        assert gtsrb_nets.definition_version(model) in manifest
