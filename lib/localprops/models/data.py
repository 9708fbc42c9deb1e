"""Data: GTSRB arrays, ImageNet image folders, and clean-sample selection.

Conventions: images handed to models are float tensors (N, 3, H, W) with raw
pixel values in [0, 255]; the arrays in files are uint8 (N, H, W, 3).

External data are never bundled: the functions read

* ``LOCALPROPS_GTSRB``: path of the book's ``gtsrb32.npz`` (32x32 GTSRB,
  train subset and the full official test set), or an explicit ``path``;
* ``LOCALPROPS_IMAGENET``: a folder of ImageNet images, or an explicit
  ``root``.

What *is* bundled (``localprops/_assets``): a fixed class-stratified subset
of the GTSRB test set (10 images per class, :func:`gtsrb_eval_subset`) so
that the book runs without external data, and the list of the 1000
ImageNet-1k classes (index, WordNet id, name; :func:`imagenet_classes`).

:func:`select_samples` picks the clean samples the paper studies: images a
model classifies correctly with probability above a threshold (0.99 in the
paper), in input order, each with its own seed derived from its index in the
source dataset, so that every model of a dataset sees the same perturbations
of the same image.
"""
from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
import torch

from localprops.core import checks as _checks

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


GTSRB_ENV = "LOCALPROPS_GTSRB"
IMAGENET_ENV = "LOCALPROPS_IMAGENET"
ASSETS_DIR = Path(__file__).resolve().parent / "_assets"
GTSRB_SUBSET_FILE = ASSETS_DIR / "gtsrb_eval_subset.npz"
IMAGENET_CLASSES_FILE = ASSETS_DIR / "imagenet_classes.tsv"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
_WNID = re.compile(r"^(n\d{8})")


class DataNotFoundError(FileNotFoundError):
    """A data file or folder the caller asked for is not available."""


