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

from parcomp.mapreduce.ensemble import refuse_outer
from parcomp.mapreduce.identity import call_identity
from parcomp.mapreduce.items import _agree_failures, _Plan, _Resume, _run_items, _same_items
from parcomp.mapreduce.resume import UnitError, apply, dumps, intervals, loads, mark
from parcomp.mapreduce.schedule import as_items
from parcomp.runtime.agree import agreed, raise_if_any
from parcomp.runtime.errors import CheckpointSchemaError, ConfigError
from parcomp.runtime.log import get_logger
from parcomp.runtime.ranks import mark_everywhere, resolve_comm
from parcomp.runtime.reduce import ReduceOp, resolve_op
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI
from parcomp.mapreduce.transport import (
    HEADER_BYTES,
    TWO_HOPS_FROM,
    exchange_direct,
    exchange_two_hops,
    pack_segments,
)

__all__ = ["map_reduce_keyed", "owner_of_keys"]

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_LOG = get_logger("parcomp.map")


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
    if op.ufunc is None or values.ndim != 1 or _may_overflow(op, values):
        _combine_into(table, op, keys.tolist(), values.tolist())
        return
    order = np.argsort(keys, kind="stable")
    sk, sv = keys[order], values[order]
    starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    reduced = op.ufunc.reduceat(sv, starts)
    _combine_into(table, op, sk[starts].tolist(), reduced.tolist())


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


def _agree_kinds(table: dict[Any, Any], comm: Any) -> tuple[str, str] | None:
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


