"""The student edition: the chapters without their exercises' solutions.

``python -m localprops.tools.student`` (``make student``) writes every chapter
``notebooks/NN_name.ipynb`` to ``_build/student/`` without outputs and
without solutions, with a first cell saying so, and zips them into
``_build/student.zip``. Exercises, prose, code and the ``parameters`` cells
are kept.

The solutions are sphinx-exercise directives in Markdown cells, in two forms:

- a fenced block ``{solution} label``: only the fence is removed, any prose or
  exercise sharing its cell is kept;
- a gated block, from a fence ``{solution-start} label`` to a fence
  ``{solution-end}``: everything in between is removed, across cells (code
  cells included); prose before the start or after the end marker in the
  same cells is kept.

Fences are found as in MyST: a line of at least three backticks, tildes or
colons opens a block that the next line of at least as many of the same
character closes; plain code fences are passed over whole, so a directive
quoted in one is not mistaken for a real one. Gated exercises
(``{exercise-start}`` / ``{exercise-end}``) are kept like fenced ones.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import yaml

from localprops.tools.profiles import NOTEBOOK_GLOB

if TYPE_CHECKING:  # nbformat comes with the `book` extra, imported where used
    import nbformat

HEADER_ID = "student-edition"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed date: the same chapters give the same zip

_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,}|:{3,})\s*(?P<info>.*?)\s*$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[\w:.-]+)\}\s*(?P<argument>.*)$")
_LABEL = re.compile(r"^:?label:\s*(?P<label>\S+)")
_EXERCISES = ("exercise", "exercise-start")
_SOLUTIONS = ("solution", "solution-start", "solution-end")


class StudentEditionError(ValueError):
    """The solutions of a notebook cannot be removed safely; the message says where."""


class StudentEditionWarning(UserWarning):
    """Something in a notebook looks wrong but the student edition can still be written."""


@dataclass
class StripReport:
    """What :func:`strip_solutions` kept and removed, counted by label."""

    exercises: Counter = field(default_factory=Counter)
    solutions: Counter = field(default_factory=Counter)
    cells_removed: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: exercises kept and solutions removed, with their labels."""
        return (f"{sum(self.exercises.values())} exercises kept "
                f"({', '.join(label or '?' for label in self.exercises) or '-'}); "
                f"{sum(self.solutions.values())} solutions removed "
                f"({', '.join(label or '?' for label in self.solutions) or '-'}); "
                f"{self.cells_removed} cells removed")


@dataclass(frozen=True)
class _Fence:
    """A fenced block of a Markdown cell: its lines, unchanged, and its directive."""

    lines: tuple[str, ...]
    name: str  # the directive's name; '' for a plain code fence
    argument: str
    closed: bool

    @property
    def label(self) -> str:
        """The ``:label:`` option (or front-matter ``label:``), '' if none."""
        body = [line.strip() for line in self.lines[1:-1 if self.closed else None]]
        if body[:1] == ["---"]:
            options = body[1:body.index("---", 1)] if "---" in body[1:] else body[1:]
        else:
            options = list(takewhile(lambda line: line.startswith(":"), body))
        labels = [match["label"] for match in map(_LABEL.match, options) if match]
        return labels[0] if labels else ""


def _fence_at(lines: list[str], start: int) -> _Fence | None:
    """The fenced block opening at line ``start`` (unclosed: to the end), or None."""
    match = _OPEN.match(lines[start])
    if not match:
        return None
    fence = match["fence"]
    close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    end = next((i for i in range(start + 1, len(lines)) if close.match(lines[i])), None)
    directive = _DIRECTIVE.match(match["info"])
    return _Fence(lines=tuple(lines[start:len(lines) if end is None else end + 1]),
                  name=directive["name"] if directive else "",
                  argument=directive["argument"].strip() if directive else "",
                  closed=end is not None)


def _items(source: str) -> list[str | _Fence]:
    """A Markdown source as its lines outside fences and its fenced blocks, in order."""
    lines = source.split("\n")
    items: list[str | _Fence] = []
    i = 0
    while i < len(lines):
        fence = _fence_at(lines, i)
        items.append(fence or lines[i])
        i += len(fence.lines) if fence else 1
    return items


