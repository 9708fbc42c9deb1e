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


def as_table(verdicts: Sequence[Verdict | dict], columns: Sequence[str] = ("claim", "paper",
             "measured", "verdict")) -> str:
    """A Markdown table of verdicts or of plain dict rows (for ``IPython.display.Markdown``)."""
    def cell(item, column: str) -> str:
        value = item.get(column, "") if isinstance(item, dict) else getattr(item, column)
        return str(value).replace("|", "/").replace("\n", " ")

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    rows = ["| " + " | ".join(cell(v, c) for c in columns) + " |" for v in verdicts]
    return head + "\n".join(rows)


def deciding_model(row: Verdict | dict) -> str | None:
    """The model whose estimate and interval a row shows as its own, or None.

    A row's headline is its deciding model's outcome
    (:func:`localprops.report.rules.deciding`: the one closest to, or furthest
    across, its threshold), so it may be the weakest model, not a typical one.
    """
    row = row if isinstance(row, dict) else asdict(row)
    if row.get("estimate") is None:
        return None
    interval = list(row.get("interval") or [None, None])
    for name, stored in (row.get("models") or {}).items():
        if (stored.get("estimate") == row["estimate"]
                and list(stored.get("interval") or [None, None]) == interval):
            return name
    return None


def estimate_text(row: Verdict | dict) -> str:
    """``"model: estimate [lo, hi]"``, the deciding model's numbers ('' without an estimate).

    The interval is left out where the estimate has none (e.g. a maximum).
    """
    row = row if isinstance(row, dict) else asdict(row)
    if row.get("estimate") is None:
        return ""
    lo, hi = row.get("interval") or (None, None)
    bounds = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
    name = deciding_model(row)
    return f"{name + ': ' if name else ''}{row['estimate']:.3g}{bounds}"


def loaded_modules() -> list[str]:
    """The package modules loaded in this interpreter (what its results can depend on)."""
    import sys

    return sorted(name for name in list(sys.modules)
                  if name == "localprops" or name.startswith("localprops."))


def _chapter_parameters(profile_file, chapter: str) -> bytes:
    """The chapter's parameters in a profile file (``common``, then its block), as bytes.

    Read with YAML directly: the profile loader lives in ``localprops.tools``,
    a layer above this one. A file that is not a mapping of mappings gives its
    text, so that any edit to it still counts.
    """
    import json

    import yaml

    text = profile_file.read_bytes()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return text
    blocks = [data.get(key) or {} for key in ("common", chapter)] if isinstance(data, dict) \
        else None
    if blocks is None or not all(isinstance(b, dict) for b in blocks):
        return text
    return json.dumps({**blocks[0], **blocks[1]}, sort_keys=True, default=str).encode()


def build_id(chapter: str, profile: str, modules: Sequence[str] | None = None) -> str:
    """The id of the build a chapter's verdicts come from: what they depend on, hashed.

    It covers the code of ``modules`` (the package modules the chapter's
    kernel had loaded when it saved its verdicts; None: every module of the
    package), the profile's name and, in a source checkout, the chapter's
    parameters in the profile file (``common`` with the chapter's block: an
    edit to another chapter's block leaves this id alone) and the chapter
    notebook's code cells (without its parameters cell). A saved row whose id
    differs from the one computed now is stale: code it ran, the notebook or
    its parameters changed since it was written.
    """
    import hashlib
    import json

    from localprops.core.cache import checkout_root, modules_code_version, package_code_version

    code = package_code_version() if modules is None else modules_code_version(modules)
    digest = hashlib.sha256(f"{code}:{profile}".encode())
    root = checkout_root()
    if root is not None:
        profile_file = root / "profiles" / f"{profile}.yml"
        if profile_file.is_file():
            digest.update(_chapter_parameters(profile_file, chapter))
        notebook = root / "notebooks" / f"{chapter}.ipynb"
        if notebook.is_file():
            cells = json.loads(notebook.read_text("utf-8"))["cells"]
            for cell in cells:
                if (cell["cell_type"] == "code"
                        and "parameters" not in cell.get("metadata", {}).get("tags", [])):
                    digest.update("".join(cell["source"]).encode())
    return digest.hexdigest()[:12]


def save_verdicts(verdicts: Sequence[Verdict], chapter: str, profile: str,
                  root: str | None = None) -> str:
    """Write a chapter's verdicts as JSON for the scorecard; returns the path.

    Stored under ``<cache>/verdicts/<profile>/<chapter>.json`` with the
    chapter's :func:`build_id` over the package modules loaded now, and their
    names, so the scorecard shows only rows of the current build.
    """
    import json
    import os

    from localprops.core.cache import cache_dir

    folder = os.path.join(root or cache_dir(), "verdicts", profile)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{chapter}.json")
    tmp = path + ".tmp"
    modules = loaded_modules()
    with open(tmp, "w") as file:
        json.dump({"chapter": chapter, "profile": profile,
                   "build": build_id(chapter, profile, modules), "modules": modules,
                   "verdicts": [v.as_dict() for v in verdicts]}, file, indent=1)
    os.replace(tmp, path)
    return path


def load_verdicts(profile: str, root: str | None = None) -> list[dict]:
    """All saved verdict rows of a profile, each with its chapter and build id."""
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
            rows.append({"chapter": record["chapter"], "build": record.get("build"),
                         "modules": record.get("modules"), **verdict})
    return rows


