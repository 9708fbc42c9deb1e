"""Random perturbations at a given radius: the paper's eq. 4 and eq. 6.

Both samplers follow the paper: draw ``u ~ U(-1, 1)`` elementwise and rescale
it to radius ``r``, ``nu = r * u / ||u||``. Note that ``u / ||u||`` is *not*
uniform on the sphere (directions near the cube's diagonals are more likely
than with a Gaussian ``u``); the book follows the paper and says so.

Draws come from the counter-based generator of :mod:`localprops.core.philox`, keyed
by the seed and counted by (t, stream, radius, element), so a perturbation is
the same on every device and whatever the chunking. The radius enters the
counter by value (its float64 bit pattern), so ``r = 1`` gives the same
perturbations whether the radii list is ``[1, 2]`` or ``[1e-3, 1, ..., 20]``.

Two ways to use them:

- :func:`radial_perturbations` and :func:`permuted_perturbations` return the
  whole ``(R, T, *shape)`` tensor (convenient for small images);
- :class:`RadialPerturbations` and :class:`PermutedPerturbations` describe the
  same tensor lazily; :func:`localprops.core.engine.evaluate` generates it chunk by
  chunk, so an ImageNet run never holds all ``R x T`` perturbed images at once.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from localprops.core import checks as _checks
from localprops.core.philox import sort_key_rows, uniform_rows

_STREAM_RADIAL = 1
_STREAM_BASE = 2          # the one u per radius of eq. 6
_STREAM_ORDER = 3         # the sort keys that define the permutations of eq. 6
_T_BITS = 24              # t < 2**24 perturbations per radius


def radius_grid(eps: float = 1e-3, radii: Sequence[float] | None = None) -> list[float]:
    """The radii of a study: ``eps`` followed by ``radii`` (the paper: 1, 2, ..., 20).

    The paper draws perturbations at ``{eps, 1, ..., 20}`` without giving
    ``eps``; every chapter builds its grid here from its ``eps`` and ``radii``
    parameters.

    >>> radius_grid(1e-4, [1, 2, 5])
    [0.0001, 1.0, 2.0, 5.0]
    >>> len(radius_grid())
    21
    """
    radii = list(range(1, 21)) if radii is None else list(radii)
    grid = [float(eps)] + [float(r) for r in radii]
    _checks.check_radii(grid)
    if radii and float(eps) >= min(float(r) for r in radii):
        raise ValueError(f"eps={eps} must be smaller than every radius (smallest "
                         f"{min(radii)}): it stands for an infinitesimal radius")
    return grid


def _radius_lanes(radii: Sequence[float]) -> tuple[list[int], list[int]]:
    """Low and high 32-bit words of each radius's float64 bit pattern."""
    bits = [struct.unpack("<Q", struct.pack("<d", float(r)))[0] for r in radii]
    return [b & 0xFFFFFFFF for b in bits], [b >> 32 for b in bits]


def _numel(shape: Sequence[int]) -> int:
    size = 1
    for s in shape:
        size *= s
    return size


