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

import pickle
import zlib
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.comm import mark_everywhere, resolve_comm
from parcomp.errors import ConfigError
from parcomp.mapreduce import _agree_failures, _Plan, _run_items
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


_KEY_BITS = {"int": 1, "float": 2, "str": 4, "object": 8}
_VALUE_BITS = {"int": 1, "float": 2, "object": 4}


def _merge_kind(bits: int, table: dict[str, int], numeric: tuple[str, str]) -> str:
    """The one kind every rank can use, from the OR of their kind bits."""
    kinds = {name for name, bit in table.items() if bits & bit}
    if len(kinds) == 1:
        return kinds.pop()
    return "float" if kinds <= set(numeric) else "object"


def _agree_kinds(table: dict[Any, Any], comm: Any) -> tuple[str, str] | None:
    """Key and value kinds common to all ranks (one ``Allreduce`` of two bit masks, not an
    ``allgather``: O(log p), not O(p)); None if no rank has a pair."""
    from mpi4py import MPI

    bits = np.zeros(2, np.int64)
    if table:
        key, value = _classify(table)
        bits[:] = _KEY_BITS[key], _VALUE_BITS[value]
    comm.Allreduce(MPI.IN_PLACE, bits, op=MPI.BOR)
    if not bits[0]:
        return None
    return (
        _merge_kind(int(bits[0]), _KEY_BITS, ("int", "float")),
        _merge_kind(int(bits[1]), _VALUE_BITS, ("int", "float")),
    )


