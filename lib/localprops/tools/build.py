"""Build the book: execute its notebooks with a profile, then render the site.

Usage::

    python -m localprops.tools.build --profile ci|default|paper|path/to/my.yml
        [--notebooks PATTERN] [--output-dir DIR] [--html-dir DIR]
        [--skip-execute] [--skip-html] [--fail-fast] [--fresh]

Two steps:

1. **Execute.** Every notebook ``notebooks/NN_name.ipynb`` (or those whose
   name or stem matches ``--notebooks``, a glob such as ``'01_*'``; several
   patterns may be separated by commas) runs through papermill in the
   current interpreter's ``python3`` kernel, with the working directory set
   to ``notebooks/``. It receives the profile's parameters that its
   ``parameters`` cell declares (see :mod:`localprops.tools.profiles`). The
   executed copy keeps the file name and goes to ``<source>/book/``, with
   timestamps and absolute paths removed from its metadata so that an
   unchanged result gives an unchanged file. A failing notebook is reported
   with its name, the failing cell and the error, and its partial output is
   kept under ``<source>/_build/papermill/``; the other notebooks still run
   (``--fail-fast`` stops at the first failure) and the build then exits
   with status 1 without rendering HTML.
2. **Render.** ``jupyter-book build <source> -W -n --keep-going`` (warnings
   are errors; notebooks are not executed again). The HTML goes to
   ``--html-dir``, ``_build/html`` by default, whatever the profile: it
   always holds the site built last, and its file ``.localprops-build.json``
   says which profile that was.
   Before it, plotly's own ``plotly.min.js`` (from the installed plotly
   package) is copied into the vendored folder of ``html_extra_path``
   (:func:`vendor_plotly`), so that the static explorer's figures draw
   offline, like MathJax, and the student edition (the chapters without
   solutions, and their zip) is written beside it, served at ``/student/``
   (:func:`publish_student_edition`) for the teachers' page to link to.

A profile given by path (``--profile studies/my.yml``: a value holding ``/``
or ending in ``.yml``) is named by its file stem and is a scratch build like
``ci``; its folder and the working directory are added to
``$LOCALPROPS_MODULE_PATH`` so that the notebooks can import the
``module:callable`` models it names (:func:`localprops.models.zoo.load_callable`).

Where ``<source>`` is: for the ``default`` profile the repository itself, so
the executed notebooks land in ``book/`` (they are committed). For any other
profile a scratch copy, ``_build/src-<profile>/`` unless ``--output-dir`` is
given: ``_config.yml``, ``_toc.yml`` and the prose of ``book/`` are copied
there and the executed notebooks written next to them, so a ``ci`` or
``paper`` build never touches ``book/``. A notebook listed in ``_toc.yml``
but not executed in a scratch copy (``--notebooks`` or ``--skip-execute``)
is rendered from its source, without outputs, with a warning.

Exit status: 0 on success; 1 if a notebook failed, the site had warnings or
the inputs were inconsistent (unknown profile, a notebook missing a
``parameters`` cell, ...); 2 for bad command-line arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import filecmp
import fnmatch
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localprops.core.cache import checkout_root
from localprops.tools.profiles import (
    NOTEBOOK_GLOB,
    Profile,
    ProfileError,
    available_profiles,
    is_profile_path,
    load_profile,
)

__all__ = ["BuildError", "BuildPlan", "build", "build_book",
           "declared_parameters", "execute_notebook", "find_notebooks",
           "main", "plan_build", "plotly_bundle", "publish_student_edition",
           "toc_files", "vendor_plotly"]

log = logging.getLogger("localprops.tools.build")

DEFAULT_PROFILE = "default"
BOOK_DIR = "book"
STAMP = ".localprops-build.json"
KERNEL = "python3"
# papermill metadata worth keeping in a committed notebook (no times, no paths)
KEEP_PAPERMILL_KEYS = ("parameters", "default_parameters", "version",
                       "exception")
# where the site serves plotly.js, relative to its root: the static explorer's
# pages (localprops.report.static_explorer.PLOTLY_SRC) load it from there
PLOTLY_SITE_PATH = "_static/plotly/plotly.min.js"
#: Where the site serves the student edition (:func:`publish_student_edition`).
STUDENT_SITE_DIR = "student"
#: The student edition's zip, in :data:`STUDENT_SITE_DIR`.
STUDENT_ZIP = "localprops-student.zip"


class BuildError(RuntimeError):
    """The book cannot be built; the message says why and what to do."""


def repo_root() -> Path:
    """Return the source checkout holding this package (``<root>/lib/localprops``).

    The book builds from a checkout (notebooks, ``_config.yml``); a
    pip-installed package has none, and the error says so.
    """
    root = checkout_root()
    if root is None:
        raise BuildError("the book builds from a source checkout of this repository "
                         "(notebooks/, _config.yml); clone it and run `make book` there")
    return root


# ---------------------------------------------------------------- planning


@dataclass
class BuildPlan:
    """What one build does; :func:`plan_build` fills it from the arguments.

    Attributes
    ----------
    root : the repository (source notebooks, profiles, prose, config).
    profile : the loaded profile.
    notebooks : the source notebooks to execute.
    source_dir : the tree Jupyter Book renders (``root`` for ``default``).
    html_dir : where the finished site goes.
    """

    root: Path
    profile: Profile
    notebooks: list[Path]
    source_dir: Path
    html_dir: Path
    in_place: bool = field(init=False)

    def __post_init__(self) -> None:
        self.in_place = self.source_dir.resolve() == self.root.resolve()

    @property
    def sphinx_html_dir(self) -> Path:
        """Where ``jupyter-book build`` writes (``<source>/_build/html``)."""
        return self.source_dir / "_build" / "html"


def find_notebooks(root: Path, patterns: str | None = None) -> list[Path]:
    """Return the notebooks ``notebooks/NN_name.ipynb``, sorted.

    Parameters
    ----------
    root : the repository.
    patterns : comma-separated globs matched against each notebook's file
        name and stem (``'01_*'``, ``'00_getting_started'``); all if None.

    Raises
    ------
    BuildError
        If no notebook exists, or a pattern matches none.
    """
    folder = root / "notebooks"
    found = sorted(folder.glob(NOTEBOOK_GLOB))
    if not found:
        raise BuildError(f"no notebooks matching {NOTEBOOK_GLOB} in {folder}")
    if not patterns:
        return found
    selected: list[Path] = []
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        matches = [nb for nb in found if fnmatch.fnmatch(nb.name, pattern)
                   or fnmatch.fnmatch(nb.stem, pattern)]
        if not matches:
            raise BuildError(
                f"--notebooks {pattern!r} matches no notebook; available: "
                + ", ".join(nb.stem for nb in found))
        selected += [nb for nb in matches if nb not in selected]
    return sorted(selected)


def plan_build(profile: str, root: Path | None = None,
               notebooks: str | None = None, output_dir: Path | None = None,
               html_dir: Path | None = None) -> BuildPlan:
    """Check the arguments and return the plan of a build.

    Raises
    ------
    BuildError
        If a non-default profile would write its notebooks into the
        repository's ``book/`` (which holds the default profile's outputs).
    ProfileError
        If the profile is unknown or invalid.
    """
    root = (root or repo_root()).resolve()
    all_notebooks = find_notebooks(root)
    by_path = is_profile_path(profile)
    if by_path:             # read from the working directory, as the shell would
        profile = Path(profile).expanduser().resolve()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_profile(profile, root / "profiles",
                              notebooks=[nb.stem for nb in all_notebooks])
    for warning in caught:
        log.warning("%s", warning.message)
    own = root / "profiles" / f"{loaded.name}.yml"
    if by_path and own.is_file() and own.resolve() != loaded.path.resolve():
        raise BuildError(
            f"profile {loaded.path} has the name {loaded.name!r} (its file stem) of "
            f"the repository's profile {own}: rename the file, since its name "
            f"labels the outputs (_build/src-{loaded.name}/, the scorecard)")
    # only the repository's own default profile writes the committed book/
    in_place = (loaded.name == DEFAULT_PROFILE
                and loaded.path.resolve() == own.resolve())
    selected = find_notebooks(root, notebooks)
    if output_dir is None:
        source_dir = (root if in_place
                      else root / "_build" / f"src-{loaded.name}")
    else:
        source_dir = Path(output_dir).resolve()
    if source_dir == root and not in_place:
        raise BuildError(
            f"refusing to write the {loaded.name!r} profile's notebooks into "
            f"{root / BOOK_DIR}: it holds the committed '{DEFAULT_PROFILE}' "
            "outputs. Leave --output-dir out (a scratch copy under _build/) "
            "or give another folder")
    html = Path(html_dir).resolve() if html_dir else root / "_build" / "html"
    return BuildPlan(root=root, profile=loaded, notebooks=selected,
                     source_dir=source_dir, html_dir=html)


def toc_files(toc_path: Path) -> list[str]:
    """Return every ``file:`` entry of a Jupyter Book ``_toc.yml``, in order.
    """
    data = yaml.safe_load(toc_path.read_text(encoding="utf-8")) or {}
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    files.append(node[key])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(data)
    return files


# --------------------------------------------------------------- execution


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Return the parameters a notebook's ``parameters`` cell defines.

    Raises
    ------
    BuildError
        If the notebook has no cell tagged ``parameters``.
    """
    import nbformat
    import papermill

    nb = nbformat.read(notebook, as_version=4)
    if not any("parameters" in cell.metadata.get("tags", [])
               for cell in nb.cells):
        raise BuildError(f"{notebook} has no cell tagged 'parameters'; every "
                         "notebook of the book needs one")
    return papermill.inspect_notebook(str(notebook))