def split_current(rows: Sequence[dict], profile: str) -> tuple[list[dict], list[dict]]:
    """(rows of the current build, stale rows): compares each row's build id with now's."""
    current_ids: dict[tuple, str] = {}
    current, stale = [], []
    for row in rows:
        modules = row.get("modules")
        key = (row["chapter"], tuple(modules) if modules is not None else None)
        if key not in current_ids:
            current_ids[key] = build_id(row["chapter"], profile, modules)
        (current if row.get("build") == current_ids[key] else stale).append(row)
    return current, stale


#: the fields of a row in ``scorecard.json``
JSON_FIELDS = ("claim", "setting", "verdict", "rule", "models", "estimate", "interval",
               "sensitivity", "paper", "measured", "chapter", "build")


def write_json(rows: Sequence[dict], path: str) -> str:
    """Write the machine-readable scorecard: a list of rows with :data:`JSON_FIELDS`."""
    import json
    import os

    records = [{key: row.get(key) for key in JSON_FIELDS} for row in rows]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as file:
        json.dump(records, file, indent=1)
        file.write("\n")
    os.replace(tmp, path)
    return path


def tally(rows: Sequence[dict]) -> dict[str, int]:
    """How many rows have each verdict; inconclusive and logical rows are counted apart."""
    return {verdict: sum(row["verdict"] == verdict for row in rows) for verdict in VERDICTS}


def reading(setting: str | None) -> str:
    """A row's reading: the first two parts of its setting (norm and scale; quantity).

    Used wherever rows are listed by reading (the chapters' summaries, the
    scorecard's grid, the README findings), so they all name a reading alike.
    """
    return ", ".join(part.strip() for part in (setting or "").split(";")[:2]) or "as measured"


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
            f"*{v.verdict}* ({reading(v.setting)})" for v in rows))
    against = [v for v in verdicts if v.verdict == NOT_SUPPORTED]
    undecided = [v for v in verdicts if v.verdict == INCONCLUSIVE]
    lines.append("")
    lines.append("Where our data disagree with the claim tested (the paper's; a later "
                 "paper's for the L rows): " + (
        "; ".join(f"{v.claim} ({reading(v.setting)})" for v in against) + "."
        if against else "nowhere in these rows.") + "\n")
    if undecided:
        lines.append("Where they cannot decide (with what the models that did decide say): "
                     + "; ".join(f"{v.claim} ({reading(v.setting)}{_decided(v)})"
                                 for v in undecided) + ".")
    return "\n".join(lines)


def _decided(row: Verdict) -> str:
    """``": 2 of 7 models pass, 3 fail"`` for a row's per-model outcomes; "" without them."""
    outcomes = [m.get("outcome") for m in row.models.values() if isinstance(m, dict)]
    if not any(outcomes):
        return ""
    passed, failed = outcomes.count("pass"), outcomes.count("fail")
    return f": {passed} of {len(outcomes)} models pass, {failed} fail"


#: claim families in the order the book presents them: the paper's claims,
#: its frequency argument, the questions beyond the paper, then new laws
CLAIM_FAMILIES = ("C", "F", "B", "L")
#: cell colours of the verdict grid (colour-blind-safe Okabe-Ito hues, light)
VERDICT_COLOURS = {SUPPORTED: "#9fd8c4", PARTLY: "#f3dd8c", NOT_SUPPORTED: "#f4a582",
                   INCONCLUSIVE: "#d9d9d9", LOGICAL: "#c6dbef"}


def claim_order(claim: str) -> tuple:
    """Sort key putting claims in the book's order: C1, C2, ..., C10, F1, ..., B1, ..."""
    import re

    match = re.fullmatch(r"([A-Za-z]+)(\d+)(.*)", claim.strip())
    if not match:
        return (len(CLAIM_FAMILIES), claim, 0, "")
    family, number, rest = match.groups()
    rank = CLAIM_FAMILIES.index(family) if family in CLAIM_FAMILIES else len(CLAIM_FAMILIES)
    return (rank, family, int(number), rest)


def verdict_grid(rows: Sequence[dict]):
    """Claims (natural order) x readings: the verdicts as a pandas DataFrame.

    A cell joins the verdicts of several rows with the same claim and
    reading by " / "; an empty cell means the claim was not read that way.
    """
    import pandas as pd

    grid: dict[str, dict[str, list[str]]] = {}
    readings: list[str] = []
    for row in rows:
        name = reading(row.get("setting"))
        if name not in readings:
            readings.append(name)
        grid.setdefault(row["claim"], {}).setdefault(name, []).append(row["verdict"])
    claims = sorted(grid, key=claim_order)
    return pd.DataFrame([[" / ".join(grid[c].get(r, [])) for r in readings] for c in claims],
                        index=pd.Index(claims, name="claim"),
                        columns=pd.Index(readings, name="reading"))


def style_grid(grid):
    """The verdict grid coloured by verdict (a pandas Styler for notebooks and the site).

    A cell with several verdicts takes the colour of its first; the legend
    is :data:`VERDICT_COLOURS`. The table's id is fixed (pandas draws a random
    one), so that an executed notebook is the same bytes on every build.
    """
    def colour(value: str) -> str:
        first = value.split(" / ")[0] if value else ""
        return (f"background-color: {VERDICT_COLOURS[first]}; color: black"
                if first in VERDICT_COLOURS else "")

    return grid.style.set_uuid("verdicts").map(colour).set_table_styles(
        [{"selector": "td, th", "props": "border: 1px solid #bbb; padding: 2px 6px;"}])


def legend_html() -> str:
    """A one-line HTML legend of :data:`VERDICT_COLOURS`."""
    return " ".join(f'<span style="background:{c};color:black;padding:1px 6px;'
                    f'border:1px solid #bbb">{v}</span>' for v, c in VERDICT_COLOURS.items())
