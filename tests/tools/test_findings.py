"""The README's findings are written from book/scorecard.json and checked against it."""
import json
from pathlib import Path

import pytest

from localprops.tools import findings

ROOT = Path(__file__).resolve().parents[2]

ROWS = [
    {"claim": "C1", "paper": "no ConvNet is perfectly isotropic", "verdict": "supported",
     "setting": "l2 radius; true-class probability; eps = 0.001", "estimate": 0.8,
     "interval": [0.7, 0.9], "models": {"a": {"samples": 100, "estimate": 0.95,
                                               "interval": [0.9, 1.0]},
                                         "b": {"samples": 24, "estimate": 0.8,
                                               "interval": [0.7, 0.9]}}},
    {"claim": "C1", "paper": "no ConvNet is perfectly isotropic", "verdict": "inconclusive",
     "setting": "linf radius; true-class log-odds", "estimate": None, "interval": None,
     "models": {"a": {"samples": 30}}},
    {"claim": "C6", "paper": "an isotropic function is symmetric", "verdict": "logical",
     "setting": "l2 radius; true-class probability", "estimate": 0.95,
     "interval": [0.9, 1.02], "models": {"a": {"samples": 100}}},
]


def test_render_lists_every_claim_once_with_all_readings():
    block = findings.render(ROWS)
    assert block.startswith(findings.START) and block.endswith(findings.END)
    assert block.count("**C1**") == 1 and block.count("**C6**") == 1
    # the headline names its deciding model; a row without an estimate shows none
    assert "*supported* (l2 radius, true-class probability, b: 0.8 [0.7, 0.9])" in block
    assert "*inconclusive* (linf radius, true-class log-odds)" in block
    assert "*logical* (l2 radius, true-class probability, 0.95 [0.9, 1.02])" in block
    assert "a (30-100 samples), b (24 samples)" in block      # a range across chapters


def test_estimate_text_leaves_out_an_interval_the_estimate_does_not_have():
    from localprops.report.scorecard import deciding_model, estimate_text

    row = {"estimate": 0.004, "interval": [None, None],
           "models": {"m": {"estimate": 0.004, "interval": [None, None]},
                      "n": {"estimate": 0.001, "interval": [None, None]}}}
    assert deciding_model(row) == "m" and estimate_text(row) == "m: 0.004"
    assert estimate_text({"estimate": None}) == "" and deciding_model({"estimate": None}) is None


def test_update_replaces_only_the_block_and_check_detects_drift(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{findings.START}\nOLD-BLOCK\n{findings.END}\n\nAfter.\n")
    card = tmp_path / "scorecard.json"
    card.write_text(json.dumps(ROWS))
    args = ["--scorecard", str(card), "--readme", str(readme)]
    assert findings.main([*args, "--check"]) == 1
    assert findings.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n") and text.endswith("\n\nAfter.\n")
    assert "OLD-BLOCK" not in text and findings.main([*args, "--check"]) == 0
    with pytest.raises(ValueError, match="no findings block"):
        findings.update("no markers", "x")


def test_committed_readme_matches_the_committed_scorecard():
    card = ROOT / "book" / "scorecard.json"
    assert card.is_file(), "book/scorecard.json is missing: run make book"
    assert findings.main(["--scorecard", str(card), "--readme", str(ROOT / "README.md"),
                          "--check"]) == 0, "run python -m localprops.tools.findings"
