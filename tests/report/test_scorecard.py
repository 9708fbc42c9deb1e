"""Verdict rows, their persistence, build ids and the machine-readable scorecard."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from localprops.core import cache
from localprops.report import scorecard
from localprops.report.scorecard import (
    INCONCLUSIVE,
    LOGICAL,
    NOT_SUPPORTED,
    PARTLY,
    SUPPORTED,
    VERDICTS,
    Verdict,
)


def model(samples: int = 30, classes: int | None = 3) -> dict:
    """A model's stored outcome, shaped as rules.Outcome.as_dict writes it."""
    return {"samples": samples, "classes": classes, "estimate": 0.4,
            "interval": [0.3, 0.5], "outcome": "PASS", "counted": samples}


def row(claim: str = "C1", verdict: str = SUPPORTED, setting: str = "l2, x1; score",
        **kwargs) -> Verdict:
    return Verdict(claim=claim, paper=f"paper says {claim}", measured="40% [30%, 50%]",
                   rule="share >= 30%", verdict=verdict, setting=setting, **kwargs)


# ------------------------------------------------------------------ Verdict


def test_verdict_rejects_an_unknown_verdict():
    with pytest.raises(ValueError, match="verdict must be one of"):
        row(verdict="Supported")
    with pytest.raises(ValueError, match="'maybe'"):
        row(verdict="maybe")
    for verdict in VERDICTS:                     # every known one is accepted
        assert row(verdict=verdict).verdict == verdict


def test_comma_separated_models_become_a_dict():
    verdict = row(models="resnet, vgg ,, lenet")
    assert verdict.models == {"resnet": {}, "vgg": {}, "lenet": {}}
    assert verdict.model_names == "resnet, vgg, lenet"
    stored = {"resnet": model()}
    assert row(models=stored).models == stored   # a dict is kept as it is


def test_as_dict_round_trips_through_json():
    verdict = row(models={"a": model(), "b": model(12, None)}, estimate=0.4,
                  interval=[0.3, 0.5], sensitivity="at 20%: partly")
    data = json.loads(json.dumps(verdict.as_dict()))
    assert data == verdict.as_dict()
    assert Verdict(**data) == verdict
    assert set(data) == {"claim", "paper", "measured", "rule", "verdict", "models",
                         "setting", "estimate", "interval", "sensitivity"}


def test_as_table_takes_verdicts_and_dicts():
    table = scorecard.as_table([row(), {"claim": "C2", "verdict": "partly", "paper": "a|b"}])
    lines = table.splitlines()
    assert lines[0] == "| claim | paper | measured | verdict |"
    assert lines[2] == "| C1 | paper says C1 | 40% [30%, 50%] | supported |"
    assert lines[3] == "| C2 | a/b |  | partly |"


# ------------------------------------------------- saving, loading, staleness


@pytest.fixture
def code_version(monkeypatch):
    """Pin the package code version (what build_id hashes first) to a settable string.

    No checkout either (as when pip-installed), unless the ``checkout`` fixture gives one.
    """
    version = {"now": "code-v1"}
    monkeypatch.setattr(cache, "package_code_version", lambda: version["now"])
    monkeypatch.setattr(cache, "modules_code_version",
                        lambda names: f"{version['now']}:{','.join(sorted(names))}")
    monkeypatch.setattr(cache, "checkout_root", lambda: None)
    return version


