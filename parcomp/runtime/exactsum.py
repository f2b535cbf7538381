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


LANES = 512  # independent lanes of each bin (the loops vectorise over them)
ROWS = 8  # rows of LANES values per block (written out in _bins)
BLOCK = LANES * ROWS  # 4,096 values, 32 KiB
_W = 45  # bits per bin
_HEADROOM = 6  # (flush_bin needs 2**(e - 45 + 78) finite: top < 1e290 keeps e <= 970)
# bins anchored 64x above the anchoring block's largest value: later blocks
# with somewhat larger values (the largest of 4,096 normal deviates varies by 2x) fit too
_MAXROWS = 64  # rows a bin takes before its flush: drift < 64 * 2**(b+45) = 2**(b+51)
# The compiled block kernels, set by _accumulate_kernel() (each calls the others by these names)
_flush_bin: Any = None
_max8: Any = None
_bins: Any = None
_bins_remainders: Any = None
_bins_dot: Any = None
_products: Any = None
_copy: Any = None
_staged_block: Any = None
_tiles: Any = None
_scan: Any = None
_block: Any = None
_finish: Any = None
_sum_blocks: Any = None
_stage: Any = None
_unstage: Any = None


def _flush_bin_py(s, anchor, b, acc, special):  # pragma: no cover - compiled
    """Add a bin's lanes (exact multiples of 2**b, each below 2**(b+51) in magnitude)
    exactly into ``acc``: split each at 2**(b+26); the high and the low halves each sum
    exactly in float64 (35 and 34 significant bits), in any order."""
    c = 1.5 * math.ldexp(1.0, b + 26 + 52)
    his = np.zeros(8)
    los = np.zeros(8)
    for i in range(0, s.size, 8):
        for j in range(8):
            v = s[i + j] - anchor
            h = (v + c) - c
            his[j] += h
            los[j] += v - h
    out = np.empty(2)
    out[0] = his.sum()
    out[1] = los.sum()
    _long_kernel(out, acc, special)


def _max8_py(a):  # pragma: no cover - compiled
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = 0.0
    for i in range(0, a.size, 8):
        m0 = max(m0, a[i])
        m1 = max(m1, a[i + 1])
        m2 = max(m2, a[i + 2])
        m3 = max(m3, a[i + 3])
        m4 = max(m4, a[i + 4])
        m5 = max(m5, a[i + 5])
        m6 = max(m6, a[i + 6])
        m7 = max(m7, a[i + 7])
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


