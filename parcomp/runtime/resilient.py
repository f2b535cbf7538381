"""In-job recovery from lost ranks with ULFM: revoke, shrink, restore, continue.

COMMUNICATES: :func:`run_resilient` is collective over its communicator.

A job written as ``main(comm)`` -- build or restore its state from a
:class:`~parcomp.checkpoint.Checkpointer` on ``comm``, then step -- survives the death of
ranks without a relaunch when the MPI library implements ULFM (Open MPI 5 started with
``mpirun --with-ft ulfm``; ``parcomp run --ulfm`` does that)::

    def main(comm):
        ckpt = Checkpointer("ckpt", local_directory="/dev/shm/job", every=50, comm=comm)
        restored = ckpt.restore()
        ...

    result = parcomp.run_resilient(main)

When a peer dies, MPI raises ``MPI.Exception`` with class ``ERR_PROC_FAILED`` on the ranks
that talk to it (``ERR_REVOKED`` on the others once the first ones revoke).  The survivors
then

1. revoke the communicator (so no rank stays blocked in a collective with the dead),
2. shrink it to the survivors (``MPI_Comm_shrink``, itself fault tolerant),
3. record the failure (rank 0's log, and ``$PARCOMP_FAILURE_LOG`` as JSON lines, since
   ``mpirun`` exits 0 after a survived failure),
4. make the shrunk communicator parcomp's default, and call ``main`` again on it: the
   checkpointer agrees on the newest valid checkpoint (node-local copies first, the dead
   rank's shard from its partner copy), re-decomposes the arrays for the smaller rank count
   and reloads them.

Only ``comm`` itself is revoked.  DistArrays and checkpointers built on it use it directly,
so a rank blocked in their communication is released.  A communicator derived from it
(``Dup``, ``Split``: the node-shared counter of ``map(schedule="dynamic")``) is not, and a
rank blocked there can stay blocked.

Without ULFM (MPICH has none: ``MPIR_CVAR_ENABLE_FT`` asserts at startup) ``run_resilient``
just calls ``main(comm)``: a dead rank ends the job, and ``parcomp run --restarts K``
relaunches it, when ``main`` restores from the same checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from parcomp.runtime import config
from parcomp.runtime.library import parse_library_version
from parcomp.runtime.log import configure_logging, get_logger
from parcomp.runtime.ranks import replace_default_comm, resolve_comm, world_rank_size
from parcomp.runtime.subcomm import comm_cache
from parcomp.runtime.watchdog import mark_finished
from parcomp.runtime.wire import allgather_ints

__all__ = [
    "note_exit_status",
    "peer_failure",
    "recoveries",
    "run_resilient",
    "shrink",
    "ulfm_available",
    "ulfm_requested",
]

T = TypeVar("T")

_recoveries = 0
_exit_status = 0
_exit_comm: Any = None


def recoveries() -> int:
    """How many in-job recoveries this process has been through."""
    return _recoveries


def note_exit_status(status: int) -> None:
    """Record the status this process will exit with (used after a recovery; see below)."""
    global _exit_status
    _exit_status = int(status)


def _exit_without_finalize() -> None:
    """At exit after a survived failure: meet the survivors, flush, and skip MPI_Finalize.

    Open MPI's ``MPI_Finalize`` can wait forever for a dead process after a ULFM recovery
    (open-mpi/ompi#11404; seen here once in about 40 runs of a 3-rank job).  Every survivor
    passes one barrier on the shrunk communicator, so all of them are done, and then leaves
    with ``os._exit``; ``mpirun`` accepts that under ``--with-ft ulfm`` and exits 0.
    """
    import logging
    import sys

    try:
        if _exit_comm is not None:
            _exit_comm.Barrier()
    except Exception:  # noqa: BLE001 - another failure at exit: leave anyway
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()

    mark_finished()  # os._exit skips atexit: tell parcomp run this rank finished its script
    os._exit(_exit_status)


def _has_failed_peers(comm: Any) -> bool:
    """Whether ``comm``, or one of parcomp's duplicates of it (where a halo exchange may
    have met the failure), knows of a failed process (ULFM ``MPIX_Comm_get_failed``)."""
    for candidate in [comm, *_derived(comm)]:
        try:
            if candidate.Get_failed().Get_size() > 0:
                return True
        except Exception:  # noqa: BLE001 - no way to ask: treat the error as a failure
            return True
    return False


def _derived(comm: Any) -> list[Any]:

    try:
        return [c for c in comm_cache(comm).values() if hasattr(c, "Revoke")]
    except Exception:  # noqa: BLE001 - a revoked parent: nothing cached to reach
        return []


def _revoke_derived(comm: Any) -> None:
    """Revoke parcomp's private duplicates of ``comm`` (halo exchange, scatter/gather,
    partner copies ...): a rank blocked in one of them, waiting for a live peer that has
    left for the recovery, gets ``ERR_REVOKED`` and joins the recovery instead of waiting
    forever."""
    for sub in _derived(comm):
        try:
            sub.Revoke()
        except Exception:  # noqa: BLE001 - already revoked, or freed
            pass


def ulfm_requested() -> bool:
    """Whether ``$PARCOMP_ULFM`` asks for in-job recovery (``parcomp run --ulfm`` sets it)."""
    return bool(config.get("PARCOMP_ULFM"))


def ulfm_available() -> tuple[bool, str]:
    """Whether this MPI can recover in-job, and why not.

    True only for an MPI with the ULFM calls (``Comm.Revoke``/``Shrink`` in mpi4py) whose
    launcher enabled fault tolerance: Open MPI 5 under ``mpirun --with-ft ulfm`` (it sets
    ``OMPI_MCA_mpi_ft_enable=1`` for the ranks).
    """
    from mpi4py import MPI

    vendor, version = parse_library_version(MPI.Get_library_version())
    if not all(hasattr(MPI.Comm, name) for name in ("Revoke", "Shrink", "Agree")):
        return False, "this mpi4py has no ULFM calls (Comm.Revoke/Shrink)"
    if vendor != "Open MPI":
        return False, (
            f"{vendor or 'this MPI'} {version or ''} has no usable ULFM (the MPICH wheel asserts "
            "when MPIR_CVAR_ENABLE_FT is set); use the Open MPI 5 wheel with `parcomp run --ulfm`"
        )
    if os.environ.get("OMPI_MCA_mpi_ft_enable", "") not in ("1", "true"):
        return False, "Open MPI was not started with fault tolerance (mpirun --with-ft ulfm)"
    return True, f"Open MPI {version} with ULFM"


def _record(event: dict[str, Any]) -> None:
    path = config.get("PARCOMP_FAILURE_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(event, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_resilient(
    main: Callable[[Any], T],
    *,
    comm: Any = None,
    ulfm: bool | None = None,
    max_failures: int = 8,
) -> T:
    """Call ``main(comm)``; under ULFM, survive lost ranks by shrinking and calling it again.

    Parameters
    ----------
    main : callable
        ``main(comm) -> result``; must (re)start from the newest checkpoint on ``comm``.
        It is called again after every recovery, with the shrunk communicator.
    comm : mpi4py.MPI.Intracomm, optional
        Communicator (default: parcomp's default communicator).
    ulfm : bool, optional
        Force in-job recovery on or off; default: ``$PARCOMP_ULFM``.  Requested but not
        available, it logs why and falls back to a plain call (relaunch by the supervisor).
    max_failures : int
        Give up (re-raise) after this many recoveries.

    Returns
    -------
    object
        What ``main`` returned on the ranks that finished it.

    Raises
    ------
    mpi4py.MPI.Exception
        A process failure beyond ``max_failures``, or any other MPI error.
    """
    from mpi4py import MPI

    log = get_logger("parcomp.resilient")
    comm = resolve_comm(comm)
    wanted = ulfm_requested() if ulfm is None else ulfm
    if not wanted:
        return main(comm)
    ok, why = ulfm_available()
    if not ok:
        if comm.Get_rank() == 0:
            log.warning("in-job recovery (ULFM) unavailable: %s; a lost rank ends the job", why)
        return main(comm)
    comm.Set_errhandler(MPI.ERRORS_RETURN)  # mpi4py raises MPI.Exception for each error
    world_rank, _ = world_rank_size()
    members = [int(r) for r in allgather_ints(comm, [world_rank])[:, 0]]
    if comm.Get_rank() == 0:
        log.info("in-job recovery enabled (%s) on %d ranks", why, len(members))
    while True:
        try:
            return main(comm)
        except MPI.Exception as exc:
            if not peer_failure(exc, comm) or _recoveries >= max_failures:
                raise
            comm, members = shrink(comm, members, exc, "restarting from the newest checkpoint")


def peer_failure(exc: BaseException, comm: Any) -> bool:
    """Whether an ``MPI.Exception`` says a peer of ``comm`` died (ULFM's classes; a
    ``Waitall`` of several requests reports it as ``ERR_IN_STATUS``)."""
    from mpi4py import MPI

    if not isinstance(exc, MPI.Exception):
        return False
    failed_classes = {MPI.ERR_PROC_FAILED, MPI.ERR_REVOKED}
    if hasattr(MPI, "ERR_PROC_FAILED_PENDING"):
        failed_classes.add(MPI.ERR_PROC_FAILED_PENDING)
    error_class = exc.Get_error_class()
    in_status = getattr(MPI, "ERR_IN_STATUS", None)
    return error_class in failed_classes or (error_class == in_status and _has_failed_peers(comm))


def shrink(comm: Any, members: list[int], exc: Any, then: str) -> tuple[Any, list[int]]:
    """After a peer failure on ``comm`` (collective over the survivors): revoke ``comm``
    and parcomp's duplicates of it, shrink to the survivors (again if another rank dies
    meanwhile), log and record the failure, and make the shrunk communicator the default
    if ``comm`` was.  ``members`` are ``comm``'s world ranks; returns the new communicator
    and its world ranks.  ``then`` says in the log what the caller does next."""
    global _recoveries, _exit_comm
    from mpi4py import MPI

    log = get_logger("parcomp.resilient")
    error_class = exc.Get_error_class()
    detected = time.time()
    world_rank, _ = world_rank_size()
    while True:  # another rank may die while the survivors regroup: shrink again
        _revoke_derived(comm)
        comm.Revoke()
        new = comm.Shrink()
        new.Set_errhandler(MPI.ERRORS_RETURN)
        try:
            survivors = [int(r) for r in allgather_ints(new, [world_rank])[:, 0]]
            break
        except MPI.Exception as again:
            if not peer_failure(again, new):
                raise
            comm = new
    shrunk = time.time()
    if survivors[0] != members[0]:  # the logging rank died: the new rank 0 takes over
        configure_logging(lead=new.Get_rank() == 0)
    lost = sorted(set(members) - set(survivors))
    _recoveries += 1
    if new.Get_rank() == 0:
        log.warning(
            "lost world rank(s) %s (MPI error class %d); shrunk to %d ranks in %.1f ms; "
            "%s (recovery %d)",
            lost,
            error_class,
            len(survivors),
            1e3 * (shrunk - detected),
            then,
            _recoveries,
        )
        _record(
            {
                "event": "recovered",
                "lost_world_ranks": lost,
                "error_class": error_class,
                "detected_unix": detected,
                "shrunk_unix": shrunk,
                "ranks_before": len(members),
                "ranks_after": len(survivors),
            }
        )
    replace_default_comm(comm, new)
    if _exit_comm is None:
        import atexit

        atexit.register(_exit_without_finalize)
    _exit_comm = new
    return new, survivors  # the revoked one is not freed: its peers are gone
