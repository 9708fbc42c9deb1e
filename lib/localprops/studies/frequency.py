"""The frequency-domain argument of the paper's Sec. 2.2, made computable.

A convolution is a product in the frequency domain, ``K * v = F^-1(F(K) F(v))``.
A permutation ``v2`` of a perturbation ``v1`` has the same values, hence the
same norm and (Parseval) the same total energy, but a different spectrum, so
the first layer answers differently. These functions measure each step on a
real model: the spectra, the first convolution's response to both
perturbations, and the response after the first non-linearity and pooling,
as the radius grows.

:func:`response_gap` does it for one image; :func:`frequency_study` for many
samples at once (batched over samples, radii and permutations, stopping the
forward pass after the last layer it needs), and adds what row F3 of the
chapter needs: the correlation distance ``1 - cos(delta_1, delta_t)`` between
the changes of a layer's output, and how often activation signs and
max-pooling winners change.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from localprops.core import checks as _checks
from localprops.core.engine import capture_layer, model_device, model_dtype
from localprops.core.sampling import PermutedPerturbations, RadialPerturbations


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


# ------------------------------------------------------- many samples at once
#: the layer kinds of :func:`first_layers`, in the order of the network
KINDS = ("convolution", "activation", "pooling", "block")


@dataclass
class FrequencyStudy:
    """The first layers' answers to permuted perturbations, for many samples.

    For every sample ``s``, radius ``r`` and permutation ``t`` (``t = 0`` is
    the perturbation ``nu`` itself, ``t >= 1`` permutations of it, eq. 6), and
    for every layer ``kind`` of ``layers`` (``"convolution"``,
    ``"activation"``, ``"pooling"``, ``"block"``), with ``f`` the layer's
    output and ``delta_t = f(x + nu_t) - f(x)``:

    - ``absolute[kind]`` (S, R, T-1): ``||f(x + nu_t) - f(x + nu_0)||``;
    - ``relative[kind]`` (S, R, T-1): the same divided by ``||delta_0||``;
    - ``distance[kind]`` (S, R, T-1): the correlation distance
      ``1 - cos(delta_0, delta_t)``: 0 when the two changes are the same, 1
      when they are uncorrelated, 2 when they are opposite;
    - ``independent[kind]`` (S, R, T-1): ``1 - cos(delta_0, delta'_t)`` with
      ``delta'_t`` the change for the ``T - 1`` *independent* directions of
      eq. 4 at the same radius (the sample's radial draws): a reference for
      ``distance``. For the network a random permutation of i.i.d. noise is
      another independent draw, so the two agree up to terms of order
      ``1 / D``: what the comparison shows is that nothing in a layer's
      response is specific to permutations.

    With a pooling layer the kind ``"pooling_input"`` is measured too (the
    tensor that enters the pooling, whatever comes before it), so that the
    effect of pooling is read against its own input.

    and, where the layer exists, for the activation (its *region*: on or off,
    i.e. the sign of its input; ReLU6 / Hardtanh also count the upper clamp)
    and for a max-pooling layer (its *winner*: the position of the maximum
    within each window):

    - ``pattern`` / ``winners`` (S, R, T): share of units / windows whose
      region / winner at ``x + nu_t`` differs from that at ``x``;
    - ``pattern_pair`` / ``winners_pair`` (S, R, T-1): the same between
      ``x + nu_0`` and ``x + nu_t``.

    Entries are NaN where a denominator is zero (a perturbation lost to
    float rounding). ``pooling`` is ``"max"``, ``"avg"`` or None.
    """

    model: str
    radii: np.ndarray
    norm: str
    T: int
    layers: dict[str, str]
    ids: list[int]
    labels: list[int]
    absolute: dict[str, np.ndarray]
    relative: dict[str, np.ndarray]
    distance: dict[str, np.ndarray]
    pattern: np.ndarray | None = None
    pattern_pair: np.ndarray | None = None
    winners: np.ndarray | None = None
    winners_pair: np.ndarray | None = None
    pooling: str | None = None
    independent: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def classes(self) -> int:
        """Number of distinct classes among the samples."""
        return len(set(int(label) for label in self.labels))

    def __len__(self) -> int:
        return len(self.ids)

    def per_sample(self, what: str, kind: str | None = None) -> np.ndarray:
        """(S, R): a measure averaged over the permutations (NaN-aware).

        ``what`` is ``"absolute"``, ``"relative"``, ``"distance"`` or
        ``"independent"`` (with a layer ``kind``), or ``"pattern"``,
        ``"pattern_pair"``, ``"winners"``, ``"winners_pair"``.
        """
        if what in ("absolute", "relative", "distance", "independent"):
            table = getattr(self, what)
            if kind not in table:
                raise KeyError(f"{self.model} has no {kind!r} layer; it has {list(table)}")
            values = table[kind]
        else:
            values = getattr(self, what)
            if values is None:
                raise KeyError(f"{self.model} has no {what!r} measurement")
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(values, axis=-1)

    def gap(self, kind: str, sample: int = 0) -> ResponseGap:
        """One sample's gaps at one layer, as :func:`response_gap` returns them."""
        return ResponseGap(radii=self.radii, layer=self.layers[kind],
                           absolute=self.per_sample("absolute", kind)[sample],
                           relative=self.per_sample("relative", kind)[sample],
                           label=f"{kind}: {self.layers[kind]}")


def spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, first and third quartile over samples (axis 0), NaN left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q1, median, q3 = np.nanquantile(np.asarray(values, float), [0.25, 0.5, 0.75], axis=0)
    return median, q1, q3


def correlation_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a, b)`` over the last axis (broadcast): 0 same direction, 1 orthogonal, 2 opposite.

    NaN where either vector is zero.

    >>> correlation_distance(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0], [0.0, 1.0],
    ...                                                              [-1.0, 0.0]]))
    tensor([0., 1., 2.])
    """
    a, b = torch.broadcast_tensors(a, b)
    return 1.0 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


class _Stop(Exception):
    """Raised by the last hook: the rest of the network is not needed."""


def _regions(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Which piece of the activation each input falls on: on/off, plus the upper clamp."""
    if isinstance(module, nn.Hardtanh):               # ReLU6 included
        return ((z > module.min_val).to(torch.int8) + (z > module.max_val).to(torch.int8))
    return (z > 0).to(torch.int8)


