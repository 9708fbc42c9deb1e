"""Parameter profiles: which sizes each notebook of the book runs with.

A profile is a small YAML file ``profiles/<name>.yml`` (``ci``, ``default``,
``paper``) holding parameters, never code. It is a mapping with an optional
``common:`` block, applied to every notebook, and one block per notebook,
keyed by the notebook's stem (``00_getting_started`` for
``notebooks/00_getting_started.ipynb``), whose values override ``common``::

    common:
      seed: 0
    00_getting_started:
      T: 4

A notebook receives only the names its ``parameters`` cell defines, so a
``common`` key does not reach notebooks that do not use it, plus ``profile``
(the profile's name) when the cell defines it. A name set in a notebook's own
block that its cell does not define is a mistake (a typo, or a parameter
that was renamed) and raises :class:`ProfileError`. Values override whole:
a mapping in a notebook's block replaces the one in ``common``, it is not
merged key by key.

A profile may also be given by path (``--profile studies/my.yml``, ``make
book PROFILE=my.yml``): anything holding ``/`` or ending in ``.yml`` is a
path (:func:`is_profile_path`), read from the working directory; its name is
the file stem.

``python -m localprops.tools.build`` reads the profiles; a reader can also call
:func:`load_profile` to see what a notebook would receive.
"""
from __future__ import annotations

import keyword
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["COMMON", "PROFILE_KEY", "Profile", "ProfileError",
           "ProfileWarning", "available_profiles", "default_profiles_dir",
           "is_profile_path", "load_profile"]

COMMON = "common"
PROFILE_KEY = "profile"
SUFFIX = ".yml"
#: The book's chapters: ``notebooks/NN_name.ipynb`` (read by the build and the student edition).
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


class ProfileError(ValueError):
    """A profile that cannot be used: unknown, malformed or inconsistent."""


class ProfileWarning(UserWarning):
    """A profile that can be used but probably holds a mistake."""


def default_profiles_dir() -> Path:
    """Return the checkout's ``profiles/`` folder (next to ``lib/``)."""
    from localprops.core.cache import checkout_root

    root = checkout_root()
    if root is None:
        raise ProfileError("profiles live in a source checkout of this repository "
                           "(profiles/); pass the folder or a profile's path")
    return root / "profiles"


def available_profiles(directory: str | Path | None = None) -> list[str]:
    """Return the names of the profiles in ``directory``, sorted.

    Parameters
    ----------
    directory : folder holding ``<name>.yml`` files; the repository's
        ``profiles/`` by default.

    Returns
    -------
    The file stems, e.g. ``['ci', 'default', 'paper']``.
    """
    folder = _folder(directory)
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob(f"*{SUFFIX}"))


@dataclass(frozen=True)
class Profile:
    """A loaded, validated profile.

    Attributes
    ----------
    name : the profile's name (its file stem), injected as ``profile``.
    path : the YAML file it came from.
    common : parameters for every notebook.
    notebooks : per-notebook parameters, keyed by notebook stem.
    """

    name: str
    path: Path
    common: Mapping[str, Any] = field(default_factory=dict)
    notebooks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def parameters(self, notebook: str) -> dict[str, Any]:
        """Return ``common`` overridden by ``notebook``'s block, unfiltered."""
        merged = dict(self.common)
        merged.update(self.notebooks.get(_stem(notebook), {}))
        return merged

    def parameters_for(self, notebook: str, declared: Iterable[str]
                       ) -> dict[str, Any]:
        """Return the parameters to inject into ``notebook``.

        Parameters
        ----------
        notebook : the notebook's stem or file name.
        declared : the names its ``parameters`` cell defines (for instance
            the keys of ``papermill.inspect_notebook(path)``).

        Returns
        -------
        The merged parameters restricted to ``declared``, plus
        ``profile=<name>`` when ``profile`` is declared.

        Raises
        ------
        ProfileError
            If the notebook's own block sets a name that ``declared`` lacks.
        """
        stem = _stem(notebook)
        declared = set(declared)
        own = self.notebooks.get(stem, {})
        unknown = sorted(set(own) - declared)
        if unknown:
            shown = ", ".join(sorted(declared)) or "nothing"
            raise ProfileError(
                f"profile {self.name!r} ({self.path}) sets {unknown} for "
                f"{stem}, but its parameters cell defines only: {shown}. "
                "Fix the name in the profile, or add it to the notebook's "
                "parameters cell")
        selected = {key: value for key, value in self.parameters(stem).items()
                    if key in declared}
        if PROFILE_KEY in declared:
            selected[PROFILE_KEY] = self.name
        return selected


