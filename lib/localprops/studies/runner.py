"""The one loop every cached study runs: one unit per sample, cached, resumable.

A unit is one (study, model, sample) computation. :func:`run_units` reads it
from the cache or computes and stores it, and skips (with a warning) a sample
whose computation fails, so a long run never loses the samples already done.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from localprops.core.cache import ResultCache, code_version
from localprops.core.checks import warn_if_unit_range
from localprops.core.progress import progress_bar
from localprops.models.gtsrb_nets import definition_version
from localprops.models.samples import SampleSet


def run_units(samples: SampleSet, manifest: Callable[[int], Mapping],
              compute: Callable[[int], Mapping[str, np.ndarray]], *,
              cache: ResultCache | None, desc: str, progress: bool = True,
              study_modules: Sequence[str],
              errors: tuple[type[Exception], ...] = (ValueError,)
              ) -> tuple[list[int], list[dict[str, np.ndarray]], list[str]]:
    """Compute (or read from the cache) one unit per sample; skip failing samples.

    Parameters
    ----------
    samples : the clean samples; unit ``i`` is sample ``i``.
    manifest : sample index -> what determines the unit (the code version is
        added, and for the book's own GTSRB nets, named by ``manifest["model"]``,
        the version of their definition:
        :func:`localprops.models.gtsrb_nets.definition_version`).
    compute : sample index -> arrays of the finished unit.
    cache : where finished units are kept (None: nothing is kept).
    desc, progress : the progress bar over samples.
    study_modules : the ``localprops.studies.scores`` modules whose code computes
        the unit; with the shared layers they make the unit's code version
        (:func:`localprops.core.cache.code_version`).
    errors : exceptions that skip a sample (reported with a warning) instead of
        stopping the run; a long run never loses the samples already done.

    Returns
    -------
    (indices of the samples kept, their units, messages for the skipped ones).
    """
    if len(samples):
        warn_if_unit_range(samples.images, f"{desc}: the clean samples")
    cache = cache or ResultCache(None)
    version = code_version(study_modules)

    definitions: dict[str, str | None] = {}     # model name -> its definition's hash

    def keyed(i: int) -> dict:
        unit = {**manifest(i), "code": version}
        name = str(unit.get("model", ""))
        if name not in definitions:
            definitions[name] = definition_version(name)
        definition = definitions[name]
        if definition is not None:
            unit["definition"] = definition
        return unit

    kept, units, skipped = [], [], []
    for i in progress_bar(range(len(samples)), enabled=progress, desc=desc):
        try:
            units.append(cache.get_or_compute(keyed(i), lambda i=i: compute(i)))
            kept.append(i)
        except errors as error:
            skipped.append(f"sample {samples.ids[i]}: {error}")
            warnings.warn(f"{desc}: sample {samples.ids[i]} skipped: {error}", stacklevel=2)
    return kept, units, skipped
