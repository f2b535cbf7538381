"""Exact sums of float64 values: the correctly rounded sum, whatever the order.

PURE (Numba kernels and Python integers); :func:`exact_allsum` COMMUNICATES (one
``Allreduce`` of int64 limbs).

A floating-point sum depends on the order of its additions, so a dot product computed on
2 ranks differs from the one on 3 ranks in its last bits, and a conjugate-gradient solve
then takes a different number of iterations.  Here every value is added *exactly* into a
long fixed-point accumulator (a Kulisch accumulator): 32-bit limbs held in int64, wide
enough for every finite float64 (2**-1074 to 2**1024).  Limbs of different ranks add
exactly (``Allreduce`` with ``SUM``), and the total is rounded once, to nearest.  The
result is the exact sum correctly rounded: identical for any decomposition and any rank
count, and at least as accurate as any summation order.

Fast path (``bench/exact_sum.py``): the long accumulator takes few values.  Values go
through two *bins* first, in blocks of 4,096 (32 KiB, in L1/L2): each bin is a float64
anchored at ``1.5 * 2**(b+52)``, so that adding a value ``v`` to it rounds ``v`` to a
multiple of ``2**b``; ``q = (s + v) - s`` is then that multiple *exactly* and ``v - q``
the exact remainder, handed to the next bin (the "extraction" of Demmel and Nguyen's
reproducible summation, ReproBLAS).  The two bins cover 90 bits below the block's
largest magnitude; a bin absorbs at most 64 values per lane before its exact partial is
flushed to the long accumulator, so it never leaves its binade.  Whatever falls below the
low bin (a value 2**37 times smaller than the block's largest) is detected per block and
that block's remainders go to the long accumulator too.  512 independent lanes make the
loops vectorise; the order of the additions changes nothing, every step being exact.
Blocks with nan/inf, or near the ends of the exponent range, take the long accumulator
directly.  About 0.9 ns per value on the 2-core Xeon VM: 1.4x NumPy's (inexact) sum at
10**7 values, where both are memory-bound.  Non-finite values make the result what
NumPy's sum gives (nan or inf), also order-independent.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from typing import Any

import numpy as np

from parcomp.runtime import exactbins as bins
from parcomp.runtime.callid import reduce_checked
from parcomp.runtime.numba_jit import jit

__all__ = [
    "LIMBS",
    "accumulate",
    "accumulate_products",
    "to_float",
    "exact_sum",
    "exact_dot",
    "exact_allsum",
    "allsum_limbs",
    "accumulate_buffer",
    "workspace",
    "stage_rows",
]

_BITS = 32
_EMIN = -1074 - 64  # exponent of the accumulator's lowest bit (below every subnormal)
LIMBS = (1024 - _EMIN) // _BITS + 4  # up to 2**1024, and room for carries
_kernel: Any = None
_normalise_kernel: Any = None
_long_kernel: Any = None


_MASK = np.int64((1 << _BITS) - 1)


def _normalise_limbs(acc):  # pragma: no cover - compiled
    for k in range(acc.size - 1):
        carry = acc[k] >> _BITS  # arithmetic shift: floor division, negatives too
        acc[k] -= carry << _BITS
        acc[k + 1] += carry


def _accumulate_words(values, acc, special):  # pragma: no cover - compiled
    count = 0
    for i in range(values.size):
        v = values[i]
        if v == 0.0:
            continue
        if not math.isfinite(v):
            special[0] += v  # nan or inf: the float result is nan or inf anyway
            continue
        m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= |m| < 1
        mant = np.int64(m * 9007199254740992.0)  # m * 2**53, exact
        sign = np.int64(1)
        if mant < 0:
            sign = np.int64(-1)
            mant = -mant
        base = e - 53 - _EMIN  # bit position of the mantissa's lowest bit
        for k in range(3):  # three 18-bit pieces: piece << off stays below 2**49
            piece = (mant >> (18 * k)) & np.int64(0x3FFFF)
            if piece == 0:
                continue
            pos = base + 18 * k
            limb = pos // _BITS
            x = piece << (pos - limb * _BITS)
            acc[limb] += sign * (x & _MASK)
            acc[limb + 1] += sign * (x >> _BITS)
        count += 1
        if count == 1 << 26:  # keep every limb far from int64 overflow
            _normalise_kernel(acc)
            count = 0
    _normalise_kernel(acc)


def _accumulate_kernel() -> Any:
    """The compiled exact-sum kernels (parcomp's jit: compiled once, cached); returns
    the long accumulator's.

    Module-level functions reading module-level constants: Numba freezes those into the
    code, so the cache key is the same in every process.  (Closures were cached under a
    key that held a pickled dispatcher, different in every process: each rank of every
    job compiled anew and added a file to the cache, found at 32 ranks.)  A kernel that
    calls another finds its compiled dispatcher under the name it calls (set first).
    """
    global _kernel, _normalise_kernel, _long_kernel
    if _kernel is None:
        _normalise_kernel = jit(nogil=True)(_normalise_limbs).dispatcher
        _long_kernel = jit(nogil=True)(_accumulate_words).dispatcher
        bins.use_long_kernels(_normalise_kernel, _long_kernel)
        g = vars(bins)
        for name in bins.BLOCK_KERNELS:  # callees before callers
            inline = "always" if name == "_step" else "never"  # the bins' step: in registers
            g[name] = jit(nogil=True, error_model="numpy", inline=inline)(
                g[name + "_py"]
            ).dispatcher
        _kernel = _long_kernel
    return _kernel


def workspace() -> np.ndarray:
    """The staged kernels' state: the block, the remainders, the lanes, the anchoring."""
    return np.zeros((6, bins.BLOCK))  # x's block, remainders, lanes, anchoring, y's, products


_SCRATCH = threading.local()


def _scratch() -> np.ndarray:
    """This thread's :func:`workspace`, reset (192 KiB of zeros cost more than an exact
    sum of 10**4 values)."""
    ws = getattr(_SCRATCH, "ws", None)
    if ws is None:
        ws = _SCRATCH.ws = workspace()
    ws[3, :8] = 0.0  # not anchored, nothing staged
    return ws


def _rows(a: np.ndarray) -> list[np.ndarray]:
    """``a`` as 2-D views (rows along its last axis), without copying."""
    if a.ndim == 0:
        return [a.reshape(1, 1)]
    if a.ndim == 1:
        return [a.reshape(1, -1)]
    if a.ndim == 2:
        return [a]
    return [piece for sub in a for piece in _rows(sub)]


def _staged(x: np.ndarray, y: np.ndarray | None, acc: np.ndarray, special: np.ndarray) -> None:
    ws = _scratch()
    xs = _rows(x)
    ys = xs if y is None else _rows(y)
    for xp, yp in zip(xs, ys, strict=True):
        bins.stage(xp, yp, y is not None, ws, acc, special)
    bins.unstage(ws, y is not None, acc, special)


def _float64(values: Any) -> np.ndarray:
    a = np.asarray(values)
    return a if a.dtype == np.float64 else a.astype(np.float64)


def accumulate(values: np.ndarray, acc: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Add float64 ``values`` (any shape, any strides) exactly into ``acc``.

    Returns ``(acc, special)``: the limbs (int64, each in ``[0, 2**32)`` but the last) and
    the sum of the non-finite values (0.0 when there are none).  A strided array (the
    interior of an array with ghost cells) is read in place, never copied.
    """
    if acc is None:
        acc = np.zeros(LIMBS, np.int64)
    special = np.zeros(1, np.float64)
    a = _float64(values)
    _accumulate_kernel()
    if a.flags.c_contiguous:
        bins.sum_blocks(a.reshape(-1), acc, special)
    else:
        _staged(a, None, acc, special)
    return acc, float(special[0])


def accumulate_products(
    x: np.ndarray, y: np.ndarray, acc: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Add the rounded products ``x * y`` (float64, same shape, any strides) exactly into
    ``acc``, in one pass without an array of products.  Returns ``(acc, special)`` as
    :func:`accumulate`."""
    if acc is None:
        acc = np.zeros(LIMBS, np.int64)
    special = np.zeros(1, np.float64)
    a, b = _float64(x), _float64(y)
    if a.shape != b.shape:
        raise ValueError(f"accumulate_products: shapes {a.shape} and {b.shape} differ")
    _accumulate_kernel()
    _staged(a, b, acc, special)
    return acc, float(special[0])


def accumulate_buffer(
    local: np.ndarray,
    halo: tuple[int, ...],
    shape: tuple[int, ...],
    other: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """:func:`accumulate` (or :func:`accumulate_products` with ``other``, a buffer of
    the same shape and halo) of the block ``shape`` at offsets ``halo`` of the
    C-contiguous ghosted buffer ``local``: whole tiles are read in place, where the
    interior view, being strided, would be staged through a copy."""
    dot = other is not None
    b = local if other is None else other
    if local.ndim not in (2, 3) or not (local.flags.c_contiguous and b.flags.c_contiguous):
        inner = tuple(slice(h, h + n) for h, n in zip(halo, shape, strict=True))
        if dot:
            return accumulate_products(local[inner], b[inner])
        return accumulate(local[inner])
    acc = np.zeros(LIMBS, np.int64)
    special = np.zeros(1, np.float64)
    _accumulate_kernel()
    ws = _scratch()
    if local.ndim == 2:
        bins.tiles(local, b, dot, halo[0], halo[1], shape[0], shape[1], ws, acc, special)
    else:
        for i in range(halo[0], halo[0] + shape[0]):
            bins.tiles(local[i], b[i], dot, halo[1], halo[2], shape[1], shape[2], ws, acc, special)
    bins.unstage(ws, dot, acc, special)
    return acc, float(special[0])


def to_float(acc: np.ndarray, special: float = 0.0) -> float:
    """The accumulator's value rounded once to the nearest float64 (ties to even)."""
    if special != 0.0 or np.isnan(special):
        return special
    acc = np.array(acc, np.int64)  # a copy, normalised: limbs added over ranks carry
    _accumulate_kernel()
    _normalise_kernel(acc)
    if acc[-1] < 0:  # negative (normalised limbs: only the last carries the sign)
        neg = -acc
        _accumulate_kernel()
        _normalise_kernel(neg)
        return -to_float(neg)
    nonzero = np.flatnonzero(acc)
    if nonzero.size == 0:
        return 0.0
    top = int(nonzero[-1])
    low = max(0, top - 3)  # at least 97 significant bits from the top four limbs ...
    total = 0
    for k in range(top, low - 1, -1):
        total = (total << _BITS) + int(acc[k])
    sticky = int(nonzero[0]) < low  # ... and one bit for everything below them
    total = (total << 1) | sticky
    shift = _BITS * low + _EMIN - 1
    if total.bit_length() + shift > -1021:  # a normal result: one rounding, in float()
        try:
            return math.ldexp(float(total), shift)
        except OverflowError:
            return float("inf")
    return _to_float_exact(acc)


def _to_float_exact(acc: np.ndarray) -> float:
    """:func:`to_float` by exact rationals (subnormal results)."""
    total = 0
    for k in range(acc.size - 1, -1, -1):
        total = (total << _BITS) + int(acc[k])
    value = Fraction(total) * Fraction(2) ** _EMIN
    try:
        return float(value)  # Fraction -> float is correctly rounded
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def exact_sum(values: np.ndarray) -> float:
    """The correctly rounded sum of float64 ``values`` (local)."""
    return to_float(*accumulate(values))


def exact_dot(x: np.ndarray, y: np.ndarray) -> float:
    """The correctly rounded sum of the rounded products ``x * y`` (local)."""
    return to_float(*accumulate_products(x, y))


def exact_allsum(values: np.ndarray, comm: Any, other: np.ndarray | None = None) -> float:
    """The correctly rounded sum of every rank's ``values`` (collective over ``comm``);
    with ``other``, of the rounded products ``values * other`` (one pass, no array of
    products).

    Every rank gets the same float, whatever the split of the values over ranks.
    """
    acc, special = accumulate(values) if other is None else accumulate_products(values, other)
    return allsum_limbs(acc, special, comm)


def allsum_limbs(acc: np.ndarray, special: float, comm: Any) -> float:
    """Every rank's accumulator (from :func:`accumulate`) added exactly and rounded once
    (collective over ``comm``)."""
    from mpi4py import MPI

    # the flags first: their checked slot carries the call's identity (parcomp.runtime.callid), so
    # a rank in another collective is caught before the limbs meet anything; nan and inf
    # combine alike everywhere
    flags = reduce_checked(comm, np.array([special], np.float64), MPI.SUM)
    total = np.empty_like(acc)
    comm.Allreduce(acc, total, op=MPI.SUM)  # limbs < 2**32 each: no overflow below 2**31 ranks
    return to_float(total, float(flags[0]))


def stage_rows() -> tuple[Any, Any, Any]:
    """The compiled ``(stage, unstage, block)`` kernels, for other compiled code that
    feeds values into an exact sum: ``stage(rows2d, rows2d, False, ws, acc, special)``
    per batch of rows, or values written straight into ``ws[0][fill:]`` and
    ``block(ws, False, acc, special)`` whenever ``ws[0]`` is full (``ws[3, 4]`` keeps the
    fill); ``unstage(ws, False, acc, special)`` once at the end (``ws`` from
    :func:`workspace`, ``acc`` zeros of ``LIMBS`` int64, ``special`` one float64)."""
    _accumulate_kernel()
    return bins.stage, bins.unstage, bins.staged_block
