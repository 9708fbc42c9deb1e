"""The student edition removes every solution and keeps every exercise.

Small constructed notebooks check each form a solution takes (a fenced
block in its own cell or sharing one with prose, a gated block spanning
code cells) and the errors; the real chapters are then checked with
regular expressions independent of the module's parser.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat comes with the `book` extra")
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from localprops.tools import student
from localprops.tools.build import NOTEBOOK_GLOB
from localprops.tools.student import (
    StudentEditionError,
    StudentEditionWarning,
    strip_solutions,
    write_student_edition,
)

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "notebooks").glob(NOTEBOOK_GLOB))

EXERCISE = "```{exercise}\n:label: ex-a\n\nWhat is 1 + 1?\n```"
SOLUTION = "```{solution} ex-a\n:class: dropdown\n\nTwo.\n```"
GATED_EXERCISE = "```{exercise-start}\n:label: ex-b\n```\n\nCompute it.\n\n```{exercise-end}\n```"
EXERCISE_LABEL = re.compile(r"\{exercise(?:-start)?\}[^\n]*\n:label:\s*(\S+)")


def notebook(*cells) -> nbformat.NotebookNode:
    """A notebook of ``cells``: strings are Markdown, ``("code", src)`` code cells."""
    return new_notebook(cells=[new_code_cell(c[1]) if isinstance(c, tuple)
                               else new_markdown_cell(c) for c in cells])


def sources(nb) -> list[str]:
    return [cell.source for cell in nb.cells]


def test_fenced_solution_in_its_own_cell_is_removed_with_the_cell():
    nb = notebook("# Title", EXERCISE, SOLUTION, ("code", "x = 1"))
    out, report = strip_solutions(nb)
    assert sources(out) == ["# Title", EXERCISE, "x = 1"]
    assert report.exercises == {"ex-a": 1} and report.solutions == {"ex-a": 1}
    assert report.cells_removed == 1 and report.warnings == []


def test_fenced_solution_sharing_a_cell_keeps_the_prose_and_exercise():
    cell = f"## Exercises\n\n{EXERCISE}\n\n{SOLUTION}\n\nMore prose."
    nb = notebook(cell)
    out, _ = strip_solutions(nb)
    assert sources(out) == [f"## Exercises\n\n{EXERCISE}\n\nMore prose."]
    assert sources(nb) == [cell], "the input notebook must not change"


def test_four_backtick_solution_with_inner_code_fence_is_removed_whole():
    solution = "````{solution} ex-a\n```python\nprint(2)\n```\nDone.\n````"
    quoted = "Write it as:\n\n```md\n```{solution} label\n```"
    out, report = strip_solutions(notebook(f"{EXERCISE}\n\n{solution}", ("code", "y = 2")))
    assert sources(out) == [EXERCISE, "y = 2"]
    with pytest.warns(StudentEditionWarning, match="still mentions"):
        kept, _ = strip_solutions(notebook(quoted))
    assert sources(kept) == [quoted], "a directive quoted in a code fence is not a solution"


def test_gated_solution_spanning_code_cells_is_removed_keeping_prose_around_it():
    nb = notebook(
        f"{GATED_EXERCISE}\n\n```{{solution-start}} ex-b\n:class: dropdown\n```\n\nFirst,",
        ("code", "answer = 2"),
        "then print it.",
        ("code", "print(answer)"),
        "That is all.\n\n```{solution-end}\n```\n\n## Next section",
        ("code", "z = 3"))
    out, report = strip_solutions(nb)
    assert sources(out) == [GATED_EXERCISE, "## Next section", "z = 3"]
    assert report.exercises == {"ex-b": 1} and report.solutions == {"ex-b": 1}
    assert report.cells_removed == 3


def test_gated_exercise_without_solution_is_kept_unchanged():
    nb = notebook("Intro", GATED_EXERCISE, ("code", "# your code here"))
    out, report = strip_solutions(nb)
    assert sources(out) == sources(nb) and report.exercises == {"ex-b": 1}
    assert not report.solutions


@pytest.mark.parametrize("cells, message", [
    (["```{solution-start} ex-b\n```", ("code", "x = 1")],
     r"nb\.ipynb, cell 0 .*'ex-b' has no solution-end"),
    (["text", ("code", "x"), "```{solution-end}\n```"],
     r"nb\.ipynb, cell 2 .*solution-end without a solution-start"),
    (["```{solution-start} a\n```", "```{solution-start} b\n```", "```{solution-end}\n```"],
     r"nb\.ipynb, cell 1 .*inside the solution 'a'"),
    ([f"{EXERCISE}\n```{{solution}} ex-a\nno end"], r"nb\.ipynb, cell 0 .*no closing fence"),
])
def test_unbalanced_solutions_are_errors_naming_notebook_and_cell(cells, message):
    with pytest.raises(StudentEditionError, match=message):
        strip_solutions(notebook(*cells), name="nb.ipynb")


def test_solution_matching_no_exercise_warns_unless_known_elsewhere():
    nb = notebook(EXERCISE, "```{solution} ex-zz\nx\n```")
    with pytest.warns(StudentEditionWarning, match="'ex-zz' matches no exercise"):
        _, report = strip_solutions(nb)
    assert len(report.warnings) == 1
    _, report = strip_solutions(nb, known_exercises={"ex-zz"})
    assert report.warnings == []


def _gated_ids(nb) -> set[str]:
    """Ids of the cells strictly between a solution-start cell and a solution-end cell."""
    ids, inside = set(), False
    for cell in nb.cells:
        if "{solution-end}" in cell.source:
            inside = False
        elif inside:
            ids.add(cell.id)
        if "{solution-start}" in cell.source:
            inside = True
    return ids


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_real_chapters_lose_every_solution_and_keep_every_exercise(path):
    nb = nbformat.read(path, as_version=4)
    out, report = strip_solutions(nb, name=path.name)
    text = "\n".join(sources(out))
    assert "{solution" not in text
    labels = EXERCISE_LABEL.findall("\n".join(sources(nb)))
    assert sorted(EXERCISE_LABEL.findall(text)) == sorted(labels)
    assert sorted(report.exercises.elements()) == sorted(labels)
    assert set(report.solutions) <= set(labels) and report.warnings == []
    assert not _gated_ids(nb) & {cell.id for cell in out.cells}
    params = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    kept = {cell.id: cell for cell in out.cells}
    assert params and all(kept[cell.id] == cell for cell in params)


def test_real_chapters_have_solutions_to_strip():
    """Guards the test above against passing vacuously."""
    reports = [strip_solutions(nbformat.read(path, as_version=4))[1] for path in CHAPTERS]
    assert sum(sum(report.solutions.values()) for report in reports) >= 10
    assert sum(report.cells_removed for report in reports) >= 5


def test_write_student_edition_writes_one_clean_notebook_per_chapter(tmp_path, capsys):
    out, archive = tmp_path / "student", tmp_path / "student.zip"
    (out / "99_stale.ipynb").parent.mkdir()
    (out / "99_stale.ipynb").write_text("{}")
    assert student.main(["--notebooks", str(ROOT / "notebooks"), "--out", str(out),
                         "--zip", str(archive)]) == 0
    printed = capsys.readouterr().out
    names = [path.name for path in CHAPTERS]
    assert sorted(path.name for path in out.iterdir()) == names
    assert all(f"{name}: " in printed for name in names)
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == [f"student/{name}" for name in names]
        for name in names:
            cells = json.loads(zipped.read(f"student/{name}"))["cells"]
            assert "Student edition" in "".join(cells[0]["source"])
            assert f"notebooks/{name}" in "".join(cells[0]["source"])
            assert not any(cell.get("outputs") for cell in cells)
            assert "{solution" not in json.dumps(cells)


def test_write_student_edition_refuses_an_empty_folder(tmp_path):
    with pytest.raises(StudentEditionError, match="no chapter"):
        write_student_edition(tmp_path, tmp_path / "out", tmp_path / "out.zip")