# ------------------------------------------------------------------ helpers
def resolve_path(path: str | os.PathLike | None, env: str, what: str) -> Path:
    """``path``, else the environment variable ``env``; raise if neither exists."""
    if path is None:
        value = os.environ.get(env)
        if not value:
            raise DataNotFoundError(
                f"no {what} given: pass it explicitly or set the environment "
                f"variable {env} (e.g. export {env}=/path/to/it)")
        path = value
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"{what} not found: {path} does not exist "
                                f"(check the argument or ${env})")
    return path


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W, 3) or (H, W, 3) -> float32 tensor (N, 3, H, W) in [0, 255].

    Parameters
    ----------
    images : uint8 array or tensor, channels last, RGB.

    Returns
    -------
    A contiguous float32 tensor, channels first, values unchanged (0..255).
    """
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor)
                        else images)
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (raw pixels), got {x.dtype}; "
                        "float images already in (N, 3, H, W) need no conversion")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3) or (H, W, 3), "
                         f"got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).to(torch.float32).contiguous()


def as_image_batch(images: np.ndarray | torch.Tensor, name: str = "images"
                   ) -> torch.Tensor:
    """Check / convert images to a float tensor (N, 3, H, W) in [0, 255].

    uint8 arrays (N, H, W, 3) are converted with :func:`images_to_tensor`;
    float tensors must already be (N, 3, H, W) with values in [0, 255].
    """
    if isinstance(images, np.ndarray) or (isinstance(images, torch.Tensor)
                                          and images.dtype == torch.uint8):
        if images.dtype != np.uint8 and images.dtype != torch.uint8:
            raise TypeError(f"{name}: numpy images must be uint8 (N, H, W, 3); "
                            f"got {images.dtype}. Pass float data as a torch "
                            "tensor (N, 3, H, W) in [0, 255]")
        return images_to_tensor(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor (N, 3, H, W) or a uint8 "
                        f"array (N, H, W, 3), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point (or uint8), got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got "
                         f"{tuple(images.shape)}")
    _checks.check_finite(images, name)
    if images.numel() and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"{name} must hold raw pixel values in [0, 255]; got the "
                         f"range [{images.min().item():.3g}, {images.max().item():.3g}]"
                         " (normalisation lives inside the model)")
    return images


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -------------------------------------------------------------------- GTSRB
def gtsrb_path(path: str | os.PathLike | None = None) -> Path:
    """Path of ``gtsrb32.npz``: ``path`` or ``$LOCALPROPS_GTSRB``."""
    return resolve_path(path, GTSRB_ENV, "GTSRB file gtsrb32.npz")


def load_gtsrb(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """All arrays of the book's 32x32 GTSRB file.

    Parameters
    ----------
    path : the ``gtsrb32.npz`` file; default ``$LOCALPROPS_GTSRB``.

    Returns
    -------
    dict with ``x_train`` (19605, 32, 32, 3) uint8, ``y_train``,
    ``track_train``, ``frame_train``, ``x_test`` (12630, 32, 32, 3) (the full
    official test set in file order), ``y_test``, ``class_names`` (43,) and
    the size / ROI arrays.
    """
    with np.load(gtsrb_path(path)) as archive:
        return {key: archive[key] for key in archive.files}


def gtsrb_eval_subset() -> dict[str, np.ndarray]:
    """The bundled GTSRB evaluation subset (no external data needed).

    10 images of every class of the official GTSRB test set (430 images),
    chosen by :func:`make_gtsrb_eval_subset`.

    Returns
    -------
    dict with ``images`` (430, 32, 32, 3) uint8, ``labels`` (430,) uint8,
    ``test_index`` (430,) int64 (row in the official test set, i.e. in
    ``load_gtsrb()["x_test"]``; use it as the sample's dataset index) and
    ``class_names`` (43,).
    """
    with np.load(GTSRB_SUBSET_FILE) as archive:
        return {key: archive[key] for key in archive.files}


# ----------------------------------------------------------------- ImageNet
def imagenet_classes() -> list[tuple[int, str, str]]:
    """The 1000 ImageNet-1k classes as ``(index, wnid, name)``.

    ``index`` is the position of the WordNet id in the sorted list of the
    1000 ids: the class index used by torchvision, Caffe and the
    EfficientNet-Lite checkpoints. ``name`` is torchvision's English name.
    """
    with open(IMAGENET_CLASSES_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [(int(r["index"]), r["wnid"], r["name"]) for r in rows]


def wnid_to_index() -> dict[str, int]:
    """WordNet id -> ImageNet-1k class index."""
    return {wnid: index for index, wnid, _ in imagenet_classes()}


class LabelledImages(NamedTuple):
    """Images with their labels, the files they came from and their dataset indices."""

    images: torch.Tensor       #: float (N, 3, H, W) in [0, 255]
    labels: torch.Tensor       #: int64 (N,), ImageNet-1k class indices
    paths: list[Path]          #: source file of every image
    indices: list[int]         #: position of every file in :func:`imagenet_files`


def imagenet_files(root: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The (file, WordNet id) pairs of an ImageNet folder, in sorted order.

    ``root`` is a flat folder of ``<wnid>_*.ext`` files (as the book's sample)
    or an ImageFolder layout ``<root>/<wnid>/<file>``; ``None`` reads
    ``$LOCALPROPS_IMAGENET``. A file's position in this list is its dataset
    index (the key of its perturbation seed). Files without a WordNet id are
    left out with a warning.
    """
    root = resolve_path(root, IMAGENET_ENV, "ImageNet image folder")
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is not a folder of images")
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        relative = path.relative_to(root)
        match = (_WNID.match(relative.parts[0]) if len(relative.parts) > 1
                 else _WNID.match(path.name))
        if match is None:
            warnings.warn(f"skipping {path}: its name (or its folder) does not "
                          "start with a WordNet id such as n01440764", stacklevel=3)
            continue
        found.append((path, match.group(1)))
    return found


def _open_rgb(path: Path) -> "Image.Image | None":
    """The image as RGB, or None (with a warning) when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        warnings.warn(f"skipping {path}: cannot decode it as an image ({error})",
                      stacklevel=3)
        return None


def load_imagenet_folder(root: str | os.PathLike | None,
                         preprocess: Callable[["Image.Image"], torch.Tensor],
                         limit: int | None = None,
                         indices: Sequence[int] | None = None) -> LabelledImages:
    """Load and label the ImageNet images of a folder.

    Parameters
    ----------
    root : folder of images (see :func:`imagenet_files`); ``None`` reads
        ``$LOCALPROPS_IMAGENET``.
    preprocess : a model's preprocessing (``ModelSpec.preprocess``): PIL RGB
        image -> float tensor (3, H, W) in [0, 255].
    limit : read only the first ``limit`` files of :func:`imagenet_files`.
    indices : read only these files (positions in :func:`imagenet_files`),
        in this order; after ``limit``.

    Returns
    -------
    LabelledImages(images, labels, paths, indices). Greyscale / CMYK images
    are converted to RGB; a file whose WordNet id is not an ImageNet-1k class,
    or that cannot be decoded, is skipped with a warning naming it.
    """
    files = imagenet_files(root)
    if limit is not None:
        files = files[:_checks.check_count(limit, "limit")]
    chosen = range(len(files)) if indices is None else [int(i) for i in indices]
    index_of = wnid_to_index()
    images, labels, paths, kept = [], [], [], []
    for i in chosen:
        path, wnid = files[i]
        if wnid not in index_of:
            warnings.warn(f"skipping {path}: {wnid} is not an ImageNet-1k class",
                          stacklevel=2)
            continue
        image = _open_rgb(path)
        if image is None:
            continue
        images.append(preprocess(image))
        labels.append(index_of[wnid])
        paths.append(path)
        kept.append(i)
    if not images:
        raise DataNotFoundError(f"no labelled ImageNet images found in {root}: "
                                "file names must start with a WordNet id "
                                "(n01440764_tench.JPEG) or sit in wnid folders")
    return LabelledImages(torch.stack(images), torch.tensor(labels), paths, kept)


# ------------------------------------------------- a reader's own images
#: ``ModelSpec.dataset`` values that name a built-in source, not a path.
BUILTIN_DATASETS = ("gtsrb", "imagenet", "custom")

_SOURCE_HELP = ("an .npz file with arrays `images` (N, H, W, 3) uint8 or (N, 3, H, W) "
                "float in [0, 255] and `labels` (N,) int, or a folder of class "
                "subfolders (<folder>/<class name or index>/*.png)")


class ImageSource(NamedTuple):
    """A reader's labelled images (:func:`load_image_source`)."""

    images: torch.Tensor       #: float (N, 3, H, W) in [0, 255]
    labels: np.ndarray         #: int64 (N,), indices into the model's classes
    ids: np.ndarray            #: int64 (N,), the images' dataset indices (0..N-1)
    path: Path                 #: the file or folder they came from


def is_image_source(dataset: str) -> bool:
    """Whether a ``ModelSpec.dataset`` names a file or folder of images."""
    return isinstance(dataset, (str, os.PathLike)) and str(dataset) not in BUILTIN_DATASETS


def image_source_digest(path: str | os.PathLike) -> str:
    """sha256 of an ``.npz`` file, or of a folder's image files and their names."""
    import hashlib

    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()
                       and p.suffix.lower() in IMAGE_SUFFIXES):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def _check_source_labels(labels: np.ndarray, n: int, classes: Sequence[str],
                         where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) \
                and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise ValueError(f"{where}: `labels` must be integer class indices, got "
                             f"dtype {labels.dtype}; save them with labels.astype(np.int64)")
    if labels.shape != (n,):
        raise ValueError(f"{where}: `labels` must have shape ({n},), one per image, got "
                         f"{labels.shape}")
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= len(classes))
    if bad.any():
        raise ValueError(f"{where}: labels must be class indices in [0, {len(classes) - 1}] "
                         f"(the model has {len(classes)} classes), got "
                         f"{sorted(set(labels[bad].tolist()))[:5]}; fix the labels or "
                         "the model's `classes`")
    return labels