class _Outgoing:
    """This rank's combined pairs, packed into records a budget's worth at a time.

    Numeric keys and values travel as 16-byte records ``(key, value)``; string keys as
    ``(length, value)`` records plus the UTF-8 bytes; anything else as ``(length,)``
    records plus one pickle of ``(key, value)`` each.  Records are packed only when they
    are about to be sent (:meth:`pull`), so the packed form of the whole table never
    exists at once when there is a budget.
    """

    def __init__(self, table: dict[Any, Any], kinds: tuple[str, str], size: int) -> None:
        key_kind, value_kind = kinds
        self.size = size
        self.layout = "object" if "object" in kinds else ("str" if key_kind == "str" else "numeric")
        vdt = np.int64 if value_kind == "int" else np.float64
        kdt = np.int64 if key_kind == "int" else np.float64
        if self.layout == "numeric":
            self.dtype = np.dtype([("k", kdt), ("v", vdt)])
        elif self.layout == "str":
            self.dtype = np.dtype([("n", np.int64), ("v", vdt)])
        else:
            self.dtype = np.dtype([("n", np.int64)])
        self.key_dtype, self.value_dtype = kdt, vdt
        self._keys = iter(table.keys())
        self._values = iter(table.values())
        self._left = len(table)
        # pending: packed but not yet sent
        self.recs = np.empty(0, self.dtype)
        self.owners = np.empty(0, np.int64)
        self.pieces: list[bytes] = []
        self.nbytes = np.empty(0, np.int64)

    @property
    def exhausted(self) -> bool:
        return self._left == 0

    @property
    def held(self) -> int:
        return int(self.nbytes.sum())

    def pull(self, want: float) -> None:
        """Pack more pairs until about ``want`` bytes are pending (all, if infinite)."""
        while self._left and self.held < want:
            room = want - self.held
            if self.layout == "numeric":
                n = self._left if room == float("inf") else max(1, int(room) // 16)
            else:
                n = self._left if room == float("inf") else max(1, min(4096, int(room) // 64))
            n = min(n, self._left)
            self._left -= n
            self._pack(n)

    def _pack(self, n: int) -> None:
        recs = np.empty(n, self.dtype)
        if self.layout == "numeric":
            recs["k"] = np.fromiter(islice(self._keys, n), self.key_dtype, n)
            recs["v"] = np.fromiter(islice(self._values, n), self.value_dtype, n)
            owners = owner_of_keys(recs["k"], self.size)
            sizes = np.full(n, self.dtype.itemsize, np.int64)
            pieces: list[bytes] = []
        elif self.layout == "str":
            keys = list(islice(self._keys, n))
            pieces = [k.encode() for k in keys]
            recs["n"] = [len(b) for b in pieces]
            recs["v"] = np.fromiter(islice(self._values, n), self.value_dtype, n)
            owners = owner_of_keys(keys, self.size)
            sizes = recs["n"] + self.dtype.itemsize
        else:
            keys = list(islice(self._keys, n))
            values = list(islice(self._values, n))
            pieces = [
                pickle.dumps((k, v), protocol=pickle.HIGHEST_PROTOCOL)
                for k, v in zip(keys, values, strict=True)
            ]
            recs["n"] = [len(b) for b in pieces]
            owners = np.array(
                [zlib.crc32(repr(k).encode()) % self.size for k in keys], dtype=np.int64
            )
            sizes = recs["n"] + self.dtype.itemsize
        self.recs = np.concatenate((self.recs, recs))
        self.owners = np.concatenate((self.owners, owners))
        self.nbytes = np.concatenate((self.nbytes, sizes))
        self.pieces.extend(pieces)

    def take(self, cap: float) -> tuple[np.ndarray, np.ndarray, bytes, np.ndarray]:
        """Up to ``cap`` bytes of pending records for each rank, ordered by rank.

        Returns the records, the number of records and of blob bytes for each rank, the
        blob.  What does not fit stays pending for the next round.
        """
        order = np.argsort(self.owners, kind="stable")
        owners = self.owners[order]
        sizes = self.nbytes[order]
        ends = np.cumsum(sizes)
        group_start = np.searchsorted(owners, owners, side="left")
        before = np.concatenate(([0], ends))[group_start]
        chosen = (ends - before) <= cap
        send, keep = order[chosen], order[~chosen]
        counts = np.bincount(self.owners[send], minlength=self.size).astype(np.int64)
        blob_counts = np.zeros(self.size, np.int64)
        blob = b""
        if self.pieces:
            lengths = self.recs["n"][send]
            blob_counts = np.bincount(
                self.owners[send], weights=lengths, minlength=self.size
            ).astype(np.int64)
            blob = b"".join([self.pieces[i] for i in send.tolist()])
            self.pieces = [self.pieces[i] for i in keep.tolist()]
        records = self.recs[send]
        self.recs, self.owners, self.nbytes = self.recs[keep], self.owners[keep], self.nbytes[keep]
        return records, np.stack((counts, blob_counts), axis=1), blob, counts

    def largest(self) -> int:
        return int(self.nbytes.max()) if len(self.nbytes) else 0


def _exchange_bytes(
    comm: Any, send: Any, counts: np.ndarray, recv_counts: np.ndarray
) -> bytes | np.ndarray:
    from mpi4py import MPI

    sdispl = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rdispl = np.concatenate(([0], np.cumsum(recv_counts)[:-1]))
    recv = np.empty(int(recv_counts.sum()), np.uint8)
    comm.Alltoallv([send, (counts, sdispl), MPI.BYTE], [recv, (recv_counts, rdispl), MPI.BYTE])
    return recv


def _shuffle(
    table: dict[Any, Any], op: ReduceOp, comm: Any, budget: int | None = None
) -> dict[Any, Any]:
    """Send every pair to the rank owning its key; reduce what arrives per key.

    With a ``budget`` (bytes), the exchange goes in rounds: each round a rank packs at
    most ``budget / 2`` bytes of records and sends at most ``budget / (2 p)`` bytes to
    each rank, so it also receives at most ``budget / 2``.  Per round: one ``Allreduce``
    (is anything left anywhere, and does every record fit), one ``Alltoall`` of counts,
    one or two ``Alltoallv`` of bytes.  What arrives is reduced into the result before
    the next round.
    """
    from mpi4py import MPI

    size = comm.Get_size()
    out: dict[Any, Any] = {}
    kinds = _agree_kinds(table, comm)
    if kinds is None:
        return out
    outgoing = _Outgoing(table, kinds, size)
    half = float("inf") if budget is None else budget / 2
    cap = half / size
    state = np.zeros(2, np.int64)
    while True:
        outgoing.pull(half)
        state[0] = 0 if outgoing.exhausted and not len(outgoing.owners) else 1
        state[1] = outgoing.largest() if budget is not None else 0
        comm.Allreduce(MPI.IN_PLACE, state, op=MPI.MAX)
        if budget is not None and state[1] > cap:
            need = 2 * size * int(state[1])
            raise mark_everywhere(
                ConfigError(
                    f"max_shuffle_bytes={budget} is too small for one record: with {size} "
                    f"rank(s) a round sends at most max_shuffle_bytes / (2 p) = {int(cap)} "
                    f"byte(s) to each rank, and a record takes {int(state[1])}; use "
                    f"max_shuffle_bytes >= {need}"
                ),
                comm,
            )
        if not state[0]:
            return out
        records, counts, blob, _ = outgoing.take(cap)
        recv_counts = np.empty_like(counts)
        comm.Alltoall(counts, recv_counts)
        itemsize = outgoing.dtype.itemsize
        raw = _exchange_bytes(
            comm, records.view(np.uint8), counts[:, 0] * itemsize, recv_counts[:, 0] * itemsize
        )
        got = np.frombuffer(raw, outgoing.dtype)
        del records, raw
        if outgoing.layout == "numeric":
            _combine_arrays(out, op, got["k"], got["v"])
            continue
        data = _exchange_bytes(
            comm, np.frombuffer(blob, np.uint8), counts[:, 1], recv_counts[:, 1]
        ).tobytes()
        del blob
        bounds = np.concatenate(([0], np.cumsum(got["n"]))).tolist()
        if outgoing.layout == "str":
            keys = [data[bounds[i] : bounds[i + 1]].decode() for i in range(len(got))]
            _combine_into(out, op, keys, got["v"].tolist())
        else:
            pairs = [pickle.loads(data[bounds[i] : bounds[i + 1]]) for i in range(len(got))]
            _combine_into(out, op, [k for k, _ in pairs], [v for _, v in pairs])


def _check_budget(budget: Any, comm: Any) -> int | None:
    """``max_shuffle_bytes`` checked on every rank together: a positive int, the same
    everywhere (one ``Allreduce`` of two integers), big enough for a numeric record."""
    from mpi4py import MPI

    from parcomp.comm import raise_if_any

    size = comm.Get_size()
    error: Exception | None = None
    value = 0
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= 0:
            error = ConfigError(
                f"max_shuffle_bytes must be a positive number of bytes or None, got {budget!r}"
            )
        else:
            value = int(budget)
    raise_if_any(error, comm)
    both = np.array([value, -value], np.int64)
    comm.Allreduce(MPI.IN_PLACE, both, op=MPI.MAX)
    if both[0] != -both[1]:
        raise mark_everywhere(
            ConfigError(
                "max_shuffle_bytes differs between ranks (from "
                f"{-int(both[1]) or None} to {int(both[0]) or None}); pass the same on every rank"
            ),
            comm,
        )
    if value and value < 2 * size * 16:
        raise mark_everywhere(
            ConfigError(
                f"max_shuffle_bytes={value} is too small for one record: with {size} rank(s) "
                f"a round sends at most max_shuffle_bytes / (2 p) = {value // (2 * size)} "
                f"byte(s) to each rank, and a record takes at least 16; use "
                f"max_shuffle_bytes >= {2 * size * 16}"
            ),
            comm,
        )
    return value or None


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
    max_shuffle_bytes: int | None = None,
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
    max_shuffle_bytes : int, optional
        Memory budget of the shuffle, per rank: the pairs travel in rounds, and no rank
        holds more than about this many bytes of packed outgoing plus incoming records at
        once (half each; a rank sends at most ``max_shuffle_bytes / (2 p)`` bytes to each
        rank per round).  Default: everything in one round.  The same on every rank.
        The budget covers the shuffle; ``root`` then gathers the whole result on one
        rank, so keep ``root=None`` when the result is large too.

    Returns
    -------
    dict or None

    Raises
    ------
    TaskError
        On every rank, if the mapper raised on any rank.
    ConfigError
        On every rank, if ``max_shuffle_bytes`` is not a positive integer, differs
        between ranks, or is too small for one record (the message gives the least that
        works: ``2 p`` times the largest record).

    Notes
    -----
    Collective over `comm`: call on all ranks.  Memory per rank is the number of distinct
    keys it sees, not the number of pairs.  Each key's values are reduced in the order
    they arrive: by source rank within a round, round after round.  Integer results do
    not depend on the budget; floating-point sums may differ from the unbudgeted ones in
    the last bits, since a budget changes which round a rank's partial sum arrives in.
    """
    comm = resolve_comm(comm)
    budget = _check_budget(max_shuffle_bytes, comm)
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
    _agree_failures(failure, comm, exc)
    owned = _shuffle(table, op, comm, budget)
    if root is None:
        return owned
    parts = comm.gather(owned, root=root)
    if parts is None:
        return None
    merged: dict[Any, Any] = {}
    for part in parts:
        merged.update(part)
    return merged