def _winners(module: nn.MaxPool2d, z: torch.Tensor) -> torch.Tensor:
    """Index of the maximum of every pooling window (as ``return_indices`` gives it)."""
    return F.max_pool2d(z, module.kernel_size, module.stride, module.padding,
                        module.dilation, ceil_mode=module.ceil_mode, return_indices=True)[1]


class _Probe:
    """Forward hooks that record the first layers' outputs, regions and winners.

    Only a module's first call in a forward pass is recorded; once everything
    is recorded the forward pass is stopped (the deeper layers are not run).
    """

    def __init__(self, model: nn.Module, layers: dict[str, str]):
        modules = dict(model.named_modules())
        unknown = [name for name in layers.values() if name not in modules]
        if unknown:
            raise ValueError(f"layers {unknown} are not modules of the model")
        self.model, self.records, self.handles = model, {}, []
        self.pooling = None
        for kind, name in layers.items():
            module = modules[name]
            self.handles.append(module.register_forward_hook(self._output(kind)))
            if kind == "activation":
                self.handles.append(module.register_forward_pre_hook(
                    self._input("regions", lambda z, m=module: _regions(m, z))))
            if kind == "pooling":
                self.pooling = "max" if isinstance(module, nn.MaxPool2d) else "avg"
                self.handles.append(module.register_forward_pre_hook(
                    self._input("pooling_input", lambda z: z)))
                if isinstance(module, nn.MaxPool2d):
                    self.handles.append(module.register_forward_pre_hook(
                        self._input("winners", lambda z, m=module: _winners(m, z))))
        self.expected = (len(layers) + ("activation" in layers) + (self.pooling == "max")
                         + ("pooling" in layers))

    def _record(self, key: str, value: torch.Tensor) -> None:
        if key not in self.records:
            self.records[key] = value.flatten(1).clone()   # later in-place ops must not reach it
            if len(self.records) == self.expected:
                raise _Stop

    def _output(self, kind):
        return lambda _module, _inputs, output: self._record(kind, output)

    def _input(self, key, transform):
        return lambda _module, inputs: self._record(key, transform(inputs[0]))

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.records = {}
        try:
            self.model(batch)
        except _Stop:
            pass
        if len(self.records) != self.expected:
            raise RuntimeError(f"only {sorted(self.records)} were recorded in the forward "
                               "pass: a layer was not called")
        return self.records

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _changed_shares(values: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(n, T) share differing from the clean input, (n, T-1) from the first perturbation."""
    return ((values != clean).to(torch.float64).mean(-1),
            (values[:, 1:] != values[:, :1]).to(torch.float64).mean(-1))


def frequency_study(model, samples, radii: list[float], *, T: int = 8, norm: str = "l2",
                    layers: dict[str, str] | None = None, batch_size: int | None = None,
                    name: str | None = None, progress: bool = True) -> FrequencyStudy:
    """Measure how the first layers answer to a perturbation and its permutations.

    Parameters
    ----------
    model : a :class:`localprops.models.ModelSpec` or a bare module taking
        [0, 255] images.
    samples : :class:`localprops.models.samples.SampleSet`: the clean images
        (S, C, H, W), their labels, ids and own seeds.
    radii, T, norm : the permuted perturbations of eq. 6 (one ``nu`` per
        sample and radius and ``T - 1`` permutations of it), drawn by
        :class:`localprops.core.sampling.PermutedPerturbations` with each
        sample's seed.
    layers : kind -> module name (default :func:`first_layers`).
    batch_size : images per forward pass (default
        :func:`localprops.core.engine.default_batch_size`); a chunk holds
        whole groups of ``T`` perturbations and may span samples.
    name : the model's name for the result (default the spec's name).

    Returns
    -------
    FrequencyStudy. Only the layers up to the last one of ``layers`` are
    evaluated; reductions are computed in float64.
    """
    from localprops.core.engine import default_batch_size, run_chunked
    from localprops.core.progress import progress_bar
    from localprops.models import ModelSpec

    if isinstance(model, ModelSpec):
        name, model = name or model.name, model.model
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a ModelSpec or an nn.Module, got {type(model).__name__}")
    radii = list(_checks.check_radii(radii))
    T = _checks.check_count(T, "T")
    if T < 2:
        raise ValueError("T must be at least 2: a perturbation and one permutation")
    norm = _checks.check_norm(norm)
    layers = dict(first_layers(model) if layers is None else layers)
    device, dtype = model_device(model), model_dtype(model)
    images = samples.images
    S, R, shape = len(images), len(radii), tuple(images.shape[1:])
    size = batch_size or default_batch_size(shape, device)
    groups = max(1, size // T)                      # (sample, radius) groups per chunk
    sources = [PermutedPerturbations(shape, radii, T, norm, int(seed)) for seed in samples.seeds]
    references = [RadialPerturbations(shape, radii, T, norm, int(seed)) for seed in samples.seeds]
    model.eval()
    probe = _Probe(model, layers)
    try:
        with torch.inference_mode():
            clean: dict[str, list[torch.Tensor]] = {}
            for chunk in run_chunked(S, size, lambda a, b: probe(
                    images[a:b].to(device=device, dtype=dtype))):
                for key, value in chunk.items():
                    clean.setdefault(key, []).append(value)
            clean = {key: torch.cat(value) for key, value in clean.items()}

            def step(start: int, stop: int) -> dict[str, torch.Tensor]:
                index = torch.arange(start, stop)
                owner = index // R                  # the sample of each group

                def perturbed(generators) -> torch.Tensor:
                    batch = []
                    for s in owner.unique().tolist():   # one generator per sample (its seed)
                        mine = index[owner == s] % R
                        x = images[s].to(device=device, dtype=dtype)
                        batch.append(generators[s].rows(int(mine[0]) * T,
                                                        (int(mine[-1]) + 1) * T,
                                                        device=device, dtype=dtype).add_(x))
                    return torch.cat(batch)

                records = probe(perturbed(sources))
                unrelated = probe(perturbed(references))
                n, out = stop - start, {}
                for key, value in records.items():
                    value = value.reshape(n, T, -1)
                    ref = clean[key][owner.to(clean[key].device)].unsqueeze(1)
                    if key in ("regions", "winners"):
                        out[key], out[key + "_pair"] = _changed_shares(value, ref)
                        continue
                    value, ref = value.to(torch.float64), ref.to(torch.float64)
                    delta = value - ref
                    length = delta.norm(dim=-1)
                    gap = (value[:, 1:] - value[:, :1]).norm(dim=-1)
                    out["absolute " + key] = gap
                    out["relative " + key] = gap / length[:, :1]
                    out["distance " + key] = correlation_distance(delta[:, :1], delta[:, 1:])
                    other = unrelated[key].reshape(n, T, -1).to(torch.float64) - ref
                    out["independent " + key] = correlation_distance(delta[:, :1], other[:, 1:])
                return {key: value.cpu() for key, value in out.items()}

            bar = progress_bar(total=S * R, enabled=progress, desc=f"{name or 'model'} layers",
                               leave=False)

            def counted(start: int, stop: int):
                result = step(start, stop)
                bar.update(stop - start)
                return result

            chunks = run_chunked(S * R, groups, counted)
            bar.close()
    finally:
        probe.close()
    merged = {key: torch.cat([c[key] for c in chunks]).reshape(S, R, -1).numpy()
              for key in chunks[0]}

    kinds = [*layers, *(["pooling_input"] if "pooling" in layers else [])]

    def table(what: str) -> dict[str, np.ndarray]:
        return {kind: merged[f"{what} {kind}"] for kind in kinds}

    if "pooling" in layers:
        layers["pooling_input"] = f"{layers['pooling']} (its input)"
    return FrequencyStudy(
        model=name or type(model).__name__, radii=np.asarray(radii, float), norm=norm, T=T,
        layers=layers, ids=[int(i) for i in samples.ids],
        labels=[int(label) for label in samples.labels],
        absolute=table("absolute"), relative=table("relative"), distance=table("distance"),
        pattern=merged.get("regions"), pattern_pair=merged.get("regions_pair"),
        winners=merged.get("winners"), winners_pair=merged.get("winners_pair"),
        pooling=probe.pooling, independent=table("independent"))
