"""Verdict rows, their tables and their persistence: what the scorecard reads.

Every chapter turns its measurements into :class:`Verdict` rows with the rules
of :mod:`localprops.report.claims`, shows them with :func:`as_table` and saves
them with :func:`save_verdicts`; the scorecard chapter reads them back with
:func:`load_verdicts`. Nothing here computes a result.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

SUPPORTED, PARTLY, NOT_SUPPORTED = "supported", "partly", "not supported"
#: the data cannot decide (below the noise floor, too few measurable samples,
#: or an interval that straddles the threshold)
INCONCLUSIVE = "inconclusive"
#: a logical statement: illustrated by the data, not tested, never counted as support
LOGICAL = "logical"
VERDICTS = (SUPPORTED, PARTLY, NOT_SUPPORTED, INCONCLUSIVE, LOGICAL)


@dataclass
class Verdict:
    """One claim of the paper, our measurement and our verdict.

    ``models`` maps every model behind the row to its sample count and, where
    the rule uses a share or a median, the model's estimate, 95% interval and
    outcome (:meth:`localprops.report.rules.Outcome.as_dict`); ``estimate``
    and ``interval`` repeat the deciding model's (the one closest to the
    threshold). ``sensitivity`` says what the verdict would be under a stated
    alternative threshold or reading.
    """

    claim: str
    paper: str
    measured: str
    rule: str
    verdict: str
    models: dict = field(default_factory=dict)
    setting: str = ""
    estimate: float | None = None
    interval: list | None = None
    sensitivity: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if isinstance(self.models, str):        # a plain list of names
            self.models = {name.strip(): {} for name in self.models.split(",") if name.strip()}

    @property
    def model_names(self) -> str:
        """The models behind the row, comma-separated."""
        return ", ".join(self.models)

    def as_dict(self) -> dict:
        return asdict(self)


def as_table(verdicts: Sequence[Verdict], columns: Sequence[str] = ("claim", "paper",
             "measured", "verdict")) -> str:
    """A Markdown table of verdicts (for ``IPython.display.Markdown``)."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    rows = ["| " + " | ".join(str(getattr(v, c)).replace("|", "/") for c in columns) + " |"
            for v in verdicts]
    return head + "\n".join(rows)


def save_verdicts(verdicts: Sequence[Verdict], chapter: str, profile: str,
                  root: str | None = None) -> str:
    """Write a chapter's verdicts as JSON for the scorecard; returns the path.

    Stored under ``<cache>/verdicts/<profile>/<chapter>.json`` with the code
    version, so the scorecard can show where each row comes from.
    """
    import json
    import os

    from localprops.core.cache import cache_dir, code_version

    folder = os.path.join(root or cache_dir(), "verdicts", profile)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{chapter}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as file:
        json.dump({"chapter": chapter, "profile": profile, "code": code_version(),
                   "verdicts": [v.as_dict() for v in verdicts]}, file, indent=1)
    os.replace(tmp, path)
    return path


def load_verdicts(profile: str, root: str | None = None) -> list[dict]:
    """All saved verdict rows of a profile, each with its chapter and code version."""
    import glob
    import json
    import os

    from localprops.core.cache import cache_dir

    rows = []
    for path in sorted(glob.glob(os.path.join(root or cache_dir(), "verdicts", profile,
                                              "*.json"))):
        with open(path) as file:
            record = json.load(file)
        for verdict in record["verdicts"]:
            rows.append({"chapter": record["chapter"], "code": record["code"], **verdict})
    return rows


def _reading(setting: str) -> str:
    """The first two parts of a setting (norm and scale; quantity): what a row's reading is."""
    return ", ".join(part.strip() for part in setting.split(";")[:2]) or "as measured"


def summary_prose(verdicts: Sequence[Verdict]) -> str:
    """Markdown prose written from verdict rows: each claim's verdicts, then disagreements.

    Chapters display this instead of typing conclusions by hand, so their
    prose cannot contradict their tables.
    """
    claims: dict[str, list[Verdict]] = {}
    for v in verdicts:
        claims.setdefault(v.claim, []).append(v)
    lines = ["**In this run:**", ""]
    for claim, rows in claims.items():
        lines.append(f"- **{claim}** ({rows[0].paper}): " + "; ".join(
            f"*{v.verdict}* ({_reading(v.setting)})" for v in rows))
    against = [v for v in verdicts if v.verdict == NOT_SUPPORTED]
    undecided = [v for v in verdicts if v.verdict == INCONCLUSIVE]
    lines.append("")
    lines.append("Where our data disagree with the paper: " + (
        "; ".join(f"{v.claim} ({_reading(v.setting)})" for v in against) + "."
        if against else "nowhere in these rows.") + "\n")
    if undecided:
        lines.append("Where they cannot decide: " + "; ".join(
            f"{v.claim} ({_reading(v.setting)})" for v in undecided) + ".")
    return "\n".join(lines)