def _merge_streams(outputs: list[Any]) -> list[Any]:
    """Join consecutive stream outputs of the same name (stdout, stderr).

    How a kernel chunks a print into messages varies from run to run; joined,
    the same prints give the same notebook.
    """
    merged: list[Any] = []
    for output in outputs:
        if (merged and output.get("output_type") == "stream"
                and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == output.get("name")):
            merged[-1]["text"] = merged[-1]["text"] + output["text"]
        else:
            merged.append(output)
    return merged


def literal_assignments(source: str) -> dict[str, Any] | None:
    """``name -> value`` of a cell made only of literal assignments, else None."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    values: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            return None
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            return None
    return values


def _hide_repeated_parameters(nb: Any) -> None:
    """Hide papermill's injected cell on the site when it changes no value.

    The notebook's own ``parameters`` cell already shows those values (the
    default profile's, by a test), so a reader would see the same parameters
    twice. The cell stays in the notebook (tagged ``remove-cell``, which
    Jupyter Book leaves out of the page). When the profile does change a
    value, the injected cell stays visible, headed by a comment saying so.
    """
    own = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" not in tags:
            continue
        injected = literal_assignments(cell.source) or {}
        declared = literal_assignments(own.source) if own is not None else None
        if declared is not None and all(
                key in declared and declared[key] == value
                for key, value in injected.items()):
            cell.metadata["tags"] = [*tags, "remove-cell"] if "remove-cell" not in tags \
                else tags
        elif not cell.source.startswith("# Parameters of profile"):
            profile = nb.metadata.get("localprops", {}).get("profile", "")
            cell.source = (f"# Parameters of profile {profile!r}: they replace the "
                           f"values above for this run\n" + cell.source)


def _tidy(nb: Any, profile: str, source: str) -> None:
    """Make an executed notebook depend only on its inputs and outputs.

    Drops timestamps and absolute paths from the metadata, gives papermill's
    injected cell a fixed id, and joins split stream outputs, so that
    re-executing an unchanged notebook rewrites an identical file.
    """
    meta = nb.metadata.get("papermill", {})
    kept = {key: meta[key] for key in KEEP_PAPERMILL_KEYS if key in meta}
    kept["input_path"] = source
    nb.metadata["papermill"] = kept
    nb.metadata["localprops"] = {"profile": profile}
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)
    _hide_repeated_parameters(nb)


def _check_kernel(kernel_name: str) -> None:
    """Warn when the kernel would not run this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as error:
        raise BuildError(
            f"no Jupyter kernel named {kernel_name!r}: install this "
            f"interpreter's with `{sys.executable} -m ipykernel install "
            f"--sys-prefix --name {kernel_name}`") from error
    command = spec.argv[0] if spec.argv else ""
    # jupyter_client replaces a bare python/python3 by sys.executable
    bare = {"python", f"python{sys.version_info[0]}",
            "python{}.{}".format(*sys.version_info[:2])}
    if (command in bare
            or Path(command).resolve() == Path(sys.executable).resolve()):
        log.info("kernel %r runs %s", kernel_name, sys.executable)
    else:
        log.warning("kernel %r runs %s, not this interpreter (%s): the "
                    "notebooks may not see the same localprops", kernel_name,
                    command, sys.executable)


