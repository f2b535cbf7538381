"""Compiled particle plans: owners of many positions in one pass (imports Numba: load lazily).

PURE.  :func:`locate` does in one pass what :func:`parcomp.particles.plan.wrap`,
:func:`~parcomp.particles.plan.cells` and :meth:`parcomp.grid.partition.Partition.owner_of` do
in several NumPy passes (the same arithmetic, checked against them by
``tests/unit/test_particle_plan.py``): a million 3-d positions in a few milliseconds
instead of ~60.  Module-level, so Numba's cache key is the same in every process.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from parcomp.runtime.numba_jit import jit

__all__ = ["locate"]

_kernel: Any = None
_tables: dict[Any, np.ndarray] = {}


def _table(partition: Any) -> np.ndarray:
    table = _tables.get(partition)
    if table is None:
        if len(_tables) > 64:
            _tables.clear()
        table = _tables[partition] = rank_table(partition)
    return table


def _locate(x, lo, hi, h, n, periodic, table, owner):  # pragma: no cover - compiled
    """Wrap periodic axes in place; ``owner[i]`` = rank of row i's cell, -1 outside a wall.

    ``table[a, c]`` is the rank offset of cell ``c`` along axis ``a`` (its block number
    times the product of the later axes' rank counts), so a rank is a sum of lookups.
    Returns (rows with a non-finite coordinate, rows outside a non-periodic wall); a row
    with a non-finite coordinate gets owner -2 and is left as it is.
    """
    m, d = x.shape
    bad = 0
    outside = 0
    for i in range(m):
        finite = True
        for a in range(d):
            if not math.isfinite(x[i, a]):
                finite = False
        if not finite:
            owner[i] = -2
            bad += 1
            continue
        rank = 0
        out = False
        for a in range(d):
            v = x[i, a]
            if v < lo[a] or v >= hi[a]:
                if periodic[a]:
                    length = hi[a] - lo[a]
                    v = lo[a] + np.mod(v - lo[a], length)
                    if v >= hi[a]:
                        v = lo[a]
                    x[i, a] = v
                else:
                    out = True
            c = math.floor((v - lo[a]) / h[a])
            if c < 0:
                c = 0
            elif c > n[a] - 1:
                c = n[a] - 1
            rank += table[a, np.int64(c)]
        if out:
            owner[i] = -1
            outside += 1
        else:
            owner[i] = rank
    return bad, outside


def rank_table(partition: Any) -> np.ndarray:
    """``table[a, c]``: block of cell ``c`` along axis ``a`` times the later axes' rank counts."""
    ndim = partition.ndim
    table = np.zeros((ndim, max(partition.global_shape)), np.int64)
    stride = 1
    for a in reversed(range(ndim)):
        cells = np.arange(partition.global_shape[a])
        table[a, : cells.size] = partition.axis_block_of(a, cells) * stride
        stride *= partition.dims[a]
    return table


def locate(x: np.ndarray, box: Any, partition: Any) -> tuple[np.ndarray, int, int]:
    """Owners of positions ``x`` (wrapping periodic axes in place): ``(owner, bad, outside)``.

    ``owner`` is int64: the rank, -1 beyond a non-periodic wall, -2 for a non-finite row.
    """
    global _kernel
    if _kernel is None:
        _kernel = jit(nogil=True)(_locate).dispatcher
    owner = np.empty(x.shape[0], np.int64)
    bad, outside = _kernel(
        x,
        np.asarray(box.lo, dtype=np.float64),
        np.asarray(box.hi, dtype=np.float64),
        box.spacing(partition.global_shape),
        np.asarray(partition.global_shape, dtype=np.int64),
        np.asarray(partition.periods, dtype=np.bool_),
        _table(partition),
        owner,
    )
    return owner, int(bad), int(outside)
