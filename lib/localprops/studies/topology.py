"""Topology preservation (paper Sec. 2.3, eq. 7, Fig. 4) and its controls.

For each sample and radius, the ``T`` perturbed points of eq. 4 give two
distance matrices: between the inputs ``x + nu_i`` and between their
activations at the layer before the classifier. The Mantel test correlates
them. To test the paper's explanation (affine maps change the topology), the
same points also pass through control maps whose behaviour is known:

- ``identity``: the input distances themselves (a Mantel statistic of 1);
- ``linear``: a fixed random linear map to the same width as the feature
  layer (an affine map has the same distances: the offset cancels);
- ``jacobian``: the model's own first-order linearization at ``x``,
  ``Phi_L(x) + J nu`` (computed with forward-mode autodiff);
- ``mixed``: the model again, on ``T`` points spread over all radii (point
  ``i`` at radius ``i mod R``), where input distances vary widely.

And it records how much the input distances vary at all: at one radius in
high dimension they concentrate near ``r sqrt(2)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.autograd.forward_ad as fwad
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
from localprops.core.philox import uniform_rows
from localprops.core.sampling import RadialPerturbations
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.runner import run_units

MAPS = ("model", "linear", "jacobian", "identity")

#: The studies modules whose code computes this study's cached units.
CODE_MODULES = ("topology",)


@dataclass
class TopologyStudy:
    """Mantel statistics per map, sample and radius for one model.

    ``rho[map]`` and ``p_value[map]`` have shape (S, R); ``mixed_rho`` and
    ``mixed_p`` (S,) are for the points spread over all radii (model map);
    ``input_spread`` (S, R) is the coefficient of variation (std / mean) of the
    off-diagonal input distances.
    """

    model: str
    norm: str
    radii: np.ndarray
    ids: np.ndarray
    rho: dict[str, np.ndarray]
    p_value: dict[str, np.ndarray]
    mixed_rho: np.ndarray
    mixed_p: np.ndarray
    mixed_linear_rho: np.ndarray
    input_spread: np.ndarray
    skipped: list[str] = field(default_factory=list)


def features_and_tangents(model: nn.Module, x: torch.Tensor, nu: torch.Tensor,
                          layer: str, batch_size: int | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of ``x + nu`` and the Jacobian-vector products ``J nu`` at ``x``.

    Parameters
    ----------
    model : the classifier; x : (C, H, W) clean image; nu : (T, C, H, W).
    layer : the feature layer.
    batch_size : perturbations per pass (default: the device's forward chunk,
        :func:`localprops.core.engine.default_batch_size`; on a CPU large
        batches of large images are several times slower per image).

    Returns
    -------
    (T, F) features of the perturbed images and (T, F) tangents ``J_x nu``.
    """
    size = batch_size or default_batch_size(tuple(x.shape), x.device)

    def step(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        part = nu[start:stop]
        store: list[torch.Tensor] = []
        with capture_layer(model, layer, store, detach=False), torch.no_grad():
            model(x.unsqueeze(0) + part)
            with fwad.dual_level():
                primal = x.unsqueeze(0).expand_as(part).contiguous()
                model(fwad.make_dual(primal, part))
                tangent = fwad.unpack_dual(store[-1]).tangent
        if tangent is None:
            tangent = torch.zeros_like(store[0])
        return store[0].detach(), tangent.detach()

    chunks = run_chunked(len(nu), size, step)
    return (torch.cat([f for f, _ in chunks]), torch.cat([t for _, t in chunks]))


def _random_map(width: int, dim: int, seed: int, device, dtype) -> torch.Tensor:
    """A fixed random (dim, width) matrix with U(-1, 1) entries, built in row blocks."""
    blocks = []
    for start in range(0, width, 64):
        rows = torch.arange(start, min(start + 64, width), device=device)
        blocks.append(uniform_rows(seed, rows, dim).to(dtype))
    return torch.cat(blocks).T.contiguous()


def _mantel_input(d: torch.Tensor) -> torch.Tensor | np.ndarray:
    """Distances as :func:`mantel` takes them: a CUDA tensor stays on its device
    (mantel's torch backend), anything else becomes a numpy array (numba)."""
    return d if d.is_cuda else d.cpu().numpy()


def _off_diagonal_spread(d: torch.Tensor) -> np.ndarray:
    n = d.shape[-1]
    mask = ~torch.eye(n, dtype=torch.bool, device=d.device)
    off = d[..., mask]
    return (off.std(dim=-1) / off.mean(dim=-1)).cpu().numpy()


def topology_study(model: ModelSpec, samples: SampleSet, *, radii: list[float], T: int,
                   norm: str = "l2", permutations: int = 999, seed: int = 0,
                   cache: ResultCache | None = None, progress: bool = True) -> TopologyStudy:
    """Mantel tests of input against feature distances, with control maps.

    Parameters
    ----------
    model, samples : the classifier and its clean samples (own seeds).
    radii, T, norm : the perturbations of eq. 4 (the same as the isotropy study).
    permutations : Mantel permutations per test.
    seed : seed of the random linear control map and of the Mantel permutations.
    cache : finished samples are read from and written to it.

    Returns
    -------
    TopologyStudy; failed samples are reported, listed in ``skipped`` and left out.
    """
    spec = as_spec(model)
    model, model_name, weights = spec.model, spec.name, spec.weights
    feature_layer = spec.feature_layer
    radii = list(_checks.check_radii(radii))
    T = _checks.check_count(T, "T")
    if T < 3:
        raise ValueError("T must be at least 3 for a Mantel test")
    norm = _checks.check_norm(norm)
    device, dtype = model_device(model), model_dtype(model)
    shape = tuple(samples.images.shape[1:])
    n_radii = len(radii)
    linear_map: list[torch.Tensor] = []          # built on first use, shared by samples
    model.eval()

    def compute(i: int) -> dict[str, np.ndarray]:
        x = samples.images[i].to(device=device, dtype=dtype)
        source = RadialPerturbations(shape, radii, T, norm, int(samples.seeds[i]))
        d_in, d_out, d_lin, d_jac = [], [], [], []
        mixed_nu, mixed_feat = [], []
        for r in range(n_radii):
            nu = source.rows(r * T, (r + 1) * T, device=device, dtype=dtype)
            feats, tangents = features_and_tangents(model, x, nu, feature_layer)
            if not linear_map:
                linear_map.append(_random_map(feats.shape[1], nu[0].numel(), seed,
                                              device, dtype))
            flat = nu.flatten(1)
            d_in.append(pairwise_distances(flat))
            d_out.append(pairwise_distances(feats))
            d_lin.append(pairwise_distances(flat @ linear_map[0]))
            d_jac.append(pairwise_distances(tangents))
            pick = torch.arange(r, T, n_radii, device=device)
            mixed_nu.append(flat[pick])
            mixed_feat.append(feats[pick])
        d_in, d_out = torch.stack(d_in), torch.stack(d_out)
        tests = {"model": d_out, "linear": torch.stack(d_lin), "jacobian": torch.stack(d_jac),
                 "identity": d_in}
        out = {}
        for name, d in tests.items():
            rho, p = mantel(_mantel_input(d_in), _mantel_input(d), permutations=permutations,
                            seed=seed)
            out[f"rho_{name}"], out[f"p_{name}"] = np.atleast_1d(rho), np.atleast_1d(p)
        mixed_in = torch.cat(mixed_nu)
        m_in = _mantel_input(pairwise_distances(mixed_in))
        m_out = _mantel_input(pairwise_distances(torch.cat(mixed_feat)))
        m_lin = _mantel_input(pairwise_distances(mixed_in @ linear_map[0]))
        out["mixed_rho"], out["mixed_p"] = (np.atleast_1d(v) for v in mantel(
            m_in, m_out, permutations=permutations, seed=seed))
        out["mixed_linear_rho"] = np.atleast_1d(mantel(m_in, m_lin, permutations=0)[0])
        out["input_spread"] = _off_diagonal_spread(d_in)
        return out

    def manifest(i: int) -> dict:
        return dict(study="topology", model=model_name, weights=weights, radii=radii, T=T,
                    norm=norm, layer=feature_layer, permutations=permutations, seed=seed,
                    sample_seed=int(samples.seeds[i]), sample=int(samples.ids[i]))

    kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                     desc=f"{model_name} topology", progress=progress,
                                     study_modules=CODE_MODULES,
                                     errors=(ValueError, RuntimeError))

    def stack(key: str, width: int) -> np.ndarray:
        return np.stack([u[key] for u in units]) if units else np.zeros((0, width))

    return TopologyStudy(
        model=model_name, norm=norm, radii=np.asarray(radii),
        ids=np.asarray(samples.ids)[kept],
        rho={m: stack(f"rho_{m}", n_radii) for m in MAPS},
        p_value={m: stack(f"p_{m}", n_radii) for m in MAPS},
        mixed_rho=stack("mixed_rho", 1)[:, 0] if units else np.zeros(0),
        mixed_p=stack("mixed_p", 1)[:, 0] if units else np.zeros(0),
        mixed_linear_rho=stack("mixed_linear_rho", 1)[:, 0] if units else np.zeros(0),
        input_spread=stack("input_spread", n_radii), skipped=skipped)


def alpha_matrix(d_input: np.ndarray, d_output: np.ndarray) -> np.ndarray:
    """The paper's eq. 7, ``alpha = D_input^-1 D_output`` (a multiple of I when kept).

    Euclidean distance matrices of distinct points are invertible, but they are
    often badly conditioned; this uses a least-squares solve.
    """
    d_input = np.asarray(d_input, dtype=np.float64)
    d_output = np.asarray(d_output, dtype=np.float64)
    if d_input.shape != d_output.shape or d_input.ndim != 2:
        raise ValueError("alpha needs two square matrices of the same size")
    return np.linalg.lstsq(d_input, d_output, rcond=None)[0]
