"""Topology by depth, and what Mantel rho a linear map gives (beyond the paper).

The paper reads its low Mantel statistics at the layer before the classifier
as the effect of "the affine transformation applied by every layer,
compounded over layers" (Sec. 2.3). Two measurements test that reading:

- :func:`depth_study`: rho between the input distances of the points of eq. 4
  and their distances at every stage of the network (first convolution, each
  pooling layer or block, the feature layer), for the model and for its
  linearisation at x. Does rho fall with depth, or is it set at the first
  layer?
- :func:`predicted_linear_rho`: a closed form for the rho of a linear map on
  points of one sphere, from the map's participation ratio (an effective
  number of directions it keeps): low rho needs no depth, only a map that
  keeps far fewer directions than there are pixels.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.autograd.forward_ad as fwad
from numpy.typing import ArrayLike
from torch import nn

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.distances import pairwise_distances
from localprops.core.engine import (
    capture_layer,
    default_batch_size,
    model_device,
    model_dtype,
    run_chunked,
)
from localprops.core.mantel import mantel
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.runner import run_units

#: The studies modules whose code computes this study's cached units.
CODE_MODULES = ("depth",)


def _mantel_input(d: torch.Tensor) -> torch.Tensor | np.ndarray:
    return d if d.is_cuda else d.cpu().numpy()


def depth_layers(model: nn.Module, feature_layer: str, most: int = 8) -> list[str]:
    """The stages at which the depth study measures rho, in forward order.

    The first convolution (one affine map), then the ends of the network's
    stages, then ``feature_layer`` (the layer before the classifier): at most
    ``most`` layers, the stages evenly spaced when there are more.

    A stage end is an output that carries the whole representation at its
    depth. They are read off the *trunk*, the module with the most direct
    children (a plain net's ``features``, torchvision's GoogLeNet and ResNet
    themselves, EfficientNet-Lite's ``_blocks``): each of its children that
    is a pooling layer or a block of its own (an inception module, a
    residual stage ``layer1``..``layer4``, an MBConv block), registered
    before ``feature_layer``. A pooling layer *inside* a block (an inception
    module's pooling branch) is not one: it sees one branch only.
    Registration order is taken as forward order, which holds for the book's
    models.
    """
    named = list(model.named_modules())
    order = {n: k for k, (n, _) in enumerate(named)}
    if feature_layer not in order:
        raise ValueError(f"feature_layer {feature_layer!r} is not a module of the model")
    first = next((n for n, m in named if isinstance(m, nn.Conv2d)), None)
    trunk, body = max(named, key=lambda item: len(list(item[1].children())))
    prefix = f"{trunk}." if trunk else ""
    stages = [f"{prefix}{n}" for n, m in body.named_children()
              if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) or len(list(m.children()))]
    stages = [n for n in stages if order[n] < order[feature_layer]
              and (first is None or order[n] > order[first])]
    room = max(1, most - 2)
    if len(stages) > room:
        picks = np.unique(np.round(np.linspace(0, len(stages) - 1, room)).astype(int))
        stages = [stages[k] for k in picks]
    layers = [n for n in [first, *stages, feature_layer] if n]
    return list(dict.fromkeys(layers))


def _capture_many(model: nn.Module, layers: Sequence[str], sinks: dict[str, list]):
    stack = contextlib.ExitStack()
    for layer in layers:
        stack.enter_context(capture_layer(model, layer, sinks[layer], detach=False))
    return stack


def features_and_tangents_at(model: nn.Module, x: torch.Tensor, nu: torch.Tensor,
                             layers: Sequence[str], batch_size: int | None = None
                             ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Features and tangents ``J nu`` at several layers from the same passes.

    As :func:`localprops.studies.topology.features_and_tangents`, for every name
    in ``layers``: a dict layer -> ((T, F) features, (T, F) tangents).
    """
    size = batch_size or default_batch_size(tuple(x.shape), x.device)

    def step(start: int, stop: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        part = nu[start:stop]
        sinks: dict[str, list] = {layer: [] for layer in layers}
        with _capture_many(model, layers, sinks), torch.no_grad():
            model(x.unsqueeze(0) + part)
            with fwad.dual_level():
                primal = x.unsqueeze(0).expand_as(part).contiguous()
                model(fwad.make_dual(primal, part))
                tangents = {layer: fwad.unpack_dual(sinks[layer][-1]).tangent
                            for layer in layers}
        return {layer: (sinks[layer][0].detach(),
                        (tangents[layer] if tangents[layer] is not None
                         else torch.zeros_like(sinks[layer][0])).detach())
                for layer in layers}

    chunks = run_chunked(len(nu), size, step)
    return {layer: (torch.cat([c[layer][0] for c in chunks]),
                    torch.cat([c[layer][1] for c in chunks])) for layer in layers}


@dataclass
class DepthStudy:
    """Mantel statistics between input distances and distances at each depth.

    ``rho["model"]`` and ``rho["jacobian"]`` have shape (S, L, R): sample,
    layer (:attr:`layers`, first convolution to the feature layer) and radius;
    ``participation`` (S,) is the participation ratio
    ``tr(J^T J)^2 / tr((J^T J)^2)`` of the Jacobian at the last layer,
    estimated from random probes (an effective number of directions the map
    keeps), which :func:`predicted_linear_rho` turns into a predicted rho.
    """

    model: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    layers: list[str]
    rho: dict[str, np.ndarray]
    participation: np.ndarray
    dimension: int
    skipped: list[str] = field(default_factory=list)


def _moments(model: nn.Module, x: torch.Tensor, layer: str, probes: int, seed: int
             ) -> tuple[float, float]:
    """Estimates of ``tr(M)`` and ``tr(M^2)`` for ``M = J^T J`` of ``layer`` at ``x``.

    With Gaussian probes ``g``, ``E ||J g||^2 = tr(M)`` and ``E ||M g||^2 =
    tr(M^2)``; each probe costs one forward-mode and one reverse-mode product.
    """
    def single(image: torch.Tensor) -> torch.Tensor:
        sink: list[torch.Tensor] = []
        with capture_layer(model, layer, sink, detach=False):
            model(image.unsqueeze(0))
        return sink[-1][0]

    gen = torch.Generator().manual_seed(int(seed) % 2**63)
    x = x.detach().clone()
    _, vjp_fn = torch.func.vjp(single, x)
    first, second = [], []
    for _ in range(probes):
        g = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
        _, jg = torch.func.jvp(single, (x,), (g,))
        first.append(float(jg.double().pow(2).sum()))
        second.append(float(vjp_fn(jg)[0].double().pow(2).sum()))
    return float(np.mean(first)), float(np.mean(second))


def depth_study(model: ModelSpec, samples: SampleSet, *, radii: list[float], T: int,
                norm: str = "l2", layers: Sequence[str] | None = None, probes: int = 16,
                seed: int = 0, cache: ResultCache | None = None,
                progress: bool = True) -> DepthStudy:
    """Topology by depth: rho between input and layer distances, for the model and its linearisation.

    The points are those of :func:`topology_study` (eq. 4, each sample's own
    seed); ``layers`` default to :func:`depth_layers`. Only the statistic is
    computed (no permutation test): the question is whether rho falls with
    depth or is set at the first layer.
    """
    spec = as_spec(model)
    net, name = spec.model, spec.name
    layers = list(layers or depth_layers(net, spec.feature_layer))
    radii = list(_checks.check_radii(radii))
    T = _checks.check_count(T, "T")
    if T < 3:
        raise ValueError("T must be at least 3 for a Mantel statistic")
    norm = _checks.check_norm(norm)
    device, dtype = model_device(net), model_dtype(net)
    shape = tuple(samples.images.shape[1:])
    net.eval()

    def compute(i: int) -> dict[str, np.ndarray]:
        x = samples.images[i].to(device=device, dtype=dtype)
        source = RadialPerturbations(shape, radii, T, norm, int(samples.seeds[i]))
        rho = {"model": np.zeros((len(layers), len(radii))),
               "jacobian": np.zeros((len(layers), len(radii)))}
        for r in range(len(radii)):
            nu = source.rows(r * T, (r + 1) * T, device=device, dtype=dtype)
            d_in = _mantel_input(pairwise_distances(nu.flatten(1)))
            at = features_and_tangents_at(net, x, nu, layers)
            for k, layer in enumerate(layers):
                feats, tangents = at[layer]
                rho["model"][k, r] = mantel(d_in, _mantel_input(pairwise_distances(
                    feats.flatten(1))), permutations=0)[0]
                rho["jacobian"][k, r] = mantel(d_in, _mantel_input(pairwise_distances(
                    tangents.flatten(1))), permutations=0)[0]
        trace, square = _moments(net, x, layers[-1], probes, int(samples.seeds[i]))
        return {"rho_model": rho["model"], "rho_jacobian": rho["jacobian"],
                "participation": np.asarray([trace ** 2 / square if square > 0 else np.nan])}

    def manifest(i: int) -> dict:
        return dict(study="depth", model=name, weights=spec.weights, radii=radii, T=T,
                    norm=norm, layers=layers, probes=probes, seed=seed,
                    sample_seed=int(samples.seeds[i]), sample=int(samples.ids[i]))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{name} depth", progress=progress,
                                     study_modules=CODE_MODULES,
                                     errors=(ValueError, RuntimeError))
    empty = np.zeros((0, len(layers), len(radii)))
    return DepthStudy(
        model=name, norm=norm, radii=np.asarray(radii), ids=np.asarray(samples.ids)[kept],
        layers=layers,
        rho={m: np.stack([u[f"rho_{m}"] for u in units]) if units else empty
             for m in ("model", "jacobian")},
        participation=(np.concatenate([u["participation"] for u in units]) if units
                       else np.zeros(0)),
        dimension=int(np.prod(shape)), skipped=skipped)


# ------------------------------------------------------------ a linear map's rho
def participation_ratio(singular_values: ArrayLike) -> float:
    """``(sum s^2)^2 / sum s^4``: how many directions a linear map effectively keeps.

    Equal to the rank for a map with equal non-zero singular values, close to
    1 when one direction dominates.
    """
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    return float(s2.sum() ** 2 / (s2 ** 2).sum())


def random_map_participation(dimension: int, width: int) -> float:
    """Participation ratio of a ``width x dimension`` map with i.i.d. entries.

    For large sizes (Marchenko-Pastur) the squared singular values have mean
    ``m`` and second moment ``m^2 (1 + width / dimension)`` over ``width``
    values, so the ratio is ``width * dimension / (width + dimension)``.
    """
    return width * dimension / (width + dimension)


def predicted_linear_rho(dimension: int, participation: ArrayLike) -> np.ndarray:
    """Mantel rho of a linear map for ``T`` random points on one sphere in ``dimension``.

    For points ``nu_i = r u_i`` with independent random directions, squared
    input distances are ``2 r^2 (1 - u_i . u_j)`` and vary by about
    ``2 r^2 / sqrt(D)``; a linear map with ``M = W^T W`` multiplies each
    by ``tr(M) / D`` plus a direction-dependent error of variance
    ``2 (tr(M^2) / D^2 - tr(M)^2 / D^3)`` (for Gaussian-like directions).
    The correlation of the two is

    ``rho = 1 / sqrt(1 + 2 (D / p - 1))``, with ``p = tr(M)^2 / tr(M^2)``

    the map's participation ratio. The identity (``p = D``) gives 1; a map
    that keeps ``p << D`` directions gives about ``sqrt(p / (2 D))``: the
    input distances at one radius vary so little that the map's own
    anisotropy swamps them, whatever the network's depth.
    """
    p = np.asarray(participation, dtype=np.float64)
    return 1.0 / np.sqrt(1.0 + 2.0 * (dimension / p - 1.0))