def _check_source_images(images: np.ndarray, input_size: Sequence[int],
                         where: str) -> torch.Tensor:
    """``images`` of an .npz as float (N, 3, H, W) in [0, 255], or a ValueError."""
    images = np.asarray(images)
    size = tuple(int(s) for s in input_size)
    if images.ndim != 4:
        raise ValueError(f"{where}: `images` must be 4-D, (N, H, W, 3) uint8 or "
                         f"(N, 3, H, W) float, got shape {images.shape}"
                         + ("; add the batch axis with images[None]"
                            if images.ndim == 3 else ""))
    if images.dtype == np.uint8:
        if images.shape[-1] != 3:
            hint = ("; it looks channels-first: np.transpose(images, (0, 2, 3, 1))"
                    if images.shape[1] == 3 else
                    "; greyscale? repeat it: np.repeat(images[..., :1], 3, axis=-1)"
                    if images.shape[-1] == 1 else "")
            raise ValueError(f"{where}: uint8 `images` must be (N, H, W, 3) RGB, got "
                             f"{images.shape}{hint}")
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32)
    elif images.dtype.kind == "f":
        if images.shape[1] != 3:
            hint = ("; it looks channels-last: np.transpose(images, (0, 3, 1, 2))"
                    if images.shape[-1] == 3 else "")
            raise ValueError(f"{where}: float `images` must be (N, 3, H, W) RGB, got "
                             f"{images.shape}{hint}")
        tensor = torch.from_numpy(images.astype(np.float32))
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{where}: `images` holds NaN or infinite values")
    else:
        raise ValueError(f"{where}: `images` must be uint8 (N, H, W, 3) or float "
                         f"(N, 3, H, W) in [0, 255], got dtype {images.dtype}; e.g. "
                         "images.astype(np.uint8) for integer pixels in 0..255")
    if tuple(tensor.shape[2:]) != size:
        raise ValueError(f"{where}: images are {tuple(tensor.shape[2:])} (H, W) but the "
                         f"model's input_size is {size}: resize them to {size} when "
                         "you write the file, or change input_size (a folder of "
                         "image files is resized by the model's preprocess instead)")
    low, high = float(tensor.min()), float(tensor.max())
    if low < 0 or high > 255:
        raise ValueError(f"{where}: pixel values must lie in [0, 255] (raw grey levels; "
                         f"the model's wrapper normalises them), got [{low:.3g}, "
                         f"{high:.3g}]. Undo any normalisation before saving: e.g. "
                         "x * std + mean, then * 255")
    return tensor.contiguous()


