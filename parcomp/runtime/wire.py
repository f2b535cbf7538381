"""Pickle-free collectives: byte buffers, JSON text and integers.

COMMUNICATES: every function is collective over the ``comm`` it is given.

mpi4py's lower-case collectives pickle their arguments.  After a peer died (ULFM), a
survivor can receive a truncated or stale message, and unpickling it then fails with
"invalid load key" or, worse, succeeds with garbage.  Here only typed buffers travel: a
length (an ``int64``), then the bytes (``uint8``).  Structured values go as JSON text
built locally, so the receiving side parses text, never executes a pickle.  A truncated
message raises an MPI error or a ``ValueError`` from the JSON parser, never a silent
garbage value.

The checkpoint engine (save, flush, restore on either tier) and the recovery path of
:func:`parcomp.run_resilient` use these alone.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = [
    "allgather_bytes",
    "gather_bytes",
    "bcast_bytes",
    "allgather_json",
    "gather_json",
    "bcast_json",
    "allgather_ints",
    "agree_errors",
]


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def allgather_bytes(comm: Any, data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order (``Allgather`` of lengths, ``Allgatherv``)."""
    MPI = _mpi()
    size = comm.Get_size()
    lengths = np.empty(size, np.int64)
    comm.Allgather(np.array([len(data)], np.int64), lengths)
    displs = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.empty(int(lengths.sum()), np.uint8)
    comm.Allgatherv(np.frombuffer(data, np.uint8), [out, (lengths, displs), MPI.BYTE])
    return [out[d : d + n].tobytes() for d, n in zip(displs, lengths, strict=True)]


def gather_bytes(comm: Any, data: bytes, root: int = 0) -> list[bytes] | None:
    """Every rank's ``data`` on ``root`` (None elsewhere)."""
    MPI = _mpi()
    size, rank = comm.Get_size(), comm.Get_rank()
    lengths = np.empty(size, np.int64)
    comm.Gather(np.array([len(data)], np.int64), lengths if rank == root else None, root=root)
    if rank != root:
        comm.Gatherv(np.frombuffer(data, np.uint8), None, root=root)
        return None
    displs = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.empty(int(lengths.sum()), np.uint8)
    comm.Gatherv(np.frombuffer(data, np.uint8), [out, (lengths, displs), MPI.BYTE], root=root)
    return [out[d : d + n].tobytes() for d, n in zip(displs, lengths, strict=True)]


def bcast_bytes(comm: Any, data: bytes | None, root: int = 0) -> bytes:
    """``root``'s ``data`` on every rank (``Bcast`` of the length, then of the bytes)."""
    mine = comm.Get_rank() == root
    raw = data or b""
    n = np.array([len(raw) if mine else 0], np.int64)
    comm.Bcast(n, root=root)
    buf = np.frombuffer(raw, np.uint8).copy() if mine else np.empty(int(n[0]), np.uint8)
    comm.Bcast(buf, root=root)
    return raw if mine else buf.tobytes()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=True).encode()


def allgather_json(comm: Any, value: Any) -> list[Any]:
    """Every rank's JSON-serialisable ``value``, in rank order."""
    return [json.loads(b) for b in allgather_bytes(comm, _dumps(value))]


def gather_json(comm: Any, value: Any, root: int = 0) -> list[Any] | None:
    """Every rank's JSON-serialisable ``value`` on ``root`` (None elsewhere)."""
    got = gather_bytes(comm, _dumps(value), root)
    return None if got is None else [json.loads(b) for b in got]


def bcast_json(comm: Any, value: Any, root: int = 0) -> Any:
    """``root``'s JSON-serialisable ``value`` on every rank."""
    raw = bcast_bytes(comm, _dumps(value) if comm.Get_rank() == root else None, root)
    return json.loads(raw)


def allgather_ints(comm: Any, values: Any) -> np.ndarray:
    """Every rank's ``values`` (the same count of integers everywhere): ``(size, n)`` int64."""
    mine = np.ascontiguousarray(values, np.int64).reshape(-1)
    out = np.empty((comm.Get_size(), mine.size), np.int64)
    comm.Allgather(mine, out)
    return out


def agree_errors(comm: Any, mine: str | None) -> list[str]:
    """Every rank's error message (``None`` for none): the non-empty ones, in rank order.

    One ``Allreduce`` of a flag when no rank failed; the messages travel only when one did.
    """
    MPI = _mpi()
    flag = np.array([0 if mine is None else 1], np.int64)
    comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
    if not flag[0]:
        return []
    texts = allgather_bytes(comm, b"" if mine is None else b"\x01" + mine.encode())
    return [t[1:].decode(errors="replace") for t in texts if t]
