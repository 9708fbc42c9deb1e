"""Where a build's time went: the compute time of every cached unit, summed.

Usage::

    python -m localprops.tools.timings [CACHE_DIR] [--since YYYY-MM-DDTHH:MM:SS]

Every unit the cache computes appends a line (study, model, seconds) to
``CACHE_DIR/timings.jsonl`` (see :mod:`localprops.core.cache`); this tool
prints a markdown table of the seconds per study and model, largest first.
Units read back from the cache cost nothing and are not in the log, so run it
after a build from an empty cache to see what a cold build costs. The time
outside units (loading models, selecting samples, plotting) is not counted:
compare the total with the build's own per-notebook times.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from localprops.core.cache import TIMINGS_FILE, cache_dir


def read_timings(path: Path, since: str | None = None) -> list[dict]:
    """The logged units of ``path`` (a ``timings.jsonl``), those at or after ``since``."""
    if not path.exists():
        raise SystemExit(f"no unit timings at {path}: a build writes them into its "
                         "cache folder (LOCALPROPS_CACHE) while it computes units")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if since is None or line["at"] >= since]


def summarize(lines: Iterable[dict]) -> list[dict]:
    """Units, total and median seconds per (study, model), largest total first."""
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in lines:
        seconds[(line["study"], line["model"])].append(float(line["seconds"]))
    rows = [{"study": study, "model": model, "units": len(values),
             "total_s": sum(values), "median_s": statistics.median(values)}
            for (study, model), values in seconds.items()]
    return sorted(rows, key=lambda row: -row["total_s"])


def as_markdown(rows: list[dict]) -> str:
    """The summary as a markdown table with a total line."""
    total = sum(row["total_s"] for row in rows)
    out = ["| study | model | units | minutes | median s / unit | share |",
           "|---|---|---:|---:|---:|---:|"]
    out += [f"| {r['study']} | {r['model']} | {r['units']} | {r['total_s'] / 60:.1f} | "
            f"{r['median_s']:.2f} | {r['total_s'] / total:.0%} |" for r in rows]
    out.append(f"| all | | {sum(r['units'] for r in rows)} | {total / 60:.1f} | | 100% |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    """Print the table for a cache folder; return its rows."""
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.timings",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("cache", nargs="?", default=None,
                        help="cache folder (default: LOCALPROPS_CACHE or the checkout's)")
    parser.add_argument("--since", default=None,
                        help="only units computed at or after this local time")
    args = parser.parse_args(argv)
    root = Path(args.cache or cache_dir())
    rows = summarize(read_timings(root / TIMINGS_FILE, args.since))
    if not rows:
        raise SystemExit(f"no unit in {root / TIMINGS_FILE} at or after {args.since}")
    print(as_markdown(rows))
    return rows


if __name__ == "__main__":
    main()