def _folder_classes(folders: list[Path], classes: Sequence[str], where: str
                    ) -> dict[str, int]:
    """Class index of every subfolder name."""
    names = [f.name for f in folders]
    if all(name in classes for name in names):
        return {name: list(classes).index(name) for name in names}
    if all(name.isdigit() for name in names):
        return {name: int(name) for name in names}
    if len(names) > len(classes):
        raise ValueError(f"{where}: {len(names)} class subfolders but the model has "
                         f"{len(classes)} classes ({list(classes)[:10]}); name the "
                         "subfolders by class name or index")
    return {name: index for index, name in enumerate(sorted(names))}


def _load_image_folder(root: Path, classes: Sequence[str], input_size: Sequence[int],
                       preprocess: Callable[["Image.Image"], torch.Tensor],
                       where: str) -> tuple[torch.Tensor, np.ndarray]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p.name for p in root.iterdir() if p.is_file()
             and p.suffix.lower() in IMAGE_SUFFIXES]
    if not folders:
        raise ValueError(f"{where}: no class subfolders; put the images in "
                         f"<folder>/<class name or index>/ (found {len(loose)} "
                         "images directly in the folder)")
    index = _folder_classes(folders, classes, where)
    size = tuple(int(s) for s in input_size)
    images, labels = [], []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()
                           and p.suffix.lower() in IMAGE_SUFFIXES):
            image = _open_rgb(path)
            if image is None:
                continue
            tensor = preprocess(image)
            if tuple(tensor.shape) != (3, *size):
                raise ValueError(f"{where}: the model's preprocess turned {path} into "
                                 f"{tuple(tensor.shape)}, not (3, {size[0]}, {size[1]}) "
                                 "(its input_size): fix preprocess or input_size")
            images.append(tensor)
            labels.append(index[folder.name])
    if not images:
        raise ValueError(f"{where}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its "
                         "class subfolders")
    return torch.stack(images).to(torch.float32), np.asarray(labels, dtype=np.int64)