def execute_notebook(notebook: Path, destination: Path, profile: Profile,
                     work_dir: Path, kernel_name: str = KERNEL,
                     root: Path | None = None) -> float:
    """Execute one notebook with papermill and write its tidied copy.

    Parameters
    ----------
    notebook : the source notebook.
    destination : where the executed notebook goes (written only on
        success, so a failure never replaces a good copy).
    profile : the parameters to inject.
    work_dir : folder for papermill's own output; a failed notebook stays
        there.
    kernel_name : the Jupyter kernel.
    root : the repository, to store the source path relative to it.

    Returns
    -------
    The execution time in seconds.

    Raises
    ------
    BuildError
        If the notebook fails; the message names it, the cell and the error.
    ProfileError
        If the profile sets a parameter the notebook does not declare.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    declared = declared_parameters(notebook)
    parameters = profile.parameters_for(notebook.stem, declared)
    with_stored_outputs = [i for i, cell in enumerate(
        nbformat.read(notebook, as_version=4).cells)
        if cell.cell_type == "code" and cell.get("outputs")]
    if with_stored_outputs:
        log.warning("%s has stored outputs (cells %s); source notebooks are "
                    "kept without outputs: clear them before committing",
                    notebook.name, with_stored_outputs)
    log.info("executing %s with %s", notebook.name, parameters)
    # progress bars are for live sessions; in the rendered pages they are noise
    os.environ.setdefault("TQDM_DISABLE", "1")
    work_dir.mkdir(parents=True, exist_ok=True)
    partial = work_dir / notebook.name
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(partial), parameters=parameters,
            kernel_name=kernel_name, cwd=str(notebook.parent),
            progress_bar=False, log_output=False)
    except PapermillExecutionError as error:
        raise BuildError(
            f"notebook {notebook.name} failed in cell {error.cell_index} "
            f"(execution count {error.exec_count}): {error.ename}: "
            f"{error.evalue}\n  executed copy with the traceback: {partial}"
        ) from error
    except Exception as error:         # kernel death, timeout, bad JSON, ...
        raise BuildError(f"notebook {notebook.name} could not be executed: "
                         f"{type(error).__name__}: {error}") from error
    seconds = time.perf_counter() - start
    executed = nbformat.read(partial, as_version=4)
    source = (notebook.resolve().relative_to(root).as_posix()
              if root and notebook.resolve().is_relative_to(root)
              else notebook.name)
    _tidy(executed, profile.name, source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(executed, destination)
    partial.unlink()
    log.info("executed %s in %.1f s -> %s", notebook.name, seconds,
             destination)
    return seconds


# ------------------------------------------------------------ source trees


def prepare_source(plan: BuildPlan) -> None:
    """Copy the config and the prose into a scratch source tree.

    ``_toc.yml`` is copied unchanged (its chapter paths point at
    ``book/NN_name``, where the executed notebooks go). ``_config.yml`` is
    copied with its ``html_extra_path`` entries made absolute, since they
    name folders of the repository (the vendored MathJax). Executed
    notebooks of ``book/`` are not copied: they hold another profile.
    """
    if plan.in_place:
        return
    target = plan.source_dir
    target.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((plan.root / "_config.yml").read_text("utf-8"))
    sphinx_config = (config.get("sphinx") or {}).get("config") or {}
    extra = sphinx_config.get("html_extra_path")
    if extra:
        sphinx_config["html_extra_path"] = [
            entry if Path(entry).is_absolute()
            else str((plan.root / entry).resolve()) for entry in extra]
    header = ("# Generated by localprops.tools.build from the repository's "
              "_config.yml; edit that file, not this copy.\n")
    (target / "_config.yml").write_text(
        header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8")
    shutil.copy2(plan.root / "_toc.yml", target / "_toc.yml")
    shutil.copytree(plan.root / BOOK_DIR, target / BOOK_DIR,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.ipynb", "__pycache__",
                                                  ".ipynb_checkpoints"))


def check_toc(plan: BuildPlan) -> None:
    """Make sure every page of ``_toc.yml`` exists in the source tree.

    A chapter whose notebook was not executed for this profile is copied
    from ``notebooks/`` without outputs in a scratch tree (with a warning);
    in the repository itself it is an error, since ``book/`` must hold
    executed notebooks only.
    """
    entries = toc_files(plan.source_dir / "_toc.yml")
    sources = {nb.stem: nb for nb in find_notebooks(plan.root)}
    for entry in entries:
        path = plan.source_dir / entry
        if any(path.with_suffix(s).is_file() for s in (".md", ".ipynb")) \
                or path.is_file():
            continue
        stem = Path(entry).name
        if stem not in sources:
            raise BuildError(f"_toc.yml lists {entry}, which is neither a "
                             f"page of {BOOK_DIR}/ nor a notebook of "
                             "notebooks/")
        if plan.in_place:
            raise BuildError(
                f"_toc.yml lists {entry}, but {entry}.ipynb has not been "
                f"executed; run: python -m localprops.tools.build --profile "
                f"{plan.profile.name} --notebooks {stem}")
        log.warning("%s was not executed for profile %r: rendering "
                    "notebooks/%s.ipynb without outputs", entry,
                    plan.profile.name, stem)
        shutil.copy2(sources[stem], path.with_suffix(".ipynb"))
    listed = {Path(entry).name for entry in entries}
    for stem in sources:
        if stem not in listed:
            log.warning("notebooks/%s.ipynb is not listed in _toc.yml: it is "
                        "executed but not part of the site", stem)


# ------------------------------------------------------------------- HTML


def check_mathjax(root: Path) -> None:
    """Fail before executing anything if the site could not be rendered.

    The same check as the book's Sphinx extension (``book/_ext``), made up
    front so that a long execution does not end in a missing MathJax.
    """
    config = yaml.safe_load((root / "_config.yml").read_text("utf-8")) or {}
    settings = (config.get("sphinx") or {}).get("config") or {}
    path = settings.get("mathjax_path", "")
    if not path or "://" in path or os.environ.get(
            "LOCALPROPS_MATHJAX_CDN", "") not in ("", "0"):
        return
    extra = [root / entry for entry in settings.get("html_extra_path", [])]
    if not any((folder / "_static" / path).is_file() for folder in extra):
        raise BuildError(
            "MathJax is not vendored (no _static/" + path + " in "
            + ", ".join(str(folder) for folder in extra) + "): run "
            "scripts/fetch_mathjax.sh (needs npm), or set "
            "LOCALPROPS_MATHJAX_CDN=1 for a preview that loads it online")


def plotly_bundle() -> Path | None:
    """The ``plotly.min.js`` that ships inside the installed plotly package, or None."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        bundle = Path(folder) / "package_data" / "plotly.min.js"
        if bundle.is_file():
            return bundle
    return None


