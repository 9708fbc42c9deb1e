"""Clean samples: which images a model classifies confidently, for every chapter.

:func:`select_samples` keeps the images a model classifies correctly with a
probability above a threshold (0.99 in the paper), in input order, each with
its own seed derived from its index in the source dataset. :class:`SampleSet`
is what every study takes.

:func:`prepare` loads every requested model that is available here (and says
why the others are skipped), reads the candidate images of its dataset, and
selects the clean samples of the paper per model: images the model classifies
correctly with more than 99% confidence (a parameter), drawn at random but
seeded and stratified over classes (:func:`stratified_order`). The order is a
property of the images, not of the model, so two models of one dataset pick
the same images wherever both pass, and an image gets the same perturbations
in every model and chapter. ``shared=True`` instead keeps only the images that
pass for every model of a dataset.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache, cache_dir, code_version
from localprops.core.engine import model_device
from localprops.core.philox import derive_seed
from localprops.models import data
from localprops.models import zoo as models
from localprops.models.data import as_image_batch
from localprops.models.wrappers import ModelSpec


@dataclass
class SampleSet:
    """Clean samples of one dataset: images in [0, 255], labels, seeds, ids.

    ``ids`` are the samples' indices in their source dataset; ``seeds`` their
    own perturbation seeds (``localprops.core.philox.derive_seed(seed, id)``).
    """

    images: torch.Tensor
    labels: list[int]
    seeds: list[int]
    ids: list[int]

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            raise ValueError("images must be a tensor (S, C, H, W) in [0, 255]")
        n = self.images.shape[0]
        if not (len(self.labels) == len(self.seeds) == len(self.ids) == n):
            raise ValueError(f"{n} images but {len(self.labels)} labels, "
                             f"{len(self.seeds)} seeds and {len(self.ids)} ids")

    def __len__(self) -> int:
        return self.images.shape[0]

    def first(self, n: int) -> "SampleSet":
        """The first ``n`` samples (all when fewer): with :func:`prepare`'s
        stratified order, itself a random sample stratified over classes."""
        n = _checks.check_count(n, "n")
        return SampleSet(images=self.images[:n], labels=list(self.labels[:n]),
                         seeds=list(self.seeds[:n]), ids=list(self.ids[:n]))


@dataclass
class Selection:
    """Clean samples chosen by :func:`select_samples`.

    Attributes
    ----------
    indices : index of every sample in the source dataset (int64, (n,)).
    positions : its position in the ``images`` argument.
    images : float (n, 3, H, W) in [0, 255], on the CPU.
    labels : int64 (n,).
    scores : the model's probability of the true class on the clean image.
    seeds : per-sample seeds, ``derive_seed(base_seed, indices[i])``.
    base_seed : the seed they derive from.
    threshold : the probability a sample had to exceed.
    """

    indices: np.ndarray
    positions: np.ndarray
    images: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    seeds: list[int]
    base_seed: int
    threshold: float

    def __len__(self) -> int:
        return len(self.indices)


def _check_labels(labels: Sequence[int] | np.ndarray | torch.Tensor,
                  n_images: int) -> torch.Tensor:
    """Labels as an int64 tensor of length ``n_images``."""
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor)
                             else labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if labels.shape != (n_images,):
        raise ValueError(f"labels must have shape ({n_images},) to match the "
                         f"images, got {tuple(labels.shape)}")
    return labels.to(torch.int64)


def select_samples(model_spec: "ModelSpec", images: np.ndarray | torch.Tensor,
                   labels: Sequence[int] | np.ndarray | torch.Tensor, *, n: int,
                   threshold: float = 0.99, batch_size: int = 64,
                   base_seed: int = 0,
                   dataset_indices: Sequence[int] | np.ndarray | None = None
                   ) -> Selection:
    """The first ``n`` images the model classifies correctly with high probability.

    Parameters
    ----------
    model_spec : a loaded model (:func:`localprops.models.load`).
    images : float tensor (N, 3, H, W) in [0, 255] (or uint8 (N, H, W, 3)).
    labels : true class of every image.
    n : how many samples to keep.
    threshold : keep an image when its predicted class is the true class
        and that class's softmax probability is strictly greater than this
        (0.99 in the paper).
    batch_size : images per forward pass.
    base_seed : seed the per-sample seeds derive from.
    dataset_indices : index of every image in its source dataset (e.g.
        ``gtsrb_eval_subset()["test_index"]``); default ``0..N-1``. Seeds
        are keyed by it, so two models that select the same image draw the
        same perturbations for it, whatever else they select.

    Returns
    -------
    Selection, in input order. Fewer than ``n`` samples (with a warning)
    when not enough images pass.
    """
    n = _checks.check_count(n, "n")
    batch_size = _checks.check_count(batch_size, "batch_size")
    base_seed = _checks.check_seed(base_seed)
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    images = as_image_batch(images)
    labels = _check_labels(labels, len(images))
    indices = (np.arange(len(images), dtype=np.int64) if dataset_indices is None
               else np.asarray(dataset_indices, dtype=np.int64))
    if indices.shape != (len(images),):
        raise ValueError(f"dataset_indices must have shape ({len(images)},), got "
                         f"{indices.shape}")
    model = model_spec.model
    device = model_device(model)
    kept, scores = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            probs = torch.softmax(model(x).double(), dim=1)
            true = probs.gather(1, y[:, None])[:, 0]
            ok = (probs.argmax(1) == y) & (true > threshold)
            for offset in torch.nonzero(ok).flatten().tolist():
                kept.append(start + offset)
                scores.append(true[offset].item())
            if len(kept) >= n:
                break
    kept, scores = kept[:n], scores[:n]
    if len(kept) < n:
        warnings.warn(f"only {len(kept)} of {len(images)} images are classified "
                      f"correctly with probability > {threshold} by "
                      f"{model_spec.name}; asked for {n}", stacklevel=2)
    positions = np.asarray(kept, dtype=np.int64)
    chosen = indices[positions]
    return Selection(indices=chosen, positions=positions,
                     images=images[positions].cpu(), labels=labels[positions].cpu(),
                     scores=torch.tensor(scores, dtype=torch.float64),
                     seeds=[derive_seed(base_seed, int(i)) for i in chosen],
                     base_seed=base_seed, threshold=float(threshold))


_CLASS_OFFSET = 2**40


def stratified_order(ids: Sequence[int], labels: Sequence[int], seed: int = 0) -> np.ndarray:
    """Positions of ``ids`` in a seeded random order that cycles through the classes.

    Classes are visited in a random order, and within each class images come
    in a random order; the result takes the first image of every class, then
    the second of every class, and so on. So the first ``n`` positions are a
    random sample stratified over classes (``min(n, classes)`` classes), and
    a longer selection extends a shorter one (a chapter that uses 30 samples
    uses the first 30 of another's 100). The random keys are
    ``derive_seed(seed, id)`` of each image's dataset id (and of
    ``2**40 + class`` for the classes): the order of two images never depends
    on which other images are candidates.

    Examples
    --------
    >>> order = stratified_order([10, 11, 12, 13, 14, 15], [0, 0, 0, 1, 1, 2])
    >>> sorted(np.asarray([0, 0, 0, 1, 1, 2])[order[:3]].tolist())
    [0, 1, 2]
    """
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if ids.shape != labels.shape:
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    def key(index: int) -> int:
        return derive_seed(seed, index) & 0xFFFF_FFFF_FFFF_FFFF

    image_key = np.asarray([key(int(i)) for i in ids], dtype=np.uint64)
    class_key = {int(c): key(_CLASS_OFFSET + int(c)) for c in np.unique(labels)}
    rank = np.empty(len(ids), dtype=np.int64)          # position within its class
    for c in class_key:
        members = np.flatnonzero(labels == c)
        rank[members[np.argsort(image_key[members], kind="stable")]] = np.arange(len(members))
    classes = np.asarray([class_key[int(c)] for c in labels], dtype=np.uint64)
    return np.lexsort((classes, rank))


def samples_for(n_samples: int | Mapping[str, int], spec: ModelSpec) -> int:
    """How many samples ``spec`` gets: an int, or a mapping keyed by model name or dataset."""
    if isinstance(n_samples, Mapping):
        for key in (spec.name, spec.dataset):
            if key in n_samples:
                return _checks.check_count(n_samples[key], f"n_samples[{key!r}]")
        raise ValueError(f"n_samples {dict(n_samples)} has no entry for model {spec.name!r} "
                         f"or its dataset {spec.dataset!r}: add one, e.g. "
                         f"{{{spec.dataset!r}: 100}}")
    return _checks.check_count(n_samples, "n_samples")


@dataclass
class Prepared:
    """A loaded model with its clean samples."""

    spec: models.ModelSpec
    samples: SampleSet
    clean_scores: np.ndarray

    @property
    def classes(self) -> int:
        """How many distinct classes the samples cover."""
        return len(set(self.samples.labels))


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
        lines = [f"{p.spec.name}: {len(p.samples)} samples over {p.classes} classes "
                 f"(clean true-class score min {p.clean_scores.min():.4f})"
                 for p in self.models if len(p.samples)]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


@dataclass
class _Candidates:
    """Which candidate images pass a model's filter, and how to load any of them."""

    ids: np.ndarray           # dataset indices of the passing images, in order
    scores: np.ndarray        # clean true-class probability of each
    labels: np.ndarray
    load: Callable[[Sequence[int]], torch.Tensor]   # dataset ids -> (n, 3, H, W)


