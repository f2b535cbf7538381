"""The fast path of exact sums: float64 bins over blocks of 4,096 values (PURE: Numba
kernels).

Compiled by :func:`parcomp.runtime.exactsum._accumulate_kernel`, which first sets
``_long_kernel`` and ``_normalise_kernel`` here (the long accumulator's kernels, which
these call for flushes, remainders and special blocks) and then each ``*_py`` function
of ``BLOCK_KERNELS`` under its name without ``_py`` (callees before callers).  The design
is described in :mod:`parcomp.runtime.exactsum`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["LANES", "ROWS", "BLOCK", "BLOCK_KERNELS", "use_long_kernels"]

#: The long accumulator's compiled kernels (set by exactsum before compiling these).
_long_kernel: Any = None
_normalise_kernel: Any = None


def use_long_kernels(normalise: Any, long: Any) -> None:
    """Set the long accumulator's compiled kernels, which the block kernels call."""
    global _normalise_kernel, _long_kernel
    _normalise_kernel, _long_kernel = normalise, long


LANES = 512  # independent lanes of each bin (the loops vectorise over them)
ROWS = 8  # rows of LANES values per block (written out in _bins)
BLOCK = LANES * ROWS  # 4,096 values, 32 KiB
_W = 45  # bits per bin
_HEADROOM = 6  # (flush_bin needs 2**(e - 45 + 78) finite: top < 1e290 keeps e <= 970)
# bins anchored 64x above the anchoring block's largest value: later blocks
# with somewhat larger values (the largest of 4,096 normal deviates varies by 2x) fit too
_MAXROWS = 64  # rows a bin takes before its flush: drift < 64 * 2**(b+45) = 2**(b+51)
# The compiled block kernels, set by _accumulate_kernel() (each calls the others by these names)
_step: Any = None
_flush_bin: Any = None
_max8: Any = None
_bins: Any = None
_bins_remainders: Any = None
_bins_dot: Any = None
_products: Any = None
_copy: Any = None
staged_block: Any = None
tiles: Any = None
_scan: Any = None
_block: Any = None
_finish: Any = None
sum_blocks: Any = None
stage: Any = None
unstage: Any = None


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


def _step_py(a, b, rr, mm, v):  # pragma: no cover - compiled (inlined)
    """One value through the two bins: ``(s + v) - s`` is ``v`` rounded to the bin's
    multiple, exactly; the exact remainder goes on.  Returns the bins, the largest
    remainder below the low bin and the largest |value|."""
    mm = max(mm, abs(v))
    t = a + v
    v -= t - a
    t2 = b + v
    v -= t2 - b
    return t, t2, max(rr, abs(v)), mm


