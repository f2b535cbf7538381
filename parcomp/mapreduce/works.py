"""What a resumable map runs and commits, by kind of map: the *units* of work and the
records that hold them (:class:`MapWork`, :class:`LeafWork`, :class:`FoldWork`; the keyed
map's ``KeyedWork`` is in :mod:`parcomp.mapreduce.keyed`, the ensembles' in
:mod:`parcomp.mapreduce.ensemble`).  Local: the rounds (:mod:`parcomp.mapreduce.resume`)
do the communicating.
"""

from __future__ import annotations

import pickle
import signal
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from parcomp.mapreduce.records import dumps, intervals, loads, mark
from parcomp.mapreduce.schedule import Items
from parcomp.runtime.errors import CheckpointSchemaError
from parcomp.runtime.reduce import ReduceOp, fold, fold_many

__all__ = [
    "ByRank",
    "ByUnit",
    "FoldWork",
    "LeafWork",
    "MapWork",
    "UnitError",
    "UnitStopped",
    "Work",
    "apply",
    "dump_result",
]


class UnitError(Exception):
    """A unit's failure: the item index, the item, the error (turned into a TaskError)."""

    def __init__(self, index: int, item: Any, exc: BaseException) -> None:
        super().__init__(index, item, exc)
        self.index, self.item, self.exc = index, item, exc


class UnitStopped(Exception):  # noqa: N818 - not an error: a task asked to stop
    """A unit stopped by a preemption: its own checkpoint was taken (an ensemble task's
    ``checkpoint_if_due`` raised :class:`~parcomp.checkpoint.preempt.Preempted`); it is not
    finished, and the map stops after committing the finished ones."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum or int(signal.SIGTERM)


def apply(fn: Callable[[Any], Any], work: Items, index: int) -> Any:
    item = work.get(index)
    try:
        return fn(item)
    except Exception as exc:
        raise UnitError(index, item, exc) from exc


def dump_result(value: Any, work: Items, index: int) -> bytes:
    """A result pickled for its record; a result that does not pickle is the item's
    failure (:class:`UnitError`, a TaskError on every rank), not one rank's TypeError."""
    try:
        return dumps(value)
    except Exception as exc:
        raise UnitError(index, work.get(index), exc) from exc


class Work(Protocol):
    """What :func:`run_rounds` runs: ``units`` of work, committed as records."""

    units: int
    #: Records keyed by unit (a result per item or leaf), rather than one per rank.
    by_unit: bool

    def load(self, blobs: dict[int, bytes], rank: int, size: int, where: str) -> np.ndarray:
        """Take this rank's share of the committed records; return the mask of the units
        they cover (all of them, on every rank)."""

    def run(self, unit: int) -> None:
        """Run one unit (raises :class:`UnitError`)."""

    def records(self) -> dict[int, bytes]:
        """This rank's records to commit: with the other ranks', everything finished."""

    def held(self) -> np.ndarray:
        """The mask of the units whose results this rank holds (committed or not)."""

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
        """After lost ranks (``dead``, ranks of the old communicator of ``old_size``):
        take this rank's share of what the last commit holds that the survivors do not
        (``exact``: the last commit was dealt on the old communicator; else start from the
        commit alone); return the mask of the units that share covers."""


class ByUnit:
    """Works whose records are keyed by unit (a result per item or leaf, ``blobs``)."""

    by_unit = True
    units: int
    blobs: dict[int, bytes]
    load: Callable[..., np.ndarray]

    def records(self) -> dict[int, bytes]:
        return self.blobs

    def held(self) -> np.ndarray:
        mask = np.zeros(self.units, bool)
        mask[list(self.blobs)] = True
        return mask

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
        # The union of what survives and what was committed holds each finished unit (the
        # rounds drop from ``blobs`` the units a survivor holds: one copy of each).
        return self.load(blobs, rank, size, where)


class ByRank:
    """Works with one record per rank: its whole state (a partial, a table) and the item
    ranges it covers (``mine``); :meth:`reset` empties the state."""

    by_unit = False
    rank: int
    mine: np.ndarray
    load: Callable[..., np.ndarray]

    def reset(self) -> None:
        raise NotImplementedError

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
        # Each committed record is one rank's whole state then (or was dealt to it by key):
        # the survivors' states already hold theirs, so only the dead ranks' records are
        # taken.  Not exact (a commit of an earlier layout): start again from the commit.
        self.rank = rank
        if not exact:
            self.reset()
            self.mine[:] = False
            return self.load(blobs, rank, size, where)
        dead_records = {k: b for k, b in blobs.items() if k % old_size in dead}
        return self.load(dead_records, rank, size, where)