def _gtsrb_candidates(spec: models.ModelSpec, threshold: float) -> _Candidates:
    """The bundled GTSRB evaluation subset (430 official test images)."""
    subset = data.gtsrb_eval_subset()
    images = data.images_to_tensor(subset["images"])
    ids = subset["test_index"].astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        passing = select_samples(spec, images, subset["labels"].astype(np.int64),
                                      n=len(images), threshold=threshold,
                                      dataset_indices=ids)
    position = {int(i): k for k, i in enumerate(ids)}
    return _Candidates(passing.indices, passing.scores.numpy(), passing.labels.numpy(),
                       lambda chosen: images[[position[int(i)] for i in chosen]])


def _file_candidates(spec: models.ModelSpec, threshold: float) -> _Candidates:
    """A reader's images: ``spec.dataset`` names an ``.npz`` or a folder.

    Read and checked by :func:`localprops.models.data.load_image_source`
    (relative paths from the working directory); an image's dataset index is
    its position in the file (or in the folder's sorted listing). Not cached:
    the images are all loaded and classified on every run.
    """
    source = data.load_image_source(spec.dataset, classes=spec.classes,
                                    input_size=spec.input_size,
                                    preprocess=spec.preprocess)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        passing = select_samples(spec, source.images, source.labels, n=len(source.images),
                                 threshold=threshold, dataset_indices=source.ids)
    images = source.images
    return _Candidates(passing.indices, passing.scores.numpy(), passing.labels.numpy(),
                       lambda chosen: images[[int(i) for i in chosen]])


