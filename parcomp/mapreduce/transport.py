"""How the keyed shuffle moves bytes between ranks (COMMUNICATES: collectives over the
communicator given): packed segments per destination, then one ``Alltoallv`` of bytes
(:func:`exchange_direct`), or, from :data:`TWO_HOPS_FROM` ranks on, two hops through a
square grid of ranks (:func:`hop_plan`, PURE; :func:`exchange_two_hops`), so that no rank
sends to more than about 2 sqrt(p) others.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.runtime.subcomm import comm_cache

if TYPE_CHECKING:  # pragma: no cover
    pass


HEADER_BYTES = np.dtype(np.int64).itemsize


def pack_segments(
    records: np.ndarray, counts: np.ndarray, blob: bytes, itemsize: int
) -> tuple[np.ndarray, np.ndarray]:
    """One byte segment per destination rank: ``[number of records][records][their
    bytes]`` (nothing for a rank that gets no record); the concatenation and the sizes."""
    sizes = np.where(counts[:, 0] > 0, HEADER_BYTES + counts[:, 0] * itemsize + counts[:, 1], 0)
    out = np.empty(int(sizes.sum()), np.uint8)
    raw = records.view(np.uint8)
    data = np.frombuffer(blob, np.uint8)
    at = r_at = b_at = 0
    for dest in np.flatnonzero(sizes).tolist():
        n, nb = int(counts[dest, 0]), int(counts[dest, 1])
        out[at : at + HEADER_BYTES] = np.frombuffer(np.int64(n).tobytes(), np.uint8)
        at += HEADER_BYTES
        out[at : at + n * itemsize] = raw[r_at : r_at + n * itemsize]
        at += n * itemsize
        r_at += n * itemsize
        out[at : at + nb] = data[b_at : b_at + nb]
        at += nb
        b_at += nb
    return out, sizes.astype(np.int64)


def alltoallv_bytes(
    comm: Any, send: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bytes ``sizes[d]`` to each rank ``d``: what arrived, and how much from each rank."""
    from mpi4py import MPI

    recv_sizes = np.empty_like(sizes)
    comm.Alltoall(sizes, recv_sizes)
    sdispl = np.cumsum(sizes) - sizes
    rdispl = np.cumsum(recv_sizes) - recv_sizes
    recv = np.empty(int(recv_sizes.sum()), np.uint8)
    comm.Alltoallv([send, (sizes, sdispl), MPI.BYTE], [recv, (recv_sizes, rdispl), MPI.BYTE])
    return recv, recv_sizes


#: From this many ranks on, the shuffle goes in two hops through groups of about
#: sqrt(p) ranks (:func:`exchange_two_hops`); below, one ``Alltoallv``.
TWO_HOPS_FROM = 64


def exchange_direct(comm: Any, send: np.ndarray, sizes: np.ndarray) -> list[tuple[int, bytes]]:
    """Segments to their destinations with one ``Alltoall`` and one ``Alltoallv`` (each
    rank sends ``p - 1`` messages); ``(source, segment)`` in the order of the sources."""
    recv, recv_sizes = alltoallv_bytes(comm, send, sizes)
    out, at = [], 0
    for src, n in enumerate(recv_sizes.tolist()):
        if n:
            out.append((src, recv[at : at + n].tobytes()))
            at += n
    return out


