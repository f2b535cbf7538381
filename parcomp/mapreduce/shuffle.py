"""The shuffle of keyed map/reduce: every pair to the rank owning its key, reduced there.

COMMUNICATES: :func:`shuffle` and :func:`agree_kinds` are collectives.

Key ``k`` belongs to rank ``hash(k) % size`` (a fixed hash: splitmix64 for integers,
CRC-32 of the UTF-8 bytes for strings; never Python's salted ``hash``).  Keys and values
travel packed in NumPy buffers (:mod:`parcomp.mapreduce.transport`): integer/float keys and
numeric values as int64/float64 records, string keys as one byte buffer plus lengths, other
types pickled per pair.  With a budget the exchange goes in rounds.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable
from itertools import islice
from typing import Any

import numpy as np

from parcomp.mapreduce.transport import (
    HEADER_BYTES,
    TWO_HOPS_FROM,
    exchange_direct,
    exchange_two_hops,
    pack_segments,
)
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.reduce import ReduceOp

__all__ = ["combine_arrays", "combine_into", "owner_of_keys", "shuffle"]

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
        # equal keys must meet: -0.0 == 0.0, and every NaN is hashed alike
        canon = keys.astype(np.float64) + 0.0
        canon[np.isnan(canon)] = np.nan
        with np.errstate(over="ignore"):
            return (_splitmix64(canon.view(np.uint64)) % np.uint64(size)).astype(np.int64)
    return np.array([_stable_hash(k) % size for k in keys], dtype=np.int64)


_HASH_MASK = (1 << 64) - 1


def _stable_hash(key: Any) -> int:
    """A hash of ``key`` that is the same in every process and equal for keys that are
    equal in Python (``0 == 0.0 == -0.0 == np.float32(0)``, ``(0, 1) == (0.0, 1)``,
    ``frozenset`` in any order).  Python's own ``hash`` is salted per process for strings
    and so for tuples and sets holding them; its hash of numbers is not, and is equal for
    equal numbers of any type (NumPy scalars included), except NaN (by identity)."""
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if isinstance(key, bytes | bytearray):
        return zlib.crc32(key) ^ 0x5BD1E995
    if isinstance(key, int | float | complex | np.number):
        if key != key:  # NaN: every NaN alike
            return 0x7FF8
        return hash(key) & _HASH_MASK
    if isinstance(key, tuple):
        h = 0x345678 + len(key)
        for item in key:
            h = ((h * 1000003) ^ _stable_hash(item)) & _HASH_MASK
        return h
    if isinstance(key, frozenset):
        return (sum(_stable_hash(item) for item in key) ^ len(key)) & _HASH_MASK
    if key is None:
        return 0x9E37
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass"))


def combine_into(table: dict[Any, Any], op: ReduceOp, keys: Any, values: Any) -> None:
    combine = op.scalar or op.combine
    get = table.get
    missing = _MISSING
    for k, v in zip(keys, values, strict=True):
        old = get(k, missing)
        table[k] = v if old is missing else combine(old, v)


_MISSING = object()


def combine_arrays(
    table: dict[Any, Any], op: ReduceOp, keys: np.ndarray, values: np.ndarray
) -> None:
    """Vectorised combine of array pairs (sum/prod/min/max via ufunc.reduceat)."""
    if len(keys) == 0:
        return
    if op.ufunc is None or values.ndim != 1 or _may_overflow(op, values):
        combine_into(table, op, keys.tolist(), values.tolist())
        return
    order = np.argsort(keys, kind="stable")
    sk, sv = keys[order], values[order]
    starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    reduced = op.ufunc.reduceat(sv, starts)
    combine_into(table, op, sk[starts].tolist(), reduced.tolist())


def _may_overflow(op: ReduceOp, values: np.ndarray) -> bool:
    """Whether reducing integer ``values`` with NumPy could wrap around (then Python's
    exact integers do it): any product, or a sum that could pass 2**62."""
    if values.dtype.kind not in "iu" or len(values) == 0:
        return False
    if op.ufunc is np.multiply:
        return True
    if op.ufunc is np.add:
        biggest = max(abs(int(values.max())), abs(int(values.min())))
        return biggest * len(values) >= 1 << 62
    return False


_INT64 = (-(1 << 63), (1 << 63) - 1)
_FLOAT_EXACT = 1 << 53


def _numeric_kind(items: Any, n: int) -> tuple[str, bool]:
    """Kind of ``n`` keys (or values): 'int' (all integers that fit int64), 'float'
    (integers and floats, every integer exact in float64), 'str', else 'object'; and
    whether an integer is too big for float64 to hold exactly (|k| > 2**53), which rules
    out 'float' when another rank has floats."""
    if n == 0:
        return "int", False
    types = {type(k) for k in items}
    if types == {str}:
        return "str", False
    ints = {t for t in types if issubclass(t, int | np.integer)}
    floats = {t for t in types if issubclass(t, float | np.floating) and t is not np.longdouble}
    if types != ints | floats:
        return "object", False
    big = False
    if ints:
        source = [k for k in items if type(k) in ints] if floats else items
        if any(issubclass(t, np.unsignedinteger) for t in ints):  # may pass int64: exact
            whole = [int(k) for k in source]
            lo, hi = min(whole), max(whole)
        else:
            lo, hi = 0, 0
            it = iter(source)
            try:  # in slices, so that no array of all the keys is made
                while len(part := np.fromiter(islice(it, 1 << 16), np.int64)):
                    lo, hi = min(lo, int(part.min())), max(hi, int(part.max()))
            except OverflowError:  # a Python int beyond int64
                return "object", False
        if lo < _INT64[0] or hi > _INT64[1]:
            return "object", False
        big = max(-lo, hi) > _FLOAT_EXACT
    if not floats:
        return "int", big
    return ("object" if big else "float"), big


def _classify(table: dict[Any, Any]) -> tuple[str, str, bool, bool]:
    """Key kind ('int', 'float', 'str', 'object'), value kind ('int', 'float',
    'object'), and whether some integer key / value is too big for float64."""
    key, key_big = _numeric_kind(table.keys(), len(table))
    value, value_big = _numeric_kind(table.values(), len(table))
    if value == "str":
        value = "object"
    return key, value, key_big, value_big


_KEY_BITS = {"int": 1, "float": 2, "str": 4, "object": 8}
_VALUE_BITS = {"int": 1, "float": 2, "object": 4}
_BIG = 64  # an integer too big for float64 somewhere


def _merge_kind(bits: int, table: dict[str, int], numeric: tuple[str, str]) -> str:
    """The one kind every rank can use, from the OR of their kind bits: integers and
    floats meet as floats only if no integer is too big to be a float64 exactly."""
    kinds = {name for name, bit in table.items() if bits & bit}
    if len(kinds) == 1:
        return kinds.pop()
    return "float" if kinds <= set(numeric) and not bits & _BIG else "object"


def agree_kinds(table: dict[Any, Any], comm: Any) -> tuple[str, str] | None:
    """Key and value kinds common to all ranks (one ``Allreduce`` of two bit masks, not an
    ``allgather``: O(log p), not O(p)); None if no rank has a pair."""
    from mpi4py import MPI

    bits = np.zeros(2, np.int64)
    if table:
        key, value, key_big, value_big = _classify(table)
        bits[:] = _KEY_BITS[key] | (_BIG * key_big), _VALUE_BITS[value] | (_BIG * value_big)
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
            pieces = [k.encode("utf-8", "surrogatepass") for k in keys]
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
            owners = np.array([_stable_hash(k) % self.size for k in keys], dtype=np.int64)
            sizes = recs["n"] + self.dtype.itemsize
        self.recs = np.concatenate((self.recs, recs))
        self.owners = np.concatenate((self.owners, owners))
        self.nbytes = np.concatenate((self.nbytes, sizes))
        self.pieces.extend(pieces)

    def take(self, cap: float) -> tuple[np.ndarray, np.ndarray, bytes]:
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
        return records, np.stack((counts, blob_counts), axis=1), blob

    def largest(self) -> int:
        return int(self.nbytes.max()) if len(self.nbytes) else 0

    def largest_of_all(self, table: dict[Any, Any]) -> int:
        """The largest record of the whole ``table``, as :meth:`_pack` would make it."""
        item = self.dtype.itemsize
        if not table:
            return 0
        if self.layout == "numeric":
            return item
        if self.layout == "str":
            return item + max(len(k.encode("utf-8", "surrogatepass")) for k in table)
        return item + max(
            len(pickle.dumps((k, v), protocol=pickle.HIGHEST_PROTOCOL)) for k, v in table.items()
        )


def shuffle(
    table: dict[Any, Any],
    op: ReduceOp,
    comm: Any,
    budget: int | None = None,
    hops: bool | None = None,
    *,
    skip: int = 0,
    received: dict[Any, Any] | None = None,
    on_round: Callable[[int, dict[Any, Any]], None] | None = None,
) -> dict[Any, Any]:
    """Send every pair to the rank owning its key; reduce what arrives per key.

    With a ``budget`` (bytes), the exchange goes in rounds: each round a rank packs at
    most ``budget / 2`` bytes of records and sends at most ``budget / (2 p)`` bytes to
    each rank, so it also receives at most ``budget / 2``.  Per round: one ``Allreduce``
    (is anything left anywhere, and does every record fit), then the records go as one
    byte segment per destination, either directly (one ``Alltoall`` of sizes, one
    ``Alltoallv``: ``p - 1`` messages per rank) or, from :data:`TWO_HOPS_FROM` ranks on
    (``hops`` forces either), in two hops through groups of about ``sqrt(p)`` ranks
    (about ``2 sqrt(p)`` messages).  What arrives is reduced, in the order of the source
    ranks, before the next round.

    A resumed shuffle (``map_reduce_keyed(checkpoint=...)``) passes the rounds already
    delivered (``skip``) and what they delivered (``received``): the same table packs into
    the same rounds, so those are packed again and dropped, and the rest goes on.
    ``on_round(rounds_done, received)`` is called after each round (collectively).
    """
    from mpi4py import MPI

    size = comm.Get_size()
    out: dict[Any, Any] = {} if received is None else received
    kinds = agree_kinds(table, comm)
    if kinds is None:
        return out
    outgoing = _Outgoing(table, kinds, size)
    two = hops if hops is not None else size >= TWO_HOPS_FROM
    exchange = exchange_two_hops if two and size > 1 else exchange_direct
    half = float("inf") if budget is None else budget / 2
    cap = half / size
    state = np.zeros(2, np.int64)
    done = 0
    while True:
        outgoing.pull(half)
        if done < skip:  # delivered before the interruption: packed again, dropped
            outgoing.take(cap)
            done += 1
            continue
        state[0] = 0 if outgoing.exhausted and not len(outgoing.owners) else 1
        state[1] = outgoing.largest() if budget is not None else 0
        comm.Allreduce(MPI.IN_PLACE, state, op=MPI.MAX)
        if budget is not None and state[1] > cap:
            # the least budget that works for every record, not only this round's: the
            # largest record of every rank's whole table (measured on this error path only)
            largest = np.array([outgoing.largest_of_all(table)], np.int64)
            comm.Allreduce(MPI.IN_PLACE, largest, op=MPI.MAX)
            need = 2 * size * int(largest[0])
            raise mark_everywhere(
                ConfigError(
                    f"max_shuffle_bytes={budget} is too small for one record: with {size} "
                    f"rank(s) a round sends at most max_shuffle_bytes / (2 p) = {int(cap)} "
                    f"byte(s) to each rank, and the largest record takes {int(largest[0])}; "
                    f"use max_shuffle_bytes >= {need}, the least that fits every record "
                    "(README: what a record costs)"
                ),
                comm,
            )
        if not state[0]:
            return out
        records, counts, blob = outgoing.take(cap)
        itemsize = outgoing.dtype.itemsize
        send, sizes = pack_segments(records, counts, blob, itemsize)
        del records, blob
        segments = exchange(comm, send, sizes)
        del send
        for _src, segment in segments:
            n = int(np.frombuffer(segment[:HEADER_BYTES], np.int64)[0])
            got = np.frombuffer(segment[HEADER_BYTES : HEADER_BYTES + n * itemsize], outgoing.dtype)
            if outgoing.layout == "numeric":
                combine_arrays(out, op, got["k"], got["v"])
                continue
            data = segment[HEADER_BYTES + n * itemsize :]
            bounds = np.concatenate(([0], np.cumsum(got["n"]))).tolist()
            if outgoing.layout == "str":
                keys = [
                    data[bounds[i] : bounds[i + 1]].decode("utf-8", "surrogatepass")
                    for i in range(n)
                ]
                combine_into(out, op, keys, got["v"].tolist())
            else:
                pairs = [pickle.loads(data[bounds[i] : bounds[i + 1]]) for i in range(n)]
                combine_into(out, op, [k for k, _ in pairs], [v for _, v in pairs])
        del segments
        done += 1
        if on_round is not None:
            on_round(done, out)