def _where(name: str, index: int, cell) -> str:
    """Where a cell is, for errors: notebook, index and id."""
    return f"{name}, cell {index} (counting from 0, id {cell.get('id', '?')!r})"


@dataclass
class _State:
    """The walk through a notebook: the open gated solution, and the report."""

    name: str
    report: StripReport = field(default_factory=StripReport)
    gate: str | None = None  # where the open solution-start is
    gate_label: str = ""


def _drop_blank_after(kept: list[str], items: list[str | _Fence], i: int) -> int:
    """Index past the blank lines after a removed block, if ``kept`` ends blank."""
    if kept and kept[-1].strip():
        return i
    while i < len(items) and isinstance(items[i], str) and not items[i].strip():
        i += 1
    return i


def _strip_markdown(source: str, where: str, state: _State) -> tuple[str, bool]:
    """``source`` without its solutions, and whether anything was removed."""
    items = _items(source)
    kept: list[str] = []
    removed = False
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        drop = _consume(item, where, state)
        if drop:
            removed = True
            i = _drop_blank_after(kept, items, i)
        elif isinstance(item, str):
            kept.append(item)
        else:
            kept.extend(item.lines)
    if removed:
        while kept and not kept[-1].strip():
            kept.pop()
    return "\n".join(kept), removed


def _consume(item: str | _Fence, where: str, state: _State) -> bool:
    """Update ``state`` with one line or fence of a Markdown cell; True to remove it."""
    inside = state.gate is not None
    if not isinstance(item, _Fence) or item.name not in _SOLUTIONS + _EXERCISES:
        return inside
    if item.name == "solution-end":
        if not inside:
            raise StudentEditionError(f"{where}: solution-end without a solution-start")
        state.gate = None
        return True
    if item.name == "solution-start":
        if inside:
            raise StudentEditionError(f"{where}: solution-start {item.argument!r} inside the "
                                      f"solution {state.gate_label!r} opened at {state.gate}; "
                                      "close that one first with a solution-end")
        state.gate, state.gate_label = where, item.argument
        state.report.solutions[item.argument] += 1
        return True
    if item.name == "solution":
        if not item.closed:
            raise StudentEditionError(f"{where}: the solution {item.argument!r} has no "
                                      "closing fence")
        if not inside:
            state.report.solutions[item.argument] += 1
        return True
    if not inside:
        state.report.exercises[item.label] += 1
    return inside


def _warn(state: _State, message: str) -> None:
    state.report.warnings.append(message)
    warnings.warn(message, StudentEditionWarning, stacklevel=3)


def _check(state: _State, cells: list, known: set[str]) -> None:
    """Warn about solutions without an exercise and about text that looks like one."""
    for label in state.report.solutions:
        if label not in state.report.exercises and label not in known:
            _warn(state, f"{state.name}: the solution {label!r} matches no exercise")
    for index, cell in enumerate(cells):
        if "{solution" in cell.source:
            _warn(state, f"{_where(state.name, index, cell)} still mentions "
                         "'{solution' after stripping: check it by hand")


def strip_solutions(nb, *, name: str = "notebook",
                    known_exercises: Iterable[str] = ()
                    ) -> tuple[nbformat.NotebookNode, StripReport]:
    """Remove the exercises' solutions from a notebook.

    Parameters
    ----------
    nb : an nbformat (v4) NotebookNode; not modified.
    name : the notebook's name in errors and warnings.
    known_exercises : exercise labels defined elsewhere (other chapters), so
        that a solution to one of them is not reported as unmatched.

    Returns
    -------
    (NotebookNode, StripReport)
        A copy without solutions, and the exercises kept and solutions removed.

    Raises
    ------
    StudentEditionError
        On a solution-start without a solution-end (or the converse), nested
        gated solutions, or an unclosed solution fence.
    """
    state = _State(name=name)
    out = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(out.cells):
        where = _where(name, index, cell)
        if isinstance(cell.source, list):
            cell.source = "".join(cell.source)
        if cell.cell_type == "markdown":
            source, removed = _strip_markdown(cell.source, where, state)
            if removed and not source.strip():
                state.report.cells_removed += 1
                continue
            cell.source = source
        elif state.gate is not None:
            state.report.cells_removed += 1
            continue
        cells.append(cell)
    if state.gate is not None:
        raise StudentEditionError(f"{state.gate}: solution-start {state.gate_label!r} has no "
                                  "solution-end in the rest of the notebook")
    out.cells = cells
    _check(state, cells, set(known_exercises))
    return out, state.report


