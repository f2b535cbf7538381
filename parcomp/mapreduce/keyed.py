"""Keyed map/reduce (MapReduce-MPI style): emit (key, value) pairs, combine, shuffle, reduce.

COMMUNICATES: :func:`map_reduce_keyed` is a collective.

1. The mapper emits pairs for each item: an iterable of ``(key, value)``, or a tuple of
   two equal-length NumPy arrays ``(keys, values)`` (the fast, vectorised form).
2. Each rank combines its pairs by key with the reducer (the combiner) before anything is
   sent, so a skewed key costs one pair per rank, not one per occurrence.
3. Shuffle (:mod:`parcomp.mapreduce.shuffle`): key ``k`` belongs to rank ``hash(k) % size``
   (a fixed hash: splitmix64 for integers, CRC-32 of the UTF-8 bytes for strings; never
   Python's salted ``hash``).  Keys and values travel packed in NumPy buffers: integer/float
   keys and numeric values as int64/float64 arrays, string keys as one byte buffer plus
   lengths.  No per-pair pickling for those; other types are pickled per pair.
4. Each rank reduces the pairs it received per key.  The result is gathered to ``root``
   as one dict, or left distributed (``root=None``: each rank returns the keys it owns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.mapreduce.ensemble import refuse_outer
from parcomp.mapreduce.identity import call_identity
from parcomp.mapreduce.items import (
    _agree_failures,
    _Plan,
    _Resume,
    _run_items,
    _same_items,
    check_root,
)
from parcomp.mapreduce.records import dumps, intervals, loads, mark
from parcomp.mapreduce.schedule import as_items
from parcomp.mapreduce.works import ByRank, UnitError, apply
from parcomp.runtime.agree import agreed, raise_if_any
from parcomp.runtime.errors import CheckpointSchemaError, ConfigError
from parcomp.runtime.log import get_logger
from parcomp.runtime.ranks import mark_everywhere, resolve_comm
from parcomp.runtime.reduce import ReduceOp, resolve_op
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI
from parcomp.mapreduce.shuffle import combine_arrays, combine_into, owner_of_keys, shuffle

__all__ = ["map_reduce_keyed", "owner_of_keys"]

_LOG = get_logger("parcomp.map")


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


class KeyedWork(ByRank):
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
            combine_arrays(self.table, self.op, keys, values)
        else:
            combine_into(self.table, self.op, keys, values)

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
                combine_into(self.table, self.op, list(table), list(table.values()))
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

        return shuffle(
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

    def reset(self) -> None:
        self.table = {}


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
    check_root(root, comm)
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
            job, comm, call_identity("map_reduce_keyed", work.source, mapper, reducer), progress,
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
                combine_arrays(table, op, keys, values)
            else:
                combine_into(table, op, keys, values)

    try:
        failure, exc = _run_items(mapper, plan, combine)
    finally:
        plan.close()
    _agree_failures(failure, comm, exc)
    return _gather(shuffle(table, op, comm, budget), comm, root)


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
