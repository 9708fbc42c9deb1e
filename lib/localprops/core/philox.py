"""Philox4x32-10, a counter-based random number generator in integer tensor ops.

Why not ``torch.Generator``: torch's CPU and CUDA generators produce different
streams for the same seed (and CUDA's differ between GPU models), and a stream
depends on how the draws are chunked. Philox (Salmon et al., "Parallel random
numbers: as easy as 1, 2, 3", SC 2011) is a pure function of a 128-bit counter
and a 64-bit key: the value for (seed, sample, radius, t, element) is the same
on every device and for every chunking. The implementation uses only int64
tensor arithmetic (no overflow: 32-bit products are split into 16-bit halves),
so it runs wherever torch runs. ``tests/test_philox.py`` checks it against the
published Random123 known-answer vectors.
"""
from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57          # round multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85          # Weyl key increments
ROUNDS = 10


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * m`` for uint32 values held in int64."""
    a_lo = a & 0xFFFF
    a_hi = a >> 16
    p_lo = a_lo * m                        # < 2**48
    p_hi = a_hi * m                        # < 2**48
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & _MASK32
    hi = ((p_lo >> 16) + p_hi) >> 16
    return hi, lo


def philox4x32(counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
               key: tuple[int, int], rounds: int = ROUNDS
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the Philox4x32 bijection to broadcastable counter words.

    Parameters
    ----------
    counter : four int64 tensors (or ints broadcast against them) holding uint32
        counter words c0..c3.
    key : two uint32 key words k0, k1.
    rounds : number of rounds (10 is the standard, tested variant).

    Returns
    -------
    Four int64 tensors with uint32 values: the random words.
    """
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in counter)
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    k0, k1 = int(key[0]) & _MASK32, int(key[1]) & _MASK32
    for round_index in range(rounds):
        if round_index:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def seed_to_key(seed: int) -> tuple[int, int]:
    """Split a 64-bit seed into the two 32-bit Philox key words."""
    return seed & _MASK32, (seed >> 32) & _MASK32


def random_words(seed: int, rows: torch.Tensor | int, n_words: int, *,
                 lanes: tuple[torch.Tensor | int, torch.Tensor | int] = (0, 0),
                 start: int = 0,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Random uint32 words (held in int64), ``n_words`` per row.

    Word ``j`` of a row comes from output word ``j % 4`` of the counter
    ``(j // 4, row, lane0, lane1)`` under the key ``seed``. ``rows`` and the two
    lane words may be 1-D tensors of equal length to fill several rows at once
    (the sampling module puts t and a stream tag in ``row`` and the radius in the
    lanes). The result has shape ``(len(rows), n_words)`` (``(n_words,)`` for an
    int row) and depends only on (seed, row, lanes, j): never on the device or
    on how rows and words are split into calls. ``start`` skips leading words.
    """
    scalar_row = not isinstance(rows, torch.Tensor)
    rows_t = torch.as_tensor(rows, dtype=torch.int64, device=device).reshape(-1, 1)
    lane0 = torch.as_tensor(lanes[0], dtype=torch.int64,
                            device=rows_t.device).reshape(-1, 1)
    lane1 = torch.as_tensor(lanes[1], dtype=torch.int64,
                            device=rows_t.device).reshape(-1, 1)
    first_block, last_block = start // 4, (start + n_words - 1) // 4 + 1
    blocks = torch.arange(first_block, last_block, dtype=torch.int64,
                          device=rows_t.device).reshape(1, -1)
    words = torch.stack(philox4x32((blocks, rows_t, lane0, lane1),
                                   seed_to_key(seed)), dim=-1)
    words = words.reshape(words.shape[0], -1)
    offset = start - 4 * first_block
    words = words[:, offset:offset + n_words]
    return words[0] if scalar_row else words


def uniform_symmetric(words: torch.Tensor, dtype: torch.dtype = torch.float32
                      ) -> torch.Tensor:
    """Map uint32 words to U(-1, 1) values that are exact in float32 and float64.

    The top 24 bits k give (2k + 1 - 2**24) / 2**24: odd multiples of 2**-24,
    symmetric about zero, never exactly 0 or +-1, identical in every dtype.
    """
    k = words >> 8
    return ((2 * k + 1 - (1 << 24)).to(torch.float64) * 2.0**-24).to(dtype)


def derive_seed(seed: int, index: int) -> int:
    """A 64-bit seed for item ``index`` (e.g. a clean sample) derived from ``seed``.

    Every model of a dataset then draws the same perturbations for the same
    sample (the paper's Sec. 2.4 relies on it), whatever order samples run in.
    """
    words = philox4x32((torch.tensor(index, dtype=torch.int64), 0, 0x5EED, 0),
                       seed_to_key(seed))
    return int(words[0]) | (int(words[1]) << 32)


def _as_rows(values: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.int64, device=like.device
                           ).reshape(-1).expand(like.shape[0]).contiguous()


def _use_compiled(device: torch.device, compiled: bool | None) -> bool:
    if compiled is None:
        return device.type == "cpu"
    if compiled and device.type != "cpu":
        raise ValueError("the compiled Philox kernels run on the CPU only")
    return compiled


def uniform_rows(seed: int, rows: torch.Tensor, n: int, *,
                 lanes: tuple[torch.Tensor | int, torch.Tensor | int] = (0, 0),
                 compiled: bool | None = None) -> torch.Tensor:
    """``uniform_symmetric(random_words(seed, rows, n, lanes=lanes))`` in float64.

    On the CPU (``compiled=None``) a numba kernel computes the same bits about
    ten times faster; on other devices the torch code runs. ``rows`` is a 1-D
    int64 tensor on the target device.
    """
    rows = rows.reshape(-1)
    if not _use_compiled(rows.device, compiled):
        return uniform_symmetric(random_words(seed, rows, n, lanes=lanes),
                                 torch.float64)
    from . import _philox_cpu
    out = torch.empty((rows.shape[0], n), dtype=torch.float64)
    k0, k1 = seed_to_key(seed)
    _philox_cpu.uniform_into(k0, k1, rows.numpy(), _as_rows(lanes[0], rows).numpy(),
                             _as_rows(lanes[1], rows).numpy(), out.numpy())
    return out


def sort_key_rows(seed: int, rows: torch.Tensor, n: int, *,
                  lanes: tuple[torch.Tensor | int, torch.Tensor | int] = (0, 0),
                  compiled: bool | None = None) -> torch.Tensor:
    """63-bit random sort keys (int64), ``n`` per row, from word pairs.

    Key ``j`` is ``w[2j] * 2**31 + (w[2j + 1] >> 1)`` with ``w`` the row's
    :func:`random_words`; ties among ``n`` keys are practically impossible,
    and a stable argsort of them gives a permutation that is the same on every
    device.
    """
    rows = rows.reshape(-1)
    if not _use_compiled(rows.device, compiled):
        words = random_words(seed, rows, 2 * n, lanes=lanes)
        return words[:, 0::2] * 2**31 + (words[:, 1::2] >> 1)
    from . import _philox_cpu
    out = torch.empty((rows.shape[0], n), dtype=torch.int64)
    k0, k1 = seed_to_key(seed)
    _philox_cpu.sort_keys_into(k0, k1, rows.numpy(), _as_rows(lanes[0], rows).numpy(),
                               _as_rows(lanes[1], rows).numpy(), out.numpy())
    return out
