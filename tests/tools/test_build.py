"""Tests of the book build: profiles, parameter selection, execution, site.

The end-to-end test builds the whole book with the ``ci`` profile into a
temporary folder, once per session (``tests/test_site.py`` reuses that site),
and checks that the committed ``book/`` is left alone.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from localprops.tools import build as lpbuild
from localprops.tools.profiles import (
    Profile,
    ProfileError,
    ProfileWarning,
    available_profiles,
    load_profile,
)

ROOT = Path(__file__).resolve().parents[2]
MATHJAX = ROOT / "_build" / "vendor" / "mathjax" / "_static" / "mathjax"
SITE_ENV = "LOCALPROPS_SITE_DIR"


# ------------------------------------------------------------ shared helpers


def ensure_mathjax() -> None:
    """Vendor MathJax (scripts/fetch_mathjax.sh) if it is not there yet."""
    if (MATHJAX / "tex-mml-chtml.js").is_file():
        return
    script = ROOT / "scripts" / "fetch_mathjax.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        pytest.fail("MathJax is not vendored and scripts/fetch_mathjax.sh "
                    f"failed (it needs npm):\n{result.stderr}")


def build_ci_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the ci site once per session and return its HTML folder.

    ``tests/test_site.py`` calls the same code on the same folder, so the
    site is built once whichever test runs first.
    """
    base = tmp_path_factory.getbasetemp() / "ci-book"
    html = base / "html"
    if (html / lpbuild.STAMP).is_file():
        return html
    ensure_mathjax()
    lpbuild.build_book("ci", output_dir=base / "src", html_dir=html)
    return html


def tree_digest(folder: Path) -> dict[str, str]:
    """Return {relative path: sha256} of every file below ``folder``."""
    return {path.relative_to(folder).as_posix():
            hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


def write_notebook(path: Path, parameters: str, *body: str) -> Path:
    """Write a notebook with a ``parameters`` cell and code cells."""
    cell = new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# A test page"), cell,
                             *(new_code_cell(code) for code in body)])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# ------------------------------------------------------------------ profiles


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "ci.yml").write_text(
        "common:\n  seed: 1\n  T: 2\n  shared_only: x\n"
        "01_iso:\n  T: 5\n  radii: [1, 2]\n"
        "02_sym: {}\n", encoding="utf-8")
    (folder / "default.yml").write_text("common:\n  seed: 0\n", "utf-8")
    return folder


def test_profile_merges_common_and_notebook_block(profiles_dir):
    profile = load_profile("ci", profiles_dir)
    assert profile.name == "ci"
    assert profile.parameters("01_iso") == {
        "seed": 1, "T": 5, "shared_only": "x", "radii": [1, 2]}
    assert profile.parameters("02_sym.ipynb") == {
        "seed": 1, "T": 2, "shared_only": "x"}
    # a notebook without a block gets common alone
    assert profile.parameters("03_other") == profile.common


def test_parameters_are_filtered_by_the_declared_names(profiles_dir):
    profile = load_profile("ci", profiles_dir)
    assert profile.parameters_for("01_iso", ["seed", "T", "radii"]) == {
        "seed": 1, "T": 5, "radii": [1, 2]}
    # `profile` is injected only where the parameters cell declares it
    assert profile.parameters_for("02_sym", ["T", "profile"]) == {
        "T": 2, "profile": "ci"}
    assert profile.parameters_for("02_sym", []) == {}


def test_a_notebook_key_its_notebook_does_not_declare_is_an_error(
        profiles_dir):
    profile = load_profile("ci", profiles_dir)
    with pytest.raises(ProfileError, match=r"sets \['radii'\] for 01_iso.*"
                                           r"defines only: T, seed"):
        profile.parameters_for("01_iso", ["seed", "T"])


def test_unknown_profile_lists_the_available_ones(profiles_dir):
    assert available_profiles(profiles_dir) == ["ci", "default"]
    with pytest.raises(ProfileError, match=r"unknown profile 'paper'; "
                                           r"available: ci, default"):
        load_profile("paper", profiles_dir)


def test_profile_by_path(profiles_dir):
    profile = load_profile(profiles_dir / "default.yml")
    assert profile == Profile("default", profiles_dir / "default.yml",
                              {"seed": 0}, {})
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(profiles_dir / "nope.yml")


