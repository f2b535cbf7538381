"""Ensembles of parallel tasks: ``parcomp.map(fn, items, ranks_per_task=k)``.

COMMUNICATES: :func:`task_groups` (the first time for a communicator and ``k``) and the
work of :class:`GroupDealer` are collectives over the map's communicator; each task is a
collective over its group.

The communicator is split into groups of ``k`` consecutive ranks (``k`` must divide the
rank count: uneven groups would make tasks of one call run on different rank counts, so
it is an error naming the counts that work).  The group leaders (rank 0 of each group)
take items (dynamically by default, from a node counter, as ``map`` does) and broadcast
each to their group; every rank of the group calls ``fn(item, comm)`` with the group's
communicator, which is also parcomp's default communicator during the call (DistArrays,
Checkpointers and maps made inside without ``comm=`` live on the group).  The leader's
return value is the item's result.  A task that fails on every rank of its group, or on
some while the others finish it, fails the map on every rank with a TaskError (the group
agrees after each item on a communicator of its own; the map at the round's end).  A
task that fails on some ranks while the others wait in one of its collectives cannot be
agreed on: after ``PARCOMP_TASK_GRACE`` seconds (30) the failing rank ends the job with
its traceback, as any unhandled error does, instead of leaving it hanging.  A map
inside a task over the *whole* communicator would wait for groups busy elsewhere: it is
refused with a :class:`~parcomp.ConfigError`.  With ``checkpoint=`` an ensemble is
resumable like any map (:mod:`parcomp.mapreduce.resume`); a task that checkpoints itself
on a preemption signal (its ``Checkpointer.checkpoint_if_due`` raising ``Preempted`` on
its group) is left unfinished, the finished items are committed, and the job exits 75.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from parcomp.checkpoint import preempt
from parcomp.mapreduce.records import dumps
from parcomp.mapreduce.resume import Dealer
from parcomp.mapreduce.schedule import Items
from parcomp.mapreduce.works import MapWork, UnitError, UnitStopped
from parcomp.runtime import config
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.failfast import report_and_abort
from parcomp.runtime.ranks import default_comm_as
from parcomp.runtime.subcomm import comm_cache

__all__ = [
    "EnsembleWork",
    "GroupDealer",
    "check_group_size",
    "refuse_outer",
    "task_agreement",
    "task_groups",
]

#: The communicators of the ensembles whose task this rank is running (innermost last).
_OUTER: list[Any] = []


def check_group_size(k: Any, size: int) -> int:
    """``ranks_per_task`` checked against the rank count (PURE)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"ranks_per_task must be a positive integer, got {k!r}")
    if size % int(k):
        fits = [d for d in range(1, size + 1) if size % d == 0]
        raise ConfigError(
            f"ranks_per_task={k} does not divide the {size} rank(s) of the map: groups must "
            f"be the same size; use one of {fits}, or run on a multiple of {k} ranks"
        )
    return int(k)


def refuse_outer(comm: Any) -> None:
    """Inside an ensemble task, a map over the ensemble's own communicator is refused:
    the other groups are busy with their own tasks and would never join it."""
    if any(comm is outer for outer in _OUTER):
        raise ConfigError(
            "a map over the whole communicator inside an ensemble task (ranks_per_task=) "
            "would wait for the other groups forever; use the task's communicator (the "
            "comm argument of the task, also the default inside it)"
        )


def task_agreement(comm: Any, k: int) -> Any:
    """A duplicate of this rank's task group, for agreeing on tasks' outcomes only."""
    cache = comm_cache(comm)
    key = f"map.groups.{k}.agree"
    if key not in cache:
        cache[key] = task_groups(comm, k)[0].Dup()
    return cache[key]


def task_groups(comm: Any, k: int) -> tuple[Any, Any]:
    """The group of ``k`` consecutive ranks of this rank, and the group leaders'
    communicator (``None`` on the other ranks); made once per ``comm`` and ``k``."""
    from mpi4py import MPI

    cache = comm_cache(comm)
    key = f"map.groups.{k}"
    if key not in cache:
        rank = comm.Get_rank()
        group = comm.Split(rank // k, rank)
        leaders = comm.Split(0 if group.Get_rank() == 0 else MPI.UNDEFINED, rank)
        cache[key] = group  # communicators in the cache are freed with comm
        if leaders != MPI.COMM_NULL:
            cache[key + ".leaders"] = leaders
    return cache[key], cache.get(key + ".leaders")


class GroupDealer:
    """A round's units for this rank's group: its leader takes them by ``schedule`` among
    the leaders and broadcasts each to the group (``-1``: the round is over for it)."""

    def __init__(self, comm: Any, k: int, schedule: str) -> None:
        self.group, leaders = task_groups(comm, k)
        self.inner = Dealer(leaders, schedule) if leaders is not None else None
        self.stops = True

    def units(self, batch: np.ndarray) -> Iterator[int]:
        if self.inner is not None:
            self.inner.stops = self.stops
            for unit in self.inner.units(batch):
                self.group.bcast(unit, root=0)
                yield unit
            self.group.bcast(-1, root=0)
            return
        while True:
            unit = self.group.bcast(None, root=0)
            if unit < 0:
                return
            yield unit

    def free(self) -> None:
        if self.inner is not None:
            self.inner.free()


class EnsembleWork(MapWork):
    # The group agrees on each task's outcome on a communicator of its own: a rank that
    # failed must not meet the others' collectives inside the task.
    """``map(ranks_per_task=k)``: unit = item, run by a whole group; the leader's result
    is committed and returned."""

    def __init__(self, fn: Callable[..., Any], work: Items, comm: Any, k: int) -> None:
        super().__init__(fn, work)
        self.comm = comm
        self.group, _ = task_groups(comm, k)
        self.leader = self.group.Get_rank() == 0
        self.agree = task_agreement(comm, k)

    def _failed_anywhere(self, error: Exception | None) -> bool:
        """Whether the task failed on any rank of the group (the group's agreement).

        A rank whose task raised waits at most ``PARCOMP_TASK_GRACE`` seconds for the
        others: if they are stuck in one of the task's collectives they never come, and
        the job is ended with this rank's traceback (fail fast) rather than left hanging.
        """
        from mpi4py import MPI

        flag = np.array([error is not None], np.int8)
        request = self.agree.Iallreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
        if error is None:
            request.Wait()
            return bool(flag[0])
        deadline = time.monotonic() + float(config.get("PARCOMP_TASK_GRACE"))
        while not request.Test():
            if time.monotonic() > deadline:
                report_and_abort(type(error), error, error.__traceback__)
            time.sleep(0.001)
        return True

    def run(self, unit: int) -> None:
        item = self.work.get(unit)
        error: Exception | None = None
        blob = b""
        _OUTER.append(self.comm)
        try:
            with default_comm_as(self.group, outer=self.comm):
                value = self.fn(item, self.group)
            if self.leader:  # before the agreement: a result that does not pickle fails it
                blob = dumps(value)
        except preempt.Preempted as stop:  # the task's own checkpoint, agreed by its group
            raise UnitStopped(stop.signum) from stop
        except Exception as exc:  # noqa: BLE001 - agreed by the group just below
            error = exc
        finally:
            _OUTER.pop()
        if self._failed_anywhere(error):
            raise UnitError(unit, item, error)  # error None: it failed on another rank
        if self.leader:
            self.blobs[unit] = blob