def _bins_py(X, i0, j0, s0, s1, r, m):  # pragma: no cover - compiled
    """One block through the two bins: the tile ``X[i0 : i0 + ROWS, j0 : j0 + LANES]``
    (rows of a C-contiguous array: a contiguous block reshaped, or a tile of a
    ghosted buffer, read in place); ``r``: per lane the largest remainder below the
    low bin, ``m``: per lane the largest |value|.  The eight rows are written out so
    that a lane's bins stay in registers (2x faster at 10**7 values than a loop)."""
    x0, x1 = X[i0, j0 : j0 + LANES], X[i0 + 1, j0 : j0 + LANES]
    x2, x3 = X[i0 + 2, j0 : j0 + LANES], X[i0 + 3, j0 : j0 + LANES]
    x4, x5 = X[i0 + 4, j0 : j0 + LANES], X[i0 + 5, j0 : j0 + LANES]
    x6, x7 = X[i0 + 6, j0 : j0 + LANES], X[i0 + 7, j0 : j0 + LANES]
    for lane in range(LANES):
        a, b, rr, mm = s0[lane], s1[lane], r[lane], m[lane]
        a, b, rr, mm = _step(a, b, rr, mm, x0[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x1[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x2[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x3[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x4[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x5[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x6[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x7[lane])
        s0[lane], s1[lane], r[lane], m[lane] = a, b, rr, mm


def _bins_dot_py(X, Y, i0, j0, s0, s1, r, m):  # pragma: no cover - compiled
    """:func:`_bins` of the rounded products ``X * Y`` (no array of products)."""
    x0, x1 = X[i0, j0 : j0 + LANES], X[i0 + 1, j0 : j0 + LANES]
    x2, x3 = X[i0 + 2, j0 : j0 + LANES], X[i0 + 3, j0 : j0 + LANES]
    x4, x5 = X[i0 + 4, j0 : j0 + LANES], X[i0 + 5, j0 : j0 + LANES]
    x6, x7 = X[i0 + 6, j0 : j0 + LANES], X[i0 + 7, j0 : j0 + LANES]
    y0, y1 = Y[i0, j0 : j0 + LANES], Y[i0 + 1, j0 : j0 + LANES]
    y2, y3 = Y[i0 + 2, j0 : j0 + LANES], Y[i0 + 3, j0 : j0 + LANES]
    y4, y5 = Y[i0 + 4, j0 : j0 + LANES], Y[i0 + 5, j0 : j0 + LANES]
    y6, y7 = Y[i0 + 6, j0 : j0 + LANES], Y[i0 + 7, j0 : j0 + LANES]
    for lane in range(LANES):
        a, b, rr, mm = s0[lane], s1[lane], r[lane], m[lane]
        a, b, rr, mm = _step(a, b, rr, mm, x0[lane] * y0[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x1[lane] * y1[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x2[lane] * y2[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x3[lane] * y3[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x4[lane] * y4[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x5[lane] * y5[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x6[lane] * y6[lane])
        a, b, rr, mm = _step(a, b, rr, mm, x7[lane] * y7[lane])
        s0[lane], s1[lane], r[lane], m[lane] = a, b, rr, mm


def _bins_remainders_py(x, s0, s1, rem):  # pragma: no cover - compiled
    """:func:`_bins` again on a block, keeping every remainder (for the long
    accumulator; a rare path, so a plain loop)."""
    for row in range(ROWS):
        for lane in range(LANES):
            v = x[row * LANES + lane]
            t = s0[lane] + v
            v -= t - s0[lane]
            s0[lane] = t
            t = s1[lane] + v
            v -= t - s1[lane]
            s1[lane] = t
            rem[row * LANES + lane] = v


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


def sum_blocks_py(x, acc, special):  # pragma: no cover - compiled
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


def stage_py(x, y, dot, ws, acc, special):  # pragma: no cover - compiled
    """Add the rows of 2-D ``x`` (or the rounded products ``x * y`` when ``dot``), of any
    strides, through blocks staged in ``ws`` (no copy of the array; ``ws`` holds the
    bins' state between calls, see :func:`workspace`).  :func:`unstage` ends it."""
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
                staged_block(ws, dot, acc, special)
                fill = 0
    st[4] = fill


def _copy_py(src, dst):  # pragma: no cover - compiled
    for q in range(src.size):
        dst[q] = src[q]


def staged_block_py(ws, dot, acc, special):  # pragma: no cover - compiled
    lanes = ws[2]
    _block(ws[0].reshape((ROWS, LANES)), ws[4].reshape((ROWS, LANES)), 0, 0, dot, ws[5], ws[3],
           lanes[0:512], lanes[512:1024], lanes[1024:1536], lanes[1536:2048], lanes[2048:2560],
           lanes[2560:3072], ws[1], acc, special)  # fmt: skip


def tiles_py(A, B, dot, h0, h1, n0, n1, ws, acc, special):  # pragma: no cover - compiled
    """Add the ``n0 x n1`` values at ``(h0, h1)`` of the C-contiguous 2-D buffer ``A``
    (or their products with ``B``'s): whole tiles of ROWS x LANES read in place, the
    edges staged through ``ws`` (:func:`unstage` ends it)."""
    lanes = ws[2]
    fr = n0 - n0 % ROWS
    fc = n1 - n1 % LANES
    for i in range(0, fr, ROWS):
        for j in range(0, fc, LANES):
            _block(A, B, h0 + i, h1 + j, dot, ws[5], ws[3], lanes[0:512], lanes[512:1024],
                   lanes[1024:1536], lanes[1536:2048], lanes[2048:2560], lanes[2560:3072],
                   ws[1], acc, special)  # fmt: skip
    if fc < n1:
        stage(A[h0 : h0 + n0, h1 + fc : h1 + n1], B[h0 : h0 + n0, h1 + fc : h1 + n1], dot,
               ws, acc, special)  # fmt: skip
    if fr < n0 and fc > 0:
        stage(A[h0 + fr : h0 + n0, h1 : h1 + fc], B[h0 + fr : h0 + n0, h1 : h1 + fc], dot,
               ws, acc, special)  # fmt: skip


def unstage_py(ws, dot, acc, special):  # pragma: no cover - compiled
    """The staged block's rest (zero-padded), then the bins' flush."""
    st = ws[3]
    fill = int(st[4])
    if fill:
        ws[0][fill:] = 0.0
        ws[4][fill:] = 0.0
        staged_block(ws, dot, acc, special)
    lanes = ws[2]
    _finish(st, lanes[0:512], lanes[512:1024], acc, special)


BLOCK_KERNELS = (
    "_step",
    "_flush_bin",
    "_max8",
    "_bins",
    "_bins_remainders",
    "_bins_dot",
    "_products",
    "_scan",
    "_block",
    "_finish",
    "sum_blocks",
    "_copy",
    "staged_block",
    "stage",
    "tiles",
    "unstage",
)