@pytest.mark.parametrize("text, message", [
    ("common: [1, 2\n", "not valid YAML"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("common: 3\n", "`common` must be a mapping"),
    ("01_iso:\n  2x: 1\n", "not a Python identifier"),
    ("01_iso:\n  class: 1\n", "not a Python identifier"),
    ("common:\n  profile: ci\n", "sets `profile`"),
    ("12: {T: 1}\n", "top-level key 12"),
])
def test_malformed_profiles_raise_clear_errors(tmp_path, text, message):
    (tmp_path / "bad.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError, match=message):
        load_profile("bad", tmp_path)


def test_empty_profile_is_valid(tmp_path):
    (tmp_path / "empty.yml").write_text("# nothing yet\n", encoding="utf-8")
    assert load_profile("empty", tmp_path).parameters("01_iso") == {}


def test_unknown_notebook_stems_warn(profiles_dir):
    with pytest.warns(ProfileWarning, match=r"\['02_sym'\], which match no"):
        load_profile("ci", profiles_dir, notebooks=["01_iso", "03_new"])


# ------------------------------------------ the repository's own contract


def repo_notebooks() -> list[Path]:
    return lpbuild.find_notebooks(ROOT)


def test_repository_profiles_fit_the_notebooks(recwarn):
    """Every profile loads, and every notebook accepts what it is given."""
    stems = [nb.stem for nb in repo_notebooks()]
    assert {"ci", "default", "paper"} <= set(available_profiles())
    for name in ("ci", "default", "paper"):
        profile = load_profile(name, notebooks=stems)
        for notebook in repo_notebooks():
            declared = lpbuild.declared_parameters(notebook)
            parameters = profile.parameters_for(notebook.stem, declared)
            if "profile" in declared:
                assert parameters["profile"] == name
    assert not [w for w in recwarn if issubclass(w.category, ProfileWarning)]


@pytest.mark.parametrize("notebook", repo_notebooks(), ids=lambda p: p.stem)
def test_source_notebooks_are_stored_without_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    tagged = [c for c in nb.cells
              if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    stored = [i for i, c in enumerate(nb.cells)
              if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"cells {stored} hold outputs: clear them"


def test_toc_pages_exist():
    entries = lpbuild.toc_files(ROOT / "_toc.yml")
    assert entries[0] == "book/intro" and entries[-1] == "book/references"
    stems = {nb.stem for nb in repo_notebooks()}
    for entry in entries:
        name = Path(entry).name
        assert (ROOT / f"{entry}.md").is_file() or name in stems, entry


def test_find_notebooks_patterns():
    everything = lpbuild.find_notebooks(ROOT)
    assert lpbuild.find_notebooks(ROOT, "00_*") == [
        ROOT / "notebooks" / "00_getting_started.ipynb"]
    assert lpbuild.find_notebooks(ROOT, "00_getting_started.ipynb,0*") == [
        nb for nb in everything if nb.name.startswith("0")]
    with pytest.raises(lpbuild.BuildError, match="matches no notebook"):
        lpbuild.find_notebooks(ROOT, "99_nothing")


def test_non_default_profiles_never_write_into_book():
    plan = lpbuild.plan_build("ci")
    assert plan.source_dir == ROOT / "_build" / "src-ci"
    assert plan.html_dir == ROOT / "_build" / "html"
    assert lpbuild.plan_build("default").in_place
    with pytest.raises(lpbuild.BuildError, match="refusing"):
        lpbuild.plan_build("ci", output_dir=ROOT)


def test_unknown_profile_on_the_command_line_exits_1(capsys):
    assert lpbuild.main(["--profile", "nope", "--skip-execute",
                         "--skip-html"]) == 1


# ----------------------------------------------------------- small helpers


def test_tidy_removes_run_specific_metadata():
    nb = new_notebook(cells=[new_code_cell("print(1)")])
    nb.cells[0].metadata.update(
        tags=["injected-parameters"], papermill={"duration": 1.0},
        execution={"iopub.status.idle": "2026-01-01T00:00:00"})
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="True"),
        nbformat.v4.new_output("stream", name="stdout", text="\n"),
        nbformat.v4.new_output("stream", name="stderr", text="w\n")]
    nb.metadata["papermill"] = {"parameters": {"T": 1}, "duration": 3.0,
                                "input_path": "/abs/x.ipynb",
                                "output_path": "/abs/y.ipynb"}
    lpbuild._tidy(nb, "ci", "notebooks/x.ipynb")
    cell = nb.cells[0]
    assert cell.id == "injected-parameters"
    assert "papermill" not in cell.metadata
    assert "execution" not in cell.metadata
    assert [o["text"] for o in cell.outputs] == ["True\n", "w\n"]
    assert nb.metadata["papermill"] == {"parameters": {"T": 1},
                                        "input_path": "notebooks/x.ipynb"}
    assert nb.metadata["localprops"] == {"profile": "ci"}


def load_site_extension():
    path = ROOT / "book" / "_ext" / "localprops_site.py"
    spec = importlib.util.spec_from_file_location("localprops_site", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_extension_drops_duplicate_scripts():
    from sphinx.builders.html._assets import _JavaScript

    ext = load_site_extension()
    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe),
               _JavaScript("", body=thebe), _JavaScript("_static/a.js"),
               _JavaScript("_static/a.js", defer="defer")]
    context = {"script_files": scripts}
    ext._dedupe_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[1], scripts[4]]


