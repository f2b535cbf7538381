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
from parcomp.mapreduce.counter import NodeCounter
from parcomp.mapreduce.resume import resumable_map
from parcomp.mapreduce.schedule import (
    Items,
    as_items,
    chunk_size,
    items_fingerprint,
    node_chunk_range,
    static_chunks,
)
from parcomp.runtime.agree import agreed, raise_if_differ
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
from parcomp.runtime.subcomm import comm_cache
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI
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
        raise_if_differ(
            items_fingerprint(items),
            comm,
            lambda differ, mine, theirs: (
                f"ranks {differ} were given other work items than "
                f"rank 0 (count or order: {theirs.split(':')[0]} items against "
                f"{mine.split(':')[0]}); every rank must pass the same items in the same order"
            ),
        )
        self.schedule = schedule
        self.chunk = chunk_size(items.n, self.size, schedule, chunksize, deterministic)
        self.nchunks = -(-items.n // self.chunk) if items.n else 0
        self.counter = None
        if schedule == "dynamic" or progress:
            node, self.node_sizes, self.node = _node_layout(comm)
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


def _node_layout(comm: Any) -> tuple[Any, list[int], int]:
    """This rank's shared-memory node communicator, the ranks per node (nodes ordered by
    their lowest rank) and this node's index; made once per communicator.

    Collective the first time (``Comm_split_type`` and an ``allgather`` of the node
    leaders, O(p)); cached on ``comm`` after that, so a dynamic schedule's later calls
    cost only the node's shared window.
    """
    from mpi4py import MPI

    cache = comm_cache(comm)
    layout = cache.get("map.node_layout")
    if layout is None:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        leader = node.bcast(comm.Get_rank(), root=0)
        leaders = comm.allgather(leader)
        order = sorted(set(leaders))
        layout = (node, [leaders.count(lead) for lead in order], order.index(leader))
        cache["map.node_layout"] = layout
        cache["map.node_comm"] = node  # communicators in the cache are freed with comm
    return layout


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
    schedule: str = "block",
    chunksize: int | None = None,
    root: int | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    every_items: int = 1000,
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
    schedule : {"block", "cyclic", "dynamic"}
        Static block or cyclic assignment, or dynamic self-scheduling from a counter in
        node-shared memory (for irregular work).
    chunksize : int, optional
        Items per chunk (default: one chunk per rank for ``block``, 1 for ``cyclic``, about
        16 chunks per rank for ``dynamic``).
    root : int, optional
        Return the list on this rank only (``None`` elsewhere); default: on every rank.
    progress : bool
        Show a progress bar on rank 0 (``tqdm.auto``; a widget in notebooks).
    checkpoint : path-like, optional
        Commit finished results to this directory every ``every_items`` items, through the
        checkpoint engine (:mod:`parcomp.mapreduce.resume`); the same call run again, on any
        rank count, resumes from the last commit and runs only the items not committed.
        A directory holding another call's progress is refused, naming what differs.
        Not with ``schedule="dynamic"`` or DistArray items (yet).
    every_items : int, default 1000
        With ``checkpoint``: items between commits.
    resume : {"yes", "ignore"}
        With ``checkpoint``: ``"ignore"`` starts over whatever the directory holds.
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
    if checkpoint is not None:
        comm = resolve_comm(comm)
        with agreed(comm):
            if _is_distarray(items) or schedule == "dynamic":
                raise ConfigError(
                    "map(checkpoint=...) does not take DistArray items or schedule='dynamic' yet"
                )
        out = resumable_map(
            fn, items, checkpoint, every_items=every_items, resume=resume, comm=comm
        )
        return out if root is None or comm.Get_rank() == root else None
    if _is_distarray(items):
        comm = items.comm if comm is None else comm
        items = _block_items(items)
        schedule, chunksize = "block", 1
    comm = resolve_comm(comm)
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
        if deterministic:
            raise ConfigError(
                "deterministic=True is not available for DistArray items: their blocks depend on the rank count"
            )
        items = _block_items(items)
        schedule, chunksize = "block", 1
    comm = resolve_comm(comm)
    with agreed(comm):
        work = as_items(items)
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
    owned: dict[int, bool] = {}

    def accumulate(k: int, values: list[Any]) -> None:
        leaves[k], owned[k] = fold_many(op, values)

    try:
        failure, exc = _run_items(mapper, plan, accumulate)
    finally:
        plan.close()
    comm = plan.comm
    nodes: dict[tuple[int, int], Any] = {}
    if failure is None:
        flags = [k in leaves for k in range(plan.nchunks)]
        for lo, hi in tree_cover(flags):
            try:  # a custom reducer may raise here too: on this rank only
                nodes[(lo, hi)] = tree_subtree(leaves, lo, hi, op)
            except Exception as err:  # noqa: BLE001 - reported on every rank below
                first, last = plan.bounds(lo).start, plan.bounds(hi - 1).stop - 1
                failure = failure_record(plan.rank, first, f"reducing items {first}..{last}", err)
                exc = err
                break
    _agree_failures(failure, comm, exc)
    if plan.nchunks == 0:
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
            value = tree_evaluate(merged, plan.nchunks, op)
        except Exception as exc:  # noqa: BLE001 - the reducer's error, for every rank
            error = exc
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