def _imagenet_candidates(spec: models.ModelSpec, threshold: float, limit: int | None,
                         cache: ResultCache) -> _Candidates:
    """Images of ``$LOCALPROPS_IMAGENET``; the filter's result is cached per model.

    The dataset index of an image is its position among the folder's labelled
    files in sorted order. Decoding and classifying hundreds of full-size
    JPEGs is the slow part, so which images pass is stored in the results
    cache (keyed by the model, its weights, the threshold and the file list),
    and later runs decode only the chosen images.
    """
    files = data.imagenet_files()[:limit]
    if not files:
        raise data.DataNotFoundError("no labelled ImageNet images in "
                                     f"${data.IMAGENET_ENV}")
    listing = hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p, _ in files)
                             .encode()).hexdigest()[:16]
    manifest = dict(study="selection", model=spec.name, weights=spec.weights,
                    threshold=threshold, files=listing, code=code_version())

    def decode(ids: Sequence[int] | None = None) -> data.LabelledImages:
        return data.load_imagenet_folder(None, spec.preprocess, limit=limit, indices=ids)

    def select() -> dict[str, np.ndarray]:
        loaded = decode()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            passing = select_samples(spec, loaded.images, loaded.labels, n=len(loaded.images),
                                     threshold=threshold, dataset_indices=loaded.indices)
        return dict(ids=passing.indices, scores=passing.scores.numpy(),
                    labels=passing.labels.numpy())

    unit = cache.get_or_compute(manifest, select)
    return _Candidates(unit["ids"], unit["scores"], unit["labels"],
                       lambda chosen: decode(chosen).images)


