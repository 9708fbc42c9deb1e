"""Write the README's findings from ``book/scorecard.json``, so they cannot drift from the book.

``python -m localprops.tools.findings`` renders one line per claim of the
committed scorecard (its verdict in every reading, with the deciding model's
estimate and 95% interval) and replaces the block between
:data:`START` and :data:`END` in ``README.md``. ``--check`` only compares and
exits with status 1 when the README is out of date (the test suite runs it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localprops.report.scorecard import estimate_text, reading

START = "<!-- findings:start (written by python -m localprops.tools.findings) -->"
END = "<!-- findings:end -->"


def _estimate(row: dict) -> str:
    text = estimate_text(row)
    return f", {text}" if text else ""


def _sample_counts(rows: list[dict]) -> dict[str, str]:
    """Per model, its samples over the rows: one number, or the range where chapters differ."""
    counts: dict[str, set[int]] = {}
    for row in rows:
        for name, stored in (row.get("models") or {}).items():
            if stored.get("samples"):
                counts.setdefault(name, set()).add(int(stored["samples"]))
    return {name: (f"{min(n)}" if min(n) == max(n) else f"{min(n)}-{max(n)}")
            for name, n in sorted(counts.items())}


def render(rows: list[dict]) -> str:
    """The findings block: per claim, every reading's verdict with its deciding estimate."""
    claims: dict[str, list[dict]] = {}
    for row in rows:
        claims.setdefault(row["claim"], []).append(row)
    samples = _sample_counts(rows)
    lines = [START, "",
             "Written from `book/scorecard.json` (default profile): "
             + ", ".join(f"{name} ({n} samples)" for name, n in samples.items())
             + " (a range where chapters use different numbers). Each verdict is followed by "
             "its deciding model, the one closest to or furthest across the rule's threshold "
             "(often the weakest, not a typical one), with its estimate and 95% interval; see "
             "the scorecard chapter for every model's numbers and the rules.",
             ""]
    for claim, group in claims.items():
        lines.append(f"- **{claim}** {group[0]['paper']}: " + "; ".join(
            f"*{row['verdict']}* ({reading(row.get('setting'))}{_estimate(row)})"
            for row in group))
    lines += ["", END]
    return "\n".join(lines)


def update(readme: str, block: str) -> str:
    """``readme`` with its findings block replaced by ``block``."""
    if START not in readme or END not in readme:
        raise ValueError(f"README has no findings block: add the lines\n{START}\n{END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localprops.tools.findings",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--scorecard", type=Path, default=Path("book/scorecard.json"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true",
                        help="only check that the README is up to date")
    args = parser.parse_args(argv)
    if not args.scorecard.is_file():
        print(f"no {args.scorecard}: build the book first (make book)", file=sys.stderr)
        return 2
    rows = json.loads(args.scorecard.read_text("utf-8"))
    text = args.readme.read_text("utf-8")
    new = update(text, render(rows))
    if args.check:
        if new != text:
            print(f"{args.readme} findings are out of date: run python -m "
                  "localprops.tools.findings", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
