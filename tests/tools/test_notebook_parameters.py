"""The notebooks' own parameter values are those of the default profile.

A reader who opens ``notebooks/NN_name.ipynb`` and runs it by hand gets the
values of its ``parameters`` cell; the published book (``book/``) was
executed with ``profiles/default.yml``. These tests keep the two in step:
for every notebook and every parameter the default profile gives it (its own
block merged over ``common``, YAML anchors and merge keys resolved by
:func:`localprops.tools.profiles.load_profile`), the notebook's cell must
assign that name, at top level, a literal equal to the profile's value.
A name the notebook's own block sets that the cell does not declare fails
as well (the build would refuse it). A ``common`` name that a notebook does
not declare is not its parameter and is passed over, as the build does.

Nothing is executed: the cell is parsed with :mod:`ast`, and the names are
cross-checked with :func:`localprops.tools.build.declared_parameters`, the
papermill view the build uses.
"""
from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from localprops.tools.build import declared_parameters, find_notebooks
from localprops.tools.profiles import Profile, load_profile

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = find_notebooks(ROOT)
PROFILE = "default"

#: (notebook stem, name) -> why the notebook's value differs from the profile
#: on purpose. Keep this short: every entry is a place where running a
#: notebook by hand does not reproduce the published page.
DELIBERATELY_DIFFERENT = {
    ("07_explorer", "interactive"):
        "by hand the widgets are wanted; the static site cannot run them",
}

_NOT_A_LITERAL = object()


def cell_values(notebook: Path) -> dict[str, Any]:
    """The top-level ``name = literal`` assignments of the ``parameters`` cell.

    A name assigned something other than a literal maps to a sentinel, so
    that comparing it with a profile value fails with a clear message.
    """
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    tagged = [cell for cell in cells
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, (f"{notebook.name} has {len(tagged)} cells tagged "
                              "'parameters'; it needs exactly one")
    source = "".join(tagged[0]["source"])
    values: dict[str, Any] = {}
    for node in ast.parse(source, filename=f"{notebook.name}:parameters").body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        try:
            literal = ast.literal_eval(value)
        except ValueError:
            literal = _NOT_A_LITERAL
        for target in targets:
            if isinstance(target, ast.Name):
                values[target.id] = literal
    return values


def same(a: Any, b: Any) -> bool:
    """Equal as parameter values: numbers as numbers (1 == 1.0, but a bool is
    not a number), sequences element by element (list or tuple), mappings key
    by key."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def differences(stem: str, values: dict[str, Any], profile: Profile,
                exempt: dict[tuple[str, str], str] | None = None) -> list[str]:
    """What stands between a parameters cell and the profile, one line each."""
    exempt = DELIBERATELY_DIFFERENT if exempt is None else exempt
    problems = []
    own = profile.notebooks.get(stem, {})
    for name in sorted(set(own) - set(values)):
        problems.append(
            f"{name}: profiles/{profile.path.name} sets {name} = {own[name]!r} "
            f"for {stem}, but its parameters cell does not declare {name} "
            "(add it to the cell, or fix the name in the profile)")
    for name, expected in sorted(profile.parameters(stem).items()):
        if name not in values or (stem, name) in exempt:
            continue
        found = values[name]
        if found is _NOT_A_LITERAL:
            problems.append(f"{name}: the parameters cell assigns it an "
                            f"expression, not a literal; the profile says "
                            f"{expected!r}")
        elif not same(found, expected):
            problems.append(f"{name}: the notebook has {found!r} "
                            f"({type(found).__name__}), profiles/"
                            f"{profile.path.name} has {expected!r} "
                            f"({type(expected).__name__})")
    return problems


@pytest.fixture(scope="module")
def profile() -> Profile:
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # a block for no notebook fails
        return load_profile(PROFILE, notebooks=[nb.stem for nb in NOTEBOOKS])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda nb: nb.stem)
def test_parameters_cell_matches_default_profile(notebook: Path,
                                                 profile: Profile) -> None:
    values = cell_values(notebook)
    declared = set(declared_parameters(notebook))
    assert declared == set(values), (
        f"{notebook.name}: papermill sees the parameters {sorted(declared)}, "
        f"the cell's top-level assignments are {sorted(values)}")
    problems = differences(notebook.stem, values, profile)
    assert not problems, (
        f"{notebook.name}'s parameters cell differs from profiles/"
        f"{PROFILE}.yml (a reader running it by hand would not get the "
        "published book's sizes):\n  " + "\n  ".join(problems))


def test_exemptions_are_still_needed(profile: Profile) -> None:
    stems = {nb.stem: nb for nb in NOTEBOOKS}
    for (stem, name), why in DELIBERATELY_DIFFERENT.items():
        assert stem in stems, f"exemption for a missing notebook {stem}: {why}"
        values = cell_values(stems[stem])
        expected = profile.parameters(stem)
        assert name in values and name in expected, (
            f"{stem}.{name} is exempt ({why}) but is not a parameter set by "
            "both the cell and the profile; remove the exemption")
        assert not same(values[name], expected[name]), (
            f"{stem}.{name} now equals the profile; remove its exemption")


def test_same_compares_values_not_spellings() -> None:
    assert same(1, 1.0) and same(1e-3, 0.001)
    assert same([1, 2.0], (1.0, 2)) and same({"a": [1]}, {"a": [1.0]})
    assert not same(True, 1) and not same(0, False) and not same(None, 0)
    assert not same("1", 1) and not same([1, 2], [1, 2, 3])
    assert not same({"a": 1}, {"a": 1, "b": 2})


def test_differences_reports_missing_and_unequal(tmp_path: Path) -> None:
    fake = Profile(name="fake", path=tmp_path / "fake.yml",
                   common={"seed": 0, "unused": 1},
                   notebooks={"01_x": {"T": 4, "typo": 3,
                                       "n": {"gtsrb": 100}}})
    problems = differences("01_x", {"seed": 1, "T": 4.0, "n": {"gtsrb": 10}},
                           fake, exempt={})
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert "typo" in text and "does not declare" in text
    assert "seed: the notebook has 1" in text
    assert "n: the notebook has {'gtsrb': 10}" in text
    assert differences("01_x", {"seed": 0, "T": 4, "typo": 3.0,
                                "n": {"gtsrb": 100.0}}, fake, exempt={}) == []