def _vendor_folder(root: Path, extra: list[str]) -> Path | None:
    """The ``html_extra_path`` folder that receives vendored files.

    One named ``plotly`` if listed, else the first one under ``<root>/_build``
    (generated, like the vendored MathJax), never a folder of tracked sources.
    """
    folders = [Path(entry) if Path(entry).is_absolute() else root / entry
               for entry in extra]
    named = [f for f in folders if f.name == "plotly"]
    if named:
        return named[0]
    build = (root / "_build").resolve()
    generated = [f for f in folders if f.resolve().is_relative_to(build)]
    return generated[0] if generated else None


def _generated_extra_folder(root: Path) -> Path | None:
    """The generated ``html_extra_path`` folder of ``<root>/_config.yml``, if any."""
    path = root / "_config.yml"
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text("utf-8")) or {}
    settings = (config.get("sphinx") or {}).get("config") or {}
    return _vendor_folder(root, list(settings.get("html_extra_path") or []))


def publish_student_edition(root: Path) -> Path | None:
    """Write the student edition where the site serves it, ``/student/``.

    The chapters without solutions (:mod:`localprops.tools.student`) and
    their zip go to ``<folder>/student/`` in the generated ``html_extra_path``
    folder, so the teachers' page links to them (``student/<chapter>.ipynb``
    and :data:`STUDENT_ZIP`). Returns the zip, or None (with a warning)
    when there is no such folder or no chapter to write.
    """
    from localprops.tools import student

    folder = _generated_extra_folder(root)
    if folder is None:
        log.warning("student edition not published: _config.yml lists no "
                    "html_extra_path folder under _build/ to serve it from")
        return None
    target = folder / STUDENT_SITE_DIR
    try:
        reports = student.write_student_edition(
            root / "notebooks", target, target / STUDENT_ZIP,
            full_book=student.full_book(root))
    except student.StudentEditionError as error:
        log.warning("student edition not published: %s", error)
        return None
    log.info("student edition: %d chapters and %s", len(reports), target / STUDENT_ZIP)
    return target / STUDENT_ZIP


