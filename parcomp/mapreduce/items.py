"""``parcomp.map`` and ``parcomp.map_reduce``: run a function over work items on all ranks.

COMMUNICATES: every function here is a collective over ``comm``.

Items (a range, sequence, ndarray, any finite iterable, or a :class:`~parcomp.DistArray`)
are numbered and cut into chunks (:mod:`parcomp.mapreduce.schedule`); each rank runs its chunks and
folds their results locally (the combiner) before anything is communicated; one collective
then combines the per-rank partials and, in the same message, agrees on errors.

Errors: an exception in ``fn`` stops that rank's work (under ``dynamic`` it also tells the
other ranks of the node to stop taking chunks), and every rank raises
:class:`~parcomp.runtime.errors.TaskError` naming the item and the rank, with the failing rank's
traceback.  Nothing hangs: the failing rank still enters the final collective.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from parcomp.arrays.array import DistArray
from parcomp.mapreduce.counter import NodeCounter, node_layout
from parcomp.mapreduce.ensemble import EnsembleWork, GroupDealer, check_group_size, refuse_outer
from parcomp.mapreduce.identity import call_identity
from parcomp.mapreduce.resume import check_cadence, run_rounds
from parcomp.mapreduce.schedule import (
    Items,
    as_items,
    chunk_size,
    items_fingerprint,
    node_chunk_range,
    static_chunks,
)
from parcomp.mapreduce.works import FoldWork, LeafWork, MapWork
from parcomp.runtime.agree import agreed, alike, raise_if_differ
from parcomp.runtime.callid import any_flag
from parcomp.runtime.errors import ConfigError, TaskError
from parcomp.runtime.progress import Progress
from parcomp.runtime.ranks import resolve_comm
from parcomp.runtime.reduce import (
    ReduceOp,
    combine_partials,
    fold,
    fold_many,
    resolve_op,
    tree_cover,
    tree_evaluate,
    tree_subtree,
)
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

    from parcomp.checkpoint.checkpointer import Checkpointer
from parcomp.mapreduce.failures import failure_record, raise_failures

__all__ = ["map", "map_reduce"]

_NEXT, _ABORT, _DONE = 0, 1, 2  # counter slots


def _is_distarray(items: Any) -> bool:

    return isinstance(items, DistArray)


class _Plan:
    """Which chunks this rank runs, plus progress and the abort flag (collective to build)."""

    def __init__(
        self,
        items: Items,
        comm: Any,
        schedule: str,
        chunksize: int | None,
        deterministic: bool,
        progress: bool,
    ) -> None:
        self.items = items
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        _same_items(items, comm)
        self.schedule = schedule
        self.chunk = chunk_size(items.n, self.size, schedule, chunksize, deterministic)
        self.nchunks = -(-items.n // self.chunk) if items.n else 0
        self.counter = None
        if schedule == "dynamic" or progress:
            node, self.node_sizes, self.node = node_layout(comm)
            self.counter = NodeCounter(comm, slots=3, node_comm=node)
            self.node_scale = self.size / node.Get_size()
        self.progress = Progress(items.n, progress and self.rank == 0, desc="parcomp.map")

    def chunks(self) -> Iterator[int]:
        if self.schedule != "dynamic":
            yield from static_chunks(self.nchunks, self.size, self.rank, self.schedule)
            return
        start, stop = node_chunk_range(self.nchunks, self.node_sizes, self.node)
        values = self.counter.values
        while values[_ABORT] == 0:
            k = start + self.counter.fetch_add(1, _NEXT)
            if k >= stop:
                return
            yield k

    def bounds(self, k: int) -> range:
        return range(k * self.chunk, min(self.items.n, (k + 1) * self.chunk))

    def finished(self, count: int) -> None:
        if self.counter is None:
            return
        done = self.counter.fetch_add(count, _DONE) + count
        if self.rank == 0:
            self.progress.update_to(int(done * self.node_scale))

    def failed(self) -> None:
        if self.counter is not None:
            self.counter.fetch_add(1, _ABORT)

    def close(self) -> None:
        self.progress.update_to(self.items.n)
        self.progress.close()
        if self.counter is not None:
            self.counter.free()


def check_root(root: Any, comm: Any) -> None:
    """``root`` is None or a rank of ``comm``; checked before any work (no communication:
    every rank passes the same ``root``)."""
    if root is None:
        return
    with alike(comm):
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < comm.Get_size():
            raise ConfigError(
                f"root={root!r} is not a rank of the map's {comm.Get_size()} rank(s); "
                "give a rank from 0 to size - 1, or None for every rank"
            )


def _same_items(items: Items, comm: Any) -> None:
    """Every rank was given the same items in the same order (one agreed fingerprint)."""
    raise_if_differ(
        items_fingerprint(items),
        comm,
        lambda differ, mine, theirs: (
            f"ranks {differ} were given other work items than "
            f"rank 0 (count or order: {theirs.split(':')[0]} items against "
            f"{mine.split(':')[0]}); every rank must pass the same items in the same order"
        ),
    )


class _Resume:
    """``checkpoint=`` and its cadence, checked on every rank together (collective)."""

    def __init__(
        self,
        checkpoint: Any,
        every_items: Any,
        every_seconds: Any,
        resume: Any,
        schedule: str,
        items: Any,
        comm: Any,
    ) -> None:
        self.checkpoint, self.schedule, self.resume = checkpoint, schedule, resume
        self.every_items: int | None = None
        self.every_seconds: float | None = None
        with agreed(comm):
            if checkpoint is None:
                if every_items is not None or every_seconds is not None or resume != "yes":
                    raise ConfigError(
                        "every_items=, every_seconds= and resume= go with checkpoint= "
                        "(the folder or Checkpointer the map commits its progress to)"
                    )
            elif _is_distarray(items):
                raise ConfigError(
                    "checkpoint= does not take DistArray items: their blocks depend on the "
                    "rank count, so their progress could not be resumed on another"
                )
            else:
                self.every_items, self.every_seconds = check_cadence(
                    every_items, every_seconds, schedule, resume
                )

    def run(
        self,
        work: Any,
        comm: Any,
        identity: dict[str, str],
        progress: bool,
        unit: int = 1,
        dealer: Callable[[], Any] | None = None,
        then: Callable[[Any, Any], Any] | None = None,
    ) -> Any:
        """Run the rounds; the communicator the map ends on (after an in-job recovery,
        the survivors')."""
        return run_rounds(
            work,
            comm,
            self.checkpoint,
            identity,
            then=then,
            dealer=dealer,
            every_items=self.every_items,
            every_seconds=self.every_seconds,
            schedule=self.schedule,
            resume=self.resume,
            progress=progress,
            items_per_unit=unit,
        )


def _describe(exc: BaseException) -> str:
    """The reducer's error as rank 0 saw it, for the TaskError every rank raises."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"the reducer failed on rank 0: {type(exc).__name__}: {exc}\ntraceback on rank 0:\n{tb}"


def _agree_failures(failure: Any, comm: Any, local_exc: BaseException | None) -> None:
    """Raise a :class:`TaskError` on every rank if a mapper failed on any: one
    ``Allreduce`` of a flag (O(log p)); the failure records travel only when one failed."""

    if any_flag(comm, failure is not None):
        raise_failures(comm.allgather(failure), comm, local_exc)


def _run_items(
    fn: Callable[[Any], Any], plan: _Plan, on_chunk: Callable[[int, list[Any]], None]
) -> tuple[Any, BaseException | None]:
    """Run ``fn`` on this rank's items; ``on_chunk(k, values)`` receives each chunk's results."""
    items = plan.items
    try:
        for k in plan.chunks():
            span = plan.bounds(k)
            out: list[Any] = []
            append = out.append
            try:
                for item in items.slice(span.start, span.stop):
                    append(fn(item))
            except Exception as exc:  # noqa: BLE001 - reported on every rank below
                plan.failed()
                index = span.start + len(out)
                return failure_record(plan.rank, index, items.get(index), exc), exc
            try:
                on_chunk(k, out)  # the local combine: a custom reducer may raise here
            except Exception as exc:  # noqa: BLE001 - reported on every rank below
                plan.failed()
                return failure_record(
                    plan.rank, span.start, f"reducing items {span.start}..{span.stop - 1}", exc
                ), exc
            plan.finished(len(span))
    except BaseException:
        plan.failed()
        raise
    return None, None


@collective("map", lambda *a, comm=None, **k: comm)
def map(
    fn: Callable[[Any], Any],
    items: Any,
    *,
    schedule: str | None = None,
    chunksize: int | None = None,
    root: int | None = None,
    progress: bool = False,
    ranks_per_task: int | None = None,
    checkpoint: str | os.PathLike[str] | Checkpointer | None = None,
    every_items: int | None = None,
    every_seconds: float | None = None,
    resume: str = "yes",
    comm: MPI.Comm | None = None,
) -> list[Any] | None:
    """Apply ``fn`` to every item on all ranks; return the results in item order.

    Parameters
    ----------
    fn : callable
        ``fn(item)``; for a DistArray, ``fn(local_block)`` once per rank.
    items : range, sequence, ndarray, iterable or DistArray
        The work.  Every rank must pass the same items.
    schedule : {"block", "cyclic", "dynamic"}, optional
        Static block or cyclic assignment, or dynamic self-scheduling from a counter in
        node-shared memory (for irregular work).  Default ``"block"``; ``"dynamic"`` with
        ``ranks_per_task``.
    chunksize : int, optional
        Items per chunk (default: one chunk per rank for ``block``, 1 for ``cyclic``, about
        16 chunks per rank for ``dynamic``).
    root : int, optional
        Return the list on this rank only (``None`` elsewhere); default: on every rank.
    progress : bool
        Show a progress bar on rank 0 (``tqdm.auto``; a widget in notebooks).
    ranks_per_task : int, optional
        An ensemble of parallel tasks (:mod:`parcomp.mapreduce.ensemble`): the ranks are
        split into groups of this many consecutive ranks (it must divide the rank count),
        each group runs one item at a time as ``fn(item, comm)`` with the group's
        communicator (also parcomp's default communicator during the call), and the result
        is what the group's rank 0 returned.  Groups take items by ``schedule``.
    checkpoint : path-like or Checkpointer, optional
        Commit finished results to this folder (or through this
        :class:`~parcomp.Checkpointer`) in rounds, through the checkpoint engine
        (:mod:`parcomp.mapreduce.resume`); the same call run again, on any rank count and
        schedule, resumes from the last commit and runs only the items not committed.  A
        folder holding another call's progress is refused, naming what differs.  A
        preemption signal (SIGTERM, SIGUSR1, SIGUSR2) during the map commits what is
        finished and exits with status 75.  Not with DistArray items.
    every_items : int, optional
        With ``checkpoint``: items per round (commit); default 1000 unless
        ``every_seconds`` is given.
    every_seconds : float, optional
        With ``checkpoint``: size the rounds so that a commit comes about this often (from
        the measured rate of the last round; ``every_items`` then caps a round).
    resume : {"yes", "ignore"}
        With ``checkpoint``: ``"ignore"`` starts over whatever the folder holds.
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: parcomp's default communicator).

    Returns
    -------
    list or None
        ``[fn(item) for item in items]``; for a DistArray, one result per rank in rank order.

    Raises
    ------
    TaskError
        On every rank, if ``fn`` raised on any rank (naming the item and the rank).

    Notes
    -----
    Collective over `comm`: call on all ranks.  Results travel pickled (they are arbitrary
    Python objects); use :func:`map_reduce` to combine numeric results without pickling.
    """
    if ranks_per_task is not None:
        comm = resolve_comm(comm)
        refuse_outer(comm)
        check_root(root, comm)
        schedule = schedule or "dynamic"
        rounds = _Resume(checkpoint, every_items, every_seconds, resume, schedule, items, comm)
        with agreed(comm):
            k = check_group_size(ranks_per_task, comm.Get_size())
            work = as_items(items)
        _same_items(work, comm)
        team = EnsembleWork(fn, work, comm, k)
        identity = call_identity("map", work.source, fn, layout=f"groups of {k}")
        rounds.run(team, comm, identity, progress, dealer=lambda: GroupDealer(comm, k, schedule))
        return team.result(comm, root)
    schedule = schedule or "block"
    if (
        checkpoint is not None
        or every_items is not None
        or every_seconds is not None
        or resume != "yes"
    ):
        comm = resolve_comm(comm)
        refuse_outer(comm)
        check_root(root, comm)
        rounds = _Resume(checkpoint, every_items, every_seconds, resume, schedule, items, comm)
        with agreed(comm):
            work = as_items(items)
        _same_items(work, comm)
        job = MapWork(fn, work)
        comm = rounds.run(job, comm, call_identity("map", work.source, fn), progress)
        return job.result(comm, root)
    if _is_distarray(items):
        comm = items.comm if comm is None else comm
        items = _block_items(items)
        schedule, chunksize = "block", 1
    comm = resolve_comm(comm)
    refuse_outer(comm)
    check_root(root, comm)
    with agreed(comm):
        work = as_items(items)
    plan = _Plan(work, comm, schedule, chunksize, False, progress)
    results: dict[int, list[Any]] = {}

    def collect(k: int, values: list[Any]) -> None:
        results[k] = values

    try:
        failure, exc = _run_items(fn, plan, collect)
    finally:
        plan.close()
    payload = (failure, results)
    gathered = comm.allgather(payload) if root is None else comm.gather(payload, root=root)
    if root is not None:
        failed = comm.bcast(
            [p[0] for p in gathered] if comm.Get_rank() == root else None, root=root
        )
    else:
        failed = [p[0] for p in gathered]
    raise_failures(failed, comm, exc)
    if gathered is None:
        return None
    merged: dict[int, list[Any]] = {}
    for _, part in gathered:
        merged.update(part)
    return [value for k in sorted(merged) for value in merged[k]]


def _block_items(array: Any) -> list[Any]:
    """A DistArray as one work item per rank: this rank's interior (others get placeholders)."""
    size, rank = array.partition.size, array.rank
    return [array.interior if r == rank else None for r in range(size)]


@collective("map_reduce", lambda *a, comm=None, **k: comm)
def map_reduce(
    mapper: Callable[[Any], Any],
    items: Any,
    reduce: str | Callable[[Any, Any], Any] | ReduceOp = "sum",
    *,
    schedule: str = "block",
    chunksize: int | None = None,
    deterministic: bool = False,
    initial: Any = None,
    root: int | None = None,
    out: Any = None,
    progress: bool = False,
    checkpoint: str | os.PathLike[str] | Checkpointer | None = None,
    every_items: int | None = None,
    every_seconds: float | None = None,
    resume: str = "yes",
    comm: MPI.Comm | None = None,
) -> Any:
    """Map ``mapper`` over the items and reduce the results to one value.

    Parameters
    ----------
    mapper : callable
        ``mapper(item)`` (for a DistArray: ``mapper(local_block)``, e.g. a ``@parcomp.jit``
        kernel).
    items : range, sequence, ndarray, iterable or DistArray
        The work; the same on every rank.
    reduce : str or callable
        A built-in operator name (:data:`parcomp.runtime.reduce.OPS`: sum, prod, min, max, land,
        lor, lxor, band, bor, bxor, minloc, maxloc; elementwise on arrays) or any
        associative ``f(a, b)``, a Numba-compiled one included.
    schedule, chunksize, progress, comm
        As for :func:`map`.
    deterministic : bool
        Make the result bitwise identical for any rank count and schedule by reducing over
        a fixed tree of items (see :mod:`parcomp.runtime.reduce`).  Costs a gather of a few
        partials per rank to one rank, which evaluates the tree, and a broadcast of the
        value (O(p) at that rank, O(log p) elsewhere); not available for DistArray items, whose blocks depend on the
        rank count.
    initial : optional
        Combined once with the result (``op(initial, result)``); returned when there are no
        items.
    root : int, optional
        Return the value on this rank only (``None`` elsewhere).
    out : numpy.ndarray, optional
        For large numeric array results: the array to receive the reduced value (reuse it
        across calls to avoid allocating, as with a raw ``Allreduce``).
    checkpoint, every_items, every_seconds, resume
        As for :func:`map`.  What is committed: with ``deterministic=True`` the finished
        leaves of the fixed tree (so a resumed result is bitwise the uninterrupted one, on
        any rank count and schedule); otherwise each rank's folded partial with the item
        ranges it covers.

    Returns
    -------
    object
        The reduced value (on every rank unless ``root`` is given).

    Raises
    ------
    TaskError
        On every rank, if the mapper or the reducer raised on any rank.
    ConfigError
        For an unknown schedule or operator, or no items and no ``initial``.

    Notes
    -----
    Collective over `comm`: call on all ranks.  Each rank folds its own results first;
    large numeric arrays are then combined with buffer ``Allreduce`` (nothing pickled),
    everything else with one ``allgather`` folded in rank order.
    """
    op = resolve_op(reduce)
    if _is_distarray(items):
        comm = items.comm if comm is None else comm
    comm = resolve_comm(comm)
    refuse_outer(comm)
    check_root(root, comm)
    rounds = _Resume(checkpoint, every_items, every_seconds, resume, schedule, items, comm)
    if _is_distarray(items):
        if deterministic:
            raise ConfigError(
                "deterministic=True is not available for DistArray items: their blocks depend on the rank count"
            )
        items = _block_items(items)
        schedule, chunksize = "block", 1
    with agreed(comm):
        work = as_items(items)
        leaf = chunk_size(work.n, comm.Get_size(), schedule, chunksize, deterministic)
    if checkpoint is not None:
        _same_items(work, comm)
        if deterministic:
            tree = LeafWork(mapper, work, op, leaf)
            identity = call_identity(
                "map_reduce", work.source, mapper, _reducer(reduce), True, f"leaves of {leaf}"
            )
            comm = rounds.run(tree, comm, identity, progress, unit=leaf)
            value, any_value = _reduce_leaves(tree.leaves, tree.units, op, comm, root, tree.bounds)
        else:
            part = FoldWork(mapper, work, op, comm.Get_rank())
            comm = rounds.run(
                part,
                comm,
                call_identity("map_reduce", work.source, mapper, _reducer(reduce)),
                progress,
            )
            value, any_value, failures = combine_partials(
                part.acc, part.has, op, comm, root, None, owned=part.owned, out=out
            )
            raise_failures(failures, comm, None)
        return _finish(value, any_value, initial, op, root, comm)
    plan = _Plan(work, comm, schedule, chunksize, deterministic, progress)
    if deterministic:
        value, any_value = _reduce_deterministic(mapper, plan, op, root)
    else:
        state = {"acc": None, "owned": False, "has": False}

        def accumulate(_k: int, values: list[Any]) -> None:
            value, owned = fold_many(op, values)
            if state["has"]:
                state["acc"], state["owned"] = fold(op, state["acc"], value, state["owned"])
            else:
                state["acc"], state["owned"] = value, owned
                state["has"] = True

        try:
            failure, exc = _run_items(mapper, plan, accumulate)
        finally:
            plan.close()
        value, any_value, failures = combine_partials(
            state["acc"], state["has"], op, comm, root, failure, owned=state["owned"], out=out
        )
        raise_failures(failures, comm, exc)
    return _finish(value, any_value, initial, op, root, comm)


def _reducer(reduce: Any) -> Any:
    """What names a reducer in a call's identity: its name, or its function."""
    return reduce.name if isinstance(reduce, ReduceOp) else reduce


def _finish(
    value: Any, any_value: bool, initial: Any, op: ReduceOp, root: int | None, comm: Any
) -> Any:
    """``map_reduce``'s value on the ranks that return it, ``initial`` folded in."""
    if root is not None and comm.Get_rank() != root:
        return None
    if not any_value:
        if initial is None:
            raise ConfigError("map_reduce over no items needs initial= (the value to return)")
        return initial
    return value if initial is None else op.combine(initial, value)


def _reduce_deterministic(
    mapper: Callable[[Any], Any], plan: _Plan, op: ReduceOp, root: int | None
) -> tuple[Any, bool]:
    leaves: dict[int, Any] = {}

    def accumulate(k: int, values: list[Any]) -> None:
        leaves[k], _ = fold_many(op, values)

    try:
        failure, exc = _run_items(mapper, plan, accumulate)
    finally:
        plan.close()
    return _reduce_leaves(leaves, plan.nchunks, op, plan.comm, root, plan.bounds, failure, exc)


def _reduce_leaves(
    leaves: dict[int, Any],
    nleaves: int,
    op: ReduceOp,
    comm: Any,
    root: int | None,
    bounds: Callable[[int], range],
    failure: Any = None,
    exc: BaseException | None = None,
) -> tuple[Any, bool]:
    """The fixed tree's value from the leaves every rank holds (collective): each rank
    folds its maximal whole subtrees, one rank evaluates the tree, the value is broadcast
    (``root=None``).  The same leaves give the same bits whoever holds them."""
    nodes: dict[tuple[int, int], Any] = {}
    if failure is None:
        flags = [k in leaves for k in range(nleaves)]
        for lo, hi in tree_cover(flags):
            try:  # a custom reducer may raise here too: on this rank only
                nodes[(lo, hi)] = tree_subtree(leaves, lo, hi, op)
            except Exception as err:  # noqa: BLE001 - reported on every rank below
                first, last = bounds(lo).start, bounds(hi - 1).stop - 1
                failure = failure_record(
                    comm.Get_rank(), first, f"reducing items {first}..{last}", err
                )
                exc = err
                break
    _agree_failures(failure, comm, exc)
    if nleaves == 0:
        return None, False
    # The partial trees go to one rank, which evaluates the fixed tree; the others get
    # the value by a broadcast (root=None).  O(p) at that rank only, O(log p) elsewhere;
    # an allgather of the partials cost every rank O(p).
    target = 0 if root is None else root
    parts = comm.gather(nodes, root=target)
    value: Any = None
    error: BaseException | None = None
    if parts is not None:
        merged: dict[tuple[int, int], Any] = {}
        for part in parts:
            merged.update(part)
        try:
            value = tree_evaluate(merged, nleaves, op)
        except Exception as bad:  # noqa: BLE001 - the reducer's error, for every rank
            error = bad
    if root is not None:
        if error is not None:
            raise error
        return (value, True) if comm.Get_rank() == root else (None, True)
    outcome = comm.bcast(("ok", value) if error is None else ("error", _describe(error)), root=0)
    if outcome[0] == "error":
        if error is not None:
            raise TaskError(outcome[1]) from error
        raise TaskError(outcome[1])
    return outcome[1], True