def load_profile(name: str | Path, directory: str | Path | None = None,
                 notebooks: Iterable[str] | None = None) -> Profile:
    """Load and validate a profile.

    Parameters
    ----------
    name : a profile name (``'ci'``, ``'default'``, ``'paper'``) looked up in
        ``directory``, or the path of a YAML file.
    directory : folder of the named profiles; the repository's ``profiles/``
        by default.
    notebooks : the notebook stems that exist; a block for any other stem
        gives a :class:`ProfileWarning` (it would never be used). ``None``
        skips that check.

    Returns
    -------
    Profile

    Raises
    ------
    ProfileError
        If the profile does not exist (the message lists those that do), is
        not valid YAML, is not a mapping of mappings, or uses a parameter
        name that is not a Python identifier or is the reserved ``profile``.

    Examples
    --------
    >>> profile = load_profile("ci")
    >>> profile.parameters_for("00_getting_started", ["seed", "T", "profile"])
    {'seed': 0, 'T': 4, 'profile': 'ci'}
    """
    path = _resolve(name, directory)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ProfileError(f"profile {path} is not valid YAML: "
                           f"{error}") from error
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProfileError(
            f"profile {path} must be a mapping of `common:` and notebook "
            f"stems to parameters, got a {type(data).__name__}")
    common: dict[str, Any] = {}
    blocks: dict[str, dict[str, Any]] = {}
    for key, block in data.items():
        if not isinstance(key, str):
            raise ProfileError(f"profile {path}: top-level key {key!r} must "
                               "be `common` or a notebook stem such as "
                               "'01_models_and_data' (quote stems that YAML "
                               "reads as numbers)")
        checked = _check_block(block, path, key)
        if key == COMMON:
            common = checked
        else:
            blocks[key] = checked
    if notebooks is not None:
        known = {_stem(nb) for nb in notebooks}
        unknown = sorted(set(blocks) - known)
        if unknown:
            warnings.warn(
                f"profile {path} has parameters for {unknown}, which match no "
                f"notebook (known: {sorted(known)}); they are not used",
                ProfileWarning, stacklevel=2)
    return Profile(name=path.stem, path=path, common=common, notebooks=blocks)


def is_profile_path(name: str | Path) -> bool:
    """Whether ``name`` is a profile's path rather than its name.

    A :class:`~pathlib.Path`, or a string holding ``/`` (or the platform's
    separator) or ending in ``.yml`` / ``.yaml``: ``my.yml``,
    ``studies/my.yml``; ``ci`` is a name.
    """
    text = str(name)
    return (isinstance(name, Path) or "/" in text or os.sep in text
            or text.endswith((".yml", ".yaml")))


def _resolve(name: str | Path, directory: str | Path | None) -> Path:
    """Return the YAML file of a profile name or path, or raise."""
    text = str(name)
    if is_profile_path(name):
        path = Path(name)
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist")
        return path
    folder = _folder(directory)
    path = folder / f"{text}{SUFFIX}"
    if not path.is_file():
        names = available_profiles(folder)
        listed = (", ".join(names) if names
                  else f"none (no *{SUFFIX} in {folder})")
        raise ProfileError(f"unknown profile {text!r}; available: {listed}")
    return path


def _folder(directory: str | Path | None) -> Path:
    """Return the profiles folder: ``directory`` or the repository's."""
    return Path(directory) if directory is not None else default_profiles_dir()


def _check_block(block: Any, path: Path, key: str) -> dict[str, Any]:
    """Return a block of parameters as a dict, or raise."""
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise ProfileError(f"profile {path}: `{key}` must be a mapping of "
                           f"parameter names to values, got {block!r}")
    for name in block:
        if (not isinstance(name, str) or not name.isidentifier()
                or keyword.iskeyword(name)):
            raise ProfileError(f"profile {path}: `{key}` has the parameter "
                               f"name {name!r}, which is not a Python "
                               "identifier")
        if name == PROFILE_KEY:
            raise ProfileError(f"profile {path}: `{key}` sets "
                               f"`{PROFILE_KEY}`, which the build sets to "
                               "the profile's name; remove it")
    return dict(block)


def _stem(notebook: str | Path) -> str:
    """Return a notebook's stem from a stem, file name or path."""
    return Path(notebook).name.removesuffix(".ipynb")
