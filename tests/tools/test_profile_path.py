"""A profile given by path (``--profile my.yml``): a scratch build named by its stem."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from localprops.models import zoo
from localprops.tools import build as lpbuild
from localprops.tools.profiles import is_profile_path, load_profile


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    cell = new_code_cell("models = ['gtsrb-ciresan']\nT = 1")
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[cell]), root / "notebooks" / "02_isotropy.ipynb")
    (root / "profiles").mkdir()
    for name in ("ci", "default"):
        (root / "profiles" / f"{name}.yml").write_text("common:\n  T: 2\n")
    return root


@pytest.mark.parametrize("value, expected", [
    ("ci", False), ("default", False), ("my.yml", True), ("a/b", True),
    ("studies/my.yaml", True), (Path("x"), True)])
def test_is_profile_path(value, expected):
    assert is_profile_path(value) is expected


def test_path_profile_is_a_scratch_build_named_by_its_stem(repo, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "my.yml").write_text(
        "02_isotropy:\n  models: ['mymodel:build']\n  T: 3\n")
    monkeypatch.chdir(tmp_path / "work")
    plan = lpbuild.plan_build("my.yml", root=repo)
    assert plan.profile.name == "my"
    assert plan.profile.path == (tmp_path / "work" / "my.yml").resolve()
    assert plan.source_dir == repo / "_build" / "src-my" and not plan.in_place
    assert plan.profile.parameters_for("02_isotropy", ["models", "T", "profile"]) == {
        "models": ["mymodel:build"], "T": 3, "profile": "my"}
    with pytest.raises(lpbuild.BuildError, match="refusing"):
        lpbuild.plan_build("my.yml", root=repo, output_dir=repo)


def test_only_the_repositorys_default_writes_book(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)
    assert lpbuild.plan_build("profiles/default.yml", root=repo).in_place
    assert lpbuild.plan_build("default", root=repo).in_place
    assert not lpbuild.plan_build("profiles/ci.yml", root=repo).in_place
    (tmp_path / "default.yml").write_text("common:\n  T: 1\n")
    with pytest.raises(lpbuild.BuildError, match="rename the file"):
        lpbuild.plan_build(str(tmp_path / "default.yml"), root=repo)


def test_missing_profile_file(repo):
    with pytest.raises(lpbuild.ProfileError, match="does not exist"):
        lpbuild.plan_build("nowhere/my.yml", root=repo)
    assert lpbuild.main(["--profile", "nowhere/my.yml", "--root", str(repo),
                         "--skip-execute", "--skip-html"]) == 1


def test_build_exports_the_profiles_folder_for_module_imports(tmp_path, monkeypatch):
    (tmp_path / "my.yml").write_text("common: {}\n")
    monkeypatch.setenv(zoo.MODULE_PATH_ENV, "/somewhere")
    monkeypatch.chdir(tmp_path.parent)
    lpbuild._export_module_path(load_profile(tmp_path / "my.yml"))
    assert os.environ[zoo.MODULE_PATH_ENV].split(os.pathsep) == [
        str(tmp_path.resolve()), str(tmp_path.parent), "/somewhere"]