def test_site_extension_requires_vendored_mathjax(tmp_path, monkeypatch):
    from sphinx.errors import ExtensionError

    ext = load_site_extension()
    app = SimpleNamespace(confdir=str(tmp_path))
    config = SimpleNamespace(mathjax_path="mathjax/tex-mml-chtml.js",
                             html_extra_path=["vendor"], html_static_path=[])
    monkeypatch.delenv("LOCALPROPS_MATHJAX_CDN", raising=False)
    with pytest.raises(ExtensionError, match="scripts/fetch_mathjax.sh"):
        ext._check_local_mathjax(app, config)
    # the files in place: no error
    target = tmp_path / "vendor" / "_static" / "mathjax" / "tex-mml-chtml.js"
    target.parent.mkdir(parents=True)
    target.write_text("// MathJax", encoding="utf-8")
    ext._check_local_mathjax(app, config)
    # missing again, with the explicit opt-in: falls back to the CDN
    target.unlink()
    monkeypatch.setenv("LOCALPROPS_MATHJAX_CDN", "1")
    ext._check_local_mathjax(app, config)
    assert config.mathjax_path.startswith("https://")


def test_build_checks_mathjax_before_executing(tmp_path, monkeypatch):
    (tmp_path / "_config.yml").write_text(
        "sphinx:\n  config:\n    mathjax_path: mathjax/tex-mml-chtml.js\n"
        "    html_extra_path: [vendor]\n", encoding="utf-8")
    monkeypatch.delenv("LOCALPROPS_MATHJAX_CDN", raising=False)
    with pytest.raises(lpbuild.BuildError, match="fetch_mathjax.sh"):
        lpbuild.check_mathjax(tmp_path)
    script = tmp_path / "vendor" / "_static" / "mathjax" / "tex-mml-chtml.js"
    script.parent.mkdir(parents=True)
    script.write_text("// MathJax", encoding="utf-8")
    lpbuild.check_mathjax(tmp_path)


# ----------------------------------------------------------------- execution


@pytest.fixture
def mini_repo(tmp_path: Path) -> Path:
    """A repository with two notebooks, the first of which fails."""
    root = tmp_path / "repo"
    write_notebook(root / "notebooks" / "00_fails.ipynb", "T = 1",
                   "raise ValueError(f'broken with T={T}')")
    write_notebook(
        root / "notebooks" / "01_works.ipynb", "T = 1\nprofile = 'default'",
        "import os, sys\n"
        "open('where.txt', 'w').write(sys.executable + '\\n' + os.getcwd())",
        "print(T, profile)")
    (root / "profiles").mkdir()
    (root / "profiles" / "ci.yml").write_text(
        "common:\n  T: 3\n  unused: 1\n", encoding="utf-8")
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n", encoding="utf-8")
    (root / "_config.yml").write_text("title: mini\n", encoding="utf-8")
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        "  - file: book/00_fails\n  - file: book/01_works\n", "utf-8")
    return root