def vendor_plotly(root: Path, bundle: Path | None = None) -> Path | None:
    """Copy plotly's own bundled plotly.js to where the site serves it.

    Like MathJax (``scripts/fetch_mathjax.sh``), plotly.js must come from the
    site, not a CDN: the file that ships in the plotly package
    (``plotly/package_data/plotly.min.js``, the version its figures are
    written for) is copied to ``<folder>/_static/plotly/plotly.min.js`` in an
    ``html_extra_path`` folder of ``_config.yml`` (see :func:`_vendor_folder`),
    so the site serves it at :data:`PLOTLY_SITE_PATH`. Copied only when
    missing or different. Returns the copy, or None (with a warning) when
    plotly is not installed or no such folder is configured.
    """
    folder = _generated_extra_folder(root)
    if folder is None:
        log.warning("plotly.js not vendored: _config.yml lists no html_extra_path "
                    "folder under _build/ (or named plotly) to serve it from")
        return None
    bundle = bundle or plotly_bundle()
    if bundle is None or not Path(bundle).is_file():
        log.warning("plotly.js not vendored: plotly is not installed (pip install -e "
                    "'.[book]'); pages with a static explorer will not draw it")
        return None
    target = folder / PLOTLY_SITE_PATH
    if target.is_file() and filecmp.cmp(bundle, target, shallow=False):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, target)
    log.info("plotly.js vendored: %s -> %s", bundle, target)
    return target


