"""Helpers for testing parallel code.

COMMUNICATES: :func:`parallel_assert` is a collective.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from parcomp.runtime import config
from parcomp.runtime.ranks import resolve_comm, world_rank_size

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["parallel_assert", "inject_failure"]


def parallel_assert(condition: bool, message: str = "", comm: MPI.Comm | None = None) -> None:
    """Assert ``condition`` on every rank, failing on all ranks if it fails on any.

    A rank-local ``assert`` that fails on one rank leaves the others waiting in the next
    collective; this gathers every rank's outcome first, so all ranks fail together and the
    message names the failing ranks.

    Parameters
    ----------
    condition : bool
        This rank's outcome.
    message : str
        This rank's explanation, reported when ``condition`` is false.
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: parcomp's default communicator).

    Raises
    ------
    AssertionError
        On every rank, if ``condition`` is false on at least one rank.

    Notes
    -----
    Collective over `comm`: call on all ranks.  Unlike ``assert`` it is not removed by
    ``python -O``.
    """
    comm = resolve_comm(comm)
    outcomes = comm.allgather(None if condition else str(message))
    failed = [(r, msg) for r, msg in enumerate(outcomes) if msg is not None]
    if failed:
        ranks = [r for r, _ in failed]
        details = "; ".join(f"rank {r}: {msg}" if msg else f"rank {r}" for r, msg in failed)
        raise AssertionError(
            f"parallel assertion failed on rank(s) {ranks} of {comm.Get_size()}: {details}"
        )


def inject_failure(
    step: int,
    die_at_step: int | None,
    die_rank: int | None,
    comm: MPI.Comm | None = None,
    wipe: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Fault injection for tests and demos: SIGKILL this rank at ``die_at_step``.

    Only on the first attempt of a job (``PARCOMP_RESTART_COUNT`` unset or 0) and only on
    the process whose *world* rank is ``die_rank`` (stable when ULFM renumbers the
    survivors), so that a restarted or recovered job runs through.  If
    ``$PARCOMP_FAULT_STAMP`` names a file, the time of death is written there first (for
    recovery-time measurements).  The folders in ``wipe`` are deleted first: the loss of a
    node's local storage along with the rank.
    """
    if die_at_step is None or step != die_at_step:
        return  # first: this runs on every step of a job
    import shutil
    import signal
    import time

    del comm  # the world rank decides; kept for callers passing it
    if config.get("PARCOMP_RESTART_COUNT") != 0:
        return
    if world_rank_size()[0] != (die_rank or 0):
        return
    for folder in wipe:
        shutil.rmtree(folder, ignore_errors=True)
    stamp = config.get("PARCOMP_FAULT_STAMP")
    if stamp:
        with open(stamp, "w") as fh:
            fh.write(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)
