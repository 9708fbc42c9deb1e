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
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

_RESULT_MODULES = ("philox.py", "_philox_cpu.py", "sampling.py", "engine.py",
                   "metrics.py", "mantel.py", "studies.py", "topology.py", "lipschitz.py",
                   "models.py", "gtsrb_nets.py", "data.py")


def code_version(extra: tuple[str, ...] = ()) -> str:
    """A short hash of the source files whose code determines the results.

    The model-loading modules are included: a change of preprocessing or
    normalization changes every score. ``extra`` names further modules (files
    of this package) that a study depends on, e.g. ``("firstorder.py",)``: a
    change to them invalidates that study's units only, not every chapter's.
    """
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in tuple(extra):
        if not (here / name).is_file():
            raise ValueError(f"code_version: {name!r} is not a module of localprops")
    for name in _RESULT_MODULES + tuple(extra):
        path = here / name
        if path.exists():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


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
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        self.save(manifest, arrays)
        return arrays
