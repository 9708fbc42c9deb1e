"""An on-disk cache of finished study units, written atomically.

A unit is one (study, model, sample) computation. Its result is a plain
``.npz`` file (arrays a reader can open with numpy alone) holding also a JSON
manifest of everything that determined it: the study, the model and its
weights, the parameters, the sample's seed, and the code version (a hash of
the source files that compute results). The file name is the hash of that
manifest, so a change of any of them computes anew, and an unchanged unit is
read back instead of recomputed. Files are written to a temporary name and
renamed, so a run killed mid-write leaves no partial file under a real name;
a file that cannot be read back, or whose manifest does not match, is
reported, deleted and recomputed, never used.

Every computed unit also appends one line to ``root/timings.jsonl`` (study,
model, seconds): a log of where a build's time went, which
``python -m localprops.tools.timings`` sums per chapter study and model.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

#: Layers of the package whose every module can change every cached result:
#: numerics (``core``) and model loading, data and sample selection (``models``).
#: ``studies`` modules invalidate only the studies that name them; ``report``
#: and ``tools`` never invalidate a result.
SHARED_LAYERS = ("core", "models")
#: Modules of the shared layers that define the book's own architectures.
#: Their code keys only the results of the models they define (the study
#: runner adds :func:`localprops.models.gtsrb_nets.definition_version` to
#: those units), so training or changing one net does not invalidate the
#: results of every other model.
DEFINITION_MODULES = ("models/gtsrb_nets.py", "models/gtsrb_families.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CACHE_ENV = "LOCALPROPS_CACHE"
#: The log of computed units, one JSON object per line, in the cache folder.
TIMINGS_FILE = "timings.jsonl"


def code_digest(path: Path) -> bytes:
    """The module's code without its docstrings and comments (prose edits keep results)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body[0] = ast.Pass()
    return ast.dump(tree, annotate_fields=False).encode()


def code_version(study_modules: Sequence[str] = ()) -> str:
    """A short hash of the code that determines a cached result.

    Parameters
    ----------
    study_modules : names of the modules under ``localprops/studies`` whose
        code computes the result (e.g. ``("scores", "firstorder")``). Every
        module of the shared layers (:data:`SHARED_LAYERS`) but the
        architecture definitions (:data:`DEFINITION_MODULES`, which key only
        their own models' units) and the study runner are always included;
        a change to another study's module does not invalidate this one.
        Docstrings and comments do not count.

    Raises
    ------
    ValueError : a named study module does not exist (a rename must not
        silently weaken invalidation).
    """
    files = [path for layer in SHARED_LAYERS
             for path in sorted((PACKAGE_DIR / layer).rglob("*.py"))
             if path.relative_to(PACKAGE_DIR).as_posix() not in DEFINITION_MODULES]
    for name in ("runner", *study_modules):
        path = PACKAGE_DIR / "studies" / f"{name}.py"
        if not path.is_file():
            raise ValueError(f"code_version: {name!r} is not a module of "
                             f"localprops.studies.scores (no {path})")
        files.append(path)
    digest = hashlib.sha256()
    for path in dict.fromkeys(files):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(code_digest(path))
    return digest.hexdigest()[:12]


def checkout_root() -> Path | None:
    """The source checkout this package runs from, or None when pip-installed.

    A checkout is recognised by its ``_toc.yml`` two levels above the package
    (``<root>/lib/localprops``).
    """
    root = PACKAGE_DIR.parents[1]
    return root if (root / "_toc.yml").is_file() and (root / "lib").is_dir() else None


def cache_dir() -> str:
    """The results cache folder.

    ``$LOCALPROPS_CACHE`` when set; else ``_build/cache`` of the checkout;
    else (pip-installed, e.g. on Colab) ``localprops`` under the user's cache
    folder (``$XDG_CACHE_HOME`` or ``~/.cache``).
    """
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.environ[CACHE_ENV])
    root = checkout_root()
    if root is not None:
        return str(root / "_build" / "cache")
    user = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(user), "localprops")


def _canonical(manifest: Mapping) -> str:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)


class ResultCache:
    """Finished units under ``root/<study>/<model>/<hash>.npz``.

    Parameters
    ----------
    root : the cache folder (created on first write). ``None`` disables
        caching: every unit is computed and nothing is written.
    """

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def path(self, manifest: Mapping) -> Path | None:
        """Where the unit described by ``manifest`` is stored."""
        if self.root is None:
            return None
        key = hashlib.sha256(_canonical(manifest).encode()).hexdigest()[:20]
        study = str(manifest.get("study", "unit"))
        model = str(manifest.get("model", "model")).replace("/", "_")
        return self.root / study / model / f"{key}.npz"

    def load(self, manifest: Mapping) -> dict[str, np.ndarray] | None:
        """The stored arrays of a unit, or None when absent or unusable."""
        path = self.path(manifest)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {k: stored[k] for k in stored.files}
            if str(arrays.pop("manifest")) != _canonical(manifest):
                raise ValueError("manifest mismatch")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            warnings.warn(f"cached result {path} is unreadable or stale ({error}); "
                          "it is deleted and recomputed", stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return arrays

    def save(self, manifest: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
        """Store a unit atomically (temporary file, then rename)."""
        path = self.path(manifest)
        if path is None:
            return
        if "manifest" in arrays:
            raise ValueError("'manifest' is a reserved array name")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, manifest=np.array(_canonical(manifest)),
                         **{k: np.asarray(v) for k, v in arrays.items()})
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(self, manifest: Mapping,
                       compute: Callable[[], Mapping[str, np.ndarray]]
                       ) -> dict[str, np.ndarray]:
        """Read a finished unit, or compute, store and return it."""
        arrays = self.load(manifest)
        if arrays is not None:
            self.hits += 1
            return arrays
        self.misses += 1
        start = time.perf_counter()
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        seconds = time.perf_counter() - start
        self.save(manifest, arrays)
        self.log_time(manifest, seconds)
        return arrays

    def log_time(self, manifest: Mapping, seconds: float) -> None:
        """Append the compute time of one unit to ``root/timings.jsonl``."""
        if self.root is None:
            return
        line = {"study": str(manifest.get("study", "unit")),
                "model": str(manifest.get("model", "model")),
                "seconds": round(seconds, 3), "unit": self.path(manifest).stem,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(self.root / TIMINGS_FILE, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")


def module_file(name: str) -> Path | None:
    """The source file of package module ``name`` (``localprops.x.y``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE_DIR.name:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def modules_code_version(names: Sequence[str]) -> str:
    """A short hash of the code of the package modules ``names`` (docstrings excluded).

    The scorecard keys a chapter's verdicts by the modules its kernel had
    loaded when it saved them: an edit to a module the chapter never imported
    (another chapter's study, the build tool) leaves its verdicts current.
    """
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        path = module_file(name)
        digest.update(name.encode())
        digest.update(code_digest(path) if path is not None else b"<missing>")
    return digest.hexdigest()[:12]


def package_code_version() -> str:
    """A short hash of every module of the package (docstrings excluded).

    Unlike :func:`code_version`, which keys cached results by the code that
    computes them, this covers the report layer too: a verdict depends on its
    rule as much as on its measurement.
    """
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(code_digest(path))
    return digest.hexdigest()[:12]
