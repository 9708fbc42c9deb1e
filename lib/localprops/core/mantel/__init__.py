"""Mantel test between distance matrices, batched, on CPU (numba) or GPU (torch).

The topology study of the book asks, for every clean image, radius and model,
whether the distances between perturbed inputs are correlated with the
distances between their feature vectors: a Mantel test. The paper runs
6 x 300 x 21 = 37,800 of them, so this package computes many tests in one call.

The statistic and the p-value are those of :func:`skbio.stats.distance.mantel`
(the tests compare them); what differs is how the permutations are evaluated:

- the condensed (upper-triangle) vectors are standardized once; permuting the
  rows and columns of ``x`` only permutes its off-diagonal entries, so the
  permuted statistic is a plain dot product, ``r_p = sum_{i<j} xs[p_i, p_j]
  ys[i, j]``, with no mean or norm to recompute;
- on a CPU a numba kernel draws each permutation itself (Fisher-Yates driven
  by a counter-based SplitMix64 hash keyed by the seed, the matrix and the
  permutation number, so results depend neither on thread scheduling nor on
  chunking) and fuses it with the dot product; when one ``x`` is tested
  against many ``y``, each permuted ``x`` is gathered once and one matrix
  product evaluates it against all partners;
- on a GPU the same permutations are evaluated with gathers and matrix
  products in torch, in chunks of bounded memory.

This module holds the public API (:func:`mantel`, :func:`permutations_of`,
:data:`TIE_TOLERANCE`), the argument checks and the numpy standardization;
``_numba`` holds the CPU kernels and ``_torch`` the torch backend.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ._numba import TIE_TOLERANCE, _counts_numba, permutations_of
from ._torch import _counts_torch, _standardize_torch, _torch_module

__all__ = ["mantel", "permutations_of", "TIE_TOLERANCE"]

_METHODS = ("pearson", "spearman")
_ALTERNATIVES = ("two-sided", "greater", "less")
_BACKENDS = ("auto", "numba", "torch")

_DEFAULT_MAX_MEMORY = 128 * 2**20   # bytes of scratch memory per chunk


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------

def _torch():
    """Return the torch module if it is imported, else None.

    Returns
    -------
    module or None
    """
    return sys.modules.get("torch")


def _is_tensor(a: Any) -> bool:
    """Whether ``a`` is a torch tensor (without importing torch).

    Parameters
    ----------
    a : object

    Returns
    -------
    bool
    """
    torch = _torch()
    return torch is not None and isinstance(a, torch.Tensor)


def _check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise ValueError.

    Parameters
    ----------
    value : object
    name : str
        Parameter name for the message.
    allowed : tuple of str

    Returns
    -------
    str
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r}: use one of "
                         + ", ".join(repr(a) for a in allowed))
    return value


def _check_permutations(permutations: Any) -> int:
    """Return the number of permutations as an int >= 0.

    Parameters
    ----------
    permutations : object

    Returns
    -------
    int
    """
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)):
        raise TypeError(f"permutations must be an integer >= 0 (e.g. 999 or 9999), "
                        f"got {permutations!r} of type {type(permutations).__name__}")
    if permutations < 0:
        raise ValueError(f"permutations must be >= 0 (0 skips the test and gives "
                         f"p = nan), got {permutations}")
    return int(permutations)


def _resolve_seed(seed: Any) -> int:
    """Return a seed in [0, 2**64); None draws one from numpy's default_rng.

    Parameters
    ----------
    seed : None, int or numpy.random.Generator

    Returns
    -------
    int
    """
    if seed is None:
        seed = np.random.default_rng()
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63, dtype=np.int64))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None, a non-negative integer or a "
                        f"numpy.random.Generator, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {seed}")
    return int(seed)


def _check_max_memory(max_memory_bytes: Any) -> int:
    """Return the scratch-memory bound as a positive int.

    Parameters
    ----------
    max_memory_bytes : object

    Returns
    -------
    int
    """
    if isinstance(max_memory_bytes, bool) or not isinstance(
            max_memory_bytes, (int, np.integer)):
        raise TypeError(f"max_memory_bytes must be a positive integer, got "
                        f"{max_memory_bytes!r}")
    if max_memory_bytes < 1:
        raise ValueError(f"max_memory_bytes must be positive, got {max_memory_bytes}")
    return int(max_memory_bytes)


def _rounding_tolerance(dtype: Any) -> float:
    """Relative tolerance for symmetry and the diagonal: sqrt(eps) of the dtype.

    Parameters
    ----------
    dtype : numpy or torch dtype

    Returns
    -------
    float
        sqrt(machine epsilon) for floating dtypes, that of float64 otherwise.
    """
    torch = _torch()
    if torch is not None and isinstance(dtype, torch.dtype):
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else np.finfo(np.float64).eps
    else:
        dtype = np.dtype(dtype)
        eps = np.finfo(dtype).eps if dtype.kind == "f" else np.finfo(np.float64).eps
    return math.sqrt(eps)


def _as_float64(a: Any, name: str, to_torch: bool, device: Any) -> tuple[Any, float]:
    """Convert one input to a float64 numpy array or torch tensor.

    Parameters
    ----------
    a : array_like or torch.Tensor
    name : str
        'x' or 'y', for messages.
    to_torch : bool
        Return a torch tensor (on ``device``) instead of a numpy array.
    device : torch.device or None

    Returns
    -------
    array : numpy.ndarray or torch.Tensor, float64
    rtol : float
        Relative rounding tolerance of the input's dtype.
    """
    if _is_tensor(a):
        torch = _torch()
        if a.dtype == torch.bool or a.dtype.is_complex or not (
                a.dtype.is_floating_point or a.dtype in (
                    torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)):
            raise TypeError(f"{name} must hold real numbers (float or int), got a "
                            f"tensor of dtype {a.dtype}")
        rtol = _rounding_tolerance(a.dtype)
        a = a.detach()
        if to_torch:
            return a.to(device=device, dtype=torch.float64), rtol
        return a.cpu().numpy().astype(np.float64), rtol
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} must be a numpy array or torch tensor of shape (N, N) "
                        f"or (B, N, N), got {type(a).__name__}") from error
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype "
                        f"{arr.dtype}; convert it with np.asarray({name}, float)")
    rtol = _rounding_tolerance(arr.dtype)
    arr = arr.astype(np.float64, copy=False)
    if to_torch:
        return _torch().as_tensor(arr, device=device), rtol
    return arr, rtol


def _check_matrices(a: Any, name: str, rtol: float) -> None:
    """Raise unless ``a`` is a stack of finite, symmetric, hollow matrices.

    Parameters
    ----------
    a : numpy.ndarray or torch.Tensor, float64, shape (B, N, N)
    name : str
        'x' or 'y', for messages.
    rtol : float
        Tolerance relative to each matrix's largest absolute entry.

    Returns
    -------
    None
    """
    if _is_tensor(a):
        torch = _torch()
        finite = bool(torch.isfinite(a).all())
        if finite:
            scale = a.abs().amax(dim=(1, 2)).cpu().numpy()
            asym = (a - a.transpose(1, 2)).abs().amax(dim=(1, 2)).cpu().numpy()
            diag = torch.diagonal(a, dim1=1, dim2=2).abs().amax(dim=1).cpu().numpy()
    else:
        finite = bool(np.isfinite(a).all())
        if finite:
            scale = np.abs(a).max(axis=(1, 2))
            asym = np.abs(a - a.transpose(0, 2, 1)).max(axis=(1, 2))
            diag = np.abs(np.diagonal(a, axis1=1, axis2=2)).max(axis=1)
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values: distance matrices "
                         f"must be finite; check how the distances were computed")
    bound = rtol * scale
    three_d = a.shape[0] > 1
    for b in np.flatnonzero(asym > bound)[:1]:
        where = f"{name}[{b}]" if three_d else name
        raise ValueError(
            f"{where} is not symmetric: max |{name} - {name}.T| = {asym[b]:.3g} exceeds "
            f"{rtol:.2g} x its largest entry ({scale[b]:.3g}); pass a symmetric distance "
            f"matrix, e.g. ({name} + {name}.T) / 2")
    for b in np.flatnonzero(diag > bound)[:1]:
        where = f"{name}[{b}]" if three_d else name
        raise ValueError(
            f"{where} has a non-zero diagonal (max |diagonal| = {diag[b]:.3g}): the "
            f"distance of an item to itself must be 0; set it with "
            f"fill_diagonal(..., 0) if it comes from rounding")


def _prepare(x: Any, y: Any, backend: str) -> tuple[Any, Any, bool, bool]:
    """Validate and convert both inputs.

    Parameters
    ----------
    x, y : array_like or torch.Tensor
    backend : {'auto', 'numba', 'torch'}

    Returns
    -------
    xs, ys : numpy.ndarray or torch.Tensor, float64, shapes (Bx, N, N), (By, N, N)
    single : bool
        Both inputs were single (N, N) matrices.
    use_torch : bool
        Whether the torch path runs (on the CUDA inputs' device, else the CPU).
    """
    devices = {a.device for a in (x, y) if _is_tensor(a) and a.device.type != "cpu"}
    if len(devices) > 1:
        raise ValueError(f"x and y are on different devices ({sorted(map(str, devices))}); "
                         f"move them to the same device")
    use_torch = backend == "torch" or (backend == "auto" and bool(devices))
    device = None
    if use_torch:
        device = devices.pop() if devices else _torch_module().device("cpu")
    stacks, tolerances, ndims = [], [], []
    for a, name in ((x, "x"), (y, "y")):
        arr, rtol = _as_float64(a, name, use_torch, device)
        if arr.ndim not in (2, 3):
            raise ValueError(f"{name} must be a distance matrix of shape (N, N) or a "
                             f"stack of shape (B, N, N), got shape {tuple(arr.shape)}")
        if arr.shape[-1] != arr.shape[-2]:
            raise ValueError(f"{name} must be square, got shape {tuple(arr.shape)}: pass "
                             f"the full (N, N) distance matrix, not a condensed vector or "
                             f"a data matrix")
        ndims.append(arr.ndim)
        stacks.append(arr[None] if arr.ndim == 2 else arr)
        tolerances.append(rtol)
    xa, ya = stacks
    xtol, ytol = tolerances
    if xa.shape[-1] != ya.shape[-1]:
        raise ValueError(f"x and y must describe the same items: x is "
                         f"{xa.shape[-1]} x {xa.shape[-1]} but y is "
                         f"{ya.shape[-1]} x {ya.shape[-1]}")
    if xa.shape[-1] < 3:
        raise ValueError(f"distance matrices must be at least 3 x 3 for a Mantel "
                         f"test, got {xa.shape[-1]} x {xa.shape[-1]}")
    bx, by = xa.shape[0], ya.shape[0]
    if bx != by and 1 not in (bx, by):
        raise ValueError(f"x holds {bx} matrices and y holds {by}: stacks must have the "
                         f"same length B, or one side must be a single (N, N) matrix "
                         f"shared by all tests")
    if 0 in (bx, by):
        raise ValueError("empty stack: x and y must hold at least one matrix each")
    _check_matrices(xa, "x", xtol)
    _check_matrices(ya, "y", ytol)
    return xa, ya, ndims == [2, 2], use_torch


# --------------------------------------------------------------------------
# standardization
# --------------------------------------------------------------------------

def _standardize_numpy(a: np.ndarray, spearman: bool) -> tuple[np.ndarray, np.ndarray]:
    """Standardized condensed vectors of a stack of matrices.

    Parameters
    ----------
    a : float64 array (B, N, N)
    spearman : bool
        Rank the condensed entries first (average ranks for ties).

    Returns
    -------
    z : float64 array (B, N (N - 1) / 2)
        Zero mean, unit L2 norm; zero for a constant matrix.
    constant : bool array (B,)
        Which matrices are constant (statistic undefined).
    """
    n = a.shape[-1]
    iu0, iu1 = np.triu_indices(n, 1)
    v = a[:, iu0, iu1]
    if spearman:
        v = rankdata(v, axis=1, method="average")
    v = v - v.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(v, axis=1)
    constant = ~(norm > 0) | (np.ptp(a[:, iu0, iu1], axis=1) == 0)
    z = np.where(constant[:, None], 0.0, v / np.where(constant, 1.0, norm)[:, None])
    return z, constant


# --------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------

def mantel(x: Any, y: Any, *, permutations: int = 999, method: str = "pearson",
           alternative: str = "two-sided", seed: int | np.random.Generator | None = None,
           backend: str = "auto", max_memory_bytes: int = _DEFAULT_MAX_MEMORY
           ) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    r"""Compute the correlation between distance matrices with the Mantel test.

    The Mantel test compares two distance matrices by correlating the
    distances of their upper triangles, and assesses significance by permuting
    the rows and columns of one of them. Given symmetric distance matrices
    :math:`D_X` and :math:`D_Y` of size :math:`n`, the statistic is

    .. math::

       r_M = \sum_{i=1}^{n-1} \sum_{j=i+1}^{n} s(D_X)_{ij} \, s(D_Y)_{ij},

    where :math:`s(\cdot)` standardizes the :math:`d = n(n-1)/2` upper-triangle
    entries to zero mean and unit Euclidean norm, so that :math:`r_M` is their
    Pearson correlation. With ``method='spearman'`` the entries are replaced
    by their ranks first (ties get their average rank). For a permutation
    :math:`\pi` of the items, the permuted statistic is

    .. math::

       r_\pi = \sum_{i<j} s(D_X)_{\pi_i \pi_j} \, s(D_Y)_{ij},

    because permuting rows and columns together only reorders the
    off-diagonal entries of :math:`D_X` and leaves their mean and norm
    unchanged. The p-value is the proportion of permuted statistics as or
    more extreme than :math:`r_M`, counting the observed one.

    Many tests run in one call: ``x`` and ``y`` may be stacks of matrices, or
    one matrix ``x`` may be tested against a stack ``y`` (each permuted ``x``
    is then gathered once and evaluated against all partners with one matrix
    product).

    Parameters
    ----------
    x, y : numpy.ndarray or torch.Tensor (or array_like)
        Square, symmetric distance matrices with zero diagonal, of shape
        ``(N, N)``, or stacks of them of shape ``(B, N, N)`` (test ``b``
        compares ``x[b]`` with ``y[b]``). One side may be a single ``(N, N)``
        matrix shared by all ``B`` tests. ``N >= 3``; values must be finite
        real numbers. Asymmetry and diagonal entries up to
        ``sqrt(eps)`` of the input's dtype times the largest entry are
        accepted as rounding; only the upper triangles are used. The rows and
        columns of ``x`` are permuted.
    permutations : int, optional
        Number of random permutations, ``>= 0``. ``0`` skips the test and
        gives ``p = nan``. Default 999.
    method : {'pearson', 'spearman'}, optional
        Correlation of the distances (``'pearson'``) or of their ranks
        (``'spearman'``).
    alternative : {'two-sided', 'greater', 'less'}, optional
        Alternative hypothesis: ``'two-sided'`` counts permuted statistics with
        :math:`|r_\pi| \ge |r_M|`, ``'greater'`` those with
        :math:`r_\pi \ge r_M`, ``'less'`` those with :math:`r_\pi \le r_M`.
    seed : int, numpy.random.Generator or None, optional
        Seed of the permutations, an integer in ``[0, 2**64)``. ``None`` draws
        a fresh seed from :func:`numpy.random.default_rng`; a Generator gives
        one draw of its own. The same seed gives the same p-values.
    backend : {'auto', 'numba', 'torch'}, optional
        ``'auto'`` runs the numba kernels for CPU inputs and torch for CUDA
        tensors; ``'numba'`` copies CUDA tensors to the host; ``'torch'`` runs
        the torch path on the inputs' device (the CPU for numpy arrays).
    max_memory_bytes : int, optional
        Bound on the scratch memory of one chunk of permutations in the
        matrix-product paths (shared ``x`` on the CPU; torch). Default 128 MiB.

    Returns
    -------
    statistic : float or numpy.ndarray of float64, shape (B,)
        Mantel statistic :math:`r_M` in ``[-1, 1]``; ``nan`` when a matrix is
        constant (its correlation is undefined).
    p_value : float or numpy.ndarray of float64, shape (B,)
        Permutation p-value; ``nan`` if ``permutations == 0`` or the
        statistic is ``nan``. Python floats for two ``(N, N)`` matrices,
        arrays of shape ``(B,)`` as soon as one input is a stack.

    Raises
    ------
    TypeError
        If an input does not hold real numbers, or ``permutations``, ``seed``
        or ``max_memory_bytes`` has the wrong type.
    ValueError
        If an input is not 2-D or 3-D, not square, smaller than 3 x 3, not
        finite, not symmetric or has a non-zero diagonal; if ``x`` and ``y``
        differ in size or stack length; if ``method``, ``alternative`` or
        ``backend`` is unknown, or ``permutations`` is negative.

    See Also
    --------
    skbio.stats.distance.mantel : the reference implementation (one test).

    Notes
    -----
    The statistic and the p-value follow :func:`skbio.stats.distance.mantel`
    and ``vegan::mantel``: with :math:`k` the number of permuted statistics
    as or more extreme than the observed one,

    .. math::

       p = \frac{k + 1}{\text{permutations} + 1}.

    A permuted statistic within ``TIE_TOLERANCE`` (1e-10) of the observed one
    counts as a tie, so that rounding (the order of a sum) never decides a
    tie, e.g. when a permutation maps the matrix onto itself; apart from such
    exact ties the definition is scikit-bio's.

    Permutations are drawn by a counter-based generator (SplitMix64 keyed by
    the seed, the index of the permuted matrix in its stack and the
    permutation number, driving a Fisher-Yates shuffle), so results do not
    depend on the number of threads, the chunking or the device. Each ``x``
    matrix of a stack has its own permutations (tests that share one ``x``
    share its permutations), on the CPU (numba) and in the torch path (CUDA
    tensors) alike, so both backends give the same p-values up to rounding
    of the statistics.

    The test of a pair ``(x[b], y[b])`` in a stack uses different
    permutations than the same pair alone (unless ``b == 0``), so their
    p-values agree only within sampling error.

    References
    ----------
    .. [1] Mantel, N. (1967). "The detection of disease clustering and a
       generalized regression approach". Cancer Research 27 (2): 209-220.
    .. [2] Legendre, P. and Legendre, L. (2012). Numerical Ecology. 3rd
       English Edition. Elsevier.

    Examples
    --------
    >>> import numpy as np
    >>> from localprops.core.mantel import mantel
    >>> x = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]])
    >>> y = np.array([[0, 2, 7], [2, 0, 6], [7, 6, 0]])
    >>> r, p = mantel(x, y, seed=0)
    >>> round(r, 4)
    0.7559

    One ``x`` against a stack of three ``y`` returns arrays:

    >>> r, p = mantel(x, np.stack([y, 2 * y, x]), permutations=99, seed=0)
    >>> np.round(r, 4)
    array([0.7559, 0.7559, 1.    ])
    """
    permutations = _check_permutations(permutations)
    method = _check_choice(method, "method", _METHODS)
    alternative = _check_choice(alternative, "alternative", _ALTERNATIVES)
    backend = _check_choice(backend, "backend", _BACKENDS)
    max_memory_bytes = _check_max_memory(max_memory_bytes)
    seed = _resolve_seed(seed)
    xa, ya, single, use_torch = _prepare(x, y, backend)

    spearman = method == "spearman"
    bx, by = xa.shape[0], ya.shape[0]
    n_tests = max(bx, by)
    xi = np.arange(n_tests) if bx == n_tests else np.zeros(n_tests, dtype=np.int64)
    yi = np.arange(n_tests) if by == n_tests else np.zeros(n_tests, dtype=np.int64)
    if use_torch:
        zx, cx = _standardize_torch(xa, spearman)
        zy, cy = _standardize_torch(ya, spearman)
        torch = _torch_module()
        stat = (zx[torch.as_tensor(xi, device=zx.device)]
                * zy[torch.as_tensor(yi, device=zy.device)]).sum(dim=1).cpu().numpy()
    else:
        zx, cx = _standardize_numpy(xa, spearman)
        zy, cy = _standardize_numpy(ya, spearman)
        stat = np.einsum("bm,bm->b", zx[xi], zy[yi])
    stat = np.clip(stat, -1.0, 1.0)
    stat[cx[xi] | cy[yi]] = np.nan

    p_value = np.full(n_tests, np.nan)
    valid = np.flatnonzero(~np.isnan(stat))
    if permutations > 0 and valid.size:
        alt = _ALTERNATIVES.index(alternative)
        counter = _counts_torch if use_torch else _counts_numba
        counts = counter(zx, zy, xi[valid], yi[valid], stat[valid], permutations, alt,
                         seed, max_memory_bytes)
        p_value[valid] = (counts + 1) / (permutations + 1)
    if single:
        return float(stat[0]), float(p_value[0])
    return stat, p_value