def _bins_py(X, i0, j0, s0, s1, r, m):  # pragma: no cover - compiled
    """One block through the two bins: the tile ``X[i0 : i0 + ROWS, j0 : j0 + LANES]``
    (rows of a C-contiguous array: a contiguous block reshaped, or a tile of a
    ghosted buffer, read in place); ``r``: per lane the largest remainder below the
    low bin, ``m``: per lane the largest |value|.  The eight rows are written out so
    that a lane's bins stay in registers (2x faster at 10**7 values than a loop)."""
    x0 = X[i0, j0 : j0 + LANES]
    x1 = X[i0 + 1, j0 : j0 + LANES]
    x2 = X[i0 + 2, j0 : j0 + LANES]
    x3 = X[i0 + 3, j0 : j0 + LANES]
    x4 = X[i0 + 4, j0 : j0 + LANES]
    x5 = X[i0 + 5, j0 : j0 + LANES]
    x6 = X[i0 + 6, j0 : j0 + LANES]
    x7 = X[i0 + 7, j0 : j0 + LANES]
    for lane in range(LANES):
        a, b, rr, mm = s0[lane], s1[lane], r[lane], m[lane]
        v = x0[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x1[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x2[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x3[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x4[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x5[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x6[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x7[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        s0[lane], s1[lane], r[lane], m[lane] = a, b, rr, mm


def _bins_dot_py(X, Y, i0, j0, s0, s1, r, m):  # pragma: no cover - compiled
    """:func:`_bins` of the rounded products ``X * Y`` (no array of products)."""
    x0 = X[i0, j0 : j0 + LANES]
    y0 = Y[i0, j0 : j0 + LANES]
    x1 = X[i0 + 1, j0 : j0 + LANES]
    y1 = Y[i0 + 1, j0 : j0 + LANES]
    x2 = X[i0 + 2, j0 : j0 + LANES]
    y2 = Y[i0 + 2, j0 : j0 + LANES]
    x3 = X[i0 + 3, j0 : j0 + LANES]
    y3 = Y[i0 + 3, j0 : j0 + LANES]
    x4 = X[i0 + 4, j0 : j0 + LANES]
    y4 = Y[i0 + 4, j0 : j0 + LANES]
    x5 = X[i0 + 5, j0 : j0 + LANES]
    y5 = Y[i0 + 5, j0 : j0 + LANES]
    x6 = X[i0 + 6, j0 : j0 + LANES]
    y6 = Y[i0 + 6, j0 : j0 + LANES]
    x7 = X[i0 + 7, j0 : j0 + LANES]
    y7 = Y[i0 + 7, j0 : j0 + LANES]
    for lane in range(LANES):
        a, b, rr, mm = s0[lane], s1[lane], r[lane], m[lane]
        v = x0[lane] * y0[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x1[lane] * y1[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x2[lane] * y2[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x3[lane] * y3[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x4[lane] * y4[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x5[lane] * y5[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x6[lane] * y6[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        v = x7[lane] * y7[lane]
        mm = max(mm, abs(v))
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rr = max(rr, abs(v))
        s0[lane], s1[lane], r[lane], m[lane] = a, b, rr, mm


def _bins_remainders_py(x, s0, s1, rem):  # pragma: no cover - compiled
    """:func:`_bins` again, keeping every remainder (for the long accumulator)."""
    for lane in range(LANES):
        a, b = s0[lane], s1[lane]
        v = x[lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[lane] = v
        v = x[1 * LANES + lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[1 * LANES + lane] = v
        v = x[2 * LANES + lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[2 * LANES + lane] = v
        v = x[3 * LANES + lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[3 * LANES + lane] = v
        v = x[4 * LANES + lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[4 * LANES + lane] = v
        v = x[5 * LANES + lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[5 * LANES + lane] = v
        v = x[6 * LANES + lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[6 * LANES + lane] = v
        v = x[7 * LANES + lane]
        t = a + v
        v -= t - a
        a = t
        t = b + v
        v -= t - b
        b = t
        rem[7 * LANES + lane] = v
        s0[lane], s1[lane] = a, b


def _scan_py(x, m, bad):  # pragma: no cover - compiled
    """A block's largest |value|, and non-zero (nan) when it holds a nan or an inf."""
    m[:] = 0.0
    bad[:] = 0.0
    for row in range(ROWS):
        for lane in range(LANES):
            v = x[row * LANES + lane]
            m[lane] = max(m[lane], abs(v))
            bad[lane] += v * 0.0
    return _max8(m), bad.sum()


def _products_py(X, Y, i0, j0, dot, tmp):  # pragma: no cover - compiled
    """The tile's values (or its products with ``Y``'s) in ``tmp``, in block order."""
    for row in range(ROWS):
        x = X[i0 + row, j0 : j0 + LANES]
        out = tmp[row * LANES : (row + 1) * LANES]
        if dot:
            y = Y[i0 + row, j0 : j0 + LANES]
            for lane in range(LANES):
                out[lane] = x[lane] * y[lane]
        else:
            for lane in range(LANES):
                out[lane] = x[lane]
    return tmp


def _block_py(
    X, Y, i0, j0, dot, tmp, st, s0, s1, k0, k1, r, m, rem, acc, special
):  # pragma: no cover
    """Add one block exactly: the tile of ROWS x LANES values at ``(i0, j0)`` of the
    C-contiguous 2-D ``X`` (or their products with ``Y``'s when ``dot``).  ``st``:
    [exponent, live, rows taken, top] of the bins' current anchoring (kept between
    blocks); ``tmp``: scratch (BLOCK values) for the rare paths."""
    e = int(st[0])
    a0 = 1.5 * math.ldexp(1.0, e - _W + 52)
    a1 = 1.5 * math.ldexp(1.0, e - 2 * _W + 52)
    if st[1] != 0.0:
        if st[2] + ROWS > _MAXROWS:
            _flush_bin(s0, a0, e - _W, acc, special)
            _flush_bin(s1, a1, e - 2 * _W, acc, special)
            s0[:] = a0
            s1[:] = a1
            st[2] = 0.0
        k0[:] = s0
        k1[:] = s1
        r[:] = 0.0
        m[:] = 0.0
        if dot:
            _bins_dot(X, Y, i0, j0, s0, s1, r, m)
        else:
            _bins(X, i0, j0, s0, s1, r, m)
        if _max8(m) < st[3]:  # every value within the high bin's reach: all exact
            st[2] += ROWS
            if _max8(r) != 0.0:  # bits below the low bin: to the long accumulator
                s0[:] = k0
                s1[:] = k1
                _bins_remainders(_products(X, Y, i0, j0, dot, tmp), s0, s1, rem)
                _long_kernel(rem, acc, special)
                _flush_bin(s0, a0, e - _W, acc, special)
                _flush_bin(s1, a1, e - 2 * _W, acc, special)
                st[1] = 0.0  # anchored too high for these values: anchor again
            return
        s0[:] = k0  # a value beyond the high bin: undo, anchor on this block
        s1[:] = k1
        _flush_bin(s0, a0, e - _W, acc, special)
        _flush_bin(s1, a1, e - 2 * _W, acc, special)
        st[1] = 0.0
    v = _products(X, Y, i0, j0, dot, tmp)
    top, bad = _scan(v, m, r)
    if top == 0.0 and bad == 0.0:
        return
    if bad != 0.0 or not (top > 1e-250 and top < 1e290):  # nan/inf; the range's ends
        _long_kernel(v, acc, special)
        return
    e = math.frexp(top)[1] + _HEADROOM
    st[0] = e
    st[1] = 1.0
    st[2] = ROWS
    st[3] = math.ldexp(1.0, e)
    a0 = 1.5 * math.ldexp(1.0, e - _W + 52)
    a1 = 1.5 * math.ldexp(1.0, e - 2 * _W + 52)
    s0[:] = a0
    s1[:] = a1
    r[:] = 0.0
    _bins(v.reshape((ROWS, LANES)), 0, 0, s0, s1, r, m)
    if _max8(r) != 0.0:
        s0[:] = a0
        s1[:] = a1
        _bins_remainders(v, s0, s1, rem)
        _long_kernel(rem, acc, special)


def _finish_py(st, s0, s1, acc, special):  # pragma: no cover - compiled
    if st[1] != 0.0:
        e = int(st[0])
        _flush_bin(s0, 1.5 * math.ldexp(1.0, e - _W + 52), e - _W, acc, special)
        _flush_bin(s1, 1.5 * math.ldexp(1.0, e - 2 * _W + 52), e - 2 * _W, acc, special)
    _normalise_kernel(acc)


def _sum_blocks_py(x, acc, special):  # pragma: no cover - compiled
    """Exactly add contiguous float64 ``x`` into ``acc`` (normalised on return)."""
    st = np.zeros(4)
    s0 = np.empty(LANES)
    s1 = np.empty(LANES)
    k0 = np.empty(LANES)
    k1 = np.empty(LANES)
    r = np.empty(LANES)
    m = np.empty(LANES)
    rem = np.empty(BLOCK)
    tmp = np.empty(BLOCK)
    pad = np.zeros(BLOCK)
    n = x.size
    for lo in range(0, n, BLOCK):
        if lo + BLOCK <= n:
            b = x[lo : lo + BLOCK].reshape((ROWS, LANES))
        else:  # the last, partial block, padded with zeros (which add nothing)
            pad[: n - lo] = x[lo:]
            b = pad.reshape((ROWS, LANES))
        _block(b, b, 0, 0, False, tmp, st, s0, s1, k0, k1, r, m, rem, acc, special)
    _finish(st, s0, s1, acc, special)


def _stage_py(x, y, dot, ws, acc, special):  # pragma: no cover - compiled
    """Add the rows of 2-D ``x`` (or the rounded products ``x * y`` when ``dot``), of any
    strides, through blocks staged in ``ws`` (no copy of the array; ``ws`` holds the
    bins' state between calls, see :func:`workspace`).  :func:`_unstage` ends it."""
    st = ws[3]
    fill = int(st[4])
    for i in range(x.shape[0]):
        xs = x[i]
        ys = y[i]
        j = 0
        while j < xs.size:
            k = min(BLOCK - fill, xs.size - j)
            _copy(xs[j : j + k], ws[0][fill : fill + k])
            if dot:
                _copy(ys[j : j + k], ws[4][fill : fill + k])
            fill += k
            j += k
            if fill == BLOCK:
                _staged_block(ws, dot, acc, special)
                fill = 0
    st[4] = fill


def _copy_py(src, dst):  # pragma: no cover - compiled
    for q in range(src.size):
        dst[q] = src[q]


def _staged_block_py(ws, dot, acc, special):  # pragma: no cover - compiled
    lanes = ws[2]
    _block(ws[0].reshape((ROWS, LANES)), ws[4].reshape((ROWS, LANES)), 0, 0, dot, ws[5], ws[3],
           lanes[0:512], lanes[512:1024], lanes[1024:1536], lanes[1536:2048], lanes[2048:2560],
           lanes[2560:3072], ws[1], acc, special)  # fmt: skip


def _tiles_py(A, B, dot, h0, h1, n0, n1, ws, acc, special):  # pragma: no cover - compiled
    """Add the ``n0 x n1`` values at ``(h0, h1)`` of the C-contiguous 2-D buffer ``A``
    (or their products with ``B``'s): whole tiles of ROWS x LANES read in place, the
    edges staged through ``ws`` (:func:`_unstage` ends it)."""
    lanes = ws[2]
    fr = n0 - n0 % ROWS
    fc = n1 - n1 % LANES
    for i in range(0, fr, ROWS):
        for j in range(0, fc, LANES):
            _block(A, B, h0 + i, h1 + j, dot, ws[5], ws[3], lanes[0:512], lanes[512:1024],
                   lanes[1024:1536], lanes[1536:2048], lanes[2048:2560], lanes[2560:3072],
                   ws[1], acc, special)  # fmt: skip
    if fc < n1:
        _stage(A[h0 : h0 + n0, h1 + fc : h1 + n1], B[h0 : h0 + n0, h1 + fc : h1 + n1], dot,
               ws, acc, special)  # fmt: skip
    if fr < n0 and fc > 0:
        _stage(A[h0 + fr : h0 + n0, h1 : h1 + fc], B[h0 + fr : h0 + n0, h1 : h1 + fc], dot,
               ws, acc, special)  # fmt: skip


def _unstage_py(ws, dot, acc, special):  # pragma: no cover - compiled
    """The staged block's rest (zero-padded), then the bins' flush."""
    st = ws[3]
    fill = int(st[4])
    if fill:
        ws[0][fill:] = 0.0
        ws[4][fill:] = 0.0
        _staged_block(ws, dot, acc, special)
    lanes = ws[2]
    _finish(st, lanes[0:512], lanes[512:1024], acc, special)


def _accumulate_kernel() -> Any:
    """The compiled exact-sum kernels (parcomp's jit: compiled once, cached); returns
    the long accumulator's.

    Module-level functions reading module-level constants: Numba freezes those into the
    code, so the cache key is the same in every process.  (Closures were cached under a
    key that held a pickled dispatcher, different in every process: each rank of every
    job compiled anew and added a file to the cache, found at 32 ranks.)  A kernel that
    calls another finds its compiled dispatcher under the name it calls (set here first).
    """
    global _kernel, _normalise_kernel, _long_kernel
    if _kernel is None:
        g = globals()
        _normalise_kernel = jit(nogil=True)(_normalise_limbs).dispatcher
        _long_kernel = jit(nogil=True)(_accumulate_words).dispatcher
        for name in _BLOCK_KERNELS:  # callees before callers
            g[name] = jit(nogil=True, error_model="numpy")(g[name + "_py"]).dispatcher
        _kernel = _long_kernel
    return _kernel


_BLOCK_KERNELS = (
    "_flush_bin",
    "_max8",
    "_bins",
    "_bins_remainders",
    "_bins_dot",
    "_products",
    "_scan",
    "_block",
    "_finish",
    "_sum_blocks",
    "_copy",
    "_staged_block",
    "_stage",
    "_tiles",
    "_unstage",
)


def workspace() -> np.ndarray:
    """The staged kernels' state: the block, the remainders, the lanes, the anchoring."""
    return np.zeros((6, BLOCK))  # x's block, remainders, lanes, anchoring, y's, products


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
        _stage(xp, yp, y is not None, ws, acc, special)
    _unstage(ws, y is not None, acc, special)


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
        _sum_blocks(a.reshape(-1), acc, special)
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
        _tiles(local, b, dot, halo[0], halo[1], shape[0], shape[1], ws, acc, special)
    else:
        for i in range(halo[0], halo[0] + shape[0]):
            _tiles(local[i], b[i], dot, halo[1], halo[2], shape[1], shape[2], ws, acc, special)
    _unstage(ws, dot, acc, special)
    return acc, float(special[0])


def to_float(acc: np.ndarray, special: float = 0.0) -> float:
    """The accumulator's value rounded once to the nearest float64 (ties to even)."""
    if special != 0.0 or np.isnan(special):
        return special
    acc = np.asarray(acc, np.int64)
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
    return _stage, _unstage, _staged_block