def use_ieee_float32() -> None:
    """Turn off TF32 for CUDA convolutions and matrix products.

    On Ampere and later GPUs PyTorch lets cuDNN convolutions use TF32 (10-bit
    mantissa) by default. The book compares score differences down to
    float32 rounding (the noise floor, the measurable ranges, the first-order
    predictions), so every chapter computes in IEEE float32 on a GPU too.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def prepare(names: list[str], *, n_samples: int | Mapping[str, int], threshold: float = 0.99,
            seed: int = 0, device: str | torch.device | None = None,
            imagenet_limit: int | None = None, shared: bool = False,
            cache: ResultCache | None = None) -> Preparation:
    """Load the available models and select their clean samples.

    Parameters
    ----------
    names : model names for :func:`localprops.models.load` (``"module:callable"``
        too: its spec's ``dataset`` names an ``.npz`` or an image folder,
        read by :func:`localprops.models.data.load_image_source`).
    n_samples : samples per model (fewer, with a note, when not enough pass):
        an int, or a mapping keyed by model name or dataset, e.g.
        ``{"gtsrb": 100, "imagenet": 24}``.
    threshold : a sample must be classified correctly with probability above it.
    seed : base seed; the sample with dataset index ``i`` gets ``derive_seed(seed, i)``,
        and the order of :func:`stratified_order` derives from it too.
    device : where the models run (default CUDA when available).
    imagenet_limit : consider at most this many ImageNet images.
    shared : models of one dataset use only the images that pass for all of
        them (default: each model its own passing images).
    cache : where the ImageNet filter results are kept (default :func:`cache_dir`).

    Returns
    -------
    Preparation. A model that cannot be loaded, or whose dataset is not
    available here, is skipped with a note saying why and how to fix it.
    Models on a GPU run in IEEE float32 (:func:`use_ieee_float32`).
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a list of model names such as ['gtsrb-ciresan'], "
                        f"got {names!r}")
    if not isinstance(n_samples, Mapping):
        n_samples = _checks.check_count(n_samples, "n_samples")
    cache = cache or ResultCache(cache_dir())
    loaded: list[tuple[models.ModelSpec, _Candidates]] = []
    availability = models.available(names, device=device)
    notes = [f"{name} skipped: {reason}" for name, reason in availability.reasons.items()]
    for name, spec in availability.specs.items():
        try:
            if spec.dataset == "gtsrb":
                candidates = _gtsrb_candidates(spec, threshold)
            elif spec.dataset == "imagenet":
                candidates = _imagenet_candidates(spec, threshold, imagenet_limit, cache)
            elif data.is_image_source(spec.dataset):
                candidates = _file_candidates(spec, threshold)
            else:
                raise ValueError(f"no candidate images known for dataset {spec.dataset!r}: "
                                 "set the model's dataset to an .npz file or a folder of "
                                 "class subfolders, or build a SampleSet yourself "
                                 "(localprops.models.samples.SampleSet)")
        except (RuntimeError, ValueError, OSError) as error:
            notes.append(f"{name} skipped: {error}")
            continue
        loaded.append((spec, candidates))
        if spec.device.type == "cuda":
            use_ieee_float32()
    chosen: dict[str, set[int]] = {}
    if shared:
        for spec, candidates in loaded:
            ids = set(candidates.ids.tolist())
            chosen[spec.dataset] = chosen.get(spec.dataset, ids) & ids
    prepared = []
    for spec, candidates in loaded:
        wanted = samples_for(n_samples, spec)
        order = stratified_order(candidates.ids, candidates.labels, seed)
        keep = [int(k) for k in order
                if not shared or int(candidates.ids[k]) in chosen[spec.dataset]][:wanted]
        filter_note = f"the {threshold:.0%} filter" + (
            " for every model of its dataset" if shared else "")
        if not keep:
            notes.append(f"{spec.name} skipped: no image passes {filter_note}; "
                         "read more images or lower the threshold")
            continue
        if len(keep) < wanted:
            notes.append(f"{spec.name}: only {len(keep)} of {wanted} requested samples "
                         f"pass {filter_note}")
        ids = [int(candidates.ids[k]) for k in keep]
        samples = SampleSet(images=candidates.load(ids),
                            labels=[int(candidates.labels[k]) for k in keep],
                            seeds=[derive_seed(seed, i) for i in ids], ids=ids)
        prepared.append(Prepared(spec, samples, candidates.scores[keep]))
    return Preparation(prepared, notes)


def fitting_images(spec: models.ModelSpec, n: int) -> torch.Tensor:
    """Up to ``n`` clean images of the model's dataset, to fit normalizers on.

    GTSRB: the official test set when ``$LOCALPROPS_GTSRB`` points at it, else
    the bundled 430-image subset. ImageNet: the first ``n`` images of
    ``$LOCALPROPS_IMAGENET`` (the model's own resize and crop).
    """
    n = _checks.check_count(n, "n")
    if spec.dataset == "gtsrb":
        try:
            images = data.load_gtsrb()["x_test"][:n]
        except data.DataNotFoundError:
            images = data.gtsrb_eval_subset()["images"][:n]
        return data.images_to_tensor(images)
    if spec.dataset == "imagenet":
        return data.load_imagenet_folder(None, spec.preprocess, limit=n).images
    if data.is_image_source(spec.dataset):
        return data.load_image_source(spec.dataset, classes=spec.classes,
                                      input_size=spec.input_size,
                                      preprocess=spec.preprocess).images[:n]
    raise ValueError(f"no images known for dataset {spec.dataset!r}")


