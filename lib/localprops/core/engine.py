"""Evaluate a model on a clean image plus many perturbations, chunk by chunk.

:func:`evaluate` is the one place where perturbed images meet a model. It adds
the perturbations to the clean image one chunk at a time (generating them
lazily when given a :class:`~localprops.core.sampling.RadialPerturbations` or
:class:`~localprops.core.sampling.PermutedPerturbations`), runs the model in eval
mode without autograd on the model's device, and keeps only what the studies
need: class probabilities, predictions, the true-class score, and optionally
the flattened activations of one layer captured by a forward hook. Memory is
bounded by the chunk size, not by ``R x T``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from localprops.core import checks as _checks
from localprops.core.progress import progress_bar
from localprops.core.sampling import Perturbations

__all__ = ["EvalResult", "capture_layer", "default_batch_size", "evaluate",
           "model_device", "model_dtype", "true_class_log_odds"]


@dataclass
class EvalResult:
    """What :func:`evaluate` returns; all tensors on the CPU.

    Attributes
    ----------
    probs : (R, T, K) class probabilities, float64 (softmax of the logits computed
        in float64, so that probabilities within 1e-8 of 1 stay distinct).
    predictions : (R, T) predicted classes.
    scores : (R, T) probability of ``label``, or None without a label.
    log_odds : (R, T) true-class log-odds ``z_y - logsumexp_{k != y} z_k`` from
        the float64 logits, or None without a label. Monotone in the score and
        never saturated: where the probability rounds to 1 it still resolves
        how confident the model is.
    features : (R, T, F) flattened activations of ``feature_layer``, or None.
    clean_probs : (K,) probabilities of the clean image.
    clean_features : (F,) activations of the clean image at ``feature_layer``.
    batch_size : the chunk size finally used (smaller after a CUDA OOM).
    """

    probs: torch.Tensor
    predictions: torch.Tensor
    scores: torch.Tensor | None
    log_odds: torch.Tensor | None
    features: torch.Tensor | None
    clean_probs: torch.Tensor
    clean_features: torch.Tensor | None
    batch_size: int


def default_batch_size(image_shape: tuple[int, ...], device: torch.device) -> int:
    """Images per forward pass when the caller does not choose.

    On a GPU large batches keep it busy: 256. On a CPU they do not help and
    can hurt badly: measured on 2 cores, EfficientNet-Lite0 evaluates 121
    images/s in chunks of 4 and 25 images/s in chunks of 128 (activations
    that no longer fit in cache), while the GTSRB nets are flat from 1 to 32.
    So a CPU chunk holds about 2**20 input values (4 ImageNet images, 32
    GTSRB images), at most 32 images.
    """
    if device.type != "cpu":
        return 256
    numel = 1
    for size in image_shape:
        numel *= int(size)
    chunk = max(1, min(32, 2**20 // numel))
    return 1 << (chunk.bit_length() - 1)          # a power of two


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU if it has none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 if none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


class _Source:
    """Uniform access to an (R, T, *shape) tensor or a lazy perturbation source."""

    def __init__(self, perturbations, image_shape: tuple[int, ...]):
        if isinstance(perturbations, Perturbations):
            self.lazy = perturbations
            self.shape = perturbations.full_shape
        elif isinstance(perturbations, torch.Tensor):
            self.lazy = None
            self.tensor = perturbations
            self.shape = tuple(perturbations.shape)
            _checks.check_finite(perturbations, "perturbations")
        else:
            raise TypeError("perturbations must be a tensor (R, T, C, H, W) or a "
                            "RadialPerturbations / PermutedPerturbations, got "
                            f"{type(perturbations).__name__}")
        if len(self.shape) != 2 + len(image_shape) or tuple(self.shape[2:]) != image_shape:
            raise ValueError(f"perturbations must have shape (R, T, {', '.join(map(str, image_shape))})"
                             f" to match the image, got {self.shape}")
        self.n_rows = self.shape[0] * self.shape[1]

    def perturbed(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """``x + nu`` for rows ``start:stop``, on x's device and in x's dtype."""
        if self.lazy is not None:       # freshly generated: add in place
            return self.lazy.rows(start, stop, device=x.device, dtype=x.dtype).add_(x)
        flat = self.tensor.reshape(self.n_rows, *self.shape[2:])
        # never in place: the caller's tensor must stay as it was
        return flat[start:stop].to(device=x.device, dtype=x.dtype) + x


@contextlib.contextmanager
def capture_layer(model: nn.Module, layer: str | None, sink: list, *, detach: bool = True):
    """Append the flattened output (N, F) of module ``layer`` to ``sink`` on every forward.

    ``layer`` is a name from ``model.named_modules()`` (None records nothing).
    ``detach=False`` keeps the output as it is, e.g. a forward-mode dual tensor
    whose tangent the caller reads. An unknown name raises a ValueError that
    lists similar names.
    """
    if layer is None:
        yield
        return
    modules = dict(model.named_modules())
    if layer not in modules:
        near = [name for name in modules if name and layer.split(".")[-1] in name][:8]
        raise ValueError(f"feature_layer {layer!r} is not a module of the model; "
                         f"names look like {near or list(modules)[1:9]}")

    def hook(_module, _inputs, output):
        sink.append((output.detach() if detach else output).flatten(1))

    handle = modules[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _forward(model, batch, layer, probs_out, feats_out, start):
    sink: list[torch.Tensor] = []
    with capture_layer(model, layer, sink):
        logits = model(batch)
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits (N, K), got shape {tuple(logits.shape)}")
    # softmax in float64: a confident network's true-class probability is
    # 1 - 1e-9 or closer, which float32 rounds to exactly 1
    logits = logits.double()
    probs_out.append((start, torch.softmax(logits, dim=-1).cpu(), logits.cpu()))
    if layer is not None:
        if not sink:
            raise RuntimeError(f"feature_layer {layer!r} was not called in the forward pass")
        feats_out.append((start, sink[-1].cpu()))


def true_class_log_odds(logits: torch.Tensor, label: int | torch.Tensor) -> torch.Tensor:
    """``z_y - logsumexp_{k != y} z_k`` over the last axis: log(s / (1 - s)) without rounding.

    ``label`` is one class for all rows or a tensor of classes broadcastable
    to ``logits.shape[:-1]``. Computed from the logits, so it stays finite and
    exact where the probability ``s`` is 1 to machine precision.
    """
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have a last axis of K >= 2 classes, got "
                         f"{tuple(logits.shape)}")
    logits = logits.double()
    label = torch.as_tensor(label, device=logits.device).expand(logits.shape[:-1])
    true = logits.gather(-1, label[..., None])[..., 0]
    others = logits.scatter(-1, label[..., None], float("-inf"))
    return true - torch.logsumexp(others, dim=-1)


def run_chunked(n: int, size: int, step: Callable[[int, int], Any], *,
                on_halve: Callable[[int], None] | None = None) -> list:
    """``step(start, stop)`` over consecutive chunks of at most ``size`` rows.

    Returns the list of the chunks' results. On a CUDA out-of-memory error the
    chunk is halved and retried (down to one row; ``on_halve(new_size)`` is
    called), so a long run on a GPU adapts instead of failing. Every chunked
    pass of the package (forward passes, gradients, attacks) runs through it.
    """
    out, start = [], 0
    while start < n:
        stop = min(start + size, n)
        try:
            out.append(step(start, stop))
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            torch.cuda.empty_cache()
            size = max(1, size // 2)
            if on_halve is not None:
                on_halve(size)
            continue
        start = stop
    return out


def gradient_batch_size(image_shape: tuple[int, ...], device: torch.device) -> int:
    """Images per backward pass: a quarter of the forward chunk (activations are kept)."""
    return max(1, default_batch_size(image_shape, device) // 4)


def evaluate(model: nn.Module, x: torch.Tensor, perturbations, *,
             labels: int | None = None, feature_layer: str | None = None,
             batch_size: int | None = None, progress: bool | None = None) -> EvalResult:
    """Evaluate ``model(x + nu)`` for every perturbation ``nu``, in chunks.

    Parameters
    ----------
    model : a classifier taking float images (N, C, H, W) in raw pixel units
        [0, 255] and returning logits (N, K); normalization belongs inside it.
    x : the clean image (C, H, W).
    perturbations : a tensor (R, T, C, H, W), or a lazy
        :class:`~localprops.core.sampling.RadialPerturbations` /
        :class:`~localprops.core.sampling.PermutedPerturbations` generated chunk by
        chunk on the model's device (identical values on any device).
    labels : the true class of ``x``; when given, ``scores`` holds its probability.
    feature_layer : name of a module (as in ``model.named_modules()``) whose
        output is captured, flattened, for every perturbed image.
    batch_size : images per forward pass; bounds memory. None picks
        :func:`default_batch_size` for the image size and device. On CUDA an
        out-of-memory error halves it and the run continues.
    progress : show a tqdm progress bar; None shows one for more than one chunk.

    Returns
    -------
    EvalResult with tensors on the CPU. The model is evaluated in eval mode
    without autograd, on its own device and in its own floating dtype (cast a
    model and image to float64 to measure float32's rounding noise).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError("x must be one clean image, a tensor (C, H, W); got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    _checks.check_finite(x, "the clean image x")
    _checks.warn_if_unit_range(x, "the clean image x")
    if labels is not None:
        labels = int(labels)
    source = _Source(perturbations, tuple(x.shape))
    device, dtype = model_device(model), model_dtype(model)
    batch_size = (default_batch_size(tuple(x.shape), device) if batch_size is None
                  else _checks.check_count(batch_size, "batch_size"))
    x = x.to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    probs_out: list = []
    feats_out: list = []
    total = source.n_rows
    show = progress if progress is not None else total > batch_size
    bar = progress_bar(total=total, enabled=show, desc="perturbed images", unit="img")
    try:
        with torch.inference_mode():
            clean_probs: list = []
            clean_feats: list = []
            _forward(model, x.unsqueeze(0), feature_layer, clean_probs, clean_feats, 0)

            def step(start: int, stop: int) -> None:
                batch = source.perturbed(x, start, stop)
                _forward(model, batch, feature_layer, probs_out, feats_out, start)
                bar.update(stop - start)

            def halved(size: int) -> None:
                nonlocal batch_size
                batch_size = size
                bar.set_postfix(batch_size=size)

            run_chunked(total, batch_size, step, on_halve=halved)
    finally:
        bar.close()
        model.train(was_training)
    r, t = source.shape[:2]
    probs = torch.cat([p for _, p, _ in probs_out]).reshape(r, t, -1)
    if not torch.isfinite(probs).all():
        raise ValueError("the model produced NaN or infinite outputs; check the "
                         "model and its input range ([0, 255] expected)")
    features = (torch.cat([f for _, f in feats_out]).reshape(r, t, -1)
                if feature_layer is not None else None)
    if labels is not None and not 0 <= labels < probs.shape[-1]:
        raise ValueError(f"labels={labels} is not a class of this model "
                         f"(it has {probs.shape[-1]} classes)")
    scores = log_odds = None
    if labels is not None:
        scores = probs[..., labels]
        logits = torch.cat([z for _, _, z in probs_out]).reshape(r, t, -1)
        log_odds = true_class_log_odds(logits, labels)
    return EvalResult(probs=probs, predictions=probs.argmax(dim=-1), scores=scores,
                      log_odds=log_odds, features=features, clean_probs=clean_probs[0][1][0],
                      clean_features=clean_feats[0][1][0] if feature_layer else None,
                      batch_size=batch_size)
