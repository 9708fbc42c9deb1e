"""The benchmark script's helpers (the benchmarks themselves are run by hand: make bench)."""
from __future__ import annotations

import pytest
import yaml

from localprops.tools import bench
from localprops.tools.build import repo_root


def test_chapter_parameters_are_the_notebook_defaults_overridden_by_the_profile():
    profile = yaml.safe_load((repo_root() / "profiles" / "ci.yml").read_text("utf-8"))
    merged = bench.chapter_parameters("ci", "02_isotropy")
    assert merged["T"] == profile["02_isotropy"]["T"] != 40          # from the profile
    assert merged["seed"] == profile["common"]["seed"]               # from its common block
    assert merged["norms"] == ["l2", "linf"]                         # the notebook's own
    assert merged["profile"] == "ci"
    published = yaml.safe_load((repo_root() / "profiles" / "default.yml").read_text("utf-8"))
    default = bench.chapter_parameters("default", "02_isotropy")
    assert default["n_samples"] == published["02_isotropy"]["n_samples"]


def test_every_benchmark_is_registered():
    assert set(bench.BENCHMARKS) == {"engine", "memory", "mantel", "units"}
    assert bench.BENCHMARKS["units"] is bench.bench_units


def test_an_unknown_profile_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--only", "units", "--profile", "nope", "--out", str(tmp_path / "x.md")])
    assert stopped.value.code == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()