def hop_plan(p: int, r: int) -> tuple[list[int], list[int], list[int]]:
    """Rank ``r``'s part in the two-hop shuffle over ``p`` ranks (PURE; see
    :class:`Hops`): the group of every rank, the ranks ``r`` relays to in hop 2, and the
    relays it receives from in hop 2 (one per group, its own group's included).

    ``ceil(p / ceil(sqrt(p)))`` groups of consecutive ranks, their sizes differing by at
    most one, so that no relay serves many more groups than the others.
    """
    ngroups = -(-p // (math.isqrt(p - 1) + 1)) if p > 1 else 1
    bounds = [A * p // ngroups for A in range(ngroups + 1)]
    group_of = [A for A in range(ngroups) for _ in range(bounds[A + 1] - bounds[A])]
    mine = group_of[r]
    size_mine = bounds[mine + 1] - bounds[mine]
    index = r - bounds[mine]
    served = [G for G in range(ngroups) if G % size_mine == index]
    dests = [t for G in served for t in range(bounds[G], bounds[G + 1])]
    sources = [bounds[A] + mine % (bounds[A + 1] - bounds[A]) for A in range(ngroups)]
    return group_of, dests, sources


class Hops:
    """The communicators of the two-hop shuffle over ``comm`` (made once per communicator).

    Ranks form about ``sqrt(p)`` groups of consecutive ranks (:func:`hop_plan`).  The
    member with index ``G % len(A)`` of group ``A`` relays everything that group ``A``
    sends to group ``G``.  Hop 1 stays in the group (an ``Alltoallv`` on a
    group communicator: ``g - 1`` messages); hop 2 goes from each relay to the ranks of
    the groups it serves, on a distributed-graph communicator (``Neighbor_alltoallv``:
    about ``p / g`` messages).  About ``2 sqrt(p)`` messages per rank instead of
    ``p - 1``; every byte travels twice.
    """

    def __init__(self, comm: Any) -> None:
        p, r = comm.Get_size(), comm.Get_rank()
        self.group_of, self.dests, self.sources = hop_plan(p, r)
        self.group = comm.Split(self.group_of[r], r)
        self.graph = comm.Create_dist_graph_adjacent(self.sources, self.dests, reorder=False)

    def relay(self, dest: int) -> int:
        """The group-communicator rank that relays this rank's records for ``dest``."""
        return self.group_of[dest] % self.group.Get_size()


def hops_of(comm: Any) -> Hops:

    cache = comm_cache(comm)
    hops = cache.get("keyed.hops")
    if hops is None:
        hops = Hops(comm)
        cache["keyed.hops"] = hops
        cache["keyed.hops.group"] = hops.group  # communicators here are freed with comm
        cache["keyed.hops.graph"] = hops.graph
    return hops


def exchange_two_hops(comm: Any, send: np.ndarray, sizes: np.ndarray) -> list[tuple[int, bytes]]:
    """Segments to their destinations in two hops (:class:`Hops`); ``(source, segment)``
    in the order of the sources, as :func:`exchange_direct` returns them."""
    from mpi4py import MPI

    hops = hops_of(comm)
    gsize = hops.group.Get_size()
    # hop 1: [destination][length][segment] to the relay of each destination's group
    parts: list[list[bytes]] = [[] for _ in range(gsize)]
    at = 0
    for dest, n in enumerate(sizes.tolist()):
        if n:
            head = np.array([dest, n], np.int64).tobytes()
            parts[hops.relay(dest)].append(head + send[at : at + n].tobytes())
            at += n
    blobs = [b"".join(x) for x in parts]
    got, got_sizes = alltoallv_bytes(
        hops.group,
        np.frombuffer(b"".join(blobs), np.uint8),
        np.array([len(b) for b in blobs], np.int64),
    )
    # hop 2: for each rank served, [source][length][segment] per source
    base = comm.Get_rank() - hops.group.Get_rank()
    forward: dict[int, list[bytes]] = {t: [] for t in hops.dests}
    at = 0
    for member, total in enumerate(got_sizes.tolist()):
        end = at + total
        while at < end:
            dest, n = np.frombuffer(got[at : at + 16].tobytes(), np.int64).tolist()
            head = np.array([base + member, n], np.int64).tobytes()
            forward[dest].append(head + got[at + 16 : at + 16 + n].tobytes())
            at += 16 + n
    out_blobs = [b"".join(forward[t]) for t in hops.dests]
    out_sizes = np.array([len(b) for b in out_blobs], np.int64)
    in_sizes = np.empty(len(hops.sources), np.int64)
    # counts given explicitly: mpi4py infers them from the buffers, which fails for a
    # relay that serves no rank (out-degree 0)
    hops.graph.Neighbor_alltoall([out_sizes, 1, MPI.INT64_T], [in_sizes, 1, MPI.INT64_T])
    sbuf = np.frombuffer(b"".join(out_blobs), np.uint8)
    rbuf = np.empty(int(in_sizes.sum()), np.uint8)
    sdispl = np.cumsum(out_sizes) - out_sizes  # as long as the sizes, even when empty
    rdispl = np.cumsum(in_sizes) - in_sizes
    hops.graph.Neighbor_alltoallv(
        [sbuf, (out_sizes, sdispl), MPI.BYTE], [rbuf, (in_sizes, rdispl), MPI.BYTE]
    )
    segments = []
    at = 0
    while at < len(rbuf):
        src, n = np.frombuffer(rbuf[at : at + 16].tobytes(), np.int64).tolist()
        segments.append((src, rbuf[at + 16 : at + 16 + n].tobytes()))
        at += 16 + n
    segments.sort(key=lambda item: item[0])  # the order of the direct exchange
    return segments