def _shuffle(
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
    kinds = _agree_kinds(table, comm)
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
                _combine_arrays(out, op, got["k"], got["v"])
                continue
            data = segment[HEADER_BYTES + n * itemsize :]
            bounds = np.concatenate(([0], np.cumsum(got["n"]))).tolist()
            if outgoing.layout == "str":
                keys = [
                    data[bounds[i] : bounds[i + 1]].decode("utf-8", "surrogatepass")
                    for i in range(n)
                ]
                _combine_into(out, op, keys, got["v"].tolist())
            else:
                pairs = [pickle.loads(data[bounds[i] : bounds[i + 1]]) for i in range(n)]
                _combine_into(out, op, [k for k, _ in pairs], [v for _, v in pairs])
        del segments
        done += 1
        if on_round is not None:
            on_round(done, out)


#: The metadata key of a commit taken during a budgeted shuffle.
SHUFFLE = "parcomp.map.shuffle"


def _shuffle_state(meta: Any) -> dict[str, int] | None:
    """A committed shuffle state checked (PURE): ``{"ranks", "budget", "rounds"}`` as
    non-negative integers, or None when the commit was not taken during a shuffle.  A
    malformed one is ignored (the shuffle then starts over: nothing is lost)."""
    if not isinstance(meta, dict) or not isinstance(meta.get(SHUFFLE), dict):
        return None
    state = meta[SHUFFLE]
    fields = ("ranks", "budget", "rounds")
    if set(state) != set(fields) or not all(
        isinstance(state[f], int) and not isinstance(state[f], bool) and state[f] >= 0
        for f in fields
    ):
        return None
    return {f: state[f] for f in fields}


def _check_budget(budget: Any, comm: Any) -> int | None:
    """``max_shuffle_bytes`` checked on every rank together: a positive int, the same
    everywhere (one ``Allreduce`` of two integers), big enough for a numeric record."""
    from mpi4py import MPI

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
    # Too small a budget is told by the shuffle, from the records' real sizes: a hint
    # given here, before they exist, named a budget that then failed (96, then 1068).
    return value or None


class KeyedWork:
    """``map_reduce_keyed`` with ``checkpoint=``: unit = item; one record per rank, its
    combined table (before the shuffle) and the item ranges it covers.  A resumed rank
    combines the restored tables dealt to it; the shuffle runs once every item is in.

    With ``max_shuffle_bytes`` the shuffle goes in rounds, and a commit during it (by
    time: ``every_seconds``, default 60 s) also holds what each rank received so far, with
    the rounds delivered in the step's metadata.  Resumed on the same rank count and
    budget, each rank gets back its own table, which packs into the same rounds: those
    already delivered are skipped.  On another rank count or budget the shuffle starts
    over from the tables (owners of keys depend on the rank count).
    """

    #: Seconds between commits during a budgeted shuffle when the map gave none.
    SHUFFLE_SECONDS = 60.0

    def __init__(self, fn: Callable[[Any], Any], work: Any, op: ReduceOp, rank: int) -> None:
        self.fn, self.work, self.op, self.rank, self.units = fn, work, op, rank, work.n
        self.table: dict[Any, Any] = {}
        self.mine = np.zeros(self.units, bool)
        #: The received part of an interrupted shuffle, when this rank's record held one.
        self.received: dict[Any, Any] | None = None

    def add(self, pairs: Any) -> None:
        keys, values = _emit(pairs)
        if isinstance(keys, np.ndarray):
            _combine_arrays(self.table, self.op, keys, values)
        else:
            _combine_into(self.table, self.op, keys, values)

    def load(self, blobs: dict[int, bytes], rank: int, size: int, where: str) -> np.ndarray:
        covered = np.zeros(self.units, bool)
        for key, blob in blobs.items():
            record = loads(blob, where, f"table {key}")
            if not (
                isinstance(record, tuple)
                and len(record) in (2, 3)
                and isinstance(record[1], dict)
                and (len(record) == 2 or isinstance(record[2], dict))
            ):
                raise CheckpointSchemaError(f"{where}: progress table {key} is malformed")
            ranges, table = record[:2]
            mark(covered, ranges, where)
            if key % size == rank:
                mark(self.mine, ranges, where)
                _combine_into(self.table, self.op, list(table), list(table.values()))
                if len(record) == 3 and len(blobs) == size:  # its own record, same ranks
                    self.received = record[2]
        return covered

    def shuffle(self, committer: Any, op: ReduceOp, comm: Any, budget: int | None) -> dict:
        """The shuffle of the committed tables, resumed and committed by rounds (above)."""
        skip, received = 0, None
        state = _shuffle_state(committer.saved_meta)
        if (
            state is not None
            and state["ranks"] == comm.Get_size()
            and state["budget"] == (budget or 0)
            and self.received is not None
        ):
            skip, received = state["rounds"], self.received
        if skip and comm.Get_rank() == 0:
            _LOG.info("resuming the shuffle after %d delivered round(s)", skip)
        seconds = committer.every_seconds or self.SHUFFLE_SECONDS

        def on_round(done: int, out: dict[Any, Any]) -> None:
            meta = {SHUFFLE: {"ranks": comm.Get_size(), "budget": budget or 0, "rounds": done}}
            committer.maybe_commit(
                lambda: {self.rank: dumps((intervals(self.mine), self.table, out))}, meta, seconds
            )

        return _shuffle(
            self.table, op, comm, budget, skip=skip, received=received,
            on_round=on_round if budget else None,
        )  # fmt: skip

    def run(self, unit: int) -> None:
        pairs = apply(self.fn, self.work, unit)
        try:
            self.add(pairs)
        except Exception as exc:
            raise UnitError(unit, f"combining the pairs of item {unit}", exc) from exc
        self.mine[unit] = True

    def records(self) -> dict[int, bytes]:
        return {self.rank: dumps((intervals(self.mine), self.table))}

    def held(self) -> np.ndarray:
        return self.mine.copy()

    def recover(
        self,
        blobs: dict[int, bytes],
        dead: set[int],
        old_size: int,
        rank: int,
        size: int,
        exact: bool,
        where: str,
    ) -> np.ndarray:
        """As :meth:`parcomp.mapreduce.resume.FoldWork.recover`, with tables."""
        self.rank = rank
        if not exact:
            self.table = {}
            self.mine[:] = False
            return self.load(blobs, rank, size, where)
        return self.load(
            {k: b for k, b in blobs.items() if k % old_size in dead}, rank, size, where
        )


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
    checkpoint: Any = None,
    every_items: int | None = None,
    every_seconds: float | None = None,
    resume: str = "yes",
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
    checkpoint, every_items, every_seconds, resume
        As for :func:`parcomp.map`.  What is committed: each rank's combined table (before
        the shuffle) with the item ranges it covers; a rerun skips the items committed and
        runs the shuffle once they are all in (a kill during the shuffle redoes the shuffle,
        not the map).

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
    refuse_outer(comm)
    budget = _check_budget(max_shuffle_bytes, comm)
    op = resolve_op(reduce)
    rounds = _Resume(checkpoint, every_items, every_seconds, resume, schedule, items, comm)
    with agreed(comm):
        work = as_items(items)
    if checkpoint is not None:
        _same_items(work, comm)
        job = KeyedWork(mapper, work, op, comm.Get_rank())
        reducer = reduce.name if isinstance(reduce, ReduceOp) else reduce
        found: dict[str, Any] = {}
        comm = rounds.run(
            job, comm, call_identity("map_reduce_keyed", items, mapper, reducer), progress,
            then=lambda committer, comm: found.setdefault(
                "owned", job.shuffle(committer, op, comm, budget)
            ),
        )  # fmt: skip
        return _gather(found["owned"], comm, root)
    plan = _Plan(work, comm, schedule, chunksize, False, progress)
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
    return _gather(_shuffle(table, op, comm, budget), comm, root)


def _gather(owned: dict[Any, Any], comm: Any, root: int | None) -> dict[Any, Any] | None:
    """The owned tables as one dict on ``root``, or each rank's own (``root=None``)."""
    if root is None:
        return owned
    parts = comm.gather(owned, root=root)
    if parts is None:
        return None
    merged: dict[Any, Any] = {}
    for part in parts:
        merged.update(part)
    return merged
