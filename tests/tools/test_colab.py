"""The chapters' install cell: one URL (from _config.yml), a no-op where the package imports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localprops.tools import colab

ROOT = Path(__file__).resolve().parents[2]


def test_every_chapter_has_the_install_cell_for_the_configured_url():
    url = colab.repository_url(ROOT)
    results = colab.update_all(ROOT, write=False)
    assert results and set(results.values()) == {"ok"}, (
        f"run `python -m localprops.tools.colab` to write {url} into: "
        f"{[n for n, a in results.items() if a != 'ok']}")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text("utf-8"))["cells"]
        first = next(c for c in cells if c["cell_type"] == "code")
        assert "".join(first["source"]).startswith(colab.MARKER), path.name
        assert "hide-input" in first["metadata"]["tags"]


def run_cell(url: str, monkeypatch, importable: bool) -> list:
    """Execute the install cell with importlib and pip replaced by recorders."""
    import importlib.util

    calls = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real(name, *a) if importable or name != "localprops"
                                          else None))
    monkeypatch.setattr(subprocess, "check_call", lambda argv: calls.append(argv))
    exec(compile(colab.install_source(url), "<install cell>", "exec"), {})
    return calls


def test_the_cell_is_a_no_op_where_the_package_imports(monkeypatch):
    assert run_cell("https://example.org/owner/book", monkeypatch, importable=True) == []


def test_the_cell_installs_from_the_configured_repository_otherwise(monkeypatch):
    calls = run_cell("https://example.org/owner/book", monkeypatch, importable=False)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q",
                      "localprops[imagenet] @ git+https://example.org/owner/book"]]


def write_repo(root: Path, url: str | None, cells: list[dict]) -> Path:
    (root / "notebooks").mkdir(parents=True)
    config = {"repository": {"url": url}} if url else {"title": "t"}
    (root / "_config.yml").write_text(json.dumps(config), "utf-8")
    path = root / "notebooks" / "01_x.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}), "utf-8")
    return path


def test_the_tool_inserts_before_the_parameters_cell_then_updates_in_place(tmp_path):
    params = {"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]},
              "execution_count": None, "outputs": [], "source": ["T = 1\n"]}
    path = write_repo(tmp_path, "https://a.example/x", [
        {"cell_type": "markdown", "id": "m", "metadata": {}, "source": ["# T\n"]}, params])
    assert colab.main(["--root", str(tmp_path), "--check"]) == 1
    assert colab.update_all(tmp_path) == {"01_x.ipynb": "inserted"}
    cells = json.loads(path.read_text())["cells"]
    assert [c["id"] for c in cells][::2] == ["m", "p"]
    assert "https://a.example/x" in "".join(cells[1]["source"])
    assert colab.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / "_config.yml").write_text(json.dumps({"repository": {"url": "https://b.example/y"}}))
    assert colab.update_all(tmp_path) == {"01_x.ipynb": "updated"}
    cells = json.loads(path.read_text())["cells"]
    assert len(cells) == 3 and "https://b.example/y" in "".join(cells[1]["source"])


def test_a_config_without_url_says_what_to_set(tmp_path):
    write_repo(tmp_path, None, [])
    with pytest.raises(ValueError, match="repository.url"):
        colab.repository_url(tmp_path)
