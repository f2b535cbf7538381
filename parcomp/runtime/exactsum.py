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

Cost: about one pass over the data (frexp, two shifts and three adds per value); compare
``bench/algebra.py``.  Non-finite values make the result what NumPy's sum gives (nan or
inf), also order-independent.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from parcomp.runtime.callid import reduce_checked
from parcomp.runtime.numba_jit import jit

__all__ = ["LIMBS", "accumulate", "to_float", "exact_sum", "exact_allsum"]

_BITS = 32
_EMIN = -1074 - 64  # exponent of the accumulator's lowest bit (below every subnormal)
LIMBS = (1024 - _EMIN) // _BITS + 4  # up to 2**1024, and room for carries
_kernel: Any = None


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
    """The compiled :func:`_accumulate_words` (parcomp's jit: compiled once, cached).

    Module-level functions reading module-level constants: Numba freezes those into the
    code, so the cache key is the same in every process.  (Closures were cached under a
    key that held a pickled dispatcher, different in every process: each rank of every
    job compiled anew and added a file to the cache, found at 32 ranks.)
    """
    global _kernel, _normalise_kernel
    if _kernel is None:
        _normalise_kernel = jit(nogil=True)(_normalise_limbs).dispatcher
        _kernel = jit(nogil=True)(_accumulate_words).dispatcher
    return _kernel


_normalise_kernel: Any = None


def accumulate(values: np.ndarray, acc: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Add float64 ``values`` (any shape, any strides) exactly into ``acc``.

    Returns ``(acc, special)``: the limbs (int64, each in ``[0, 2**32)`` but the last) and
    the sum of the non-finite values (0.0 when there are none).
    """
    if acc is None:
        acc = np.zeros(LIMBS, np.int64)
    special = np.zeros(1, np.float64)
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    _accumulate_kernel()(flat, acc, special)
    return acc, float(special[0])


def to_float(acc: np.ndarray, special: float = 0.0) -> float:
    """The accumulator's value rounded once to the nearest float64 (ties to even)."""
    if special != 0.0 or np.isnan(special):
        return special
    total = 0
    for k in range(acc.size - 1, -1, -1):
        total = (total << _BITS) + int(acc[k])
    value = Fraction(total) * Fraction(2) ** _EMIN if _EMIN < 0 else Fraction(total << _EMIN)
    try:
        return float(value)  # Fraction -> float is correctly rounded
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def exact_sum(values: np.ndarray) -> float:
    """The correctly rounded sum of float64 ``values`` (local)."""
    return to_float(*accumulate(values))


def exact_allsum(values: np.ndarray, comm: Any) -> float:
    """The correctly rounded sum of every rank's ``values`` (collective over ``comm``).

    Every rank gets the same float, whatever the split of the values over ranks.
    """
    from mpi4py import MPI

    acc, special = accumulate(values)
    # the flags first: their checked slot carries the call's identity (parcomp.runtime.callid), so
    # a rank in another collective is caught before the limbs meet anything; nan and inf
    # combine alike everywhere
    flags = reduce_checked(comm, np.array([special], np.float64), MPI.SUM)
    total = np.empty_like(acc)
    comm.Allreduce(acc, total, op=MPI.SUM)  # limbs < 2**32 each: no overflow below 2**31 ranks
    return to_float(total, float(flags[0]))
