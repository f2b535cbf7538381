"""Moving particle records between ranks (COMMUNICATES over the particles' private
communicator): every field of the rows to move is packed into one buffer of records (a
NumPy structured dtype, sent as bytes); counts travel first.

* :func:`exchange`: ``MPI_Alltoall`` of counts, one ``MPI_Alltoallv`` (any destination);
* :func:`exchange_neighbors`: counts, then records, to the neighbours only (non-blocking
  point-to-point; the cost per rank does not grow with the rank count);
* :func:`route`: the second when every rank's movers go to its neighbours (agreed by one
  ``Allreduce``), else the first.  Both deliver in source-rank order: the same bits.
"""

from __future__ import annotations

import numpy as np

from parcomp.grid.halo import largest_tag
from parcomp.particles.plan import Particles
from parcomp.runtime.errors import ShapeError
from parcomp.runtime.subcomm import check_tags

__all__ = ["displs", "exchange", "exchange_neighbors", "neighbors", "route"]


def displs(counts: np.ndarray) -> np.ndarray:
    """Offsets of consecutive blocks of ``counts`` items (exclusive prefix sums)."""
    out = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def exchange(
    p: Particles,
    rows: dict[str, np.ndarray],
    dest: np.ndarray,
    record: np.dtype | None = None,
) -> dict[str, np.ndarray]:
    """Send row ``i`` of ``rows`` to rank ``dest[i]`` (sorted ascending); receive others'.

    ``record`` is the packed dtype of a row (default: the particles' fields).  One
    ``Alltoall`` of counts and one ``Alltoallv`` of packed records (collective).
    """
    record = p.record_dtype if record is None else record
    from mpi4py import MPI

    size = p.partition.size
    counts = np.bincount(dest, minlength=size).astype(np.int64)
    recv_counts = np.empty(size, np.int64)
    p.message_comm.Alltoall(counts, recv_counts)
    send = np.empty(dest.size, record)
    for name, values in rows.items():
        send[name] = values
    recv = np.empty(int(recv_counts.sum()), record)
    item = record.itemsize
    p.message_comm.Alltoallv(
        [send.view(np.uint8), counts * item, displs(counts) * item, MPI.BYTE],
        [recv.view(np.uint8), recv_counts * item, displs(recv_counts) * item, MPI.BYTE],
    )
    return {name: np.ascontiguousarray(recv[name]) for name in record.names}


def neighbors(p: Particles) -> list[int]:
    """The ranks next to this one (faces, edges, corners; itself across a periodic axis
    with one rank along it), sorted.  The relation is symmetric."""
    found = {p.partition.neighbor(p.rank, o) for o in p.partition.offsets(corners=True)}
    return sorted(r for r in found if r is not None)


def exchange_neighbors(
    p: Particles,
    rows: dict[str, np.ndarray],
    dest: np.ndarray,
    record: np.dtype | None = None,
) -> dict[str, np.ndarray]:
    """:func:`exchange` among neighbours only (``dest`` must hold neighbours): counts,
    then packed records, by non-blocking point-to-point messages, so that the cost per
    rank does not grow with the rank count.  Collective over the neighbours."""
    from mpi4py import MPI

    record = p.record_dtype if record is None else record
    peers = neighbors(p)
    tag = largest_tag(p.partition.ndim) + 1  # above the reverse halo's direction tags
    check_tags(tag + 1, "a particle ghost exchange")
    counts = np.array([int((dest == q).sum()) for q in peers], np.int64)
    if int(counts.sum()) != dest.size:
        raise ShapeError("particles addressed to a rank that is not a neighbour")
    rcounts = np.empty(len(peers), np.int64)
    reqs = [p.message_comm.Irecv(rcounts[i : i + 1], q, tag) for i, q in enumerate(peers)]
    reqs += [p.message_comm.Isend(counts[i : i + 1], q, tag) for i, q in enumerate(peers)]
    MPI.Request.Waitall(reqs)
    send = np.empty(dest.size, record)
    for name, values in rows.items():
        send[name] = values
    recv = np.empty(int(rcounts.sum()), record)
    sview, rview = send.view(np.uint8), recv.view(np.uint8)
    item = record.itemsize
    soff, roff = displs(counts) * item, displs(rcounts) * item
    reqs = [
        p.message_comm.Irecv(rview[roff[i] : roff[i] + rcounts[i] * item], q, tag + 1)
        for i, q in enumerate(peers)
    ]
    reqs += [
        p.message_comm.Isend(sview[soff[i] : soff[i] + counts[i] * item], q, tag + 1)
        for i, q in enumerate(peers)
    ]
    MPI.Request.Waitall(reqs)
    return {name: np.ascontiguousarray(recv[name]) for name in record.names}


def route(
    p: Particles,
    rows: dict[str, np.ndarray],
    dest: np.ndarray,
    record: np.dtype | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    """Send rows to the neighbours only when every rank's rows go to its neighbours
    (agreed by one ``Allreduce``: the usual case, with a cost per rank that does not grow
    with the rank count), else by ``Alltoall`` + ``Alltoallv``.  Both deliver in
    source-rank order, so the result is the same bits.  Returns (rows received, "neighbors"
    or "alltoall").  Collective."""
    from mpi4py import MPI

    near = np.array([bool(np.isin(dest, neighbors(p)).all())], np.bool_)
    p.comm.Allreduce(MPI.IN_PLACE, near, op=MPI.LAND)
    if near[0]:
        return exchange_neighbors(p, rows, dest, record), "neighbors"
    return exchange(p, rows, dest, record), "alltoall"