class MapWork(ByUnit):
    """``map``: unit = item; a record per finished item, its pickled result."""

    def __init__(self, fn: Callable[[Any], Any], work: Items) -> None:
        self.fn, self.work, self.units = fn, work, work.n
        self.blobs: dict[int, bytes] = {}

    def load(self, blobs: dict[int, bytes], rank: int, size: int, where: str) -> np.ndarray:
        covered = np.zeros(self.units, bool)
        for key, blob in blobs.items():
            if key >= self.units:
                raise CheckpointSchemaError(f"{where}: progress record {key} out of range")
            covered[key] = True
            if key % size == rank:
                loads(blob, where, f"result of item {key}")  # checked now, on its rank
                self.blobs[key] = blob
        return covered

    def run(self, unit: int) -> None:
        self.blobs[unit] = dump_result(apply(self.fn, self.work, unit), self.work, unit)

    def result(self, comm: Any, root: int | None) -> list[Any] | None:
        parts = comm.allgather(self.blobs) if root is None else comm.gather(self.blobs, root=root)
        if parts is None:
            return None
        merged: dict[int, bytes] = {}
        for part in parts:
            merged.update(part)
        return [pickle.loads(merged[i]) for i in range(self.units)]


class LeafWork(ByUnit):
    """``map_reduce(deterministic=True)``: unit = a leaf of the fixed tree (``leaf`` items,
    a size that depends on the item count only); a record per leaf, its folded value."""

    def __init__(self, fn: Callable[[Any], Any], work: Items, op: ReduceOp, leaf: int) -> None:
        self.fn, self.work, self.op, self.leaf = fn, work, op, leaf
        self.units = -(-work.n // leaf) if work.n else 0
        self.leaves: dict[int, Any] = {}
        self.blobs: dict[int, bytes] = {}

    def bounds(self, k: int) -> range:
        return range(k * self.leaf, min(self.work.n, (k + 1) * self.leaf))

    def load(self, blobs: dict[int, bytes], rank: int, size: int, where: str) -> np.ndarray:
        covered = np.zeros(self.units, bool)
        for key, blob in blobs.items():
            if key >= self.units:
                raise CheckpointSchemaError(f"{where}: progress leaf {key} out of range")
            covered[key] = True
            if key % size == rank:
                self.leaves[key] = loads(blob, where, f"partial of leaf {key}")
                self.blobs[key] = blob
        return covered

    def run(self, unit: int) -> None:
        span = self.bounds(unit)
        values = [apply(self.fn, self.work, i) for i in span]
        try:
            value, _ = fold_many(self.op, values)
        except Exception as exc:
            raise UnitError(
                span.start, f"reducing items {span.start}..{span.stop - 1}", exc
            ) from exc
        self.leaves[unit] = value
        self.blobs[unit] = dump_result(value, self.work, span.start)


class FoldWork(ByRank):
    """``map_reduce``: unit = item; one record per rank: its folded partial and the item
    ranges it covers (a resumed rank folds the restored partials dealt to it)."""

    def __init__(self, fn: Callable[[Any], Any], work: Items, op: ReduceOp, rank: int) -> None:
        self.fn, self.work, self.op, self.rank, self.units = fn, work, op, rank, work.n
        self.acc: Any = None
        self.has = self.owned = False
        self.mine = np.zeros(self.units, bool)

    def add(self, value: Any, owned: bool) -> None:
        if self.has:
            self.acc, self.owned = fold(self.op, self.acc, value, self.owned)
        else:
            self.acc, self.owned, self.has = value, owned, True

    def load(self, blobs: dict[int, bytes], rank: int, size: int, where: str) -> np.ndarray:
        covered = np.zeros(self.units, bool)
        for key, blob in blobs.items():
            record = loads(blob, where, f"partial {key}")
            if not (isinstance(record, tuple) and len(record) == 3):
                raise CheckpointSchemaError(f"{where}: progress partial {key} is malformed")
            ranges, has, value = record
            mark(covered, ranges, where)
            if key % size == rank:
                mark(self.mine, ranges, where)
                if has:
                    self.add(value, True)  # freshly unpickled: this rank owns it
        return covered

    def run(self, unit: int) -> None:
        value = apply(self.fn, self.work, unit)
        try:
            self.add(value, False)
        except Exception as exc:
            raise UnitError(unit, f"reducing item {unit}", exc) from exc
        self.mine[unit] = True

    def records(self) -> dict[int, bytes]:
        return {self.rank: dumps((intervals(self.mine), self.has, self.acc))}

    def reset(self) -> None:
        self.acc, self.has, self.owned = None, False, False
