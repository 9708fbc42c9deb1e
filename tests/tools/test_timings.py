import json

import numpy as np
import pytest

from localprops.core.cache import TIMINGS_FILE, ResultCache
from localprops.tools import timings


def test_computed_units_are_logged_and_cached_ones_are_not(tmp_path):
    cache = ResultCache(tmp_path)
    manifest = {"study": "isotropy", "model": "m", "sample": 0}
    cache.get_or_compute(manifest, lambda: {"a": np.zeros(2)})
    cache.get_or_compute(manifest, lambda: {"a": np.ones(2)})       # read back
    cache.get_or_compute({**manifest, "sample": 1}, lambda: {"a": np.zeros(2)})
    lines = timings.read_timings(tmp_path / TIMINGS_FILE)
    assert [(line["study"], line["model"]) for line in lines] == [("isotropy", "m")] * 2
    assert all(line["seconds"] >= 0 for line in lines)
    assert ResultCache(None).get_or_compute(manifest, lambda: {"a": np.zeros(1)})


def test_summary_sums_per_study_and_model(tmp_path):
    lines = [{"study": "s", "model": "a", "seconds": 1.0, "at": "2026-01-01T00:00:00"},
             {"study": "s", "model": "a", "seconds": 3.0, "at": "2026-01-01T00:00:01"},
             {"study": "t", "model": "a", "seconds": 10.0, "at": "2026-01-02T00:00:00"}]
    (tmp_path / TIMINGS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = timings.main([str(tmp_path)])
    assert [(r["study"], r["units"], r["total_s"], r["median_s"]) for r in rows] == [
        ("t", 1, 10.0, 10.0), ("s", 2, 4.0, 2.0)]
    later = timings.main([str(tmp_path), "--since", "2026-01-02T00:00:00"])
    assert [r["study"] for r in later] == ["t"]
    assert "| all | | 3 | 0.2 |" in timings.as_markdown(rows)


def test_missing_log_says_where_it_comes_from(tmp_path):
    with pytest.raises(SystemExit, match="LOCALPROPS_CACHE"):
        timings.main([str(tmp_path)])


def _log(root, lines):
    (root / TIMINGS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_estimate_resists_a_minority_of_slowed_units():
    lines = [{"study": "attacks", "model": "a", "seconds": s, "at": "t"}
             for s in (1.0, 1.1, 0.9, 30.0)]         # one unit logged beside another job
    (row,) = timings.summarize(lines)
    assert row["total_s"] == 33.0
    assert row["estimate_s"] == 4 * 1.05


def test_grouping_by_chapter_and_model():
    lines = [{"study": "isotropy", "model": "a", "seconds": 2.0, "at": "t"},
             {"study": "floor", "model": "b", "seconds": 1.0, "at": "t"},
             {"study": "attacks", "model": "a", "seconds": 5.0, "at": "t"},
             {"study": "unknown", "model": "a", "seconds": 0.5, "at": "t"}]
    chapters = {r["chapter"]: r["estimate_s"] for r in timings.summarize(lines, by="chapter")}
    assert chapters == {"08": 5.0, "02": 3.0, "?": 0.5}
    models = {r["model"]: r["units"] for r in timings.summarize(lines, by="model")}
    assert models == {"a": 3, "b": 1}
    with pytest.raises(ValueError, match="by must be one of"):
        timings.summarize(lines, by="sample")


def test_latest_keeps_the_newest_code_version_of_each_unit(tmp_path):
    cache = ResultCache(tmp_path)
    base = {"study": "isotropy", "model": "m", "T": 4}
    units = []
    for code, sample, at in (("old", 0, "2026-01-01T00:00:00"), ("new", 0, "2026-01-02T00:00:00"),
                             ("old", 1, "2026-01-01T00:00:01"), ("new", 1, "2026-01-02T00:00:01")):
        manifest = {**base, "code": code, "sample": sample}
        cache.save(manifest, {"a": np.zeros(1)})
        units.append({"study": "isotropy", "model": "m", "seconds": 1.0 if code == "old" else 2.0,
                      "unit": cache.path(manifest).stem, "at": at})
    other = {**base, "T": 8, "code": "new", "sample": 0}      # other parameters: kept
    cache.save(other, {"a": np.zeros(1)})
    units.append({"study": "isotropy", "model": "m", "seconds": 9.0,
                  "unit": cache.path(other).stem, "at": "2026-01-01T00:00:02"})
    gone = {"study": "isotropy", "model": "m", "seconds": 5.0, "unit": "deleted",
            "at": "2026-01-03T00:00:00"}              # logged, no longer in the cache
    _log(tmp_path, units + [gone])
    kept = timings.latest_units(timings.read_timings(tmp_path / TIMINGS_FILE), tmp_path)
    assert sorted(line["seconds"] for line in kept) == [2.0, 2.0, 9.0]
    # the two kinds of work get their own medians: 2 x 2 s + 1 x 9 s
    (row,) = timings.main([str(tmp_path), "--latest"])
    assert row["units"] == 3 and row["estimate_s"] == 13.0
    assert row["total_s"] == 13.0
