"""Fourier heat maps: how sensitive a model is to each spatial frequency.

After Yin, Gontijo Lopes, Shlens, Cubuk and Gilmer, "A Fourier perspective on
model robustness in computer vision" (NeurIPS 2019, arXiv:1906.08988). For
every frequency ``(i, j)`` of an ``n x n`` image, the clean image ``x`` is
moved by a single-frequency perturbation of L2 norm ``r`` and the model's
answer is recorded; the map over ``(i, j)`` shows which frequencies the model
is sensitive to (naturally trained models to all, models trained with
Gaussian noise mostly to low ones).

The basis here is the real Hartley basis (:func:`hartley_basis`),
``cas(2 pi (i u + j v) / n) / n`` with ``cas = cos + sin``: a cosine wave of
frequency ``(i, j)`` shifted in phase by ``pi / 4``. Yin et al. use the real
part of one Fourier mode; the two differ only in phase, and the Hartley set
over all ``(i, j)`` is a complete real orthonormal basis, so every image is
the sum of its projections (:func:`hartley_coefficients`). ``(i, j)`` and
``(-i, -j)`` are the same frequency at two phases.

The perturbation of a colour image puts the same wave in every channel with an
independent random sign per channel, ``delta = r / sqrt(C) (s_1 H, ..., s_C H)``,
so ``||delta||_2 = r`` exactly. The signs come from Philox
(:func:`channel_signs`), keyed by the sample's seed, the frequency and the
norm: the same on every device, for every chunking and for every grid that
contains the frequency. As everywhere in the book, the perturbed image is not
clipped to ``[0, 255]`` by default (the norm ``r`` is then exactly that of the
perturbation the model sees); ``clip=True`` clips, and the share of values
outside ``[0, 255]`` is returned either way (``clipped``), so a reader sees how
far out of range the large norms go.

:func:`gradient_heat_map` is the first-order prediction of the measured map
from the input gradient, computed for all frequencies at once with an FFT.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from localprops.core import checks as _checks
from localprops.core.cache import ResultCache
from localprops.core.engine import (
    default_batch_size,
    model_device,
    model_dtype,
    run_chunked,
    true_class_log_odds,
)
from localprops.core.philox import random_words
from localprops.models.samples import SampleSet
from localprops.models.wrappers import ModelSpec, as_spec
from localprops.studies.runner import run_units

__all__ = ["CODE_MODULES", "FourierHeatMap", "channel_signs", "fourier_heat_map",
           "first_conv_power", "frequency_axis", "frequency_grid", "frequency_keys", "gradient_heat_map",
           "hartley_basis", "hartley_coefficients"]

#: modules (besides the shared ones) whose code determines this study's units
CODE_MODULES = ("fourier",)

#: Philox row tag of the sign draws, above the 24 bits of the frequency key; the
#: sampling module uses tags 1-3 in the same place, so the streams never meet
_STREAM_SIGNS = 4
_KEY_BITS = 24


# ----------------------------------------------------------------- the basis
def _check_size(size: int) -> int:
    size = _checks.check_count(size, "size")
    if size * size > 2**_KEY_BITS:
        raise ValueError(f"size {size} is too large: at most 4096 (frequency keys "
                         f"must stay below 2**{_KEY_BITS})")
    return size


def hartley_basis(size: int, i: int | Sequence[int] | torch.Tensor,
                  j: int | Sequence[int] | torch.Tensor, *,
                  device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The real basis image of frequency ``(i, j)`` on a ``size x size`` grid.

    ``H_ij(u, v) = cas(2 pi (i u + j v) / size) / size`` with ``cas = cos + sin``
    (``u`` the row, ``v`` the column). ``cas t = sqrt(2) cos(t - pi / 4)``: a
    cosine wave of frequency ``(i, j)`` shifted by ``pi / 4``. Yin et al. use
    the real part of a single Fourier mode instead; the two differ only in
    phase, and unlike the real parts the Hartley images over all ``(i, j)`` in
    ``[0, size)^2`` form a complete real orthonormal basis (unit L2 norm each).

    Parameters
    ----------
    size : the side of the square image.
    i, j : frequencies, any integers (taken mod ``size``, so centred values
        such as ``-1`` work); ints give one image, 1-D sequences or tensors
        (broadcast against each other) a batch.
    device, dtype : of the result; the phase is reduced mod ``size`` in
        integers before the trigonometry, so large frequencies lose nothing.

    Returns
    -------
    (size, size) for scalar ``i`` and ``j``, else (F, size, size).
    """
    size = _check_size(size)
    i_t = torch.as_tensor(i, dtype=torch.int64, device=device)
    j_t = torch.as_tensor(j, dtype=torch.int64, device=i_t.device)
    scalar = i_t.ndim == 0 and j_t.ndim == 0
    i_t, j_t = torch.broadcast_tensors(i_t.reshape(-1), j_t.reshape(-1))
    u = torch.arange(size, dtype=torch.int64, device=i_t.device)
    phase = (i_t[:, None, None] * u[None, :, None] + j_t[:, None, None] * u[None, None, :]
             ) % size
    t = phase.to(torch.float64) * (2 * math.pi / size)
    out = ((torch.cos(t) + torch.sin(t)) / size).to(dtype)
    return out[0] if scalar else out