@pytest.mark.slow
def test_failing_notebook_fails_the_build_after_the_others_ran(mini_repo):
    plan = lpbuild.plan_build("ci", root=mini_repo)
    with pytest.raises(lpbuild.BuildError) as caught:
        lpbuild.build(plan, html=False)
    message = str(caught.value)
    assert "1 notebook(s) failed" in message
    assert "00_fails.ipynb" in message
    assert "ValueError: broken with T=3" in message
    book = plan.source_dir / "book"
    # the failure left no executed copy; its partial output is kept
    assert not (book / "00_fails.ipynb").exists()
    partial = plan.source_dir / "_build" / "papermill" / "00_fails.ipynb"
    assert partial.exists()
    # the other notebook ran in this interpreter, in notebooks/, with `ci`
    executable, cwd = (mini_repo / "notebooks" / "where.txt").read_text(
        ).splitlines()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(cwd).resolve() == (mini_repo / "notebooks").resolve()
    executed = nbformat.read(book / "01_works.ipynb", as_version=4)
    assert executed.metadata.papermill["parameters"] == {"T": 3,
                                                          "profile": "ci"}
    assert executed.cells[-1].outputs[0]["text"] == "3 ci\n"


@pytest.mark.slow
def test_fail_fast_stops_at_the_first_failure(mini_repo):
    plan = lpbuild.plan_build("ci", root=mini_repo)
    with pytest.raises(lpbuild.BuildError, match="00_fails"):
        lpbuild.build(plan, html=False, fail_fast=True)
    assert not (plan.source_dir / "book" / "01_works.ipynb").exists()


def test_notebook_without_parameters_cell_is_rejected(tmp_path):
    path = tmp_path / "00_x.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), path)
    with pytest.raises(lpbuild.BuildError,
                       match="no cell tagged 'parameters'"):
        lpbuild.declared_parameters(path)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="session")
def ci_build(tmp_path_factory):
    """The ci site built once, with digests of book/ before and after."""
    if os.environ.get(SITE_ENV):
        pytest.skip(f"{SITE_ENV} is set: the tests use that site instead of "
                    "building one (unset it to test the build itself)")
    before = tree_digest(ROOT / "book")
    html = build_ci_site(tmp_path_factory)
    return SimpleNamespace(html=html, source=html.parent / "src",
                           before=before, after=tree_digest(ROOT / "book"))


