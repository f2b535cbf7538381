"""Keyed map/reduce (MapReduce-MPI style): emit (key, value) pairs, combine, shuffle, reduce.

COMMUNICATES: :func:`map_reduce_keyed` is a collective.

1. The mapper emits pairs for each item: an iterable of ``(key, value)``, or a tuple of
   two equal-length NumPy arrays ``(keys, values)`` (the fast, vectorised form).
2. Each rank combines its pairs by key with the reducer (the combiner) before anything is
   sent, so a skewed key costs one pair per rank, not one per occurrence.
3. Shuffle: key ``k`` belongs to rank ``hash(k) % size`` (a fixed hash: splitmix64 for
   integers, CRC-32 of the UTF-8 bytes for strings; never Python's salted ``hash``).  Keys
   and values travel packed in NumPy buffers through two ``Alltoall``/``Alltoallv`` calls:
   integer/float keys and numeric values as int64/float64 arrays, string keys as one
   byte buffer plus lengths.  No per-pair pickling.  Other types (tuples as keys, arrays as
   values) fall back to one pickled ``alltoall`` of the per-rank dicts.
4. Each rank reduces the pairs it received per key.  The result is gathered to ``root``
   as one dict, or left distributed (``root=None``: each rank returns the keys it owns).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.comm import resolve_comm
from parcomp.errors import ConfigError
from parcomp.mapreduce import _Plan, _raise_failures, _run_items
from parcomp.reduce import ReduceOp, resolve_op
from parcomp.schedule import as_items
from parcomp.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["map_reduce_keyed", "owner_of_keys"]

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def owner_of_keys(keys: np.ndarray | list[str], size: int) -> np.ndarray:
    """Rank owning each key: fixed hashes, identical in every process and every run."""
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iub":
        with np.errstate(over="ignore"):
            return (_splitmix64(keys.astype(np.int64).view(np.uint64)) % np.uint64(size)).astype(
                np.int64
            )
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "f":
        with np.errstate(over="ignore"):
            return (_splitmix64(keys.astype(np.float64).view(np.uint64)) % np.uint64(size)).astype(
                np.int64
            )
    return np.array([zlib.crc32(k.encode()) % size for k in keys], dtype=np.int64)


def _combine_into(table: dict[Any, Any], op: ReduceOp, keys: Any, values: Any) -> None:
    combine = op.scalar or op.combine
    get = table.get
    missing = _MISSING
    for k, v in zip(keys, values, strict=True):
        old = get(k, missing)
        table[k] = v if old is missing else combine(old, v)


_MISSING = object()


def _combine_arrays(
    table: dict[Any, Any], op: ReduceOp, keys: np.ndarray, values: np.ndarray
) -> None:
    """Vectorised combine of array pairs (sum/prod/min/max via ufunc.reduceat)."""
    if len(keys) == 0:
        return
    if op.ufunc is None or values.ndim != 1:
        _combine_into(table, op, keys.tolist(), list(values))
        return
    order = np.argsort(keys, kind="stable")
    sk, sv = keys[order], values[order]
    starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    reduced = op.ufunc.reduceat(sv, starts)
    _combine_into(table, op, sk[starts].tolist(), reduced.tolist())


def _emit(pairs: Any) -> tuple[Any, Any]:
    """Normalise a mapper's output to (keys, values) sequences."""
    if (
        isinstance(pairs, tuple)
        and len(pairs) == 2
        and all(isinstance(p, np.ndarray) for p in pairs)
    ):
        keys, values = pairs
        if keys.shape[:1] != values.shape[:1]:
            raise ConfigError(f"mapper returned {len(keys)} keys but {len(values)} values")
        return keys, values
    keys, values = [], []
    for pair in pairs:
        k, v = pair
        keys.append(k)
        values.append(v)
    return keys, values


def _classify(table: dict[Any, Any]) -> tuple[str, str]:
    """Key kind ('int', 'float', 'str', 'object') and value kind ('int', 'float', 'object')."""
    kinds = {type(k) for k in table}
    if kinds <= {int, np.int64, np.int32, bool}:
        key = "int"
    elif kinds <= {float, np.float64, int}:
        key = "float"
    elif kinds <= {str}:
        key = "str"
    else:
        key = "object"
    vkinds = {type(v) for v in table.values()}
    if vkinds <= {int, np.int64, np.int32}:
        value = "int"
    elif vkinds <= {float, np.float64, int, np.int64}:
        value = "float"
    else:
        value = "object"
    return key, value


def _alltoallv(comm: Any, send: np.ndarray, counts: np.ndarray) -> np.ndarray:
    from mpi4py.util.dtlib import from_numpy_dtype

    recv_counts = np.empty_like(counts)
    comm.Alltoall(counts, recv_counts)
    sdispl = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rdispl = np.concatenate(([0], np.cumsum(recv_counts)[:-1]))
    recv = np.empty(int(recv_counts.sum()), dtype=send.dtype)
    mpitype = from_numpy_dtype(send.dtype)
    comm.Alltoallv([send, (counts, sdispl), mpitype], [recv, (recv_counts, rdispl), mpitype])
    return recv


