"""The wrappers that put every model behind the book's one convention.

:class:`Normalized` holds a model's normalisation so that it takes raw pixel
values in [0, 255] (a radius is then measured in grey levels whatever the
model); :class:`ResizeCrop` is a model's own resize and crop of a PIL image
(no normalisation); :class:`ModelSpec` is a loaded model with what the book
needs to know about it (preprocessing, classes, the feature layer before the
classifier). :func:`find_feature_layer` finds that layer in any network.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from localprops.models.data import as_image_batch

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


class ModelUnavailableError(RuntimeError):
    """A model's weights (or the package that provides them) are missing here."""


class WeightsIntegrityError(RuntimeError):
    """A weights file does not match the sha256 recorded for it."""


class Normalized(nn.Module):
    """A model that takes raw pixels: ``model((x * scale - mean) / std)``.

    Parameters
    ----------
    model : the network, expecting normalised input.
    mean, std : per-channel statistics on the scaled input (e.g. ImageNet's
        (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) for ``scale=1/255``).
    scale : factor from raw pixels to the scale of ``mean`` / ``std``.

    ``mean`` and ``std`` are buffers, saved with the state dict.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | torch.Tensor,
                 std: Sequence[float] | torch.Tensor, scale: float = 1 / 255) -> None:
        super().__init__()
        self.model = model
        self.scale = float(scale)
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if (std <= 0).any():
            raise ValueError(f"std must be positive, got {std.flatten().tolist()}")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of raw-pixel images (N, 3, H, W) in [0, 255]."""
        return self.model((x * self.scale - self.mean) / self.std)

    def extra_repr(self) -> str:
        mean = [float(f"{v:.4g}") for v in self.mean.flatten().tolist()]
        std = [float(f"{v:.4g}") for v in self.std.flatten().tolist()]
        return f"scale={self.scale:.6g}, mean={mean}, std={std}"


class ResizeCrop:
    """PIL image -> float tensor (3, H, W) in [0, 255]: resize, centre crop.

    Parameters
    ----------
    resize : side of the shorter edge after resizing (an int), or an exact
        (H, W) size; ``None`` for no resizing.
    crop : (H, W) of the centre crop; ``None`` for none.
    interpolation : a ``torchvision.transforms.InterpolationMode`` name
        (``"bilinear"``, ``"bicubic"``, ...).

    No normalisation: the model does that.
    """

    def __init__(self, resize: int | tuple[int, int] | None,
                 crop: tuple[int, int] | None, interpolation: str = "bilinear") -> None:
        self.resize = resize if resize is None or isinstance(resize, int) else tuple(resize)
        self.crop = None if crop is None else tuple(int(c) for c in crop)
        self.interpolation = str(interpolation).lower()

    def __call__(self, image: "Image.Image") -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        if not hasattr(image, "convert"):
            raise TypeError(f"preprocess takes a PIL image, got {type(image).__name__}")
        image = image.convert("RGB")
        if self.resize is not None:
            size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
            image = TF.resize(image, size, interpolation=InterpolationMode(
                self.interpolation), antialias=True)
        if self.crop is not None:
            image = TF.center_crop(image, list(self.crop))
        return TF.pil_to_tensor(image).to(torch.float32)

    def __repr__(self) -> str:
        return (f"ResizeCrop(resize={self.resize}, crop={self.crop}, "
                f"interpolation={self.interpolation!r})")


@dataclass
class ModelSpec:
    """A loaded model and what the book needs to know about it.

    Attributes
    ----------
    name : the name it was loaded by.
    model : :class:`Normalized` module in eval mode; input [0, 255], logits out.
    preprocess : PIL image -> float tensor (3, H, W) in [0, 255] (the model's
        own resize / crop, no normalisation).
    input_size : (H, W) the model expects.
    classes : class names, index = logit position.
    feature_layer : name in ``dict(model.named_modules())`` of the layer just
        before the classifier (see the module docstring).
    weights : name of the weights; weights_source : where they came from.
    dataset : ``"gtsrb"``, ``"imagenet"``, ``"custom"``, or the path of an ``.npz``
        or a folder of labelled images (:func:`localprops.models.data.load_image_source`).
    device : where the model lives.
    """

    name: str
    model: nn.Module
    preprocess: Callable[["Image.Image"], torch.Tensor]
    input_size: tuple[int, int]
    classes: list[str]
    feature_layer: str
    weights: str
    weights_source: str
    dataset: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def num_classes(self) -> int:
        """Number of classes (logits)."""
        return len(self.classes)

    def logits(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Logits (N, K) on the CPU, computed in batches without gradients."""
        images = as_image_batch(images)
        with torch.no_grad():
            return torch.cat([self.model(images[i:i + batch_size].to(self.device)).cpu()
                              for i in range(0, len(images), batch_size)])

    def features(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Flattened output (N, D) of ``feature_layer``, on the CPU, no gradients."""
        from localprops.core.engine import capture_layer

        images = as_image_batch(images)
        outputs: list[torch.Tensor] = []
        with capture_layer(self.model, self.feature_layer, outputs), torch.no_grad():
            for i in range(0, len(images), batch_size):
                self.model(images[i:i + batch_size].to(self.device))
        return torch.cat(outputs).cpu()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
            nn.AlphaDropout, nn.Identity)


def find_feature_layer(model: nn.Module, input_size: tuple[int, int],
                       device: torch.device | str = "cpu") -> str:
    """Name of the last module that runs before the final linear layer.

    Runs one blank image through ``model`` recording the order in which leaf
    modules run; walks back from the final ``nn.Linear`` skipping dropout and
    identity modules (the identity in eval mode).
    """
    names = {module: name for name, module in model.named_modules()}
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [module.register_forward_hook(
        lambda module, args, output: calls.append((module, output)))
        for module in model.modules() if not list(module.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    last_linear = max((i for i, (m, _) in enumerate(calls) if isinstance(m, nn.Linear)),
                      default=None)
    if last_linear is None:
        raise ValueError("the model has no nn.Linear classifier; pass feature_layer")
    in_features = calls[last_linear][0].in_features
    for module, output in reversed(calls[:last_linear]):
        if isinstance(module, _SKIPPED):
            continue
        if isinstance(output, torch.Tensor) and output[0].numel() != in_features:
            warnings.warn(f"feature layer {names[module]!r} outputs "
                          f"{output[0].numel()} values per image, the classifier "
                          f"takes {in_features}", stacklevel=2)
        return names[module]
    raise ValueError("no module runs before the classifier; pass feature_layer")


def as_spec(model: object) -> ModelSpec:
    """``model`` itself when it is a :class:`ModelSpec`, else a clear error.

    The studies take the loaded model as one object (its network, name,
    weights and feature layer), so that a call cannot pair one network with
    another's name in the cache.
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, nn.Module):
        raise TypeError("the studies take a loaded model (ModelSpec), not a bare nn.Module: "
                        "wrap yours with localprops.models.from_module(module, mean=..., "
                        "std=..., input_size=..., classes=..., feature_layer=...)")
    raise TypeError(f"expected a ModelSpec from localprops.models.load or from_module, "
                    f"got {type(model).__name__}")