@pytest.mark.slow
def test_ci_build_renders_every_toc_page(ci_build):
    html = ci_build.html
    stamp = json.loads((html / lpbuild.STAMP).read_text("utf-8"))
    assert stamp["profile"] == "ci"
    assert all(nb["status"] == "ok" for nb in stamp["notebooks"].values())
    assert (html / "index.html").is_file()
    for entry in lpbuild.toc_files(ROOT / "_toc.yml"):
        assert (html / f"{entry}.html").is_file(), entry
    # MathJax is served by the site itself
    assert (html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    page = (html / "book" / "intro.html").read_text("utf-8")
    assert 'src="../_static/mathjax/tex-mml-chtml.js' in page
    assert page.count("THEBE_JS_URL") <= 1


@pytest.mark.slow
def test_ci_build_executes_with_ci_parameters(ci_build):
    executed = nbformat.read(ci_build.source / "book" /
                             "00_getting_started.ipynb", as_version=4)
    assert executed.metadata.localprops == {"profile": "ci"}
    assert executed.metadata.papermill["parameters"]["profile"] == "ci"
    images = [o for c in executed.cells if c.cell_type == "code"
              for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the getting-started histogram is missing"


@pytest.mark.slow
def test_ci_build_leaves_book_alone(ci_build):
    assert ci_build.after == ci_build.before


# ----------------------------------------------------------------- scorecard


@pytest.fixture
def verdict_store(tmp_path, monkeypatch, mini_repo):
    """The verdict cache under tmp_path; build ids hash mini_repo's notebooks and profiles."""
    from localprops.core import cache

    store = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(store))
    monkeypatch.setattr(cache, "package_code_version", lambda: "code-v1")
    monkeypatch.setattr(cache, "checkout_root", lambda: mini_repo)
    return store


def scorecard_rows(*claims: str) -> list:
    from localprops.report.scorecard import Verdict

    return [Verdict(claim=claim, paper="p", measured="m", rule="r", verdict="supported",
                    models={"a": {"samples": 30, "classes": 3}}, estimate=0.5,
                    interval=[0.4, 0.6]) for claim in claims]


def test_write_scorecard_writes_the_current_rows(mini_repo, verdict_store):
    from localprops.report import scorecard

    plan = lpbuild.plan_build("ci", root=mini_repo)
    scorecard.save_verdicts(scorecard_rows("C1", "C2"), "00_fails", "ci")
    scorecard.save_verdicts(scorecard_rows("B1"), "01_works", "ci")
    scorecard.save_verdicts(scorecard_rows("C9"), "01_works", "paper")   # another profile
    assert (verdict_store / "verdicts" / "ci" / "01_works.json").is_file()
    written = lpbuild.write_scorecard(plan)
    assert written == "book/scorecard.json"
    path = plan.source_dir / "book" / "scorecard.json"
    assert path.is_file() and not (mini_repo / "book" / "scorecard.json").exists()
    records = json.loads(path.read_text("utf-8"))
    assert [(r["chapter"], r["claim"]) for r in records] == [
        ("00_fails", "C1"), ("00_fails", "C2"), ("01_works", "B1")]
    assert all(list(r) == [*scorecard.JSON_FIELDS, "modules"] for r in records)
    assert records[0]["build"] == scorecard.build_id("00_fails", "ci",
                                                     scorecard.loaded_modules())
    assert records[0]["modules"] == scorecard.loaded_modules()
    assert records[0]["models"] == {"a": {"samples": 30, "classes": 3}}


def test_write_scorecard_leaves_stale_rows_out(mini_repo, verdict_store, caplog):
    from localprops.report import scorecard

    plan = lpbuild.plan_build("ci", root=mini_repo)
    scorecard.save_verdicts(scorecard_rows("C1"), "00_fails", "ci")
    scorecard.save_verdicts(scorecard_rows("B1", "B2"), "01_works", "ci")
    # 01_works's code changes after its rows were saved: they are stale
    write_notebook(mini_repo / "notebooks" / "01_works.ipynb", "T = 1\nprofile = 'default'",
                   "print(T, profile, 'changed')")
    with caplog.at_level("WARNING", logger="localprops.tools.build"):
        assert lpbuild.write_scorecard(plan) == "book/scorecard.json"
    records = json.loads((plan.source_dir / "book" / "scorecard.json").read_text("utf-8"))
    assert [(r["chapter"], r["claim"]) for r in records] == [("00_fails", "C1")]
    assert "2 stale verdict rows" in caplog.text and "01_works" in caplog.text


def test_write_scorecard_without_current_rows_writes_nothing(mini_repo, verdict_store,
                                                             monkeypatch):
    from localprops.core import cache
    from localprops.report import scorecard

    plan = lpbuild.plan_build("ci", root=mini_repo)
    target = plan.source_dir / "book" / "scorecard.json"
    assert lpbuild.write_scorecard(plan) is None              # no rows at all
    assert not target.exists()
    scorecard.save_verdicts(scorecard_rows("C1"), "01_works", "ci")
    monkeypatch.setattr(cache, "modules_code_version", lambda names: "code-v2")
    assert lpbuild.write_scorecard(plan) is None              # only stale rows
    assert not target.exists()


def test_restore_verdicts_brings_back_the_current_rows_of_an_emptied_store(
        mini_repo, verdict_store):
    from localprops.report import scorecard

    plan = lpbuild.plan_build("ci", root=mini_repo)
    scorecard.save_verdicts(scorecard_rows("C1", "C2"), "00_fails", "ci")
    scorecard.save_verdicts(scorecard_rows("B1"), "01_works", "ci")
    before = scorecard.load_verdicts("ci")
    lpbuild.write_scorecard(plan)
    shutil.rmtree(verdict_store / "verdicts")          # a fresh machine: an empty cache
    assert lpbuild.restore_verdicts(plan) == ["00_fails", "01_works"]
    assert scorecard.load_verdicts("ci") == before
    assert scorecard.split_current(before, "ci") == (before, [])


def test_restore_verdicts_leaves_out_stale_rows_and_keeps_the_store(mini_repo, verdict_store):
    from localprops.report import scorecard

    plan = lpbuild.plan_build("ci", root=mini_repo)
    scorecard.save_verdicts(scorecard_rows("C1"), "00_fails", "ci")
    scorecard.save_verdicts(scorecard_rows("B1"), "01_works", "ci")
    lpbuild.write_scorecard(plan)
    stored = verdict_store / "verdicts" / "ci"
    (stored / "00_fails.json").unlink()
    kept = (stored / "01_works.json").read_text("utf-8")
    # 00_fails's notebook changes: its committed rows no longer match this checkout
    write_notebook(mini_repo / "notebooks" / "00_fails.ipynb", "T = 1", "print('changed')")
    assert lpbuild.restore_verdicts(plan) == []
    assert not (stored / "00_fails.json").exists()
    assert (stored / "01_works.json").read_text("utf-8") == kept     # never overwritten


def test_restore_verdicts_needs_the_module_list(mini_repo, verdict_store):
    from localprops.report import scorecard

    plan = lpbuild.plan_build("ci", root=mini_repo)
    scorecard.save_verdicts(scorecard_rows("C1"), "00_fails", "ci")
    path = Path(lpbuild.write_scorecard(plan))
    path = plan.source_dir / path
    records = json.loads(path.read_text("utf-8"))
    path.write_text(json.dumps([{k: v for k, v in r.items() if k != "modules"}
                                for r in records]), "utf-8")          # an older scorecard
    shutil.rmtree(verdict_store / "verdicts")
    assert lpbuild.restore_verdicts(plan) == []
    path.write_text("{not json", "utf-8")
    assert lpbuild.restore_verdicts(plan) == []


def _executed(own: str, injected: str, profile: str = "default"):
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell(own)
    params.metadata["tags"] = ["parameters"]
    cell = new_code_cell(injected)
    cell.metadata["tags"] = ["injected-parameters"]
    nb = new_notebook(cells=[params, cell, new_code_cell("print(T)")])
    nb.metadata["localprops"] = {"profile": profile}
    return nb


def test_an_injected_cell_that_repeats_the_parameters_is_hidden_on_the_site():
    nb = _executed("T = 40  # perturbations\nmodels = ['a', 'b']\nseed = 0",
                   "# Parameters\nT = 40\nmodels = [\"a\", \"b\"]\n")
    lpbuild._hide_repeated_parameters(nb)
    assert nb.cells[1].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert nb.cells[1].source.startswith("# Parameters\n")        # kept in the notebook
    lpbuild._hide_repeated_parameters(nb)                           # idempotent
    assert nb.cells[1].metadata["tags"].count("remove-cell") == 1


def test_an_injected_cell_that_changes_a_value_stays_visible_and_says_so():
    nb = _executed("T = 40\nseed = 0", "# Parameters\nT = 6\n", profile="ci")
    lpbuild._hide_repeated_parameters(nb)
    assert "remove-cell" not in nb.cells[1].metadata["tags"]
    assert nb.cells[1].source.startswith("# Parameters of profile 'ci'")
    lpbuild._hide_repeated_parameters(nb)
    assert nb.cells[1].source.count("# Parameters of profile") == 1
    unparsable = _executed("T = compute()", "# Parameters\nT = 6\n")
    lpbuild._hide_repeated_parameters(unparsable)                   # not literal: shown
    assert "remove-cell" not in unparsable.cells[1].metadata["tags"]


def test_cached_units_counts_the_cache_files_for_the_build_log(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALPROPS_CACHE", str(tmp_path / "cache"))
    assert lpbuild.cached_units() == 0                               # no folder yet
    (tmp_path / "cache" / "ab").mkdir(parents=True)
    for name in ("ab/1.npz", "2.npz", "ab/verdicts.json"):
        (tmp_path / "cache" / name).write_bytes(b"x")
    assert lpbuild.cached_units() == 2


def test_student_edition_is_not_published_without_a_served_folder(tmp_path, caplog):
    """No ``_config.yml`` (or no generated html_extra_path folder): a warning, no files."""
    assert lpbuild.publish_student_edition(tmp_path) is None
    assert "student edition not published" in caplog.text
    (tmp_path / "_config.yml").write_text("sphinx:\n  config:\n    html_extra_path: [static]\n")
    assert lpbuild.publish_student_edition(tmp_path) is None
    assert not any(tmp_path.rglob("*.zip"))
