"""Redistribution of a block-distributed array from one process grid to another.

:func:`redistribute_plan` and :func:`pencil_dims` are PURE: from two
:class:`~parcomp.grid.partition.Partition` objects of the same global shape and rank count they
say which block of whose data goes to whom, in global index ranges.  :class:`Redistribution`
COMMUNICATES: it turns a plan into committed MPI subarray datatypes over the two local
buffers (ghost cells skipped) and moves the data in one ``MPI_Alltoallw``: nothing is
pickled, nothing is packed in Python.

A redistribution between two *pencils* (one axis whole on every rank) is the transpose
of a distributed FFT (:mod:`parcomp.arrays.fft`), as in mpi4py-fft and P3DFFT.  The same engine
moves an array between any two grids, e.g. from a 2x2 block grid to 4 slabs.

Transport choice, measured (``bench/redistribute.py``, BENCHMARKS.md): ``alltoallw``
(subarray datatypes, MPI packs) and ``alltoallv`` (NumPy packs each peer's block into one
contiguous buffer, ``MPI_Alltoallv``, unpack) are both available; the default is the one
the benchmark found faster here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from parcomp.grid.halo import check_halo
from parcomp.grid.partition import Partition, dims_create, per_axis
from parcomp.runtime.agree import agreed, raise_if_differ
from parcomp.runtime.cache import cache_on
from parcomp.runtime.errors import ConfigError, ParcompError, RankCountError, ShapeError
from parcomp.runtime.ranks import mpi_datatype

__all__ = [
    "Transfer",
    "RedistPlan",
    "redistribute_plan",
    "pencil_dims",
    "Redistribution",
    "METHODS",
    "DEFAULT_METHOD",
    "redistribute_array",
]

#: Transports: subarray datatypes in one ``Alltoallw``, or NumPy packing and ``Alltoallv``.
METHODS = ("alltoallw", "alltoallv")
#: The default transport (chosen by ``bench/redistribute.py``; see BENCHMARKS.md).
DEFAULT_METHOD = "alltoallw"

Region = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Transfer:
    """One block of a redistribution, seen from one rank.

    Attributes
    ----------
    peer : int
        The other rank (the receiver for a send, the sender for a receive; may be itself).
    region : tuple of (int, int)
        Global half-open index range per axis of the block that moves.
    """

    peer: int
    region: Region


@dataclass(frozen=True)
class RedistPlan:
    """What one rank sends and receives in a redistribution (sorted by peer; no empties)."""

    sends: tuple[Transfer, ...]
    recvs: tuple[Transfer, ...]


def _axis_blocks(n: int, d: int, lo: int, hi: int) -> list[tuple[int, tuple[int, int]]]:
    """Blocks of ``n`` cells over ``d`` parts that meet ``[lo, hi)``: (index, overlap)."""
    if hi <= lo:
        return []
    base, extra = divmod(n, d)
    big = extra * (base + 1)

    def index_of(i: int) -> int:
        return i // (base + 1) if i < big else extra + (i - big) // base

    out = []
    for c in range(index_of(lo), index_of(hi - 1) + 1):
        start = c * base + min(c, extra)
        stop = start + base + (1 if c < extra else 0)
        out.append((c, (max(lo, start), min(hi, stop))))
    return out


def _check_pair(src: Partition, dst: Partition) -> None:
    if src.global_shape != dst.global_shape:
        raise ShapeError(
            f"redistribution between different global shapes {src.global_shape} and "
            f"{dst.global_shape}"
        )
    if src.size != dst.size:
        raise RankCountError(
            f"redistribution between process grids of {src.size} and {dst.size} ranks "
            f"({src.dims} -> {dst.dims}); both must use the same communicator"
        )


def _transfers(mine: Region, other: Partition) -> tuple[Transfer, ...]:
    per_axis = [
        _axis_blocks(n, d, lo, hi)
        for n, d, (lo, hi) in zip(other.global_shape, other.dims, mine, strict=True)
    ]
    out = []
    for combo in _product(per_axis):
        coords = tuple(c for c, _ in combo)
        peer = other.rank_of(coords)
        assert peer is not None  # in range by construction
        out.append(Transfer(peer, tuple(r for _, r in combo)))
    out.sort(key=lambda t: t.peer)
    return tuple(out)


def _product(lists: list[list[Any]]) -> list[tuple[Any, ...]]:
    import itertools

    return list(itertools.product(*lists))


def redistribute_plan(src: Partition, dst: Partition, rank: int) -> RedistPlan:
    """Which blocks ``rank`` sends and receives when data moves from ``src`` to ``dst``.

    Parameters
    ----------
    src, dst : Partition
        The decompositions before and after (same global shape and rank count; the
        periodicity is irrelevant).
    rank : int
        The rank whose plan this is.

    Returns
    -------
    RedistPlan
        ``sends``: the parts of ``rank``'s ``src`` block, by the ``dst`` rank that owns
        them; ``recvs``: the parts of ``rank``'s ``dst`` block, by the ``src`` rank that
        owns them.  Over all ranks, the sends tile the global array exactly once, and so
        do the receives; ``rank`` A's send to B is B's receive from A.

    Raises
    ------
    ShapeError, RankCountError
        If the shapes or the rank counts differ, or ``rank`` is outside the grids.
    """
    _check_pair(src, dst)
    return RedistPlan(
        _transfers(src.local_range(rank), dst), _transfers(dst.local_range(rank), src)
    )


def pencil_dims(partition: Partition, axis: int) -> tuple[int, ...]:
    """A process grid like ``partition.dims`` with ``axis`` whole on every rank (PURE).

    If ``axis`` is already whole, the grid is kept.  Otherwise the ranks along ``axis``
    move to an axis that is whole now (the one that fits, preferring the last such axis,
    so that FFT transposes only exchange within one row of the grid); if none fits, the
    grid is chosen afresh by :func:`~parcomp.grid.partition.dims_create` with ``axis`` fixed
    to 1.

    Raises
    ------
    ShapeError
        If ``axis`` is out of range.
    RankCountError
        If no grid keeps ``axis`` whole without empty blocks (a 1-d array over more than
        one rank, or too few cells on the other axes).
    """
    ndim = partition.ndim
    if not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis!r} is out of range for a {ndim}-d array")
    axis %= ndim
    dims = list(partition.dims)
    if dims[axis] == 1:
        return tuple(dims)
    shape = partition.global_shape
    for other in reversed(range(ndim)):
        if other != axis and dims[other] == 1 and dims[axis] <= shape[other]:
            dims[other], dims[axis] = dims[axis], 1
            return tuple(dims)
    fixed: list[int | None] = [None] * ndim
    fixed[axis] = 1
    try:
        return dims_create(partition.size, shape, fixed)
    except RankCountError:
        raise RankCountError(
            f"cannot keep axis {axis} of global_shape {shape} whole on each of "
            f"{partition.size} ranks: the other axes have too few cells for that many ranks"
        ) from None


# ----------------------------------------------------------------------------- transport


def _local_start(region: Region, block: Region, halo: Sequence[int]) -> list[int]:
    return [r0 - b0 + h for (r0, _), (b0, _), h in zip(region, block, halo, strict=True)]


class Redistribution:
    """Committed datatypes for one (source layout, destination layout, dtype) triple.

    Parameters
    ----------
    src, dst : Partition
        Layouts before and after.
    src_halo, dst_halo : sequence of int
        Ghost-cell widths of the two local buffers (ghost cells are neither sent nor
        written).
    dtype : numpy dtype
        Element type (the same on both sides).
    rank : int
        This rank.
    method : str
        One of :data:`METHODS`.

    Notes
    -----
    Building it is local.  :meth:`run` is collective over the communicator the two
    partitions describe.  Objects are cached (:func:`get`) and freed at exit, before
    ``MPI_Finalize``.
    """

    def __init__(
        self,
        src: Partition,
        dst: Partition,
        src_halo: Sequence[int],
        dst_halo: Sequence[int],
        dtype: Any,
        rank: int,
        method: str = DEFAULT_METHOD,
    ) -> None:
        import numpy as np

        if method not in METHODS:
            raise ConfigError(
                f"unknown redistribution method {method!r}; expected one of {METHODS}"
            )
        self.plan = redistribute_plan(src, dst, rank)
        self.method = method
        self.dtype = np.dtype(dtype)
        self.size = src.size
        self.rank = rank
        self._src_block = src.local_range(rank)
        self._dst_block = dst.local_range(rank)
        self._src_shape = tuple(
            b - a + 2 * h for (a, b), h in zip(self._src_block, src_halo, strict=True)
        )
        self._dst_shape = tuple(
            b - a + 2 * h for (a, b), h in zip(self._dst_block, dst_halo, strict=True)
        )
        self._src_halo = tuple(src_halo)
        self._dst_halo = tuple(dst_halo)
        self._types: list[Any] = []
        if method == "alltoallw":
            self._build_w()
        else:
            self._build_v()

    # -- alltoallw: one subarray datatype per peer and direction
    def _build_w(self) -> None:

        base = mpi_datatype(self.dtype)
        p = self.size
        self._scounts = [0] * p
        self._rcounts = [0] * p
        self._stypes = [base] * p
        self._rtypes = [base] * p
        # This rank's own part is copied by NumPy, not by MPI's datatype engine: measured
        # faster (bench/redistribute.py), and it is half the data on 2 ranks.
        self._self_copy: tuple[tuple[slice, ...], tuple[slice, ...]] | None = None
        # A block that is strided in the source buffer is packed by NumPy into one scratch
        # buffer and sent contiguous (measured 1.10x faster than MPICH packing the subarray
        # type; bench/redistribute.py); blocks are received straight into place.
        self._pack: list[tuple[int, tuple[slice, ...], int, int]] = []
        offset = 0
        for t in self.plan.sends:
            sl = self._slices(t.region, self._src_block, self._src_halo)
            if t.peer == self.rank:
                self._self_copy = (sl, self._slices(t.region, self._dst_block, self._dst_halo))
                continue
            n = math.prod(b - a for a, b in t.region)
            self._pack.append((t.peer, sl, offset, n))
            offset += n
        self._pack_items = offset
        self._pcounts = [0] * p
        self._pdispls = [0] * p
        for peer, _, off, n in self._pack:
            self._pcounts[peer] = n
            self._pdispls[peer] = off * self.dtype.itemsize
        if not any(not _contiguous(sl, self._src_shape) for _, sl, _, _ in self._pack):
            for t in self.plan.sends:  # every block is contiguous: send it from where it is
                if t.peer != self.rank:
                    self._stypes[t.peer] = self._subarray(
                        base, self._src_shape, t.region, self._src_block, self._src_halo
                    )
                    self._scounts[t.peer] = 1
            self._pack = []
        for t in self.plan.recvs:
            if t.peer == self.rank:
                continue
            self._rtypes[t.peer] = self._subarray(
                base, self._dst_shape, t.region, self._dst_block, self._dst_halo
            )
            self._rcounts[t.peer] = 1
        self._displs = [0] * p

    @staticmethod
    def _slices(region: Region, block: Region, halo: tuple[int, ...]) -> tuple[slice, ...]:
        start = _local_start(region, block, halo)
        return tuple(slice(s, s + b - a) for s, (a, b) in zip(start, region, strict=True))

    def _subarray(
        self,
        base: Any,
        shape: tuple[int, ...],
        region: Region,
        block: Region,
        halo: tuple[int, ...],
    ) -> Any:
        from mpi4py import MPI

        t = base.Create_subarray(
            list(shape),
            [b - a for a, b in region],
            _local_start(region, block, halo),
            order=MPI.ORDER_C,
        )
        t.Commit()
        self._types.append(t)
        return t

    # -- alltoallv: NumPy slices, packed in peer order; this rank's part copied directly
    def _build_v(self) -> None:

        p = self.size
        self._scounts = [0] * p
        self._rcounts = [0] * p
        self._sslices = []
        self._rslices = []
        self._self_copy = None
        for t in self.plan.sends:
            sl = self._slices(t.region, self._src_block, self._src_halo)
            if t.peer == self.rank:
                self._self_copy = (sl, self._slices(t.region, self._dst_block, self._dst_halo))
                continue
            self._sslices.append((t.peer, sl))
            self._scounts[t.peer] = math.prod(b - a for a, b in t.region)
        for t in self.plan.recvs:
            if t.peer == self.rank:
                continue
            self._rslices.append((t.peer, self._slices(t.region, self._dst_block, self._dst_halo)))
            self._rcounts[t.peer] = math.prod(b - a for a, b in t.region)
        self._sdispls = _displs(self._scounts)
        self._rdispls = _displs(self._rcounts)

    def run(self, comm: Any, source: Any, dest: Any) -> None:
        """Move ``source`` (local buffer in the source layout) into ``dest`` (collective)."""
        if self.method == "alltoallw":
            if self._self_copy is not None:
                dest[self._self_copy[1]] = source[self._self_copy[0]]
            if self.size == 1:
                return
            if self._pack:
                packed = _scratch(self._pack_items * self.dtype.itemsize).view(self.dtype)
                for _, sl, off, n in self._pack:
                    shape = [x.stop - x.start for x in sl]
                    packed[off : off + n].reshape(shape)[...] = source[sl]
                comm.Alltoallw(
                    [packed, self._pcounts, self._pdispls, self._stypes],
                    [dest, self._rcounts, self._displs, self._rtypes],
                )
                return
            comm.Alltoallw(
                [source, self._scounts, self._displs, self._stypes],
                [dest, self._rcounts, self._displs, self._rtypes],
            )
            return

        if self._self_copy is not None:
            dest[self._self_copy[1]] = source[self._self_copy[0]]
        if self.size == 1:
            return
        # the process's two scratch buffers, reused (a fresh one costs its first touch)
        item = self.dtype.itemsize
        sbuf = _scratch(sum(self._scounts) * item, 0).view(self.dtype)
        rbuf = _scratch(sum(self._rcounts) * item, 1).view(self.dtype)
        for peer, sl in self._sslices:
            off, n = self._sdispls[peer], self._scounts[peer]
            sbuf[off : off + n].reshape([s.stop - s.start for s in sl])[...] = source[sl]
        base = mpi_datatype(self.dtype)
        comm.Alltoallv(
            [sbuf, self._scounts, self._sdispls, base], [rbuf, self._rcounts, self._rdispls, base]
        )
        for peer, sl in self._rslices:
            off, n = self._rdispls[peer], self._rcounts[peer]
            dest[sl] = rbuf[off : off + n].reshape([s.stop - s.start for s in sl])

    def free(self) -> None:
        """Release the datatypes (idempotent)."""
        from mpi4py import MPI

        if not MPI.Is_finalized():
            for t in self._types:
                t.Free()
        self._types = []


def _contiguous(region: tuple[slice, ...], shape: tuple[int, ...]) -> bool:
    """Whether ``buffer[region]`` is one contiguous run of a C-ordered ``shape`` buffer."""
    sizes = [x.stop - x.start for x in region]
    k = len(shape)
    while k > 0 and sizes[k - 1] == shape[k - 1]:
        k -= 1  # trailing axes taken whole
    return all(n == 1 for n in sizes[: max(k - 1, 0)])


_SCRATCH: dict[int, Any] = {}


def _scratch(nbytes: int, slot: int = 0) -> Any:
    """Reused byte buffer number ``slot`` of exactly ``nbytes`` (its storage grows, never
    shrinks; a few per process, however many redistributions are cached)."""
    import numpy as np

    buf = _SCRATCH.get(slot)
    if buf is None or buf.nbytes < nbytes:
        buf = _SCRATCH[slot] = np.empty(max(nbytes, 1), np.uint8)
    return buf[:nbytes]


def _displs(counts: list[int]) -> list[int]:
    out, total = [], 0
    for c in counts:
        out.append(total)
        total += c
    return out


def redistribute_array(
    arr: Any,
    dims: Sequence[int | None] | None,
    halo: int | Sequence[int] | None,
    method: str | None,
    out: Any,
) -> Any:
    """:meth:`parcomp.arrays.array.DistArray.redistribute` (see there; collective)."""

    key: tuple = ()
    target: Partition | None = None
    widths: tuple[int, ...] = ()
    with agreed(
        arr.comm, catch=(ParcompError, TypeError, ValueError), wrap=lambda e: ShapeError(str(e))
    ):
        chosen = method or DEFAULT_METHOD
        if chosen not in METHODS:
            raise ConfigError(
                f"unknown redistribution method {method!r}; expected one of {METHODS}"
            )
        if out is not None:
            if out is arr:
                raise ShapeError("out= must be another array than the one redistributed")
            if not isinstance(out, type(arr)):
                raise ShapeError(f"out= must be a DistArray, got {type(out).__name__}")
            if out.global_shape != arr.global_shape or out.dtype != arr.dtype:
                raise ShapeError(
                    f"out= has shape {out.global_shape} and dtype {out.dtype}; the array "
                    f"has {arr.global_shape} and {arr.dtype}"
                )
            from mpi4py import MPI

            if MPI.Comm.Compare(out.comm, arr.comm) not in (MPI.IDENT, MPI.CONGRUENT):
                raise ShapeError("out= lives on another communicator")
            if out.partition.periods != arr.partition.periods:
                raise ShapeError(
                    f"out= has periodic axes {out.partition.periods}, the array "
                    f"{arr.partition.periods}"
                )
            if dims is None:
                dims = out.partition.dims
        target = Partition.create(
            arr.global_shape,
            arr.partition.size,
            periods=arr.partition.periods,
            dims=None if dims is None else tuple(dims),
        )
        if out is not None:
            if out.partition.dims != target.dims or halo is not None:
                raise ShapeError(
                    f"out= has process grid {out.partition.dims}, the target is "
                    f"{target.dims}; with out=, give no halo (out's is used)"
                )
            widths = out.halo
        elif halo is None:
            try:
                widths = check_halo(target, arr.halo)
            except ShapeError:
                widths = (0,) * arr.ndim
        else:
            widths = check_halo(target, per_axis(halo, arr.ndim, "halo"))
        key = (target.dims, widths, chosen)
    raise_if_differ(
        key,
        arr.comm,
        lambda differ, mine, theirs: (
            "redistribute arguments differ between ranks (grid, halo, method): rank 0 has "
            f"{mine}, rank {differ[0]} has {theirs}"
        ),
    )
    assert target is not None
    if out is None:
        out = type(arr).from_layout(arr.layout.with_partition(target, widths), arr.dtype)
    comm = arr.layout.array_comm
    engine = get(comm, arr.partition, target, arr.halo, widths, arr.dtype, arr.rank, key[2])
    engine.run(comm, arr.local, out.local)
    out.spectrum = arr.spectrum
    return out


#: Redistributions kept per communicator (a :class:`~parcomp.runtime.cache.BoundedCache`
#: on it: their datatypes are freed when dropped, with the communicator, or at exit).
CACHE_SIZE = 32


def get(
    comm: Any,
    src: Partition,
    dst: Partition,
    src_halo: Sequence[int],
    dst_halo: Sequence[int],
    dtype: Any,
    rank: int,
    method: str = DEFAULT_METHOD,
) -> Redistribution:
    """A cached :class:`Redistribution` for ``comm`` (datatypes are built once per layout
    pair; local)."""
    import numpy as np

    cache = cache_on(comm, "redistributions", CACHE_SIZE, Redistribution.free)
    key = (src, dst, tuple(src_halo), tuple(dst_halo), np.dtype(dtype).str, rank, method)
    found = cache.get(key)
    if found is not None:
        return found
    return cache.put(key, Redistribution(src, dst, src_halo, dst_halo, dtype, rank, method))