def exercise_labels(nb) -> set[str]:
    """The labels of the exercises (fenced or gated) of a notebook."""
    labels = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            source = "".join(cell.source)
            labels.update(item.label for item in _items(source)
                          if isinstance(item, _Fence) and item.name in _EXERCISES)
    return labels - {""}


def clear_outputs(nb) -> None:
    """Remove the outputs and execution counts of ``nb``'s code cells, in place."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None


def header_cell(name: str, full_book: str) -> nbformat.NotebookNode:
    """The first cell of a student chapter: what it is and where the full one is."""
    import nbformat

    return nbformat.v4.new_markdown_cell(
        f"**Student edition.** The solutions to this chapter's exercises are removed. "
        f"The full chapter, with solutions, is `notebooks/{name}` in {full_book}.",
        id=HEADER_ID)


def _write_zip(paths: list[Path], zip_path: Path) -> None:
    """Zip ``paths`` under a folder named after ``zip_path``, with fixed dates."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            info = zipfile.ZipInfo(f"{zip_path.stem}/{path.name}", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)


def write_student_edition(notebooks_dir: Path | str, out_dir: Path | str,
                          zip_path: Path | str, *,
                          full_book: str = "the book's repository") -> dict[str, StripReport]:
    """Write the student edition of every chapter ``NN_*.ipynb`` and zip it.

    Parameters
    ----------
    notebooks_dir : the folder of the source chapters.
    out_dir : where the student notebooks go (stale ``NN_*.ipynb`` there are
        removed).
    zip_path : the zip of the student notebooks.
    full_book : where the full book is, for the first cell of each chapter.

    Returns
    -------
    dict
        Chapter file name -> its :class:`StripReport`.
    """
    import nbformat

    sources = sorted(Path(notebooks_dir).glob(NOTEBOOK_GLOB))
    if not sources:
        raise StudentEditionError(f"no chapter {NOTEBOOK_GLOB} in {notebooks_dir}")
    books = {path.name: nbformat.read(path, as_version=4) for path in sources}
    known = set().union(*(exercise_labels(nb) for nb in books.values()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in set(out.glob(NOTEBOOK_GLOB)) - {out / name for name in books}:
        stale.unlink()
    reports, written = {}, []
    for name, nb in books.items():
        student, reports[name] = strip_solutions(nb, name=name, known_exercises=known)
        clear_outputs(student)
        student.cells.insert(0, header_cell(name, full_book))
        nbformat.write(student, out / name)
        written.append(out / name)
    _write_zip(written, Path(zip_path))
    return reports


def full_book(root: Path) -> str:
    """The repository named in ``_config.yml`` under ``root``, as Markdown."""
    config = root / "_config.yml"
    if config.is_file():
        url = (yaml.safe_load(config.read_text("utf-8")).get("repository") or {}).get("url")
        if url:
            return f"the book's repository, <{url}>"
    return "the book's repository"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.student",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    parser.add_argument("--out", type=Path, default=Path("_build/student"))
    parser.add_argument("--zip", type=Path, default=Path("_build/student.zip"))
    args = parser.parse_args(argv)
    try:
        reports = write_student_edition(args.notebooks, args.out, args.zip,
                                        full_book=full_book(args.notebooks.resolve().parent))
    except StudentEditionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, report in reports.items():
        print(f"{name}: {report.summary()}")
    print(f"wrote {len(reports)} chapters to {args.out}/ and {args.zip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
