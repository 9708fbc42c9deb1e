"""Where a build's time went: the compute time of every cached unit, summed.

Usage::

    python -m localprops.tools.timings [CACHE_DIR] [--since YYYY-MM-DDTHH:MM:SS]
                                       [--latest] [--by {study,chapter,model}]

Every unit the cache computes appends a line (study, model, seconds) to
``CACHE_DIR/timings.jsonl`` (see :mod:`localprops.core.cache`); this tool
prints a markdown table of the seconds per study and model, largest first.
Units read back from the cache cost nothing and are not in the log, so run it
after a build from an empty cache to see what a cold build costs. The time
outside units (loading models, selecting samples, plotting) is not counted:
compare the total with the build's own per-notebook times.

Two things make a log over several builds misleading, and each has an option:

- a cache that lived through code changes holds the units of every code
  version; ``--latest`` keeps, of the units that differ only in their code
  version, the one computed last (what a cold build of that code computes);
- a unit computed while another job shared the cores is logged several times
  slower than alone; the ``estimate`` column (the median seconds per unit of a
  (study, model) times its units) is robust to a minority of such units,
  which the ``total`` column is not.
"""
from __future__ import annotations

import argparse
import json
import statistics
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from localprops.core.cache import TIMINGS_FILE, cache_dir

#: The chapter whose default build computes a study's units first (the
#: noise-augmented net's isotropy and attack units come from 09 but are counted
#: with their study's chapter).
STUDY_CHAPTERS = {"selection": "01", "isotropy": "02", "floor": "02", "symmetry": "03",
                  "topology": "05", "depth": "05", "lipschitz": "06", "worstcase": "06",
                  "first_order": "08", "attacks": "08", "fourier": "09",
                  "halfspace-noise": "09", "subspace": "09"}
GROUPINGS = ("study", "chapter", "model")
#: Manifest entries that name the sample rather than the work a unit does.
SAMPLE_KEYS = ("seed", "sample", "label", "sample_seed")


def read_timings(path: Path, since: str | None = None) -> list[dict]:
    """The logged units of ``path`` (a ``timings.jsonl``), those at or after ``since``."""
    if not path.exists():
        raise SystemExit(f"no unit timings at {path}: a build writes them into its "
                         "cache folder (LOCALPROPS_CACHE) while it computes units")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if since is None or line["at"] >= since]


def _manifest(path: Path) -> dict | None:
    """The manifest stored in a cached unit, or None when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return json.loads(str(stored["manifest"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def latest_units(lines: list[dict], root: Path) -> list[dict]:
    """The lines of the units a cold build of the latest code would compute.

    Units whose manifests differ only in their code version (``code``) are
    the same computation by different code: of those still in ``root``, only
    the one logged last is kept. Lines of units no longer in the cache go.
    Every kept line gets a ``kind``: its manifest without the sample's own
    entries, so that medians compare units that do the same work.
    """
    at = {line["unit"]: line["at"] for line in lines}
    newest: dict[str, tuple[str, str]] = {}        # manifest without code -> (at, unit)
    kinds: dict[str, str] = {}
    for path in root.glob("*/*/*.npz"):
        unit = path.stem
        if unit not in at:
            continue
        manifest = _manifest(path)
        if manifest is None:
            continue
        manifest.pop("code", None)
        key = json.dumps(manifest, sort_keys=True, default=str)
        if key not in newest or at[unit] > newest[key][0]:
            newest[key] = (at[unit], unit)
        kinds[unit] = json.dumps({k: v for k, v in manifest.items() if k not in SAMPLE_KEYS},
                                 sort_keys=True, default=str)
    keep = {unit for _, unit in newest.values()}
    return [{**line, "kind": kinds[line["unit"]]} for line in lines if line["unit"] in keep]


def summarize(lines: Iterable[dict], by: str = "study") -> list[dict]:
    """Units, total, median and median-based estimate of seconds per group.

    Medians are taken per (study, model, kind) (a line's ``kind``, set by
    :func:`latest_units`, tells units of different parameters apart), whose
    units do comparable work; ``estimate_s`` sums median x units over them.
    Rows come largest estimate first.
    """
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, got {by!r}")
    seconds: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for line in lines:
        seconds[(line["study"], line["model"], line.get("kind", ""))].append(
            float(line["seconds"]))
    groups: dict[tuple[str, ...], dict] = {}
    for (study, model, _), values in seconds.items():
        key = {"study": (study, model), "model": (model,),
               "chapter": (STUDY_CHAPTERS.get(study, "?"),)}[by]
        row = groups.setdefault(key, {"units": 0, "total_s": 0.0, "estimate_s": 0.0,
                                      "all": []})
        row["units"] += len(values)
        row["total_s"] += sum(values)
        row["estimate_s"] += statistics.median(values) * len(values)
        row["all"] += values
    rows = []
    for key, row in groups.items():
        named = dict(zip({"study": ("study", "model"), "model": ("model",),
                          "chapter": ("chapter",)}[by], key))
        rows.append({**named, "units": row["units"], "total_s": row["total_s"],
                     "median_s": statistics.median(row["all"]),
                     "estimate_s": row["estimate_s"]})
    return sorted(rows, key=lambda row: (-row["estimate_s"], -row["total_s"]))


def as_markdown(rows: list[dict]) -> str:
    """The summary as a markdown table with a total line."""
    names = [k for k in ("chapter", "study", "model") if rows and k in rows[0]]
    total = sum(row["total_s"] for row in rows)
    estimate = sum(row["estimate_s"] for row in rows)
    out = ["| " + " | ".join(names) + " | units | minutes logged | minutes estimated "
           "| median s / unit | share |",
           "|" + "---|" * len(names) + "---:|---:|---:|---:|---:|"]
    out += ["| " + " | ".join(str(r[k]) for k in names)
            + f" | {r['units']} | {r['total_s'] / 60:.1f} | {r['estimate_s'] / 60:.1f} | "
            f"{r['median_s']:.2f} | {r['estimate_s'] / max(estimate, 1e-12):.0%} |"
            for r in rows]
    out.append("| all |" + " |" * (len(names) - 1) + f" {sum(r['units'] for r in rows)} | "
               f"{total / 60:.1f} | {estimate / 60:.1f} | | 100% |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    """Print the table for a cache folder; return its rows."""
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.timings",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("cache", nargs="?", default=None,
                        help="cache folder (default: LOCALPROPS_CACHE or the checkout's)")
    parser.add_argument("--since", default=None,
                        help="only units computed at or after this local time")
    parser.add_argument("--latest", action="store_true",
                        help="only the units of the latest code version still in the cache")
    parser.add_argument("--by", choices=GROUPINGS, default="study",
                        help="group by (study, model), by chapter or by model")
    args = parser.parse_args(argv)
    root = Path(args.cache or cache_dir())
    lines = read_timings(root / TIMINGS_FILE, args.since)
    if args.latest:
        lines = latest_units(lines, root)
    rows = summarize(lines, by=args.by)
    if not rows:
        raise SystemExit(f"no unit in {root / TIMINGS_FILE} at or after {args.since}"
                         + (" still in the cache" if args.latest else ""))
    print(as_markdown(rows))
    return rows


if __name__ == "__main__":
    main()
