"""The frequency-domain argument of the paper's Sec. 2.2, made computable.

A convolution is a product in the frequency domain, ``K * v = F^-1(F(K) F(v))``.
A permutation ``v2`` of a perturbation ``v1`` has the same values, hence the
same norm and (Parseval) the same total energy, but a different spectrum, so
the first layer answers differently. These functions measure each step on a
real model: the spectra, the first convolution's response to both
perturbations, and the response after the first non-linearity and pooling,
as the radius grows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from localprops.core import checks as _checks
from localprops.core.engine import capture_layer, model_device, model_dtype
from localprops.core.sampling import PermutedPerturbations


def first_module(model: nn.Module, kind: type[nn.Module] = nn.Conv2d) -> tuple[str, nn.Module]:
    """Name and module of the first submodule of type ``kind`` (in registration order)."""
    for name, module in model.named_modules():
        if isinstance(module, kind):
            return name, module
    raise ValueError(f"the model has no {kind.__name__} layer")


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.SiLU, nn.Hardswish, nn.ELU,
                nn.GELU)


def first_layers(model: nn.Module) -> dict[str, str]:
    """Names of the first convolution, and the first activation and pooling after it.

    Activations are recognised by type (and by the name ``ScaledTanh``). When
    no activation module comes before the second convolution (EfficientNet-Lite
    applies its stem activation as a function), ``"block"`` names the module
    holding that second convolution: the first block, non-linear as a whole.
    """
    found: dict[str, str] = {}
    for name, module in model.named_modules():
        if "convolution" not in found:
            if isinstance(module, nn.Conv2d):
                found["convolution"] = name
            continue
        if "activation" not in found and (isinstance(module, _ACTIVATIONS)
                                          or type(module).__name__ == "ScaledTanh"):
            found["activation"] = name
        elif "pooling" not in found and isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            found["pooling"] = name
        if isinstance(module, nn.Conv2d):   # the second convolution: the first block is over
            if len(found) == 1:             # no activation module before it: use its block
                found["block"] = name.rsplit(".", 1)[0]
            break
    if "convolution" not in found:
        raise ValueError("the model has no Conv2d layer")
    return found


def power_spectrum(v: torch.Tensor) -> torch.Tensor:
    """Centred power spectrum ``|F(v)|^2`` of each channel of ``v`` (..., C, H, W)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(v.to(torch.float64)), dim=(-2, -1))
    return spectrum.abs() ** 2


def radial_profile(power: torch.Tensor) -> np.ndarray:
    """Mean power per integer spatial frequency |k| (averaged over channels)."""
    p = power.reshape(-1, *power.shape[-2:]).mean(0).cpu().numpy()
    h, w = p.shape
    yy, xx = np.indices((h, w))
    k = np.hypot(yy - h // 2, xx - w // 2).round().astype(int)
    return np.bincount(k.ravel(), p.ravel()) / np.bincount(k.ravel())


@dataclass
class ResponseGap:
    """How differently a layer answers to a perturbation and its permutation.

    All arrays have shape (R,): one value per radius, averaged over the
    permutations ``t >= 1`` compared with ``t = 0``.
    """

    radii: np.ndarray
    layer: str
    absolute: np.ndarray        # ||f(x + v1) - f(x + v2)||
    relative: np.ndarray        # absolute / ||f(x + v1) - f(x)||
    label: str = ""


def response_gap(model: nn.Module, x: torch.Tensor, layer: str, radii: list[float], *,
                 T: int = 8, norm: str = "l2", seed: int = 0, label: str = "") -> ResponseGap:
    """Compare a layer's responses to ``x + v1`` and ``x + v_t`` (permutations of v1).

    Parameters
    ----------
    model : classifier taking [0, 255] images.
    x : clean image (C, H, W).
    layer : module name whose output is compared (e.g. the first convolution,
        or the first pooling layer).
    radii, T, norm, seed : the permuted perturbations of the paper's eq. 6.
    label : a name for plots (default: the layer name).

    Returns
    -------
    ResponseGap. For a linear layer the absolute gap grows exactly in
    proportion to ``r`` and the relative gap is constant; after a
    non-linearity it need not be.
    """
    radii = list(_checks.check_radii(radii))
    T = _checks.check_count(T, "T")
    if T < 2:
        raise ValueError("T must be at least 2: a perturbation and one permutation")
    device, dtype = model_device(model), model_dtype(model)
    x = x.to(device=device, dtype=dtype)
    nu = PermutedPerturbations(tuple(x.shape), radii, T, norm, seed).materialize(
        device=device, dtype=dtype)
    store: list[torch.Tensor] = []
    model.eval()
    with capture_layer(model, layer, store), torch.inference_mode():
        model(x.unsqueeze(0))
        model((x + nu).flatten(0, 1))
    clean = store[0].double()
    out = store[1].double().reshape(len(radii), T, -1)
    gap = (out[:, 1:] - out[:, :1]).norm(dim=-1).mean(dim=1)
    shift = (out[:, :1] - clean).norm(dim=-1)[:, 0]
    return ResponseGap(radii=np.asarray(radii), layer=layer, absolute=gap.cpu().numpy(),
                       relative=(gap / shift).cpu().numpy(), label=label or layer)


def kernel_spectra(conv: nn.Conv2d, size: int = 32) -> torch.Tensor:
    """Magnitude of the 2-D DFT of every kernel, zero-padded to ``size x size``.

    Returns a (out_channels, in_channels, size, size) float64 tensor, centred
    (zero frequency in the middle): the gain of each kernel at each spatial
    frequency, i.e. ``|F(K)|`` of the convolution theorem.
    """
    weight = conv.weight.detach().to("cpu", torch.float64)
    if weight.shape[-1] > size or weight.shape[-2] > size:
        raise ValueError(f"size {size} is smaller than the kernels {tuple(weight.shape[-2:])}")
    return torch.fft.fftshift(torch.fft.fft2(weight, s=(size, size)), dim=(-2, -1)).abs()


def permutation_spectra(shape: tuple[int, ...], radius: float, *, norm: str = "l2",
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A perturbation, one permutation of it, and their power spectra.

    Returns (nu (2, C, H, W), power (2, C, H, W), energy (2,)): by Parseval the
    total energies are equal, the spectra themselves are not.
    """
    nu = PermutedPerturbations(shape, [radius], 2, norm, seed).materialize(
        dtype=torch.float64)[0]
    power = power_spectrum(nu)
    return nu, power, power.sum(dim=(-3, -2, -1))
