"""The install cell that makes every chapter run on Colab and Binder.

A chapter opened from the site's launch buttons runs in a kernel that may not
have the package (Colab always, Binder only before ``postBuild`` ran). Each
chapter therefore starts with one small code cell that installs ``localprops``
from the repository when it cannot be imported, and does nothing when it can
(a local checkout, ``make book``, CI). The repository's URL is written in one
place, ``repository.url`` of ``_config.yml`` (which the launch buttons read
too); this tool writes it into the install cells::

    python -m localprops.tools.colab            # insert or update the cells
    python -m localprops.tools.colab --check    # exit 1 if a cell is missing or stale

and ``tests/tools/test_colab.py`` fails when a notebook's cell does not match
``_config.yml``, so changing the URL is one edit and one command.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import yaml

#: first line of the install cell: how the tool recognises it
MARKER = "# localprops: installed here when missing (Colab, Binder); a no-op otherwise"
#: tags of the cell: its input is folded away on the site
TAGS = ["hide-input", "localprops-install"]


def repository_url(root: Path) -> str:
    """``repository.url`` of ``<root>/_config.yml`` (the one place the URL is set)."""
    config = yaml.safe_load((root / "_config.yml").read_text("utf-8")) or {}
    url = (config.get("repository") or {}).get("url")
    if not url or not isinstance(url, str):
        raise ValueError(f"{root / '_config.yml'} has no repository.url: set it to the "
                         "repository's address (e.g. https://github.com/owner/name)")
    return url.strip()


def install_source(url: str) -> str:
    """The install cell's code for the repository at ``url``."""
    return (f"{MARKER}\n"
            "import importlib.util\n"
            "import subprocess\n"
            "import sys\n"
            "\n"
            "if importlib.util.find_spec(\"localprops\") is None:\n"
            f"    REPOSITORY = {url!r}\n"
            "    subprocess.check_call([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
            "                           f\"localprops[imagenet] @ git+{REPOSITORY}\"])\n")


def _source(cell: dict) -> str:
    return "".join(cell.get("source", []))


def _install_cell(url: str) -> dict:
    return {"cell_type": "code", "id": uuid.uuid4().hex[:8],
            "metadata": {"tags": list(TAGS)}, "execution_count": None, "outputs": [],
            "source": install_source(url).splitlines(keepends=True)}


def update_notebook(path: Path, url: str, *, write: bool = True) -> str:
    """Insert or refresh the install cell of one notebook; returns what was (to be) done.

    The cell goes before the first code cell (normally the ``parameters``
    cell, which must stay pure assignments for papermill). Returns
    ``"ok"``, ``"updated"`` or ``"inserted"``.
    """
    notebook = json.loads(path.read_text("utf-8"))
    cells = notebook["cells"]
    found = [i for i, c in enumerate(cells)
             if c["cell_type"] == "code" and _source(c).startswith(MARKER)]
    if found:
        cell = cells[found[0]]
        if _source(cell) == install_source(url):
            return "ok"
        cell["source"] = install_source(url).splitlines(keepends=True)
        action = "updated"
    else:
        first = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
        cells.insert(first, _install_cell(url))
        action = "inserted"
    if write:
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return action


def update_all(root: Path, *, write: bool = True) -> dict[str, str]:
    """:func:`update_notebook` on every ``notebooks/NN_*.ipynb`` of the checkout ``root``."""
    url = repository_url(root)
    return {path.name: update_notebook(path, url, write=write)
            for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


def main(argv: list[str] | None = None) -> int:
    """Command line: update the install cells, or ``--check`` them."""
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.colab",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="the repository (default: here)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when a cell is missing or stale")
    args = parser.parse_args(argv)
    results = update_all(Path(args.root), write=not args.check)
    for name, action in results.items():
        print(f"{name}: {action if not args.check or action == 'ok' else 'needs ' + action}")
    return 1 if args.check and any(a != "ok" for a in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
