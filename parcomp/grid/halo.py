"""Halo exchange: a pure plan (which slab goes where) and its MPI transport.

``halo_plan`` is PURE: from ``(partition, rank, halo, corners)`` it lists the messages of
one exchange, in local-buffer coordinates.  ``HaloExchange`` COMMUNICATES: it turns a plan
into committed MPI subarray datatypes and persistent requests over one buffer, once, and
then every exchange is ``Startall`` + ``Waitall``: non-blocking with all neighbours at once,
no pickling, no packing copies in Python, nothing allocated per step.

Layout: a local buffer has ``halo[i]`` ghost cells on both sides of axis ``i``; the block
owned by the rank (the interior) is ``buffer[h0:h0+n0, h1:h1+n1, ...]``.  For a neighbour
at grid offset ``o`` (each component -1, 0 or +1), the rank sends the ``h``-deep slab of its
interior next to that side and receives the matching ghost slab.  Faces are the offsets
with one non-zero component; with ``corners=True`` the edges and corners (3**ndim - 1
neighbours in all) are exchanged too, as 9-point and 27-point stencils need.

Messages are tagged with their direction, the offset in base 3 (at most ``3**ndim - 1``),
so two messages between the same pair of ranks (a periodic axis with one or two ranks
along it) never match each other.  Exchanges run on a communicator private to halo
exchange (:mod:`parcomp.runtime.subcomm`); exchanges of different arrays on it are told apart by
MPI's non-overtaking order, since every rank starts them in the same order.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parcomp.grid.partition import Partition
from parcomp.runtime.errors import CollectiveError, ShapeError
from parcomp.runtime.ranks import mpi_datatype

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from mpi4py import MPI

__all__ = [
    "HaloMessage",
    "halo_plan",
    "check_halo",
    "direction_index",
    "largest_tag",
    "HaloExchange",
    "ExchangeStats",
    "STATS",
]


class ExchangeStats:
    """Counts of what halo exchanges started in this process (for benchmarks and tests).

    Attributes
    ----------
    messages : int
        Messages sent (one per neighbour per exchange, however many fields it carries;
        a rank that is its own neighbour along a periodic axis copies, sends nothing).
    exchanges : int
        Exchanges started that had a neighbour (another rank or itself).
    """

    __slots__ = ("exchanges", "messages")

    def __init__(self) -> None:
        self.messages = 0
        self.exchanges = 0

    def reset(self) -> None:
        """Set both counts to zero."""
        self.messages = 0
        self.exchanges = 0


#: Process-wide counts of halo messages and exchanges (see :class:`ExchangeStats`).
STATS = ExchangeStats()


def largest_tag(ndim: int) -> int:
    """The largest tag an ``ndim``-d exchange uses: ``3**ndim - 1`` (PURE)."""
    return 3**ndim - 1


@dataclass(frozen=True)
class HaloMessage:
    """One message of a halo exchange, seen from the rank that owns the plan.

    Attributes
    ----------
    offset : tuple of int
        Grid offset of the neighbour.
    neighbor : int
        Its rank.
    send : tuple of slice
        Region of the local buffer sent to it (interior cells next to that side).
    recv : tuple of slice
        Region of the local buffer filled from it (ghost cells on that side).
    send_tag, recv_tag : int
        Direction indices (before adding the array's tag base).
    """

    offset: tuple[int, ...]
    neighbor: int
    send: tuple[slice, ...]
    recv: tuple[slice, ...]
    send_tag: int
    recv_tag: int


def direction_index(offset: Sequence[int]) -> int:
    """Offset (components in {-1, 0, 1}) as a base-3 number, unique per direction."""
    index = 0
    for o in offset:
        index = index * 3 + (o + 1)
    return index


def check_halo(partition: Partition, halo: Sequence[int]) -> tuple[int, ...]:
    """Validate per-axis halo widths against the smallest block; return them as a tuple.

    Raises
    ------
    ShapeError
        If a width is negative, the count of widths is wrong, or a halo is wider than the
        smallest block along its axis (a neighbour could not fill it).
    """
    widths = tuple(int(h) for h in halo)
    if len(widths) != partition.ndim:
        raise ShapeError(
            f"halo {widths} has {len(widths)} entries, global_shape {partition.global_shape} "
            f"has {partition.ndim} axes"
        )
    for axis, (h, n, d) in enumerate(
        zip(widths, partition.global_shape, partition.dims, strict=True)
    ):
        if h < 0:
            raise ShapeError(f"halo width must be >= 0, got {h} on axis {axis}")
        smallest = n // d
        if h > smallest:
            raise ShapeError(
                f"halo width {h} on axis {axis} is wider than the smallest block ({smallest} "
                f"cells) of global_shape {partition.global_shape} over process grid "
                f"{partition.dims}; use a narrower halo or fewer ranks"
            )
    return widths


def halo_plan(
    partition: Partition,
    rank: int,
    halo: Sequence[int],
    corners: bool = False,
    walls: bool = False,
) -> tuple[HaloMessage, ...]:
    """The messages ``rank`` sends and receives in one halo exchange.

    Parameters
    ----------
    partition : Partition
        The decomposition.
    rank : int
        The rank whose plan this is.
    halo : sequence of int
        Ghost-cell width per axis (validate with :func:`check_halo`).
    corners : bool
        Also exchange edges and corners.
    walls : bool
        Along an axis a message does not cross (offset 0), also carry the ghost cells
        beyond a non-periodic domain boundary (a wall: no neighbour on that side).  The
        ghost cells next to a wall hold its boundary condition; a deep-halo multi-step
        computation reads the neighbour's copy of them beside its own block (there is no
        diagonal neighbour to send them).  Sender and receiver share their position along
        that axis, so they agree on where the walls are.

    Returns
    -------
    tuple of HaloMessage
        One per neighbour direction that exists (none across a non-periodic boundary,
        none along an axis with zero halo).
    """
    shape = partition.local_shape(rank)
    messages = []
    for offset in partition.offsets(corners):
        if any(o != 0 and h == 0 for o, h in zip(offset, halo, strict=True)):
            continue
        neighbor = partition.neighbor(rank, offset)
        if neighbor is None:
            continue
        send, recv = [], []
        for axis, (o, h, n) in enumerate(zip(offset, halo, shape, strict=True)):
            if o < 0:
                send.append(slice(h, 2 * h))
                recv.append(slice(0, h))
            elif o > 0:
                send.append(slice(n, n + h))
                recv.append(slice(n + h, n + 2 * h))
            else:
                lo, hi = h, h + n
                if walls:
                    unit = [0] * len(shape)
                    unit[axis] = -1
                    if partition.neighbor(rank, unit) is None:
                        lo = 0
                    unit[axis] = 1
                    if partition.neighbor(rank, unit) is None:
                        hi = n + 2 * h
                send.append(slice(lo, hi))
                recv.append(slice(lo, hi))
        back = tuple(-o for o in offset)
        messages.append(
            HaloMessage(
                offset,
                neighbor,
                tuple(send),
                tuple(recv),
                direction_index(offset),
                direction_index(back),
            )
        )
    return tuple(messages)


def _subarray(base: Any, shape: tuple[int, ...], region: tuple[slice, ...]) -> Any:
    from mpi4py import MPI

    sizes = [s.stop - s.start for s in region]
    starts = [s.start for s in region]
    dtype = base.Create_subarray(list(shape), sizes, starts, order=MPI.ORDER_C)
    dtype.Commit()
    return dtype


def _Startall(requests: list[Any]) -> None:  # replaced by MPI's on first construction
    raise RuntimeError("no halo exchange was built")


_Waitall = _Startall
_MPIException: Any = RuntimeError


class HaloExchange:
    """Persistent halo exchange over one buffer, or several at once (COMMUNICATES).

    Parameters
    ----------
    buffer : numpy.ndarray or sequence of numpy.ndarray
        C-contiguous local buffer (interior plus ghost cells), or several of the same
        shape (any dtypes) exchanged together: one message per neighbour carries the slab
        of every buffer (an MPI struct datatype over their absolute addresses, so nothing
        is packed or copied in Python).  Buffers must stay alive and unmoved while this
        object is in use.
    plan : tuple of HaloMessage
        From :func:`halo_plan`.
    comm : mpi4py.MPI.Comm
        Communicator whose ranks the plan names.
    tag_base : int
        Added to every direction tag (0 on parcomp's private halo communicator).

    Notes
    -----
    :meth:`start` / :meth:`wait` / :meth:`exchange` are collective over the neighbours in
    the plan: every rank must call them the same number of times.
    """

    def __init__(
        self,
        buffer: np.ndarray | Sequence[np.ndarray],
        plan: tuple[HaloMessage, ...],
        comm: MPI.Comm,
        tag_base: int = 0,
    ) -> None:
        from mpi4py import MPI

        global _Startall, _Waitall, _MPIException
        _Startall, _Waitall, _MPIException = (
            MPI.Prequest.Startall,
            MPI.Request.Waitall,
            MPI.Exception,
        )
        buffers = [buffer] if hasattr(buffer, "dtype") else list(buffer)
        if not buffers:
            raise ShapeError("halo exchange needs at least one buffer")
        for b in buffers:
            if not b.flags.c_contiguous:
                raise ShapeError("halo exchange needs C-contiguous buffers")
            if b.shape != buffers[0].shape:
                raise ShapeError(
                    f"buffers exchanged together must have one shape, got {b.shape} and "
                    f"{buffers[0].shape}"
                )
        self.plan = plan
        self.fields = len(buffers)
        self._active = False
        self._types: list[Any] = []
        recvs, sends = [], []
        # A periodic axis with one rank along it makes the rank its own neighbour: those
        # ghost cells are copied in memory (what a hand-written code does), not sent.
        me = comm.Get_rank()
        by_offset = {m.offset: m for m in plan}
        self._copies: list[tuple[Any, tuple[slice, ...], tuple[slice, ...]]] = []
        for msg in plan:
            if msg.neighbor == me:
                source = by_offset[tuple(-o for o in msg.offset)].send
                self._copies += [(b, msg.recv, source) for b in buffers]
                continue
            rbuf, rtype = self._message_type(buffers, msg.recv)
            sbuf, stype = self._message_type(buffers, msg.send)
            recvs.append(comm.Recv_init([rbuf, 1, rtype], msg.neighbor, tag_base + msg.recv_tag))
            sends.append(comm.Send_init([sbuf, 1, stype], msg.neighbor, tag_base + msg.send_tag))
        self._requests = recvs + sends
        self._sends = len(sends)
        self.messages = len(sends)
        self._statuses = [MPI.Status() for _ in self._requests]
        self._finalizer = weakref.finalize(self, _free, self._requests, self._types, MPI)

    def _message_type(self, buffers: list[np.ndarray], region: tuple[slice, ...]) -> Any:
        """(buffer, committed datatype) of one message: the region of every buffer."""
        from mpi4py import MPI

        if len(buffers) == 1:
            t = _subarray(mpi_datatype(buffers[0].dtype), buffers[0].shape, region)
            self._types.append(t)
            return buffers[0], t
        parts = []
        for b in buffers:
            sub = mpi_datatype(b.dtype).Create_subarray(
                list(b.shape),
                [s.stop - s.start for s in region],
                [s.start for s in region],
                order=MPI.ORDER_C,
            )
            parts.append(sub)
        struct = MPI.Datatype.Create_struct(
            [1] * len(buffers), [MPI.Get_address(b) for b in buffers], parts
        )
        struct.Commit()
        for sub in parts:
            sub.Free()  # the struct keeps what it needs
        self._types.append(struct)
        return MPI.BOTTOM, struct

    def start(self) -> None:
        """Start all receives and sends (returns at once)."""
        if self._active:
            raise CollectiveError(
                "a halo exchange of these arrays is in progress (start_exchange without "
                "finish_exchange); call finish_exchange with the same arrays first"
            )
        for b, dst, src in self._copies:  # first: measured faster than after Startall
            b[dst] = b[src]
        if self._requests:
            from mpi4py import MPI

            MPI.Prequest.Startall(self._requests)
            STATS.messages += self._sends
        if self.plan:
            STATS.exchanges += 1
        self._active = True

    def wait(self) -> None:
        """Wait until every ghost cell of this exchange has arrived.

        A failed request surfaces from ``Waitall`` as ``ERR_IN_STATUS``; the error class of
        the request that failed (``ERR_PROC_FAILED`` when a neighbour died, under ULFM) is
        raised instead, so that in-job recovery recognises a lost peer.
        """
        if not self._active:
            raise CollectiveError(
                "no halo exchange of these arrays is in progress: finish_exchange needs the "
                "same arrays, in the same order and with the same corners, as start_exchange"
            )
        if self._requests:
            from mpi4py import MPI

            self._active = False
            try:
                MPI.Request.Waitall(self._requests, self._statuses)
            except MPI.Exception as exc:
                self._failed(exc)
        self._active = False

    def _failed(self, exc: Any) -> None:
        """Raise the error of the request that failed (see :meth:`wait`)."""
        from mpi4py import MPI

        # The requests met a failure: never free them (Open MPI aborts the job when a
        # persistent request that failed is freed, "Send error after request freed ...
        # MPI_ERRORS_ARE_FATAL"); the communicator is revoked anyway.
        self._finalizer.detach()
        if exc.Get_error_class() != MPI.ERR_IN_STATUS:
            raise exc
        inner = [st.Get_error() for st in self._statuses]
        failed = [e for e in inner if e not in (MPI.SUCCESS, MPI.ERR_PENDING)]
        raise (MPI.Exception(failed[0]) if failed else exc) from None

    def exchange(self) -> None:
        """:meth:`start` then :meth:`wait` (written out: this runs on every step)."""
        if self._active:
            raise CollectiveError(
                "a halo exchange of these arrays is in progress (start_exchange without "
                "finish_exchange); call finish_exchange with the same arrays first"
            )
        for b, dst, src in self._copies:
            b[dst] = b[src]
        requests = self._requests
        if requests:
            _Startall(requests)
            STATS.messages += self._sends
            try:
                _Waitall(requests, self._statuses)
            except _MPIException as exc:
                self._failed(exc)
        if self.plan:
            STATS.exchanges += 1

    def free(self) -> None:
        """Release the MPI requests and datatypes (also done when garbage collected)."""
        self._finalizer()


def _free(requests: list[Any], types: list[Any], MPI: Any) -> None:
    if MPI.Is_finalized():
        return
    for request in requests:
        if request:
            request.Free()
    for dtype in types:
        dtype.Free()