def load_image_source(path: str | os.PathLike, *, classes: Sequence[str],
                      input_size: Sequence[int],
                      preprocess: Callable[["Image.Image"], torch.Tensor] | None = None
                      ) -> ImageSource:
    """Read and check a reader's labelled images (a model's ``dataset``).

    Parameters
    ----------
    path : an ``.npz`` with ``images`` ((N, H, W, 3) uint8, or (N, 3, H, W)
        float in [0, 255]) and ``labels`` ((N,) int), whose H, W must equal
        ``input_size`` (no resizing); or a folder of class subfolders
        ``<path>/<class>/*.png|jpg|...``, each image passed through
        ``preprocess`` (the model's resize and crop, as for ImageNet folders).
        A subfolder's class is its position in ``classes`` when every
        subfolder is named after one, else its name when every name is an
        integer, else its position among the sorted subfolder names. A
        relative path is read from the working directory.
    classes : the model's class names (labels must index them).
    input_size : (H, W) the model takes.

    Returns
    -------
    ImageSource(images, labels, ids, path); ``ids`` are 0..N-1 (the file's
    order; folders sorted by class folder, then file name).

    Raises
    ------
    ValueError : missing path, wrong shape, dtype or range, bad labels; the
        message says what to fix. Images whose values all lie in [0, 1]
        give a :class:`localprops.core.checks.UnitRangeWarning` instead.
    """
    where = f"images {path}"
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"{where}: not found (from {Path.cwd()}); the model's `dataset` "
                         f"must name {_SOURCE_HELP}; a relative path is read from the "
                         "working directory or the model module's folder")
    if path.is_dir():
        if preprocess is None:
            raise ValueError(f"{where}: a folder of image files needs the model's "
                             "preprocess (PIL image -> (3, H, W) in [0, 255])")
        images, labels = _load_image_folder(path, classes, input_size, preprocess, where)
    elif path.suffix.lower() == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"{where}: cannot read it as an .npz ({error})") from error
        with archive:
            missing = [key for key in ("images", "labels") if key not in archive.files]
            if missing:
                raise ValueError(f"{where}: the .npz has no {' or '.join(missing)} "
                                 f"array (it holds {archive.files}); save it with "
                                 "np.savez(path, images=images, labels=labels)")
            images = _check_source_images(archive["images"], input_size, where)
            labels = archive["labels"]
    else:
        raise ValueError(f"{where}: must be {_SOURCE_HELP}")
    labels = _check_source_labels(labels, len(images), classes, where)
    if len(images) == 0:
        raise ValueError(f"{where}: holds no images")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        raise ValueError(f"{where}: pixel values must lie in [0, 255], got "
                         f"[{low:.3g}, {high:.3g}]")
    _checks.warn_if_unit_range(images, name=where)
    return ImageSource(images, labels, np.arange(len(images), dtype=np.int64), path)
