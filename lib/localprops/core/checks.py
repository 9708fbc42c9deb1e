"""Input checks shared by the public functions.

Each check raises a ``ValueError`` or ``TypeError`` whose message says what
was wrong and what to pass instead, so that a reader who mistypes a
parameter in a notebook learns how to fix it from the error alone.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch

NORMS = ("l2", "linf")


def check_norm(norm: str) -> str:
    """Return the canonical norm name, or raise for an unknown one."""
    if not isinstance(norm, str) or norm.lower() not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: use 'l2' (Euclidean radius) "
                         "or 'linf' (largest change of any pixel value)")
    return norm.lower()


def check_radii(radii: float | Iterable[float]) -> tuple[float, ...]:
    """Return radii as a tuple of positive finite floats."""
    if isinstance(radii, (int, float, np.floating, np.integer)):
        radii = [radii]
    if isinstance(radii, torch.Tensor):
        radii = radii.flatten().tolist()
    try:
        values = tuple(float(r) for r in radii)
    except (TypeError, ValueError) as error:
        raise TypeError(f"radii must be a number or a sequence of numbers, "
                        f"got {radii!r}") from error
    if not values:
        raise ValueError("radii is empty: give at least one radius, "
                         "e.g. radii=[1e-3, 1, 2]")
    bad = [r for r in values if not (math.isfinite(r) and r > 0)]
    if bad:
        raise ValueError(f"every radius must be a positive finite number, got "
                         f"{bad}; a radius of zero is the clean image itself")
    return values


def check_count(n: int, name: str = "n") -> int:
    """Return ``n`` as an int >= 1."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}")
    return int(n)


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Return an image shape as a tuple of positive ints."""
    if isinstance(shape, int):
        shape = (shape,)
    try:
        values = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as error:
        raise TypeError(f"shape must be a sequence of ints such as (3, 32, 32), "
                        f"got {shape!r}") from error
    if not values or any(s < 1 for s in values) or any(
            int(s) != s for s in shape):
        raise ValueError(f"shape must hold positive integers, got {shape!r}")
    return values


def check_seed(seed: int) -> int:
    """Return a seed as a non-negative int below 2**64."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {seed}")
    return int(seed)


def check_finite(x: torch.Tensor | np.ndarray, name: str) -> None:
    """Raise if ``x`` holds NaN or infinite values."""
    finite = (torch.isfinite(x).all().item() if isinstance(x, torch.Tensor)
              else bool(np.isfinite(x).all()))
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values; check the "
                         "image loading and the model's outputs")


class UnitRangeWarning(UserWarning):
    """A clean image whose values all lie in [0, 1]: probably not on the [0, 255] scale."""


def warn_if_unit_range(images: torch.Tensor, name: str = "the clean image") -> bool:
    """Warn when every value of ``images`` lies within [0, 1] (and some are > 0).

    The package measures images and radii on the [0, 255] scale. An image in
    [0, 1] passed by mistake runs without error, but every radius is then
    255 times too large relative to the image. Returns whether it warned.
    """
    low, high = float(images.min()), float(images.max())
    if low >= 0.0 and 0.0 < high <= 1.0:
        warnings.warn(
            f"{name} has all its values within [0, 1] (max {high:.3g}); localprops "
            "expects images on the [0, 255] scale (radii are grey levels). If this "
            "image is in [0, 1], multiply it by 255 (and let the model's wrapper "
            "normalise it, e.g. localprops.models.Normalized); if it really is a "
            "dark [0, 255] image, ignore this warning.", UnitRangeWarning, stacklevel=3)
        return True
    return False


def as_labels(labels: Sequence[int] | torch.Tensor | int, n: int, device) -> torch.Tensor:
    """Labels as an int64 tensor of ``n`` rows on ``device``; one label is repeated."""
    out = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
    if out.numel() == 1 and n > 1:
        out = out.expand(n)
    if out.numel() != n:
        raise ValueError(f"{n} images but {out.numel()} labels")
    return out
