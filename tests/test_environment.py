"""environment.yml (conda, for Binder) in step with constraints.txt and pyproject.toml.

Three descriptions of one environment: pyproject.toml names the direct
dependencies, constraints.txt pins the versions `make` installs, and
environment.yml is what Binder and conda users install. These tests fail
when they drift apart. Names are compared normalised (PEP 503: case, ``_``,
``-`` and ``.`` alike).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before Python 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

#: Direct dependencies that environment.yml leaves out, and why: ruff is the
#: linter run by `make lint` (CI); Binder and conda users, who read and run
#: the book, never lint. (The rest of the `test` extra stays in: pytest and the
#: reference implementations let a Binder user run the tests.)
NOT_IN_ENVIRONMENT = {"ruff"}

# a conda match spec: name, then optionally a version ("=1.2", "==1.2", ">=1.2"
# or " 1.2"), then optionally a build string
_CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:(==|=|>=|<=|>|<|!=|\s)\s*([^\s=,]+))?")


def _pinned(requirement: Requirement) -> str | None:
    """The version of an exact ``==`` pin, else None."""
    specs = list(requirement.specifier)
    if len(specs) == 1 and specs[0].operator == "==":
        return specs[0].version
    return None


def constraints() -> dict[str, str]:
    """constraints.txt as {normalised name: pinned version}."""
    pins: dict[str, str] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        version = _pinned(requirement)
        assert version is not None, f"constraints.txt:{number}: {line!r} is not an == pin"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"constraints.txt pins {requirement.name} twice"
        pins[name] = version
    return pins


def environment() -> dict[str, tuple[str, str | None]]:
    """environment.yml as {normalised name: (section, pinned version or None)}."""
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    found: dict[str, tuple[str, str | None]] = {}

    def add(name: str, section: str, version: str | None) -> None:
        key = canonicalize_name(name)
        assert key not in found, (f"environment.yml lists {name} twice "
                                  f"({found[key][0]} and {section})")
        found[key] = (section, version)

    for entry in spec["dependencies"]:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"unexpected section {entry!r} in environment.yml"
            for line in entry["pip"]:
                requirement = Requirement(line)
                add(requirement.name, "pip", _pinned(requirement))
        else:
            match = _CONDA_SPEC.match(str(entry))
            assert match, f"cannot read the conda dependency {entry!r}"
            name, operator, version = match.groups()
            add(name, "conda", version if operator in ("=", "==", " ") else None)
    return found


def direct_dependencies() -> dict[str, str]:
    """pyproject.toml's dependencies and every extra's: {normalised name: where}."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project.get("dependencies", [])}
    groups.update({f"[{extra}]": requirements for extra, requirements
                   in project.get("optional-dependencies", {}).items()})
    return {canonicalize_name(Requirement(line).name): group
            for group, requirements in groups.items() for line in requirements}


def test_pinned_versions_agree_with_constraints():
    pins = constraints()
    wrong = {name: (section, version, pins[name])
             for name, (section, version) in environment().items()
             if version is not None and name in pins and version != pins[name]}
    assert not wrong, ("environment.yml and constraints.txt pin different versions "
                       "(name: section, environment.yml, constraints.txt): "
                       f"{wrong}")


def test_every_constraint_is_pinned_in_the_environment():
    """environment.yml says it has the same pins as constraints.txt: all of them."""
    env = environment()
    missing = sorted(name for name in constraints()
                     if name not in NOT_IN_ENVIRONMENT and env.get(name, (None, None))[1] is None)
    assert not missing, (f"constraints.txt pins {missing}, which environment.yml does not "
                         "pin: add them to its pip section with the same version")


def test_every_direct_dependency_is_in_the_environment():
    env = environment()
    missing = {name: group for name, group in direct_dependencies().items()
               if name not in env and name not in NOT_IN_ENVIRONMENT}
    assert not missing, ("direct dependencies of pyproject.toml missing from "
                         f"environment.yml (name: where declared): {missing}")


def test_left_out_packages_are_still_dependencies():
    """NOT_IN_ENVIRONMENT names real dependencies (a stale entry would hide one)."""
    assert NOT_IN_ENVIRONMENT <= direct_dependencies().keys()
    assert not NOT_IN_ENVIRONMENT & environment().keys()