def hartley_coefficients(images: torch.Tensor) -> torch.Tensor:
    """``<x, H_ij>`` for every frequency at once, by an FFT, in float64.

    With ``F`` the 2-D DFT, ``sum_uv x(u, v) cas(2 pi (i u + j v) / n) =
    Re F(x)[i, j] - Im F(x)[i, j]``, so the coefficients are that over ``n``.

    Parameters
    ----------
    images : (..., n, n), square in the last two axes.

    Returns
    -------
    (..., n, n): entry ``[..., i, j]`` is the coefficient of frequency
    ``(i, j)`` (natural order, ``i, j`` in ``[0, n)``; index a centred
    frequency mod ``n``).
    """
    if images.ndim < 2 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square in their last two axes (..., n, n), "
                         f"got shape {tuple(images.shape)}")
    spectrum = torch.fft.fft2(images.to(torch.float64))
    return (spectrum.real - spectrum.imag) / images.shape[-1]


def frequency_axis(size: int, stride: int = 1) -> np.ndarray:
    """The frequencies along one axis, centred: multiples of ``stride`` in ``[-size/2, size/2)``.

    ``stride = 1`` gives ``-(size // 2), ..., size - size // 2 - 1`` (the order
    of ``numpy.fft.fftshift``); a larger stride keeps every ``stride``-th of
    them, always 0 among them (a coarse grid for large inputs: 224 x 224 has
    50176 frequencies, stride 4 keeps 3136).
    """
    size = _check_size(size)
    stride = _checks.check_count(stride, "stride")
    axis = np.arange(-(size // 2), size - size // 2, dtype=np.int64)
    return axis[axis % stride == 0]


def frequency_grid(size: int, stride: int = 1) -> np.ndarray:
    """All frequency pairs ``(i, j)`` of the (coarse) grid, (F, 2) int64, centred order.

    The product of :func:`frequency_axis` with itself, ``i`` (rows) outer and
    ``j`` (columns) inner, so values over the grid reshape to an
    ``(m, m)`` map in centred layout (zero frequency at ``[m // 2, m // 2]``
    for ``stride = 1``). The values are signed; reduce them mod ``size`` to
    index a DFT.
    """
    axis = frequency_axis(size, stride)
    ii, jj = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([ii.ravel(), jj.ravel()], axis=1)


def frequency_keys(grid: np.ndarray, size: int) -> np.ndarray:
    """The key of each frequency, ``(i mod size) * size + (j mod size)``: its draw's identity."""
    grid = np.asarray(grid, dtype=np.int64).reshape(-1, 2)
    return (grid[:, 0] % size) * size + grid[:, 1] % size


# ------------------------------------------------------------------ the signs
def _check_offset(seed_offset: int) -> int:
    """``seed_offset`` as an int in ``[0, 2**32)`` (a Philox lane word)."""
    if isinstance(seed_offset, bool) or not isinstance(seed_offset, (int, np.integer)) \
            or not 0 <= seed_offset < 2**32:
        raise ValueError(f"seed_offset must be an integer in [0, 2**32), got {seed_offset!r}")
    return int(seed_offset)


def channel_signs(seed: int, n_freq: int | Sequence[int] | np.ndarray | torch.Tensor,
                  n_norms: int, channels: int, *, seed_offset: int = 0) -> torch.Tensor:
    """Random signs ``s_c`` in {-1, +1}, one per (norm, frequency, channel), from Philox.

    Sign ``[r, f, c]`` is the top bit of word ``c`` of the Philox row
    ``key_f | 4 << 24`` in lanes ``(r, seed_offset)`` under the key ``seed``:
    a pure function of those, so the same on every device and for every
    chunking.

    Parameters
    ----------
    seed : the sample's seed (``SampleSet.seeds``).
    n_freq : the number of frequencies (keys ``0 .. n_freq - 1``), or the keys
        themselves (:func:`frequency_keys`), as the study passes them: a coarse
        grid then draws the same signs as the full grid at its frequencies.
    n_norms : the number of norms; each norm index draws its own signs.
    channels : signs per perturbation.
    seed_offset : another value gives an independent draw for the same sample.

    Returns
    -------
    (n_norms, F, channels) float64 tensor of +-1 on the CPU.
    """
    seed = _checks.check_seed(seed)
    n_norms = _checks.check_count(n_norms, "n_norms")
    channels = _checks.check_count(channels, "channels")
    seed_offset = _check_offset(seed_offset)
    if isinstance(n_freq, (int, np.integer)):
        keys = torch.arange(_checks.check_count(n_freq, "n_freq"), dtype=torch.int64)
    else:
        keys = torch.as_tensor(np.asarray(n_freq), dtype=torch.int64).reshape(-1)
    if len(keys) and not (0 <= int(keys.min()) and int(keys.max()) < 2**_KEY_BITS):
        raise ValueError(f"frequency keys must lie in [0, 2**{_KEY_BITS})")
    rows = (keys | (_STREAM_SIGNS << _KEY_BITS)).repeat(n_norms)
    norm_index = torch.arange(n_norms, dtype=torch.int64).repeat_interleave(len(keys))
    words = random_words(seed, rows, channels, lanes=(norm_index, seed_offset))
    signs = 1.0 - 2.0 * (words >> 31).to(torch.float64)
    return signs.reshape(n_norms, len(keys), channels)


# ------------------------------------------------------- first-order prediction
def gradient_heat_map(grad: torch.Tensor, stride: int = 1) -> np.ndarray:
    """First-order prediction of the heat map at unit norm, from an input gradient.

    For ``delta = r / sqrt(C) (s_1 H_ij, ..., s_C H_ij)`` the first-order drop
    of the log-odds is ``(r / sqrt(C)) |sum_c s_c <g_c, H_ij>|``. Its mean over
    random signs has no simple closed form for ``C = 3``; its root mean square
    does: ``(r / sqrt(C)) sqrt(sum_c <g_c, H_ij>^2)``. This returns that per
    unit ``r`` (multiply by ``r``), for every frequency of
    :func:`frequency_grid` ``(n, stride)``, all at once by an FFT.

    Parameters
    ----------
    grad : (C, n, n) gradient of the true-class log-odds at the clean image.
    stride : the grid of :func:`frequency_grid`.

    Returns
    -------
    (F,) float64, in the grid's order.
    """
    if not isinstance(grad, torch.Tensor) or grad.ndim != 3:
        raise ValueError("grad must be a tensor (C, H, W), got "
                         f"{tuple(grad.shape) if isinstance(grad, torch.Tensor) else grad!r}")
    if grad.shape[-1] != grad.shape[-2]:
        raise ValueError(f"the Fourier heat map needs square images, got {grad.shape[-2]} x "
                         f"{grad.shape[-1]}")
    _checks.check_finite(grad, "grad")
    size, channels = grad.shape[-1], grad.shape[0]
    grid = frequency_grid(size, stride) % size
    coefficients = hartley_coefficients(grad.detach().cpu())[:, grid[:, 0], grid[:, 1]]
    return (coefficients.pow(2).sum(0).sqrt() / math.sqrt(channels)).numpy()


def first_conv_power(model: torch.nn.Module, image_shape: Sequence[int],
                     grid: np.ndarray) -> np.ndarray:
    """Mean power ``|F(K)|^2`` of the first convolution's kernels at the grid's frequencies.

    The kernels' DFT is taken on the side of the map the convolution actually
    sees (found with a forward hook: 48 for the GTSRB nets, which upsample
    their 32x32 input first); a frequency of ``i`` cycles per image keeps
    that count through a resize, so grid frequency ``(i, j)`` reads the
    spectrum at ``(i mod side, j mod side)``. Averaged over output and input
    channels; the first layer's gain at each frequency of the heat map.
    """
    from localprops.studies.frequency import first_module

    _, conv = first_module(model)
    seen: list[tuple[int, ...]] = []
    handle = conv.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            model(torch.full((1, *image_shape), 128.0, dtype=model_dtype(model),
                             device=model_device(model)))
    finally:
        handle.remove()
    side = seen[0][-1]
    weight = conv.weight.detach().to("cpu", torch.float64)
    power = torch.fft.fft2(weight, s=(side, side)).abs().pow(2).mean(dim=(0, 1)).numpy()
    grid = np.asarray(grid)
    return power[grid[:, 0] % side, grid[:, 1] % side]


# ------------------------------------------------------------------ the study
@dataclass
class FourierHeatMap:
    """Measured Fourier heat maps of one model, per sample and norm.

    For sample ``s``, norm ``r = norms[k]`` and grid frequency ``f``
    (``grid[f] = (i, j)``, centred, see :func:`frequency_grid`):

    - ``drops[s, k, f]``: ``lo(x) - lo(x + delta)`` (``x + delta`` clipped
      when the study was run with ``clip=True``), the fall of the
      true-class log-odds (float64; negative where the perturbation helped);
    - ``wrong[s, k, f]``: the perturbed image is misclassified;
    - ``clipped[s, k]``: the share of the values of all ``F`` perturbed images
      at that norm that lay outside ``[0, 255]`` (clipped or not; 0: the
      perturbation reached the model unchanged);
    - ``clean_log_odds[s]``: ``lo(x)``.

    Maps (:meth:`mean_drop_map`, :meth:`error_rate_map`) are ``(m, m)`` arrays
    over the grid itself: row ``a`` is frequency ``i = axis[a]``, column ``b``
    is ``j = axis[b]`` (:attr:`axis`). With ``stride = 1`` that is the full
    centred (fftshift) layout; a coarse grid gives its own small square, not
    a full map full of NaN.
    """

    model: str
    norms: np.ndarray
    grid: np.ndarray
    size: int
    stride: int
    ids: np.ndarray
    labels: np.ndarray
    clean_log_odds: np.ndarray
    drops: np.ndarray
    wrong: np.ndarray
    clipped: np.ndarray
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def axis(self) -> np.ndarray:
        """(m,) the frequencies along each axis of a map, centred."""
        return frequency_axis(self.size, self.stride)

    @property
    def radial(self) -> np.ndarray:
        """(F,) radial frequency ``sqrt(i^2 + j^2)`` of each grid frequency (centred values)."""
        return np.hypot(self.grid[:, 0], self.grid[:, 1])

    def as_map(self, values: np.ndarray) -> np.ndarray:
        """Values over the grid (..., F) as maps (..., m, m) in centred layout."""
        m = len(self.axis)
        values = np.asarray(values)
        return values.reshape(*values.shape[:-1], m, m)

    def mean_drop_map(self, r_index: int) -> np.ndarray:
        """(m, m) log-odds drop at ``norms[r_index]``, averaged over samples."""
        return self.as_map(self.drops[:, r_index].mean(axis=0))

    def error_rate_map(self, r_index: int) -> np.ndarray:
        """(m, m) share of samples misclassified at ``norms[r_index]``, per frequency."""
        return self.as_map(self.wrong[:, r_index].mean(axis=0))

    def band_shares(self, r_index: int, cutoff: float) -> np.ndarray:
        """Per sample, the share of the positive drop carried by frequencies above ``cutoff``.

        ``sum_{|k| > cutoff} max(drop, 0) / sum_k max(drop, 0)`` at
        ``norms[r_index]``, with ``|k| = sqrt(i^2 + j^2)`` (:attr:`radial`):
        near 0 when the model is sensitive to low frequencies only, near 1
        for high ones. NaN where no frequency lowers the log-odds.
        """
        positive = np.clip(self.drops[:, r_index], 0.0, None)
        total = positive.sum(axis=1)
        high = positive[:, self.radial > cutoff].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, high / total, np.nan)


def _check_norms(norms) -> list[float]:
    """Norms as a list of positive finite floats, with an error that names them."""
    try:
        return [float(r) for r in _checks.check_radii(norms)]
    except (ValueError, TypeError) as error:
        raise ValueError(f"norms must be a non-empty list of positive finite L2 norms "
                         f"(pixel units), e.g. [1.0, 4.0]; got {norms!r}") from error


def _check_images(images: torch.Tensor) -> tuple[int, int]:
    """(channels, size) of square images (S, C, n, n), or a ValueError."""
    if images.ndim != 4:
        raise ValueError(f"images must be a tensor (S, C, H, W), got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"the Fourier heat map needs square images (H == W), got "
                         f"{images.shape[-2]} x {images.shape[-1]}")
    return int(images.shape[1]), _check_size(int(images.shape[-1]))


def _sample_unit(model, x: torch.Tensor, label: int, norms: list[float], grid: np.ndarray,
                 signs: torch.Tensor, batch_size: int, clip: bool = False
                 ) -> dict[str, np.ndarray]:
    """Drops, errors and clipped shares of one sample over all (norm, frequency) pairs."""
    device, dtype = model_device(model), model_dtype(model)
    channels, size = x.shape[0], x.shape[-1]
    R, F = len(norms), len(grid)
    scale = torch.tensor(norms, dtype=torch.float64).repeat_interleave(F) / math.sqrt(channels)
    weights = (scale[:, None] * signs.reshape(R * F, channels)).to(device)   # (R F, C)
    freq = torch.as_tensor(grid, dtype=torch.int64).repeat(R, 1).to(device)  # (R F, 2)
    x64 = x.to(device=device, dtype=torch.float64)
    with torch.inference_mode():
        clean = true_class_log_odds(model(x64[None].to(dtype)), label)[0].cpu()

        def step(start: int, stop: int) -> tuple[torch.Tensor, ...]:
            basis = hartley_basis(size, freq[start:stop, 0], freq[start:stop, 1], device=device)
            moved = x64 + weights[start:stop, :, None, None] * basis[:, None]
            outside = ((moved < 0) | (moved > 255)).flatten(1).sum(1)
            logits = model((moved.clamp(0, 255) if clip else moved).to(dtype))
            return (true_class_log_odds(logits, label).cpu(),
                    (logits.argmax(dim=1) != label).cpu(), outside.cpu())

        parts = run_chunked(R * F, batch_size, step)
    lo, wrong, outside = (torch.cat(column) for column in zip(*parts))
    shares = outside.reshape(R, F).sum(1).double() / (F * x.numel())
    return dict(drops=(clean - lo).reshape(R, F).numpy(),
                wrong=wrong.reshape(R, F).numpy(), clipped=shares.numpy(),
                clean_log_odds=np.float64(clean))


def fourier_heat_map(model: ModelSpec, samples: SampleSet, norms: Sequence[float], *,
                     stride: int = 1, seed_offset: int = 0, clip: bool = False,
                     batch_size: int | None = None,
                     cache: ResultCache | None = None, progress: bool = True
                     ) -> FourierHeatMap:
    """Measure Fourier heat maps (Yin et al. 2019) of a model on clean samples.

    For every sample ``x`` (label ``y``, seed ``samples.seeds[s]``), norm ``r``
    and frequency ``(i, j)`` of :func:`frequency_grid` ``(n, stride)``, the
    model sees ``x + delta`` with
    ``delta = r / sqrt(C) (s_1 H_ij, ..., s_C H_ij)`` (:func:`hartley_basis`,
    signs from :func:`channel_signs`), so ``||delta||_2 = r`` (not clipped to
    ``[0, 255]``, as in the rest of the book, unless ``clip``).

    Parameters
    ----------
    model : a loaded model (:class:`~localprops.models.ModelSpec`) taking
        [0, 255] images.
    samples : the clean samples; images must be square, (S, C, n, n).
    norms : L2 norms ``r`` of the perturbations, in pixel units.
    stride : grid of every ``stride``-th frequency per axis (0 always in it);
        ``n * n / stride**2`` forward passes per sample and norm.
    seed_offset : another value draws independent signs for the same samples.
    clip : clip ``x + delta`` to ``[0, 255]`` (default False, the book's
        convention; the share of values outside is recorded either way).
    batch_size : images per forward pass (default
        :func:`~localprops.core.engine.default_batch_size`); results do not
        depend on it beyond float rounding in the model.
    cache, progress : one cached, resumable unit per sample
        (:func:`~localprops.studies.runner.run_units`).

    Returns
    -------
    FourierHeatMap over the samples kept (a sample whose computation raises a
    ValueError is skipped with a warning and listed in ``skipped``).
    """
    spec = as_spec(model)
    net, name, weights = spec.model, spec.name, spec.weights
    norms = _check_norms(norms)
    stride = _checks.check_count(stride, "stride")
    seed_offset = _check_offset(seed_offset)
    channels, size = _check_images(samples.images)
    grid = frequency_grid(size, stride)
    keys = frequency_keys(grid, size)
    device = model_device(net)
    size_ = (_checks.check_count(batch_size, "batch_size") if batch_size is not None
             else default_batch_size(tuple(samples.images.shape[1:]), device))

    def manifest(i: int) -> dict:
        return dict(study="fourier", model=name, weights=weights, norms=norms, stride=stride,
                    seed=int(samples.seeds[i]), seed_offset=int(seed_offset), clip=bool(clip),
                    sample=int(samples.ids[i]), label=int(samples.labels[i]))

    def compute(i: int) -> dict:
        signs = channel_signs(int(samples.seeds[i]), keys, len(norms), channels,
                              seed_offset=int(seed_offset))
        return _sample_unit(net, samples.images[i], int(samples.labels[i]), norms, grid,
                            signs, size_, bool(clip))

    was_training = net.training
    net.eval()
    try:
        kept, units, skipped = run_units(samples, manifest, compute, cache=cache,
                                         desc=f"{name} Fourier heat map", progress=progress,
                                         study_modules=CODE_MODULES)
    finally:
        net.train(was_training)

    R, F = len(norms), len(grid)

    def stack(key: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        return (np.stack([u[key] for u in units]).astype(dtype) if units
                else np.zeros((0, *shape), dtype=dtype))

    return FourierHeatMap(
        model=name, norms=np.asarray(norms), grid=grid, size=size, stride=stride,
        ids=np.asarray(samples.ids)[kept], labels=np.asarray(samples.labels)[kept],
        clean_log_odds=stack("clean_log_odds", ()), drops=stack("drops", (R, F)),
        wrong=stack("wrong", (R, F), bool), clipped=stack("clipped", (R,)), skipped=skipped)
