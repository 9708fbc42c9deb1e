"""Local Lipschitz behaviour (paper Sec. 2.4, eqs. 8-9, Figs. 5-6).

For every perturbed point of eq. 4 the study records the output distance
``||g(Phi_L(x + nu)) - g(Phi_L(x))||`` and the input distance
``||h(x + nu) - h(x)||``. Their ratio is the local constant ``L_x`` of eq. 9:
below 1 the map pulls perturbed points towards ``x`` (contraction). Because the
verdict depends on the normalizers ``g`` and ``h``, the study records three
readings side by side:

- ``minmax``: per-feature min-max normalizers fitted on many clean images
  (the paper's reading);
- ``raw``: no normalization at all (input in pixel units 0-255);
- ``zscore``: per-feature standardization (mean 0, std 1) fitted on the
  same clean images, for outputs and inputs alike.

:func:`global_lipschitz_bound` gives the layer-by-layer upper bound of
Szegedy et al. (2014) for the same map, so local and global constants can be
compared.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.engine import (
    capture_layer,
    default_batch_size,
    evaluate,
    model_device,
    model_dtype,
)
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.runner import run_units

ArrayLike = np.ndarray | torch.Tensor

#: The studies modules whose code computes this study's cached units.
CODE_MODULES = ("lipschitz",)


class MinMaxNormalizer:
    """Min-max scaling ``(v - min) / (max - min)`` fitted on many samples.

    The paper's ``g`` (feature layer) and ``h`` (input) of eq. 9: their minima
    and maxima are collected by feeding thousands of clean images to the
    ConvNet. ``per_feature=True`` keeps one (min, max) per dimension (features
    that never vary get a scale of 1, not a division by zero);
    ``per_feature=False`` uses one global (min, max). Fit incrementally with
    :meth:`update` (one batch at a time), then :meth:`transform`.
    """

    def __init__(self, per_feature: bool = True) -> None:
        self.per_feature = per_feature
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None
        self.count = 0

    def update(self, batch: ArrayLike) -> "MinMaxNormalizer":
        """Widen the (min, max) with a batch ``(N, F)`` of vectors."""
        b = batch if isinstance(batch, torch.Tensor) else torch.as_tensor(np.asarray(batch))
        if b.ndim != 2 or b.shape[0] < 1:
            raise ValueError(f"fit the normalizer on a batch (N, F), got {tuple(b.shape)}")
        _checks.check_finite(b, "normalizer batch")
        b = b.detach().to("cpu", torch.float64)
        low = b.amin(dim=0) if self.per_feature else b.amin().reshape(1)
        high = b.amax(dim=0) if self.per_feature else b.amax().reshape(1)
        if self.low is not None and self.low.shape != low.shape:
            raise ValueError(f"batch has {b.shape[1]} features, the normalizer was "
                             f"fitted on {self.low.shape[0]}")
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)
        self.count += b.shape[0]
        return self

    fit = update

    @property
    def scale(self) -> torch.Tensor:
        """``max - min``, with 1 where a feature never varied."""
        if self.low is None:
            raise RuntimeError("the normalizer is not fitted: call update() first")
        span = self.high - self.low
        return torch.where(span > 0, span, torch.ones_like(span))

    def transform(self, v: ArrayLike) -> torch.Tensor:
        """Scale vectors ``(..., F)`` to the fitted range, in float64."""
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        scale = self.scale.to(t.device)
        return (t.to(torch.float64) - self.low.to(t.device)) / scale

    __call__ = transform


READINGS = ("minmax", "raw", "zscore")


class ZScoreNormalizer:
    """Per-feature standardization ``(v - mean) / std`` fitted incrementally."""

    def __init__(self) -> None:
        self.count = 0
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> "ZScoreNormalizer":
        """Add a batch (N, F) to the running sums."""
        b = torch.as_tensor(batch).detach().to("cpu", torch.float64)
        if b.ndim != 2:
            raise ValueError(f"fit the normalizer on a batch (N, F), got {tuple(b.shape)}")
        self.total = b.sum(0) if self.total is None else self.total + b.sum(0)
        self.total_sq = (b * b).sum(0) if self.total_sq is None else self.total_sq + (b * b).sum(0)
        self.count += b.shape[0]
        return self

    @property
    def scale(self) -> torch.Tensor:
        """The per-feature std, with 1 where a feature never varied."""
        if self.count < 2:
            raise RuntimeError("fit the z-score normalizer on at least 2 vectors")
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0)
        std = var.sqrt()
        return torch.where(std > 0, std, torch.ones_like(std))


@dataclass
class Normalizers:
    """The fitted ``g`` (features) and ``h`` (inputs) of each reading.

    Only scales matter for distances (offsets cancel in differences), so each
    reading is stored as a per-dimension scale: distances are
    ``||diff / scale||``.
    """

    output_scale: dict[str, torch.Tensor]
    input_scale: dict[str, torch.Tensor]
    n_images: int

    def fingerprint(self) -> str:
        """A short hash of the scales (part of the cache key)."""
        import hashlib
        digest = hashlib.sha256()
        for side in (self.output_scale, self.input_scale):
            for name in sorted(side):
                digest.update(name.encode())
                digest.update(side[name].numpy().tobytes())
        return digest.hexdigest()[:12]


def fit_normalizers(model: nn.Module, images: torch.Tensor, feature_layer: str, *,
                    batch_size: int | None = None) -> Normalizers:
    """Fit min-max and z-score normalizers on clean images and their features.

    Parameters
    ----------
    model : classifier ([0, 255] input); feature_layer : the layer before the classifier.
    images : (N, C, H, W) clean images in [0, 255] ("thousands" in the paper).
    """
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError("fit the normalizers on a batch of at least 2 images (N, C, H, W)")
    device, dtype = model_device(model), model_dtype(model)
    batch_size = batch_size or default_batch_size(tuple(images.shape[1:]), device)
    g_mm, h_mm = MinMaxNormalizer(), MinMaxNormalizer()
    g_z, h_z = ZScoreNormalizer(), ZScoreNormalizer()
    store: list[torch.Tensor] = []
    model.eval()
    with capture_layer(model, feature_layer, store), torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(device=device, dtype=dtype)
            model(batch)
            feats = store.pop().cpu()
            flat = batch.flatten(1).cpu()
            g_mm.update(feats), h_mm.update(flat), g_z.update(feats), h_z.update(flat)
    ones_out = torch.ones_like(g_mm.scale)
    ones_in = torch.ones_like(h_mm.scale)
    return Normalizers(output_scale={"minmax": g_mm.scale, "raw": ones_out, "zscore": g_z.scale},
                       input_scale={"minmax": h_mm.scale, "raw": ones_in, "zscore": h_z.scale},
                       n_images=images.shape[0])


@dataclass
class LipschitzStudy:
    """Output and input distances of every perturbed point, per reading.

    ``output_distance[reading]`` and ``input_distance[reading]`` have shape
    (S, R, T).
    """

    model: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    output_distance: dict[str, np.ndarray]
    input_distance: dict[str, np.ndarray]
    skipped: list[str] = field(default_factory=list)

    def ratio(self, reading: str = "minmax") -> np.ndarray:
        """Local constants ``L_x`` (S, R, T) for one reading."""
        return self.output_distance[reading] / self.input_distance[reading]

    def share_contracting(self, reading: str = "minmax") -> np.ndarray:
        """Share of perturbed points with ``L_x < 1``, per radius (R,)."""
        return (self.ratio(reading) < 1).mean(axis=(0, 2))


def lipschitz_study(model: ModelSpec, samples: SampleSet, normalizers: Normalizers, *,
                    radii: list[float], T: int, norm: str = "l2", batch_size: int | None = None,
                    cache: ResultCache | None = None, progress: bool = True) -> LipschitzStudy:
    """Distances of eq. 9 for every perturbed point, in each normalization.

    The perturbations are those of the isotropy study (same seeds), so an
    image that several models of a dataset picked gets the same points in each
    (each model draws its own samples: :func:`localprops.models.samples.prepare`).
    """
    spec = as_spec(model)
    model, model_name, weights = spec.model, spec.name, spec.weights
    feature_layer = spec.feature_layer
    radii = list(_checks.check_radii(radii))
    T = _checks.check_count(T, "T")
    norm = _checks.check_norm(norm)
    shape = tuple(samples.images.shape[1:])
    device = model_device(model)

    def compute(i: int) -> dict[str, np.ndarray]:
        source = RadialPerturbations(shape, radii, T, norm, int(samples.seeds[i]))
        out = evaluate(model, samples.images[i], source, labels=samples.labels[i],
                       feature_layer=feature_layer, batch_size=batch_size, progress=False)
        diff_out = out.features.double() - out.clean_features.double()
        result = {}
        for reading in READINGS:
            result[f"out_{reading}"] = torch.linalg.vector_norm(
                diff_out / normalizers.output_scale[reading], dim=-1).numpy()
            in_scale = normalizers.input_scale[reading].to(device)
            dist = []
            for r in range(len(radii)):
                nu = source.rows(r * T, (r + 1) * T, device=device, dtype=torch.float64)
                dist.append(torch.linalg.vector_norm(nu.flatten(1) / in_scale, dim=-1).cpu())
            result[f"in_{reading}"] = torch.stack(dist).numpy()
        return result

    fingerprint = normalizers.fingerprint()

    def manifest(i: int) -> dict:
        return dict(study="lipschitz", model=model_name, weights=weights, radii=radii, T=T,
                    norm=norm, layer=feature_layer, normalizers=fingerprint,
                    sample_seed=int(samples.seeds[i]), sample=int(samples.ids[i]))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model_name} lipschitz", progress=progress,
                                     study_modules=CODE_MODULES)
    empty = np.zeros((0, len(radii), T))
    return LipschitzStudy(
        model=model_name, norm=norm, radii=np.asarray(radii), ids=np.asarray(samples.ids)[kept],
        output_distance={r: np.stack([u[f"out_{r}"] for u in units]) if units else empty
                         for r in READINGS},
        input_distance={r: np.stack([u[f"in_{r}"] for u in units]) if units else empty
                        for r in READINGS},
        skipped=skipped)


def _operator_norm(layer: nn.Module, shape: tuple[int, ...], iterations: int = 300,
                   seed: int = 0) -> float:
    """Largest singular value of a linear layer's linear part by power iteration.

    The iterates approach the true value from below; 300 iterations bring it
    within about 1e-3 relative for the layers of the book's models (checked
    against a full SVD in the tests).
    """
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
    weight_only = _without_bias(layer)
    sigma = 0.0
    for _ in range(iterations):
        v = v / v.norm()
        v.requires_grad_(True)
        out = weight_only(v)
        # A^T A v through autograd: gradient of 0.5 ||A v||^2
        (grad,) = torch.autograd.grad(0.5 * (out * out).sum(), v)
        sigma = float(out.detach().norm())
        v = grad.detach()
    return sigma


def _without_bias(layer: nn.Module) -> nn.Module:
    import copy
    clone = copy.deepcopy(layer).to(torch.float64)
    if getattr(clone, "bias", None) is not None:
        clone.bias = None
    return clone


def global_lipschitz_bound(model: nn.Module, input_shape: tuple[int, ...],
                           feature_layer: str) -> tuple[float, list[tuple[str, float]]]:
    """Product of per-layer Lipschitz constants up to ``feature_layer`` (Szegedy et al. 2014).

    Works for models whose layers up to ``feature_layer`` run in sequence
    (leaf modules called one after another on one tensor). Convolutions and
    fully connected layers contribute their operator norm (power iteration),
    ReLU-like activations and non-overlapping max-pooling 1, an element-wise
    scaling (normalization, eval-mode batch norm) its largest factor.

    Returns
    -------
    The bound, and (layer name, constant) for every layer used.

    Raises
    ------
    ValueError when the model is not a plain sequence of layers up to the
    feature layer (e.g. residual connections), since the product would not be
    a bound there.
    """
    calls: list[tuple[str, nn.Module, tuple[int, ...], torch.Tensor, torch.Tensor]] = []
    hooks = []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: calls.append((name, m, tuple(i[0].shape[1:]),
                                                         i[0], o))))
    try:
        with torch.no_grad():
            model.eval()
            param = next(model.parameters())
            model(torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype) + 128)
    finally:
        for h in hooks:
            h.remove()
    names = [c[0] for c in calls]
    if feature_layer not in names and not any(n.startswith(feature_layer + ".") for n in names):
        raise ValueError(f"feature_layer {feature_layer!r} was not reached in the forward pass")
    factors: list[tuple[str, float]] = []
    for name, module in model.named_modules():
        # the wrapper's (x * scale - mean) / std: a diagonal map
        if isinstance(getattr(module, "scale", None), float) and hasattr(module, "std"):
            factors.append((name or "normalization",
                            float((module.scale / module.std).abs().max())))
            break
    previous_out = None
    for name, module, shape, inp, out in calls:
        if previous_out is not None and not (inp.shape == previous_out.shape
                                             and torch.equal(inp.flatten(), previous_out.flatten())):
            if not (inp.numel() == previous_out.numel()
                    and torch.equal(inp.flatten(), previous_out.flatten())):
                raise ValueError(f"layer {name!r} does not take the previous layer's output: "
                                 "the model is not a plain sequence, so no product bound")
        previous_out = out
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.Upsample, nn.AvgPool2d,
                               nn.AdaptiveAvgPool2d)):
            factors.append((name, _operator_norm(module, shape)))
        elif isinstance(module, nn.BatchNorm2d):
            scale = (module.weight / torch.sqrt(module.running_var + module.eps)).abs().max()
            factors.append((name, float(scale)))
        elif isinstance(module, nn.MaxPool2d):
            k, s = module.kernel_size, module.stride
            k = k if isinstance(k, int) else max(k)
            s = s if isinstance(s, int) else min(s)
            overlap = int(np.ceil(k / s))
            factors.append((name, float(overlap)))    # each input in <= overlap^2 windows
        elif isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Flatten, nn.Dropout,
                                 nn.Identity, nn.ReLU6, nn.ELU)):
            factors.append((name, 1.0))
        elif type(module).__name__ == "ScaledTanh":      # 1.7159 tanh(2x/3)
            factors.append((name, 1.7159 * 2.0 / 3.0))
        elif hasattr(module, "lipschitz_constant"):
            factors.append((name, float(module.lipschitz_constant())))
        else:
            raise ValueError(f"no Lipschitz constant known for layer {name!r} "
                             f"({type(module).__name__})")
        if name == feature_layer or name.startswith(feature_layer + "."):
            break
    bound = float(np.prod([f for _, f in factors]))
    return bound, factors
