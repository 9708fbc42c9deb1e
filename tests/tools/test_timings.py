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
