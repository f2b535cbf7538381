"""Resumable maps: ``map``, ``map_reduce`` and ``map_reduce_keyed`` with ``checkpoint=``.

COMMUNICATES: :func:`run_rounds` and the ``result`` methods are collectives over ``comm``.

The work is a number of *units* (items; for ``map_reduce(deterministic=True)`` the leaves
of the fixed reduction tree, whose size does not depend on the rank count).  The units
not yet committed are run in *rounds*; each rank runs its share of a round (block, cyclic
or dynamic from a node counter), then every rank commits through the checkpoint engine's
one transaction: ``Checkpointer.save(step, local={"records": framed records}, meta=
{"parcomp.map": identity})`` — atomic, checksummed, validated on read, pruned.  What a
rank's records hold depends on the work (:class:`MapWork`, :class:`LeafWork`,
:class:`FoldWork`, and ``KeyedWork`` in :mod:`parcomp.mapreduce.keyed`); the union of
every rank's records is always everything committed, so a rerun of the same call
(:func:`~parcomp.mapreduce.identity.call_identity`) reads that union on any rank count,
deals it out, and runs only the units it does not cover.  A rerun of another call is
refused on every rank, naming what differs.

Cadence (:class:`_Cadence`): a round is ``every_items`` items, each committed; or, with
``every_seconds``, as many as the last round's rate says fit in that time (the slowest
rank's clock), committed once that long has passed since the last commit.  The last
round is always committed.  Preemption: while a round runs, SIGTERM/SIGUSR1/SIGUSR2 only set a flag; a rank
that sees it stops taking units, the ranks agree on it at the round's end, commit what is
finished, and every rank raises :class:`~parcomp.checkpoint.preempt.Preempted` (exit
status 75) so that the requeued job resumes.  A failing mapper commits nothing of its
round: the committed progress is never overwritten by a failed round.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint import preempt
from parcomp.checkpoint.checkpointer import Checkpointer
from parcomp.mapreduce.counter import NodeCounter, node_layout
from parcomp.mapreduce.failures import failure_record, raise_failures
from parcomp.mapreduce.identity import differences, parse_identity
from parcomp.mapreduce.records import frame_blobs, unframe_blobs
from parcomp.mapreduce.schedule import SCHEDULES, node_chunk_range
from parcomp.mapreduce.works import UnitError, UnitStopped, Work
from parcomp.runtime.agree import agreed, alike
from parcomp.runtime.errors import CheckpointSchemaError, ConfigError
from parcomp.runtime.log import get_logger
from parcomp.runtime.progress import Progress
from parcomp.runtime.resilient import (
    peer_failure,
    recoveries,
    shrink,
    ulfm_available,
    ulfm_requested,
)

__all__ = ["Committer", "Dealer", "check_cadence", "catching_preemption", "run_rounds"]

META = "parcomp.map"
_LOG = get_logger("parcomp.map")


# ---------------------------------------------------------------------------- cadence
def check_cadence(
    every_items: Any, every_seconds: Any, schedule: str, resume: str
) -> tuple[int | None, float | None]:
    """The commit cadence checked (PURE): ``every_items`` defaults to 1000 when neither is
    given; with ``every_seconds`` alone, rounds are sized from the measured rate."""
    if every_items is not None and (
        isinstance(every_items, bool) or not isinstance(every_items, int) or every_items < 1
    ):
        raise ConfigError(f"every_items must be a positive integer, got {every_items!r}")
    if every_seconds is not None:
        if isinstance(every_seconds, bool) or not isinstance(every_seconds, int | float):
            raise ConfigError(f"every_seconds must be a positive number, got {every_seconds!r}")
        if not 0 < float(every_seconds) < float("inf"):
            raise ConfigError(f"every_seconds must be a positive number, got {every_seconds!r}")
        every_seconds = float(every_seconds)
    if every_items is None and every_seconds is None:
        every_items = 1000
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if resume not in ("yes", "ignore"):
        raise ConfigError(f"resume must be 'yes' or 'ignore', got {resume!r}")
    return every_items, every_seconds


class _Cadence:
    """Rounds and commits.  With ``every_items``: a round is that many items, each one
    committed.  With ``every_seconds`` alone: a first round of one unit per rank measures
    the rate, later rounds are sized to take about ``every_seconds``, and a round is
    committed when that long has passed since the last commit (a round's end is also
    where the ranks agree on failures and signals).  Both: rounds of at most
    ``every_items``, each committed.  The last round is always committed, so a finished
    map costs a rerun only its resume."""

    def __init__(
        self, items_per_unit: int, every_items: int | None, every_seconds: float | None, size: int
    ) -> None:
        self.cap = None if every_items is None else max(1, every_items // items_per_unit)
        self.seconds = every_seconds
        self.units = self.cap if every_seconds is None else min(self.cap or size, size)

    def due(self, since_commit: float, last: bool) -> bool:
        # Rounds are sized to take every_seconds: one that took a little less still commits.
        return (
            last
            or self.seconds is None
            or self.cap is not None
            or since_commit >= 0.9 * self.seconds
        )

    def next(self, done: int, seconds: float) -> None:
        if self.seconds is None:
            return
        if done and seconds > 0:
            self.units = max(1, int(done / seconds * self.seconds))
        else:
            self.units *= 8
        if self.cap is not None:
            self.units = min(self.units, self.cap)


# ---------------------------------------------------------------------------- signals
#: SIGINTs received during a map's rounds (Ctrl-C, a notebook's stop button).
_INTERRUPTS: list[int] = []


def stop_requested() -> bool:
    """Whether this rank was asked to stop taking units: a preemption signal or Ctrl-C."""
    return bool(preempt.requested() or _INTERRUPTS)


def _on_interrupt(signum: int, _frame: object) -> None:
    _INTERRUPTS.append(signum)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second one: at once


@contextmanager
def catching_preemption() -> Iterator[None]:
    """During the call: SIGTERM/SIGUSR1/SIGUSR2 only set parcomp's preemption flag, and a
    first SIGINT (Ctrl-C, a notebook's stop button) only sets a flag too.

    A rank interrupted in the middle of a round must not leave it alone: the others would
    wait for it in the round's collectives forever.  So the ranks finish the units in
    hand, agree at the round's end, commit, and then every rank raises
    ``KeyboardInterrupt`` (or exits 75 after a preemption signal).  A second SIGINT
    interrupts at once.  When parcomp's preemption handlers were installed already
    (``parcomp run``'s ranks with a ``Checkpointer``, or an earlier one) they stay.  A
    preemption signal that arrived after the last round stays recorded
    (``preempt.requested()``) for the program's own checkpoints.  Outside the main thread
    signals are left alone.
    """
    _INTERRUPTS.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = not preempt.active()
    previous = {sig: signal.getsignal(sig) for sig in preempt.SIGNALS}
    previous_int = signal.getsignal(signal.SIGINT)
    if mine:
        preempt.install_handlers()
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_int)
        if mine:
            preempt.uninstall_handlers(previous)
            if preempt.requested():
                _LOG.warning(
                    "preemption signal %d arrived after the map's last commit; it is kept "
                    "for the program's own checkpoints",
                    preempt.requested(),
                )


# ---------------------------------------------------------------------------- the rounds
#: In-job recoveries a map goes through before it lets the failure end it.
MAX_RECOVERIES = 8


def _ulfm_on(comm: Any) -> bool:
    """Whether lost ranks are recovered inside the map (``parcomp run --ulfm`` on an MPI
    with ULFM); then ``comm`` returns errors instead of aborting (local)."""
    if not ulfm_requested() or not ulfm_available()[0]:
        return False
    from mpi4py import MPI

    comm.Set_errhandler(MPI.ERRORS_RETURN)
    return True


def _members(comm: Any) -> list[int]:
    """The world ranks of ``comm``'s ranks, in its order (collective)."""
    from parcomp.runtime.ranks import world_rank_size

    return [int(r) for r in comm.allgather(world_rank_size()[0])]


def _mpi_error(exc: BaseException) -> Any:
    """The ``MPI.Exception`` an error is, or was raised from."""
    from mpi4py import MPI

    seen = exc
    while seen is not None and not isinstance(seen, MPI.Exception):
        seen = seen.__cause__ or seen.__context__
    return seen


def _peer_failed(exc: BaseException, comm: Any) -> bool:
    """Whether an error is (or was raised from) a peer's failure on ``comm``."""
    found = _mpi_error(exc)
    return found is not None and peer_failure(found, comm)


def open_checkpointer(checkpoint: Any, comm: Any) -> tuple[Checkpointer, bool]:
    """A user's :class:`Checkpointer` (its communicator must have ``comm``'s ranks), or
    one made on the directory for this call (``keep=2``, synchronous, signals handled by
    the call).  Returns it and whether this call owns it."""
    if isinstance(checkpoint, Checkpointer):
        from mpi4py import MPI

        with agreed(comm):
            if MPI.Comm.Compare(checkpoint.comm, comm) not in (MPI.IDENT, MPI.CONGRUENT):
                raise ConfigError(
                    "checkpoint= is a Checkpointer on another communicator than the map's; "
                    "make it with comm= the map's communicator"
                )
        return checkpoint, False
    if not isinstance(checkpoint, str | os.PathLike):
        with alike(comm):
            raise ConfigError(
                f"checkpoint= must be a directory or a parcomp.Checkpointer, got {type(checkpoint).__name__}"
            )
    return Checkpointer(Path(checkpoint), keep=2, handle_signals=False, comm=comm), True


def _committed(
    ckpt: Checkpointer, identity: dict[str, str], comm: Any
) -> tuple[dict[int, bytes], int, dict[str, Any]] | None:
    """Every committed record (on every rank) and the next step, or None; another call's
    progress or a folder of other checkpoints is refused on every rank."""
    restored = ckpt.restore(redeal=lambda lengths, r, p: (0, sum(lengths)))
    if restored is None:
        return None
    where = str(restored.path)
    with alike(comm, catch=(CheckpointSchemaError, ConfigError)):  # the same bytes everywhere
        if META not in restored.meta:
            raise ConfigError(
                f"{ckpt.directory} holds checkpoints that are not a map's progress ({where}); "
                "give the map a folder of its own"
            )
        saved = parse_identity(restored.meta.get(META), where)
        changed = differences(saved, identity)
        if changed:
            raise ConfigError(
                f"{ckpt.directory} holds the progress of another map call ({'; '.join(changed)}); "
                "use another directory, or resume='ignore' to start over"
            )
        blobs = unframe_blobs(restored.local.get("records", np.zeros(0, np.uint8)), where)
    return blobs, restored.step + 1, dict(restored.meta)


def _after_latest(ckpt: Checkpointer, comm: Any) -> int:
    """``resume="ignore"``: the step after the folder's newest commit, so that the new
    progress is the newest and pruning removes the old, never the new.  A folder holding
    other checkpoints is refused (starting over there would prune them)."""
    restored = ckpt.restore(redeal=lambda lengths, r, p: (0, 0))  # metadata, no records
    if restored is None:
        return 0
    with alike(comm, catch=(ConfigError,)):
        if META not in restored.meta:
            raise ConfigError(
                f"{ckpt.directory} holds checkpoints that are not a map's progress "
                f"({restored.path}); resume='ignore' would prune them: give the map a "
                "folder of its own"
            )
    return restored.step + 1


def _restore(
    ckpt: Checkpointer, work: Work, identity: dict[str, str], comm: Any
) -> tuple[np.ndarray, int, dict[str, Any] | None]:
    """The committed progress dealt to this rank: the covered units' mask, the next
    step, the commit's metadata."""
    found = _committed(ckpt, identity, comm)
    if found is None:
        return np.zeros(work.units, bool), 0, None
    blobs, step, meta = found
    with agreed(comm, catch=(CheckpointSchemaError,)):  # each rank loads its own share
        covered = work.load(blobs, comm.Get_rank(), comm.Get_size(), str(ckpt.directory))
    return covered, step, meta


class Dealer:
    """This rank's units of a round, by schedule (dynamic: a node counter, reset per round).
    No unit is taken once a preemption signal arrived."""

    def __init__(self, comm: Any, schedule: str) -> None:
        self.comm, self.schedule = comm, schedule
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.counter: NodeCounter | None = None
        #: Whether a preemption signal stops the dealing (only when progress is committed).
        self.stops = True
        if schedule == "dynamic":
            node, self.node_sizes, self.node = node_layout(comm)
            self.counter = NodeCounter(comm, slots=1, node_comm=node)

    def units(self, batch: np.ndarray) -> Iterator[int]:
        if self.schedule != "dynamic":
            n = len(batch)
            mine = (
                batch[n * self.rank // self.size : n * (self.rank + 1) // self.size]
                if self.schedule == "block"
                else batch[self.rank :: self.size]
            )
            for unit in mine.tolist():
                if self.stops and stop_requested():
                    return
                yield unit
            return
        counter = self.counter
        if counter.node_comm.Get_rank() == 0:
            counter.values[0] = 0  # every rank of the node finished the last round (a commit)
        counter.node_comm.Barrier()
        start, stop = node_chunk_range(len(batch), self.node_sizes, self.node)
        while not (self.stops and stop_requested()):
            k = start + counter.fetch_add(1, 0)
            if k >= stop:
                return
            yield int(batch[k])

    def free(self) -> None:
        if self.counter is not None:
            self.counter.free()


class Committer:
    """What a step after the rounds (a keyed map's shuffle) commits through (collective)."""

    def __init__(
        self,
        ckpt: Checkpointer | None,
        comm: Any,
        identity: dict[str, str],
        step: int,
        saved_meta: dict[str, Any] | None,
        every_seconds: float | None,
    ) -> None:
        self.ckpt, self.comm, self.identity, self.step = ckpt, comm, identity, step
        #: The metadata of the commit this call resumed from (None: a fresh start).
        self.saved_meta = saved_meta
        self.every_seconds = every_seconds
        self._since = time.monotonic()

    def maybe_commit(
        self, records: Callable[[], dict[int, bytes]], meta: dict[str, Any], seconds: float
    ) -> None:
        """Commit ``records()`` with ``meta`` when ``seconds`` passed since the last commit
        here (the slowest rank's clock) or a preemption signal arrived, then stop with
        :class:`~parcomp.checkpoint.preempt.Preempted` on a signal (one ``Allreduce``)."""
        from mpi4py import MPI

        if self.ckpt is None:
            return
        flags = np.array(
            [preempt.requested(), int((time.monotonic() - self._since) * 1e6), len(_INTERRUPTS)]
        )
        self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        if not flags[0] and not flags[2] and flags[1] < seconds * 1e6:
            return
        self.ckpt.save(
            self.step, local={"records": frame_blobs(records())}, meta={META: self.identity, **meta}
        )
        self.step += 1
        self._since = time.monotonic()
        if flags[2] and not flags[0]:
            raise KeyboardInterrupt("interrupted: the shuffle's progress is committed")
        if flags[0]:
            self.ckpt.wait()
            _LOG.warning(
                "preemption signal %d: committed at step %d; exiting with status %d",
                int(flags[0]),
                self.step - 1,
                preempt.PREEMPTED_STATUS,
            )
            raise preempt.Preempted(int(flags[0]))


def run_rounds(
    work: Work,
    comm: Any,
    checkpoint: Any,
    identity: dict[str, str],
    *,
    every_items: int | None,
    every_seconds: float | None,
    schedule: str = "block",
    resume: str = "yes",
    progress: bool = False,
    items_per_unit: int = 1,
    label: str = "parcomp.map",
    dealer: Callable[[], Any] | None = None,
    then: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """Run every unit of ``work`` not committed in ``checkpoint``, committing each round.

    ``then(committer, comm)``, if given, runs after the last round while the progress
    folder is still held (a keyed map's shuffle): ``committer`` (:class:`Committer`)
    commits more state through the same checkpoints and stops on preemption signals.

    Returns the communicator the map ends on: ``comm``, or after an in-job recovery from
    lost ranks (``parcomp run --ulfm``) the survivors' (then also parcomp's default if
    ``comm`` was).

    ``checkpoint=None`` runs every unit in one round and commits nothing (an ensemble
    without progress).  ``dealer()`` makes what deals a round's units to this rank
    (default: :class:`Dealer` by ``schedule``).

    Collective.  On return every unit has run (on some rank, in this run or a committed
    earlier one) and the last round is committed; the caller then combines ``work`` on the
    communicator returned.

    Raises
    ------
    TaskError
        On every rank when a unit failed on any (its round is not committed).
    ConfigError
        On every rank when ``checkpoint`` holds another call's progress.
    Preempted
        On every rank after a preemption signal, once the finished units are committed.
    """
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    ckpt, own = open_checkpointer(checkpoint, comm) if checkpoint is not None else (None, False)
    done_ok = False
    deal: Any = None
    bar: Progress | None = None
    try:
        saved_meta: dict[str, Any] | None = None
        if ckpt is None:
            covered, step = np.zeros(work.units, bool), 0
        elif resume == "ignore":  # start over, but after what the folder holds
            covered, step = np.zeros(work.units, bool), _after_latest(ckpt, comm)
        else:
            covered, step, saved_meta = _restore(ckpt, work, identity, comm)
        todo = np.flatnonzero(~covered)
        finished = work.units - len(todo)
        if finished:
            _LOG.info(
                "resuming: %d of %d unit(s) committed, %d to run", finished, work.units, len(todo)
            )
        bar = Progress(work.units * items_per_unit, progress and rank == 0, desc=label)
        bar.update_to(min(work.units * items_per_unit, finished * items_per_unit))
        cadence = _Cadence(items_per_unit, every_items, every_seconds, size)
        if ckpt is None:
            cadence.units, cadence.seconds, cadence.cap = max(1, len(todo)), None, None
        if len(todo):
            deal = dealer() if dealer is not None else Dealer(comm, schedule)
            deal.stops = ckpt is not None
        flags = np.zeros(6, np.int64)
        pos = 0
        committed_at = time.monotonic()
        ulfm = own and dealer is None and _ulfm_on(comm)
        members = _members(comm) if ulfm else []
        exact, pending = True, False  # the last commit was dealt on this comm; commit now
        with catching_preemption() if ckpt is not None else contextlib.nullcontext():
            while pos < len(todo) or pending:
                try:
                    if pending:  # after a recovery: commit the survivors' state first
                        ckpt.save(step, local={"records": frame_blobs(work.records())},
                                  meta={META: identity})  # fmt: skip
                        step, exact, pending = step + 1, True, False
                        committed_at = time.monotonic()
                        continue
                    batch = todo[pos : pos + cadence.units]
                    start = time.monotonic()
                    failure, local, stopped = None, None, 0
                    try:
                        for unit in deal.units(batch):
                            work.run(unit)
                    except UnitError as err:
                        if err.exc is not None:  # None: it failed on another rank of a group
                            failure = failure_record(rank, err.index, err.item, err.exc)
                            local = err.exc
                    except UnitStopped as stop:  # a task checkpointed itself after a signal
                        stopped = stop.signum
                    now = time.monotonic()
                    flags[:] = (
                        failure is not None,
                        preempt.requested() or stopped,
                        int((now - start) * 1e6),
                        int((now - committed_at) * 1e6),
                        stopped,
                        len(_INTERRUPTS),
                    )
                    comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)  # the slowest rank's clocks
                    if flags[0]:  # nothing since the last commit is committed
                        raise_failures(comm.allgather(failure), comm, local)
                    pos += len(batch)
                    if ckpt is not None and (
                        flags[1] or flags[5] or cadence.due(flags[3] / 1e6, pos >= len(todo))
                    ):
                        ckpt.save(step, local={"records": frame_blobs(work.records())},
                                  meta={META: identity})  # fmt: skip
                        step, exact = step + 1, True
                        committed_at = time.monotonic()
                except Exception as exc:
                    if not (ulfm and _peer_failed(exc, comm)) or recoveries() >= MAX_RECOVERIES:
                        raise
                    old_size = comm.Get_size()
                    comm, survivors = shrink(
                        comm, members, _mpi_error(exc), "the map redoes the lost ranks' "
                        "uncommitted items and goes on"
                    )  # fmt: skip
                    dead = {members.index(w) for w in set(members) - set(survivors)}
                    members, rank, size = survivors, comm.Get_rank(), comm.Get_size()
                    ckpt.abandon()
                    ckpt = Checkpointer(ckpt.directory, keep=2, handle_signals=False, comm=comm)
                    found = _committed(ckpt, identity, comm)
                    blobs, step = (found[0], found[1]) if found is not None else ({}, step)
                    survived = work.held().astype(np.uint8)  # what some survivor holds
                    comm.Allreduce(MPI.IN_PLACE, survived, op=MPI.MAX)
                    if work.by_unit:  # keep one copy of each: drop what survivors hold
                        blobs = {
                            k: b for k, b in blobs.items() if not (k < work.units and survived[k])
                        }
                    with agreed(comm, catch=(CheckpointSchemaError,)):
                        held = work.recover(blobs, dead, old_size, rank, size, exact, "commit")
                    mask = held.astype(np.uint8) | survived
                    comm.Allreduce(MPI.IN_PLACE, mask, op=MPI.MAX)
                    todo, pos = np.flatnonzero(mask == 0), 0
                    finished = work.units - len(todo)
                    deal = Dealer(comm, schedule)  # the old one's window went with its comm
                    exact, pending = False, True
                    if rank == 0:
                        _LOG.warning(
                            "recovered in the map: %d of %d unit(s) held by the survivors or "
                            "committed, %d to run on %d ranks",
                            finished,
                            work.units,
                            len(todo),
                            size,
                        )
                    continue
                bar.update_to(min(work.units, finished + pos) * items_per_unit)
                if flags[4] and ckpt is None:  # units are missing: the job must stop too
                    raise preempt.Preempted(int(flags[4]))
                if flags[5] and not flags[1]:  # Ctrl-C: every rank stops, progress kept
                    if rank == 0:
                        _LOG.warning("interrupted: finished work committed at step %d", step - 1)
                    raise KeyboardInterrupt("interrupted: the map's progress is committed")
                if flags[1] and ckpt is not None:
                    ckpt.wait()
                    _LOG.warning(
                        "preemption signal %d: finished work committed at step %d; exiting "
                        "with status %d, a rerun resumes",
                        int(flags[1]),
                        step - 1,
                        preempt.PREEMPTED_STATUS,
                    )
                    raise preempt.Preempted(int(flags[1]))
                cadence.next(len(batch), flags[2] / 1e6)
            if then is not None:
                committer = Committer(ckpt, comm, identity, step, saved_meta, every_seconds)
                then(committer, comm)
                step = committer.step
        done_ok = True
    finally:
        if bar is not None:
            bar.close()
        if done_ok:
            if deal is not None:
                deal.free()
            if own:
                ckpt.close()
            elif ckpt is not None:
                ckpt.wait()
        elif own and ckpt is not None:  # an error on every rank, or one rank's interrupt:
            ckpt.abandon()  # nothing collective
    return comm