def _rescale(u: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """Rescale each row of ``u`` (float64) to its radius in the given norm."""
    if norm == "l2":
        length = torch.linalg.vector_norm(u, ord=2, dim=-1, keepdim=True)
    else:
        length = u.abs().amax(dim=-1, keepdim=True)
    return u / length * radius.reshape(-1, 1)


@dataclass(frozen=True)
class Perturbations:
    """A lazily generated ``(R, T, *shape)`` tensor of perturbations."""

    shape: tuple[int, ...]
    radii: tuple[float, ...]
    T: int
    norm: str = "l2"
    seed: int = 0
    _lanes: tuple[list[int], list[int]] = field(init=False, repr=False,
                                                compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _checks.check_shape(self.shape))
        object.__setattr__(self, "radii", _checks.check_radii(self.radii))
        object.__setattr__(self, "T", _checks.check_count(self.T, "T"))
        object.__setattr__(self, "norm", _checks.check_norm(self.norm))
        object.__setattr__(self, "seed", _checks.check_seed(self.seed))
        if self.T >= 2**_T_BITS:
            raise ValueError(f"T must be below {2**_T_BITS}, got {self.T}")
        object.__setattr__(self, "_lanes", _radius_lanes(self.radii))

    @property
    def full_shape(self) -> tuple[int, ...]:
        """``(R, T, *shape)``: the shape of :meth:`materialize`'s result."""
        return (len(self.radii), self.T, *self.shape)

    def __len__(self) -> int:
        """Number of perturbations, ``R * T``."""
        return len(self.radii) * self.T

    def rows(self, start: int, stop: int, *, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Perturbations ``start:stop`` of the flattened ``(R * T)`` index.

        Row ``k`` is radius ``k // T`` and draw ``t = k % T``. Returns a tensor
        ``(stop - start, *shape)``.
        """
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"rows {start}:{stop} outside 0:{len(self)}")
        flat = torch.arange(start, stop, dtype=torch.int64, device=device)
        radius_index = torch.div(flat, self.T, rounding_mode="floor")
        t = flat - radius_index * self.T
        radius = torch.tensor(self.radii, dtype=torch.float64,
                              device=flat.device)[radius_index]
        lanes = tuple(torch.tensor(lane, dtype=torch.int64, device=flat.device
                                   )[radius_index] for lane in self._lanes)
        out = self._generate(t, lanes, radius)
        return out.to(dtype).reshape(stop - start, *self.shape)

    def materialize(self, *, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The whole ``(R, T, *shape)`` tensor."""
        return self.rows(0, len(self), device=device, dtype=dtype).reshape(
            self.full_shape)

    def _generate(self, t: torch.Tensor, lanes: tuple[torch.Tensor, torch.Tensor],
                  radius: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RadialPerturbations(Perturbations):
    """Paper eq. 4: ``T`` independent ``nu = r u / ||u||`` per radius, ``u ~ U(-1,1)^D``."""

    def _generate(self, t, lanes, radius):
        u = uniform_rows(self.seed, t | (_STREAM_RADIAL << _T_BITS),
                         _numel(self.shape), lanes=lanes)
        return _rescale(u, radius, self.norm)


class PermutedPerturbations(Perturbations):
    """Paper eq. 6: per radius one ``nu`` at radius ``r`` and ``T`` permutations of it.

    All ``T`` perturbations of a radius hold the same multiset of values, hence
    the same norm (every Lp norm). Permutation ``t`` is the stable argsort of
    63-bit Philox keys, so it is the same on every device.
    """

    def _generate(self, t, lanes, radius):
        d = _numel(self.shape)
        # one base vector per distinct radius in this chunk, shared by its rows
        radius_rows, inverse = torch.unique(lanes[0] * 2**32 + lanes[1],
                                            return_inverse=True)
        first = torch.zeros_like(radius_rows).scatter_reduce(
            0, inverse, torch.arange(len(t), device=t.device), "amin",
            include_self=False)
        base_lanes = (lanes[0][first], lanes[1][first])
        base = uniform_rows(self.seed, torch.full_like(first, _STREAM_BASE << _T_BITS),
                            d, lanes=base_lanes)
        base = _rescale(base, radius[first], self.norm)[inverse]
        keys = sort_key_rows(self.seed, t | (_STREAM_ORDER << _T_BITS), d,
                             lanes=lanes)
        order = torch.argsort(keys, dim=-1, stable=True)
        return torch.gather(base, -1, order)


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def radial_perturbations(shape: Sequence[int], radii: float | Iterable[float], T: int, *,
                         norm: str = "l2", seed: int = 0,
                         device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random perturbations at exact radii (paper eq. 4).

    Parameters
    ----------
    shape : shape of one image, e.g. ``(3, 32, 32)``.
    radii : positive finite radii in raw pixel units.
    T : number of perturbations per radius.
    norm : ``"l2"`` or ``"linf"``; every perturbation has exactly this norm ``r``.
    seed : key of the counter-based generator; the same seed gives the same
        tensor on every device and whatever the chunking.
    device, dtype : where and in which float type to return it (default CPU,
        float32). Draws and rescaling are done in float64, then cast.

    Returns
    -------
    Tensor of shape ``(len(radii), T, *shape)``.

    Examples
    --------
    >>> nu = radial_perturbations((3, 4, 4), [1.0, 2.0], 5, seed=1)
    >>> tuple(nu.shape), round(float(nu[1, 0].norm()), 4)
    ((2, 5, 3, 4, 4), 2.0)
    """
    return RadialPerturbations(shape, radii, T, norm, seed).materialize(
        device=_device(device), dtype=dtype)


def permuted_perturbations(shape: Sequence[int], radii: float | Iterable[float], T: int, *,
                           norm: str = "l2", seed: int = 0,
                           device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Permutations of one random perturbation per radius (paper eq. 6).

    Parameters and return value as :func:`radial_perturbations`; for each radius
    ``nu[r, t]`` is a permutation of the elements of one ``nu`` of norm ``r``.
    """
    return PermutedPerturbations(shape, radii, T, norm, seed).materialize(
        device=_device(device), dtype=dtype)
