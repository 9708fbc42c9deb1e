"""From model names to loaded models and their clean samples: one call per chapter.

:func:`prepare` loads every requested model that is available here (and says
why the others are skipped), reads the candidate images of its dataset, and
selects the clean samples of the paper: images the model classifies correctly
with more than 99% confidence (a parameter), in a fixed order. By default the
models of one dataset share their samples (images that pass for every one of
them), so each image is perturbed identically for all of them: the paper's
Sec. 2.4 compares models on the same points.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from . import data, models
from .studies import SampleSet


@dataclass
class Prepared:
    """A loaded model with its clean samples."""

    spec: models.ModelSpec
    samples: SampleSet
    clean_scores: np.ndarray


@dataclass
class Preparation:
    """What :func:`prepare` returns: prepared models and notes on the skipped ones."""

    models: list[Prepared]
    notes: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def report(self) -> str:
        """A short text for the notebook: samples per model and skipped models."""
        lines = [f"{p.spec.name}: {len(p.samples)} samples "
                 f"(clean true-class score min {p.clean_scores.min():.4f})"
                 for p in self.models if len(p.samples)]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def candidate_images(spec: models.ModelSpec, *, imagenet_limit: int | None = None
                     ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Candidate clean images of a model's dataset, with labels and dataset indices.

    GTSRB: the evaluation subset that ships with the package (430 test images).
    ImageNet: the folder in ``$LOCALPROPS_IMAGENET``, preprocessed by the
    model's own resize and crop; the dataset index is the file's position in
    sorted order.
    """
    if spec.dataset == "gtsrb":
        subset = data.gtsrb_eval_subset()
        return (data.images_to_tensor(subset["images"]), subset["labels"].astype(np.int64),
                subset["test_index"].astype(np.int64))
    if spec.dataset == "imagenet":
        loaded = data.load_imagenet_folder(None, spec.preprocess, limit=imagenet_limit)
        return loaded.images, loaded.labels.numpy(), np.arange(len(loaded.labels))
    raise ValueError(f"no candidate images known for dataset {spec.dataset!r}: "
                     "build a SampleSet yourself (see localprops.studies.SampleSet)")


def prepare(names: list[str], *, n_samples: int, threshold: float = 0.99, seed: int = 0,
            device: str | torch.device | None = None, imagenet_limit: int | None = None,
            shared: bool = True) -> Preparation:
    """Load the available models and select their clean samples.

    Parameters
    ----------
    names : model names for :func:`localprops.models.load`.
    n_samples : samples per model (fewer, with a note, when not enough pass).
    threshold : a sample must be classified correctly with probability above it.
    seed : base seed; sample ``i`` of the dataset gets ``derive_seed(seed, i)``.
    device : where the models run (default CUDA when available).
    imagenet_limit : read at most this many ImageNet images.
    shared : models of one dataset use the images that pass for all of them.

    Returns
    -------
    Preparation. A model that cannot be loaded, or whose dataset is not
    available here, is skipped with a note saying why and how to fix it.
    """
    loaded: list[tuple[models.ModelSpec, torch.Tensor, np.ndarray, np.ndarray, np.ndarray]] = []
    notes: list[str] = []
    for name in names:
        try:
            spec = models.load(name, device=device)
        except (RuntimeError, ValueError, OSError) as error:
            notes.append(f"{name} skipped: {error}")
            continue
        try:
            images, labels, ids = candidate_images(spec, imagenet_limit=imagenet_limit)
        except (data.DataNotFoundError, ValueError) as error:
            notes.append(f"{name} skipped: {error}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            passing = data.select_samples(spec, images, labels, n=len(images),
                                          threshold=threshold, base_seed=seed,
                                          dataset_indices=ids)
        loaded.append((spec, images, labels, ids, passing))
    chosen: dict[str, set[int]] = {}
    if shared:
        for spec, *_, passing in loaded:
            ids = set(passing.indices.tolist())
            chosen[spec.dataset] = chosen.get(spec.dataset, ids) & ids
    prepared = []
    for spec, images, labels, ids, passing in loaded:
        keep = [i for i, index in enumerate(passing.indices.tolist())
                if not shared or index in chosen[spec.dataset]][:n_samples]
        if not keep:
            notes.append(f"{spec.name} skipped: no image passes the {threshold:.0%} filter"
                         + (" for every model of its dataset" if shared else "")
                         + "; read more images or lower the threshold")
            continue
        if len(keep) < n_samples:
            notes.append(f"{spec.name}: only {len(keep)} of {n_samples} requested samples "
                         f"pass the {threshold:.0%} filter"
                         + (" for every model of its dataset" if shared else ""))
        samples = SampleSet(images=passing.images[keep],
                            labels=[int(v) for v in passing.labels[keep]],
                            seeds=[passing.seeds[i] for i in keep],
                            ids=[int(v) for v in passing.indices[keep]])
        prepared.append(Prepared(spec, samples, passing.scores[keep].numpy()))
    return Preparation(prepared, notes)


def cache_dir() -> str:
    """The results cache folder: ``$LOCALPROPS_CACHE`` or ``_build/cache`` at the repo root."""
    default = os.path.join(os.path.dirname(__file__), "..", "..", "_build", "cache")
    return os.path.abspath(os.environ.get("LOCALPROPS_CACHE", default))
