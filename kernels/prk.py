"""The Parallel Research Kernels "stencil" kernel: a radius-2 star stencil.

PURE: kernels on local blocks; :func:`parcomp.run_stencil` exchanges and calls them.

The PRK stencil (Van der Wijngaart and Mattson, "The Parallel Research Kernels", HPEC
2014) applies, to an ``n x n`` grid ``in`` initialised to ``i + j``, a star-shaped
stencil of radius ``R = 2`` with weights ``w(0, +-k) = w(+-k, 0) = +-1 / (2 k R)``,
accumulating into ``out`` on the cells at least ``R`` from the grid's edge, and then adds
1 to every cell of ``in``.  After ``iterations + 1`` such steps the mean of ``|out|`` over
those cells is exactly ``(iterations + 1) * 2``: the standard verification.

The kernel here is one PRK iteration written for time levels (two arrays per field), so
that :func:`parcomp.run_stencil` can do several iterations per halo exchange:
``out2 = out + S(inp)`` where ``active`` is 1 (the cells at least ``R`` from the grid's
edge; a constant field), ``out2 = out`` elsewhere, and ``inp2 = inp + 1`` everywhere.  The additions happen in the order of
the PRK reference code (``bench/prk_stencil.c`` uses the same order; gcc contracts its
multiply-adds into FMAs, Numba does not).
"""

from __future__ import annotations

import numpy as np

from parcomp import stencil

__all__ = ["prk_star2", "prk_star2_numpy", "PRK_RADIUS", "PRK_WEIGHTS"]

PRK_RADIUS = 2
# PRK's weights are 1/(2 k R): 1/4 and 1/8 for R = 2, negative below
_W1, _W2 = 1.0 / (2.0 * 1.0 * PRK_RADIUS), 1.0 / (2.0 * 2.0 * PRK_RADIUS)
#: w(0, k) for k = -2..2 (the same along both axes); w(0, 0) = 0 is added too, as PRK does
PRK_WEIGHTS = (-_W2, -_W1, 0.0, _W1, _W2)


# out and active are read only at the cell computed, but declared as reads (exchanged,
# a few rows per call): the loop variables below are shifted (i = a + 2), which parcomp's
# source check cannot prove to be the cell computed, so it would refuse pointwise=.
@stencil(radius=2, reads=("inp", "out", "active"), writes=("inp2", "out2"))
def prk_star2(inp, out, active, inp2, out2):
    """One PRK iteration: ``out2 = out + S(inp)`` on active cells, ``inp2 = inp + 1``."""
    # Loops over i, j >= 2 written as i = a + 2, j = b + 2 with a, b >= 0, and the
    # neighbours indexed as b, b + 1, ... (never j - 2): Numba must allow for a negative
    # index (counted from the end) in inp[i, j - 2], and that check kept the loop from
    # vectorising: this kernel ran at 0.29 Gcell/s in cache that way, 1.0 this way.
    for a in range(inp.shape[0] - 4):
        i = a + 2
        for b in range(inp.shape[1] - 4):
            j = b + 2
            c = out[i, j]
            o = c
            o += -0.125 * inp[i, b]
            o += -0.25 * inp[i, b + 1]
            o += 0.0 * inp[i, j]
            o += 0.25 * inp[i, b + 3]
            o += 0.125 * inp[i, b + 4]
            o += -0.125 * inp[a, j]
            o += -0.25 * inp[a + 1, j]
            o += 0.25 * inp[a + 3, j]
            o += 0.125 * inp[a + 4, j]
            # computed everywhere, kept on active cells only (a select, no branch)
            out2[i, j] = o if active[i, j] else c
            inp2[i, j] = inp[i, j] + 1.0


def prk_star2_numpy(inp: np.ndarray, out: np.ndarray, iterations: int) -> np.ndarray:
    """Serial NumPy reference on the whole ``n x n`` grid: ``iterations + 1`` PRK steps
    (the first untimed one included), in place; returns ``out``."""
    n = inp.shape[0]
    R = PRK_RADIUS
    a = slice(R, n - R)
    for _ in range(iterations + 1):
        o = out[a, a]
        for dj, w in zip(range(-R, R + 1), (-_W2, -_W1, 0.0, _W1, _W2), strict=True):
            o += w * inp[a, R + dj : n - R + dj]
        for di, w in ((-2, -_W2), (-1, -_W1), (1, _W1), (2, _W2)):
            o += w * inp[R + di : n - R + di, a]
        inp += 1.0
    return out
