"""Lower-dimensional DistArrays taken out of a DistArray: ``a[t]``, ``a.select(axis, i)``.

:func:`plane_plan` is PURE; :func:`select` COMMUNICATES (one ``Alltoallv`` over the
array's private ``array`` communicator, after the new array is made).

A 3-D field ``u[t, y, x]`` over a process grid holds the plane ``t`` on the ranks whose
block contains ``t`` only; the plane as a 2-D DistArray is decomposed over every rank of
the communicator (a balanced grid of its own).  Each rank that holds part of the plane
sends, to every rank of the new grid, the part of its block that the new block covers:
the plan is a pure function of the two decompositions and is the same on every rank.
When the selected axis is whole on every rank (``dims[axis] == 1``) and the remaining
axes keep their grid, nothing travels: each rank copies its own slice (decided from
agreed metadata, so that no rank skips the exchange the others enter).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from parcomp.grid.layout import Decomposed
from parcomp.grid.partition import Partition
from parcomp.runtime.agree import agreed, raise_if_differ
from parcomp.runtime.errors import ParcompError, RankCountError, ShapeError
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.watchdog import collective

__all__ = ["plane_plan", "select"]

Block = tuple[tuple[int, int], ...]
#: A DistArray (this module is below it: DistArray.select and a[t] call it).
A = TypeVar("A", bound=Decomposed)


def _intersect(a: Block, b: Block) -> Block | None:
    out = tuple((max(lo1, lo2), min(hi1, hi2)) for (lo1, hi1), (lo2, hi2) in zip(a, b, strict=True))
    return out if all(lo < hi for lo, hi in out) else None


def plane_plan(
    src: Partition, axis: int, index: int, dst: Partition, rank: int
) -> tuple[list[tuple[int, Block]], list[tuple[int, Block]]]:
    """What ``rank`` sends and receives to move plane ``index`` of ``axis`` from ``src``
    to ``dst`` (PURE).

    Returns ``(sends, receives)``: lists of ``(peer, global block of the plane)``, in
    peer order; the blocks are in the plane's coordinates (``axis`` removed).
    """

    def plane_block(r: int) -> Block | None:
        ranges = src.local_range(r)
        lo, hi = ranges[axis]
        if not lo <= index < hi:
            return None
        return tuple(rg for k, rg in enumerate(ranges) if k != axis)

    mine = plane_block(rank)
    sends: list[tuple[int, Block]] = []
    if mine is not None:
        for q in range(dst.size):
            part = _intersect(mine, dst.local_range(q))
            if part is not None:
                sends.append((q, part))
    receives: list[tuple[int, Block]] = []
    target = dst.local_range(rank)
    for r in range(src.size):
        theirs = plane_block(r)
        if theirs is not None:
            part = _intersect(theirs, target)
            if part is not None:
                receives.append((r, part))
    return sends, receives


@collective("DistArray.select")
def select(a: A, axis: int, index: int, dims: Any = None) -> A:
    """The plane ``index`` of ``axis`` as a DistArray of one axis fewer (collective).

    Parameters
    ----------
    a : DistArray
        The array (at least 2 axes).
    axis : int
        The axis selected (negative counts from the end).
    index : int
        Global index along it (negative counts from the end).
    dims : sequence of int, optional
        Process grid of the result (default: the array's grid without ``axis`` when that
        uses every rank, else a balanced grid).

    Returns
    -------
    DistArray
        Same dtype and communicator, no ghost cells, the periods of the other axes.
    """
    from mpi4py import MPI

    ax = ix = 0
    with agreed(a.comm, catch=(ParcompError, IndexError)):
        if a.ndim < 2:
            raise ShapeError(f"select: a {a.ndim}-d DistArray has no lower-dimensional plane")
        if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
            raise ShapeError(f"select: axis must be an integer, got {axis!r}")
        if not -a.ndim <= axis < a.ndim:
            raise ShapeError(f"select: axis {axis} is out of range for {a.ndim} axes")
        ax = int(axis) % a.ndim
        n = a.global_shape[ax]
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise ShapeError(f"select: index must be an integer, got {index!r}")
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of bounds for axis {ax} with size {n}")
        ix = int(index) % n
    raise_if_differ(
        [ax, ix, None if dims is None else list(dims)],
        a.comm,
        lambda differ, mine, theirs: (
            f"select: axis, index or dims differ between ranks: rank 0 has {mine}, rank "
            f"{differ[0]} has {theirs}"
        ),
    )
    shape = tuple(s for k, s in enumerate(a.global_shape) if k != ax)
    periods = tuple(p for k, p in enumerate(a.partition.periods) if k != ax)
    if dims is None and a.partition.dims[ax] == 1:
        dims = tuple(d for k, d in enumerate(a.partition.dims) if k != ax)
    try:
        out = type(a)(shape, a.dtype, periods=periods, dims=dims, comm=a.comm)
    except RankCountError as exc:  # raised on every rank alike (agreed metadata)
        raise mark_everywhere(
            RankCountError(
                f"select: the plane {index} of axis {ax} is a {shape} array, too small to "
                f"decompose over {a.comm.Get_size()} ranks ({exc}); for a small probe use "
                "a.get((slice, ...)), which gives the block on every rank"
            ),
            a.comm,
        ) from None
    start = [lo for lo, _ in a.local_range]
    dst_start = [lo for lo, _ in out.local_range]
    plane = [slice(None)] * a.ndim
    plane[ax] = ix - start[ax]
    rest = tuple(d for k, d in enumerate(a.partition.dims) if k != ax)
    if a.partition.dims[ax] == 1 and out.partition.dims == rest:
        # decided from agreed metadata alone, so every rank takes this branch or none
        # (a per-rank test of the plan could send one rank past the Alltoallv: a hang)
        out.interior[...] = a.interior[tuple(plane)]  # each rank's own slice: nothing moves
        return out
    sends, receives = plane_plan(a.partition, ax, ix, out.partition, a.rank)
    others = [lo for k, lo in enumerate(start) if k != ax]
    mine_view = a.interior[tuple(plane)] if sends else None
    size = a.comm.Get_size()
    send_counts = np.zeros(size, np.int64)
    chunks = []
    for q, block in sends:
        assert mine_view is not None
        view = mine_view[
            tuple(slice(lo - s, hi - s) for (lo, hi), s in zip(block, others, strict=True))
        ]
        chunks.append(np.ascontiguousarray(view).reshape(-1))
        send_counts[q] = view.size
    recv_counts = np.zeros(size, np.int64)
    for r, block in receives:
        recv_counts[r] = int(np.prod([hi - lo for lo, hi in block]))
    send = np.concatenate(chunks) if chunks else np.zeros(0, a.dtype)
    recv = np.empty(int(recv_counts.sum()), a.dtype)
    item = a.dtype.itemsize
    displs = lambda c: np.concatenate(([0], np.cumsum(c)[:-1])) * item  # noqa: E731
    a.layout.array_comm.Alltoallv(
        [send.view(np.uint8), send_counts * item, displs(send_counts), MPI.BYTE],
        [recv.view(np.uint8), recv_counts * item, displs(recv_counts), MPI.BYTE],
    )
    at = 0
    for _r, block in receives:
        extent = tuple(hi - lo for lo, hi in block)
        count = int(np.prod(extent))
        where = tuple(slice(lo - s, hi - s) for (lo, hi), s in zip(block, dst_start, strict=True))
        out.interior[where] = recv[at : at + count].reshape(extent)
        at += count
    return out