def _shuffle(table: dict[Any, Any], op: ReduceOp, comm: Any) -> dict[Any, Any]:
    size = comm.Get_size()
    kinds = comm.allgather(_classify(table) if table else None)
    present = [k for k in kinds if k is not None]
    out: dict[Any, Any] = {}
    if not present:
        return out
    key_kinds = {k[0] for k in present}
    value_kinds = {k[1] for k in present}
    key_kind = (
        key_kinds.pop()
        if len(key_kinds) == 1
        else ("float" if key_kinds <= {"int", "float"} else "object")
    )
    value_kind = (
        value_kinds.pop()
        if len(value_kinds) == 1
        else ("float" if value_kinds <= {"int", "float"} else "object")
    )
    if key_kind == "object" or value_kind == "object":
        buckets: list[dict[Any, Any]] = [{} for _ in range(size)]
        for k, v in table.items():
            text = repr(k).encode()
            buckets[zlib.crc32(text) % size][k] = v
        for part in comm.alltoall(buckets):
            _combine_into(out, op, part.keys(), part.values())
        return out
    keys = list(table)
    values = np.array(
        [table[k] for k in keys], dtype=np.int64 if value_kind == "int" else np.float64
    )
    if key_kind == "str":
        owners = owner_of_keys(keys, size)
        order = np.argsort(owners, kind="stable")
        encoded = [keys[i].encode() for i in order]
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        counts = np.bincount(owners, minlength=size).astype(np.int64)
        byte_counts = np.bincount(owners[order], weights=lengths, minlength=size).astype(np.int64)
        recv_lengths = _alltoallv(comm, lengths, counts)
        recv_blob = _alltoallv(comm, blob, byte_counts).tobytes()
        recv_values = _alltoallv(comm, values[order], counts)
        bounds = np.concatenate(([0], np.cumsum(recv_lengths)))
        recv_keys = [
            recv_blob[bounds[i] : bounds[i + 1]].decode() for i in range(len(recv_lengths))
        ]
        _combine_into(out, op, recv_keys, recv_values.tolist())
        return out
    karr = np.array(keys, dtype=np.int64 if key_kind == "int" else np.float64)
    owners = owner_of_keys(karr, size)
    order = np.argsort(owners, kind="stable")
    counts = np.bincount(owners, minlength=size).astype(np.int64)
    recv_keys = _alltoallv(comm, karr[order], counts)
    recv_values = _alltoallv(comm, values[order], counts)
    _combine_arrays(out, op, recv_keys, recv_values)
    return out


@collective("map_reduce_keyed", lambda *a, comm=None, **k: comm)
def map_reduce_keyed(
    mapper: Callable[[Any], Any],
    items: Any,
    reduce: str | Callable[[Any, Any], Any] | ReduceOp = "sum",
    *,
    schedule: str = "block",
    chunksize: int | None = None,
    root: int | None = 0,
    progress: bool = False,
    comm: MPI.Comm | None = None,
) -> dict[Any, Any] | None:
    """Map items to (key, value) pairs and reduce the values of each key over all ranks.

    Parameters
    ----------
    mapper : callable
        ``mapper(item)`` returns an iterable of ``(key, value)`` pairs, or a tuple
        ``(keys, values)`` of equal-length NumPy arrays.
    items : range, sequence, ndarray or iterable
        The work; the same on every rank.
    reduce : str or callable
        Operator for the values of one key (see :func:`parcomp.map_reduce`).
    schedule, chunksize, progress, comm
        As for :func:`parcomp.map`.
    root : int or None, default 0
        Gather the whole result as one dict on ``root`` (``None`` on the other ranks); with
        ``None``, every rank returns the part it owns (keys hashed to it).

    Returns
    -------
    dict or None

    Raises
    ------
    TaskError
        On every rank, if the mapper raised on any rank.

    Notes
    -----
    Collective over `comm`: call on all ranks.  Memory per rank is the number of distinct
    keys it sees, not the number of pairs.
    """
    comm = resolve_comm(comm)
    op = resolve_op(reduce)
    plan = _Plan(as_items(items), comm, schedule, chunksize, False, progress)
    table: dict[Any, Any] = {}

    def combine(_k: int, outputs: list[Any]) -> None:
        for pairs in outputs:
            keys, values = _emit(pairs)
            if isinstance(keys, np.ndarray):
                _combine_arrays(table, op, keys, values)
            else:
                _combine_into(table, op, keys, values)

    try:
        failure, exc = _run_items(mapper, plan, combine)
    finally:
        plan.close()
    failures = comm.allgather(failure)
    _raise_failures(failures, comm.Get_size(), exc)
    owned = _shuffle(table, op, comm)
    if root is None:
        return owned
    parts = comm.gather(owned, root=root)
    if parts is None:
        return None
    merged: dict[Any, Any] = {}
    for part in parts:
        merged.update(part)
    return merged