def test_save_and_load_round_trip(tmp_path, code_version):
    first = [row("C1", models={"a": model()}, estimate=0.4, interval=[0.3, 0.5]),
             row("C2", NOT_SUPPORTED, models="a, b")]
    second = [row("B1", INCONCLUSIVE)]
    path = scorecard.save_verdicts(first, "03_iso", "ci", root=str(tmp_path))
    assert Path(path) == tmp_path / "verdicts" / "ci" / "03_iso.json"
    scorecard.save_verdicts(second, "07_attacks", "ci", root=str(tmp_path))
    scorecard.save_verdicts([row("C9")], "03_iso", "paper", root=str(tmp_path))
    assert not list((tmp_path / "verdicts" / "ci").glob("*.tmp"))

    rows = scorecard.load_verdicts("ci", root=str(tmp_path))
    assert [r["claim"] for r in rows] == ["C1", "C2", "B1"]      # no row of "paper"
    assert [r["chapter"] for r in rows] == ["03_iso", "03_iso", "07_attacks"]
    for loaded, saved in zip(rows, first + second):
        assert loaded["build"] == scorecard.build_id(loaded["chapter"], "ci",
                                                     loaded["modules"])
        assert {k: v for k, v in loaded.items()
                if k not in ("chapter", "build", "modules")} \
            == saved.as_dict()
    assert rows[1]["models"] == {"a": {}, "b": {}}
    assert scorecard.load_verdicts("default", root=str(tmp_path)) == []


def test_rows_of_another_code_version_are_stale(tmp_path, code_version):
    scorecard.save_verdicts([row("C1"), row("C2")], "03_iso", "ci", root=str(tmp_path))
    rows = scorecard.load_verdicts("ci", root=str(tmp_path))
    current, stale = scorecard.split_current(rows, "ci")
    assert (current, stale) == (rows, [])
    code_version["now"] = "code-v2"
    current, stale = scorecard.split_current(rows, "ci")
    assert (current, stale) == ([], rows)
    # saved again under the new code, they are current again
    scorecard.save_verdicts([row("C1"), row("C2")], "03_iso", "ci", root=str(tmp_path))
    current, stale = scorecard.split_current(
        scorecard.load_verdicts("ci", root=str(tmp_path)), "ci")
    assert len(current) == 2 and stale == []


def test_a_row_of_another_profile_is_stale(tmp_path, code_version):
    scorecard.save_verdicts([row("C1")], "03_iso", "ci", root=str(tmp_path))
    rows = scorecard.load_verdicts("ci", root=str(tmp_path))
    assert scorecard.split_current(rows, "paper") == ([], rows)
    assert scorecard.split_current([{**rows[0], "build": None}], "ci")[1] != []


# ----------------------------------------------------------------- build ids


def write_chapter(path: Path, parameters: str, *cells) -> None:
    """A notebook: a Markdown title, a ``parameters`` cell, then ``cells``.

    A cell given as ``("md", text)`` is Markdown; a string is code.
    """
    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    body = [new_markdown_cell(c[1]) if isinstance(c, tuple) else new_code_cell(c)
            for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_markdown_cell("# Title"), params, *body]), path)


@pytest.fixture
def checkout(tmp_path, monkeypatch, code_version) -> Path:
    """A fake source checkout with one chapter and a ``ci`` profile."""
    root = tmp_path / "checkout"
    write_chapter(root / "notebooks" / "03_iso.ipynb", "T = 1",
                  "x = run(T)", ("md", "Some prose."), "show(x)")
    (root / "profiles").mkdir()
    (root / "profiles" / "ci.yml").write_text("common:\n  T: 2\n", "utf-8")
    monkeypatch.setattr(cache, "checkout_root", lambda: root)
    return root


def test_build_id_follows_the_chapters_code_not_its_parameters_or_prose(checkout):
    notebook = checkout / "notebooks" / "03_iso.ipynb"
    before = scorecard.build_id("03_iso", "ci")
    assert len(before) == 12 and before == scorecard.build_id("03_iso", "ci")

    write_chapter(notebook, "T = 100\nseed = 5", "x = run(T)", ("md", "Some prose."),
                  "show(x)")
    assert scorecard.build_id("03_iso", "ci") == before, "parameters cell"
    write_chapter(notebook, "T = 1", "x = run(T)", ("md", "Other prose, longer."),
                  "show(x)")
    assert scorecard.build_id("03_iso", "ci") == before, "Markdown cell"
    write_chapter(notebook, "T = 1", "x = run(T)", ("md", "Some prose."), "show(x, log=True)")
    changed = scorecard.build_id("03_iso", "ci")
    assert changed != before, "code cell"
    write_chapter(notebook, "T = 1", "x = run(T)", ("md", "Some prose."), "show(x)")
    assert scorecard.build_id("03_iso", "ci") == before, "the same code again"