def _read_stamp(html_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((html_dir / STAMP).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _clear_site(html_dir: Path) -> None:
    """Remove a previous site, refusing folders that are not one."""
    if not html_dir.exists():
        return
    if not ((html_dir / STAMP).exists() or (html_dir / ".buildinfo").exists()
            or not any(html_dir.iterdir())):
        raise BuildError(f"{html_dir} exists and is not a site built by "
                         "localprops.tools.build; choose another --html-dir")
    shutil.rmtree(html_dir)


def render_html(plan: BuildPlan, fresh: bool = False) -> float:
    """Run ``jupyter-book build -W -n --keep-going`` and publish the site.

    Returns
    -------
    The rendering time in seconds.

    Raises
    ------
    BuildError
        If Jupyter Book reports an error or any warning.
    """
    outdir = plan.sphinx_html_dir
    stamp = _read_stamp(outdir)
    if stamp is not None and (stamp.get("profile") != plan.profile.name
                              or stamp.get("source") != str(plan.source_dir)):
        log.info("%s holds the %r site: rebuilding it from scratch", outdir,
                 stamp.get("profile"))
        _clear_site(outdir)
        fresh = True
    command = ["jupyter-book", "build", str(plan.source_dir), "--path-output",
               str(plan.source_dir), "-W", "-n", "--keep-going"]
    if fresh:
        command.append("--all")
    log.info("rendering: %s", " ".join(command))
    start = time.perf_counter()
    # the same interpreter as this build, whatever is first on PATH
    runner = [sys.executable, "-c",
              "import sys; from jupyter_book.cli.main import main; "
              "sys.exit(main())"]
    result = subprocess.run(runner + command[1:], cwd=plan.source_dir,
                            check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise BuildError(
            f"jupyter-book build failed (exit {result.returncode}): warnings "
            "are errors (-W); the messages above name the page and line")
    return seconds


def write_scorecard(plan: BuildPlan) -> str | None:
    """Write ``<source>/book/scorecard.json`` from the current build's verdict rows.

    Rows of an older build (other code, notebook or profile) are left out
    with a warning; nothing is written when there are no current rows.
    """
    from localprops.report import scorecard

    current, stale = scorecard.split_current(scorecard.load_verdicts(plan.profile.name),
                                             plan.profile.name)
    if stale:
        log.warning("scorecard: %d stale verdict rows left out (chapters %s): rerun them",
                    len(stale), ", ".join(sorted({row["chapter"] for row in stale})))
    if not current:
        return None
    path = plan.source_dir / BOOK_DIR / "scorecard.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{**{key: row.get(key) for key in scorecard.JSON_FIELDS},
                "modules": row.get("modules")} for row in current]
    _write_json_atomically(path, records)
    log.info("scorecard: %d rows -> %s", len(current), path)
    return str(path.relative_to(plan.source_dir))


def _write_json_atomically(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON through a temporary file (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", "utf-8")
    os.replace(tmp, path)


def restore_verdicts(plan: BuildPlan) -> list[str]:
    """Seed an empty verdict store from the source's ``book/scorecard.json``, per chapter.

    The scorecard chapter (10) reads every chapter's verdicts from the cache
    (``<cache>/verdicts/<profile>/``), so with an empty cache a build of some
    chapters only would show only their rows. A chapter whose verdict file is
    missing there gets its rows back from the committed scorecard, but only
    when their build id (:func:`localprops.report.scorecard.build_id`, over
    the modules they were computed with, the notebook and the profile) equals
    the one the current checkout gives: rows of older code stay out, as stale
    rows do. A chapter that is executed overwrites its file. Returns the
    chapters restored.
    """
    from dataclasses import fields

    from localprops.report import scorecard

    path = plan.source_dir / BOOK_DIR / "scorecard.json"
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as error:
        log.warning("verdicts: %s is not JSON (%s); nothing restored", path, error)
        return []
    by_chapter: dict[str, list[dict]] = {}
    for row in rows:
        by_chapter.setdefault(str(row.get("chapter")), []).append(row)
    store = _cache_root() / "verdicts" / plan.profile.name
    names = [f.name for f in fields(scorecard.Verdict)]
    restored, stale = [], []
    for chapter, chapter_rows in by_chapter.items():
        if (store / f"{chapter}.json").exists():
            continue
        build, modules = chapter_rows[0].get("build"), chapter_rows[0].get("modules")
        if (modules is None or any(row.get("build") != build for row in chapter_rows)
                or scorecard.build_id(chapter, plan.profile.name, modules) != build):
            stale.append(chapter)
            continue
        store.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(store / f"{chapter}.json", {
            "chapter": chapter, "profile": plan.profile.name, "build": build,
            "modules": modules,
            "verdicts": [{name: row.get(name) for name in names} for row in chapter_rows]})
        restored.append(chapter)
    if restored:
        log.info("verdicts: %d chapters restored from %s into an empty store (%s)",
                 len(restored), path.relative_to(plan.source_dir), ", ".join(restored))
    if stale:
        log.info("verdicts: not restored (older build, or no module list): %s",
                 ", ".join(stale))
    return restored


def publish(plan: BuildPlan, report: dict[str, Any]) -> None:
    """Stamp the rendered site and copy it to ``--html-dir`` if elsewhere."""
    outdir = plan.sphinx_html_dir
    (outdir / STAMP).write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    if outdir.resolve() == plan.html_dir.resolve():
        return
    _clear_site(plan.html_dir)
    plan.html_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(outdir, plan.html_dir)


# -------------------------------------------------------------------- main


def _cache_root() -> Path:
    from localprops.core.cache import cache_dir

    return Path(cache_dir())


def cached_units() -> int:
    """How many finished study units the cache holds (its ``.npz`` files).

    The build logs, per chapter, how many it added: the cache's statistics
    belong in the log, not in the committed pages, which must not depend on
    whether a cache was warm.
    """
    root = _cache_root()
    return sum(1 for _ in root.rglob("*.npz")) if root.is_dir() else 0


def _export_module_path(profile: Profile) -> None:
    """Let the notebooks import a profile's ``module:callable`` models.

    The kernels run in ``notebooks/``; prepend the profile's folder and the
    folder the build started from to ``$LOCALPROPS_MODULE_PATH`` (read by
    :func:`localprops.models.zoo.load_callable`), which the kernels inherit.
    """
    from localprops.models.zoo import MODULE_PATH_ENV

    folders = [str(profile.path.resolve().parent), os.getcwd()]
    folders += [f for f in os.environ.get(MODULE_PATH_ENV, "").split(os.pathsep) if f]
    os.environ[MODULE_PATH_ENV] = os.pathsep.join(dict.fromkeys(folders))


def build(plan: BuildPlan, execute: bool = True, html: bool = True,
          fail_fast: bool = False, fresh: bool = False,
          kernel_name: str = KERNEL) -> dict[str, Any]:
    """Execute and render as planned; return a report of what was done.

    Raises
    ------
    BuildError
        If a notebook failed (after running the others, unless
        ``fail_fast``), or the site could not be rendered without warnings.
    """
    started = time.perf_counter()
    log.info("profile %r (%s); source tree %s", plan.profile.name,
             plan.profile.path, plan.source_dir)
    if html:
        check_mathjax(plan.root)
        vendor_plotly(plan.root)
        publish_student_edition(plan.root)
    prepare_source(plan)
    report: dict[str, Any] = {
        "profile": plan.profile.name, "source": str(plan.source_dir),
        "html_dir": str(plan.html_dir), "notebooks": {},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if execute:
        _check_kernel(kernel_name)
        _export_module_path(plan.profile)
        restore_verdicts(plan)
        failures: list[str] = []
        work_dir = plan.source_dir / "_build" / "papermill"
        for notebook in plan.notebooks:
            destination = plan.source_dir / BOOK_DIR / notebook.name
            before = cached_units()
            try:
                seconds = execute_notebook(notebook, destination, plan.profile,
                                           work_dir, kernel_name, plan.root)
            except (BuildError, ProfileError) as error:
                log.error("%s", error)
                failures.append(f"{notebook.name}: {error}")
                report["notebooks"][notebook.stem] = {"status": "failed"}
                if fail_fast:
                    break
                continue
            computed = cached_units() - before
            log.info("%s: %d study units computed and cached (the rest read back "
                     "from %s)", notebook.name, computed, _cache_root())
            report["notebooks"][notebook.stem] = {
                "status": "ok", "seconds": round(seconds, 1), "units_computed": computed}
        with contextlib.suppress(OSError):
            work_dir.rmdir()            # only when empty: failures stay
        if failures:
            raise BuildError(f"{len(failures)} notebook(s) failed; no HTML "
                             "was built:\n  " + "\n  ".join(failures))
        report["scorecard"] = write_scorecard(plan)
    check_toc(plan)
    if html:
        report["render_seconds"] = round(render_html(plan, fresh), 1)
        report["total_seconds"] = round(time.perf_counter() - started, 1)
        publish(plan, report)
        log.info("site (profile %r): %s", plan.profile.name,
                 plan.html_dir / "index.html")
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    log.info("done in %.1f s", report["total_seconds"])
    return report


def build_book(profile: str = DEFAULT_PROFILE, *, notebooks: str | None = None,
               output_dir: Path | None = None, html_dir: Path | None = None,
               root: Path | None = None, execute: bool = True,
               html: bool = True, fail_fast: bool = False,
               fresh: bool = False, kernel_name: str = KERNEL
               ) -> dict[str, Any]:
    """Plan and run a build; the Python form of the command line.

    Examples
    --------
    >>> report = build_book(                               # doctest: +SKIP
    ...     "ci", output_dir=Path("/tmp/book-ci"),
    ...     html_dir=Path("/tmp/book-ci-html"))
    >>> report["notebooks"]["00_getting_started"]["status"]  # doctest: +SKIP
    'ok'
    """
    plan = plan_build(profile, root, notebooks, output_dir, html_dir)
    return build(plan, execute=execute, html=html, fail_fast=fail_fast,
                 fresh=fresh, kernel_name=kernel_name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m localprops.tools.build",
        description="Execute the book's notebooks with a parameter profile "
                    "(papermill), then render the site (Jupyter Book, "
                    "warnings as errors).",
        epilog="profiles: " + ", ".join(available_profiles()) + ". The "
               "default profile writes the executed notebooks to book/; the "
               "others to _build/src-<profile>/. The site goes to "
               "_build/html.")
    parser.add_argument("--profile", default=DEFAULT_PROFILE,
                        help="profile name (profiles/<name>.yml), or the path "
                             "of a profile file (holding '/' or ending in "
                             ".yml; its name is the file stem, and it builds "
                             "in _build/src-<stem>) [default: %(default)s]")
    parser.add_argument("--notebooks", metavar="PATTERN",
                        help="execute only these notebooks: globs on the "
                             "name or stem, comma-separated ('01_*')")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="source tree to write the executed notebooks "
                             "and the book's prose to [default: the "
                             "repository for 'default', else "
                             "_build/src-<profile>]")
    parser.add_argument("--html-dir", type=Path, metavar="DIR",
                        help="where the site goes [default: _build/html]")
    parser.add_argument("--skip-execute", action="store_true",
                        help="render the notebooks already executed")
    parser.add_argument("--skip-html", action="store_true",
                        help="execute only")
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first failing notebook")
    parser.add_argument("--fresh", action="store_true",
                        help="re-render every page (jupyter-book --all)")
    parser.add_argument("--kernel", default=KERNEL,
                        help="Jupyter kernel [default: %(default)s]")
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[localprops.tools.build] %(levelname)s %(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        build_book(args.profile, notebooks=args.notebooks,
                   output_dir=args.output_dir, html_dir=args.html_dir,
                   root=args.root, execute=not args.skip_execute,
                   html=not args.skip_html, fail_fast=args.fail_fast,
                   fresh=args.fresh, kernel_name=args.kernel)
    except (BuildError, ProfileError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