def test_build_id_follows_the_chapters_parameters_and_the_profile_name(checkout):
    profile = checkout / "profiles" / "ci.yml"
    before = scorecard.build_id("03_iso", "ci")
    profile.write_text("common:\n  T: 3\n", "utf-8")
    assert scorecard.build_id("03_iso", "ci") != before, "common parameter"
    profile.write_text("common:\n  T: 2\n03_iso:\n  n: 5\n", "utf-8")
    assert scorecard.build_id("03_iso", "ci") != before, "the chapter's own block"
    profile.write_text("# a comment\ncommon:\n  T: 2\n04_other:\n  n: 5\n", "utf-8")
    assert scorecard.build_id("03_iso", "ci") == before, "another chapter's block"
    profile.write_text("common:\n  T: 2\n", "utf-8")
    assert scorecard.build_id("03_iso", "ci") == before
    assert scorecard.build_id("03_iso", "paper") != before
    profile.write_text("common: [not, a, mapping]\n", "utf-8")    # invalid: its text decides
    assert scorecard.build_id("03_iso", "ci") != before


def test_build_id_follows_the_package_code(checkout, code_version):
    before = scorecard.build_id("03_iso", "ci")
    code_version["now"] = "code-v2"
    assert scorecard.build_id("03_iso", "ci") != before


def test_saved_rows_are_keyed_by_the_modules_loaded_when_saving(tmp_path, code_version):
    scorecard.save_verdicts([row("C1")], "03_iso", "ci", root=str(tmp_path))
    rows = scorecard.load_verdicts("ci", root=str(tmp_path))
    assert rows[0]["modules"] == scorecard.loaded_modules()
    assert "localprops.report.scorecard" in rows[0]["modules"]
    assert rows[0]["build"] == scorecard.build_id("03_iso", "ci", rows[0]["modules"])
    # a row saved by a kernel that had loaded other modules is checked against those
    other = {**rows[0], "modules": ["localprops"],
             "build": scorecard.build_id("03_iso", "ci", ["localprops"])}
    assert scorecard.split_current([other], "ci") == ([other], [])


def fake_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "localprops"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return package


def test_modules_code_version_follows_only_the_named_modules(tmp_path, monkeypatch):
    package = fake_package(tmp_path, {"__init__.py": "", "studies/__init__.py": "",
                                      "studies/a.py": '"""Doc."""\nX = 1\n', "studies/b.py": "Y = 1\n"})
    monkeypatch.setattr(cache, "PACKAGE_DIR", package)
    assert cache.module_file("localprops.studies") == package / "studies" / "__init__.py"
    assert cache.module_file("localprops.studies.a") == package / "studies" / "a.py"
    assert cache.module_file("numpy") is None
    names = ["localprops", "localprops.studies", "localprops.studies.a"]
    before = cache.modules_code_version(names)
    assert before == cache.modules_code_version(list(reversed(names)))
    (package / "studies" / "b.py").write_text("Y = 2\n", "utf-8")
    assert cache.modules_code_version(names) == before, "a module not named"
    (package / "studies" / "a.py").write_text('"""Other doc."""\nX = 1\n', "utf-8")
    assert cache.modules_code_version(names) == before, "a docstring"
    (package / "studies" / "a.py").write_text("X = 2\n", "utf-8")
    assert cache.modules_code_version(names) != before, "a named module's code"


def test_build_id_is_per_chapter(checkout):
    write_chapter(checkout / "notebooks" / "04_sym.ipynb", "T = 1", "y = other(T)")
    iso, sym = scorecard.build_id("03_iso", "ci"), scorecard.build_id("04_sym", "ci")
    assert iso != sym
    # editing one chapter leaves the other's rows current
    write_chapter(checkout / "notebooks" / "04_sym.ipynb", "T = 1", "y = other(T) + 1")
    assert scorecard.build_id("03_iso", "ci") == iso
    assert scorecard.build_id("04_sym", "ci") != sym


def test_editing_a_chapter_makes_only_its_rows_stale(tmp_path, checkout):
    write_chapter(checkout / "notebooks" / "04_sym.ipynb", "T = 1", "y = other(T)")
    store = str(tmp_path / "cache")
    scorecard.save_verdicts([row("C1"), row("C2")], "03_iso", "ci", root=store)
    scorecard.save_verdicts([row("C5")], "04_sym", "ci", root=store)
    rows = scorecard.load_verdicts("ci", root=store)
    assert scorecard.split_current(rows, "ci") == (rows, [])
    write_chapter(checkout / "notebooks" / "04_sym.ipynb", "T = 1", "y = other(T) * 2")
    current, stale = scorecard.split_current(rows, "ci")
    assert [r["claim"] for r in current] == ["C1", "C2"]
    assert [(r["claim"], r["chapter"]) for r in stale] == [("C5", "04_sym")]


# -------------------------------------------------------------- scorecard.json


def test_write_json_writes_exactly_the_json_fields(tmp_path, code_version):
    verdicts = [row("C1", models={"resnet": model(30, 3), "vgg": model(28, None)},
                    estimate=0.4, interval=(0.3, 0.5), sensitivity="at 20%: supported"),
                row("C7", LOGICAL, models="resnet")]
    scorecard.save_verdicts(verdicts, "03_iso", "ci", root=str(tmp_path))
    rows = scorecard.load_verdicts("ci", root=str(tmp_path))
    rows[0]["extra"] = "not for the file"
    path = tmp_path / "scorecard.json"
    assert scorecard.write_json(rows, str(path)) == str(path)
    assert not path.with_name("scorecard.json.tmp").exists()

    def no_constants(name):                      # NaN / Infinity are not JSON
        raise ValueError(name)

    records = json.loads(path.read_text("utf-8"), parse_constant=no_constants)
    assert isinstance(records, list) and len(records) == 2
    for record in records:
        assert list(record) == list(scorecard.JSON_FIELDS)
        assert record["chapter"] == "03_iso"
        assert record["build"] == scorecard.build_id("03_iso", "ci", rows[0]["modules"])
        interval = record["interval"]
        assert interval is None or (isinstance(interval, list) and len(interval) == 2)
        assert isinstance(record["models"], dict)
    first, second = records
    assert first["interval"] == [0.3, 0.5] and first["estimate"] == 0.4
    assert first["models"] == {"resnet": model(30, 3), "vgg": model(28, None)}
    for stored in first["models"].values():
        assert {"samples", "classes"} <= set(stored)
    assert second["interval"] is None and second["estimate"] is None
    assert second["models"] == {"resnet": {}}
    assert second["verdict"] == "logical"


def test_write_json_fills_missing_fields_with_null(tmp_path):
    path = tmp_path / "scorecard.json"
    scorecard.write_json([{"claim": "C1", "verdict": "supported"}], str(path))
    (record,) = json.loads(path.read_text("utf-8"))
    assert list(record) == list(scorecard.JSON_FIELDS)
    assert record["claim"] == "C1" and record["interval"] is None and record["build"] is None
    scorecard.write_json([], str(path))
    assert json.loads(path.read_text("utf-8")) == []


# ------------------------------------------------------------- tally, prose


def test_tally_counts_every_verdict():
    verdicts = [SUPPORTED, SUPPORTED, PARTLY, NOT_SUPPORTED, INCONCLUSIVE, INCONCLUSIVE,
                INCONCLUSIVE, LOGICAL]
    counts = scorecard.tally([row(verdict=v).as_dict() for v in verdicts])
    assert counts == {SUPPORTED: 2, PARTLY: 1, NOT_SUPPORTED: 1, INCONCLUSIVE: 3, LOGICAL: 1}
    assert list(counts) == list(VERDICTS)
    assert sum(counts.values()) == len(verdicts)
    assert scorecard.tally([]) == dict.fromkeys(VERDICTS, 0)


def test_summary_prose_lists_claims_disagreements_and_undecided():
    verdicts = [row("C1", SUPPORTED, "l2, x1; score; resnet"),
                row("C2", NOT_SUPPORTED, "linf, x1; score"),
                row("C1", INCONCLUSIVE, "l2, x10; margin",
                    models={"a": {"outcome": "pass"}, "b": {"outcome": "fail"},
                            "c": {"outcome": "undecided"}}),
                row("C3", LOGICAL, ""),
                row("C2", PARTLY, "l2, x1; score"),
                row("C4", NOT_SUPPORTED, "l2, x2; lip")]
    text = scorecard.summary_prose(verdicts)
    lines = text.splitlines()
    claim_lines = [line for line in lines if line.startswith("- ")]
    assert claim_lines == [
        "- **C1** (paper says C1): *supported* (l2, x1, score); "
        "*inconclusive* (l2, x10, margin)",
        "- **C2** (paper says C2): *not supported* (linf, x1, score); *partly* (l2, x1, score)",
        "- **C3** (paper says C3): *logical* (as measured)",
        "- **C4** (paper says C4): *not supported* (l2, x2, lip)",
    ]
    disagree = [line for line in lines if "disagree" in line]
    assert disagree == ["Where our data disagree with the claim tested (the paper's; a later paper's for the L rows): "
                        "C2 (linf, x1, score); C4 (l2, x2, lip)."]
    undecided = [line for line in lines if "cannot decide" in line]
    assert undecided == ["Where they cannot decide (with what the models that did decide "
                         "say): C1 (l2, x10, margin: 1 of 3 models pass, 1 fail)."]
    assert "nowhere" not in text


def test_summary_prose_says_nowhere_without_disagreement():
    text = scorecard.summary_prose([row("C1", SUPPORTED), row("C2", PARTLY),
                                    row("C3", LOGICAL)])
    assert "Where our data disagree with the claim tested (the paper's; a later paper's for the L rows): nowhere in these rows." in text
    assert "cannot decide" not in text
    assert text.count("- **") == 3


def test_claim_order_is_natural():
    claims = ["C10", "B1", "C2", "F3", "C1", "L1", "F1", "C9"]
    assert sorted(claims, key=scorecard.claim_order) == [
        "C1", "C2", "C9", "C10", "F1", "F3", "B1", "L1"]


def test_verdict_grid_and_its_colours():
    rows = [{"claim": "C10", "setting": "l2; log-odds", "verdict": SUPPORTED},
            {"claim": "C2", "setting": "l2; log-odds", "verdict": INCONCLUSIVE},
            {"claim": "C2", "setting": "linf; log-odds", "verdict": NOT_SUPPORTED},
            {"claim": "C2", "setting": "linf; log-odds", "verdict": SUPPORTED}]
    grid = scorecard.verdict_grid(rows)
    assert list(grid.index) == ["C2", "C10"]
    assert list(grid.columns) == ["l2, log-odds", "linf, log-odds"]
    assert grid.loc["C2", "linf, log-odds"] == "not supported / supported"
    assert grid.loc["C10", "linf, log-odds"] == ""
    html = scorecard.style_grid(grid).to_html()
    assert scorecard.VERDICT_COLOURS[NOT_SUPPORTED] in html
    assert scorecard.VERDICT_COLOURS[INCONCLUSIVE] in html
    assert scorecard.VERDICT_COLOURS[PARTLY] not in html
    assert scorecard.style_grid(grid).to_html() == html      # the same bytes on every build


def test_the_committed_scorecard_rows_match_this_checkout():
    """Every row of book/scorecard.json was computed by the code, notebook and profile here."""
    root = Path(__file__).resolve().parents[2]
    rows = json.loads((root / "book" / "scorecard.json").read_text("utf-8"))
    assert rows
    stale = sorted({row["chapter"] for row in rows if row.get("modules") is None
                    or scorecard.build_id(row["chapter"], "default", row["modules"])
                    != row["build"]})
    assert not stale, (f"book/ holds verdicts of older code for {stale}: re-execute them "
                       "(python -m localprops.tools.build --notebooks '<chapters>,10_*')")
