"""Ranks and communicators: the default communicator, rank/size, and who raised an error.

Local except :func:`default_comm` (its first call duplicates ``COMM_WORLD``, collectively).
Nothing here talks to MPI at import time: importing parcomp on a subset of ranks, or in a
notebook, never blocks.

* :func:`default_comm` is a lazily created ``Dup`` of ``COMM_WORLD``, so parcomp's own
  messages never match user messages sent on ``COMM_WORLD``; after an in-job recovery
  (:mod:`parcomp.runtime.resilient`) it is the shrunk communicator.
* :func:`rank` / :func:`size` work under ``mpiexec`` and in a plain ``python`` process
  (MPI then starts as a singleton of size 1); :func:`world_rank_size` answers before MPI
  starts, from the launcher's environment.
* :func:`mark_everywhere` / :func:`mark_world` record that every rank raises the same
  error, so that the fail-fast hook (:mod:`parcomp.runtime.failfast`) prints it once.

The ground of the runtime: it imports nothing of parcomp.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = [
    "default_comm",
    "default_comm_if_made",
    "replace_default_comm",
    "default_comm_as",
    "outer_comm",
    "resolve_comm",
    "rank",
    "size",
    "world_rank_size",
    "mpi_datatype",
    "format_ranks",
    "mark_world",
    "mark_everywhere",
    "mark_ranks",
]

_default_comm: MPI.Comm | None = None
_outer: list[Any] = []  # the default communicators that default_comm_as replaced

# Environment variables set by launchers, used only before MPI is initialised.
_RANK_VARS = (
    "PMI_RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "MV2_COMM_WORLD_RANK",
    "SLURM_PROCID",
)
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")


def _mpi() -> Any:
    """Import ``mpi4py.MPI`` (this initialises MPI, as a singleton outside ``mpiexec``)."""
    from mpi4py import MPI

    return MPI


def mpi_datatype(dtype: Any) -> Any:
    """The MPI datatype for a NumPy dtype: MPI's predefined one when there is one.

    ``mpi4py.util.dtlib.from_numpy_dtype`` builds a new derived datatype even for
    float64, which nobody frees: MPICH's yaksa then warned "leaked handle pool objects"
    at exit (two per ``DistArray.gather``).  Predefined types need no freeing.
    """
    from mpi4py.util.dtlib import from_numpy_dtype

    dt = np.dtype(dtype)
    if dt.isnative:
        predefined = _mpi()._typedict.get(dt.char)  # noqa: SLF001 - mpi4py's predefined types (see above)
        if predefined is not None:
            return predefined
    return from_numpy_dtype(dt)


def default_comm() -> MPI.Comm:
    """Return parcomp's default communicator, a ``Dup`` of ``COMM_WORLD``.

    Returns
    -------
    mpi4py.MPI.Intracomm
        The same object on every call.

    Notes
    -----
    The first call is collective over ``COMM_WORLD`` (it calls ``MPI_Comm_dup``); parcomp's
    collective functions make that call on all ranks for you.
    """
    global _default_comm
    if _default_comm is None:
        MPI = _mpi()
        comm = MPI.COMM_WORLD.Dup()
        comm.Set_name("parcomp")
        _default_comm = comm
    return _default_comm


def default_comm_if_made() -> MPI.Comm | None:
    """The default communicator if it exists yet, else None (never creates it)."""
    return _default_comm


def replace_default_comm(old: Any, new: Any) -> None:
    """Make ``new`` the default communicator if ``old`` is it (after an in-job shrink)."""
    global _default_comm
    if _default_comm is old:
        _default_comm = new


@contextlib.contextmanager
def default_comm_as(comm: Any, outer: Any = None) -> Iterator[None]:
    """Within the block, parcomp's default communicator is ``comm`` (an ensemble task's
    group): DistArrays, Checkpointers and maps made without ``comm=`` use it; ``outer``
    (default: the default communicator outside the block) is what :func:`outer_comm`
    gives, for log tags.  Local."""
    global _default_comm
    saved = _default_comm
    _outer.append(saved if outer is None else outer)
    _default_comm = comm
    try:
        yield
    finally:
        _default_comm = saved
        _outer.pop()


def outer_comm() -> Any:
    """Inside :func:`default_comm_as`: the default communicator outside it (else None)."""
    return _outer[-1] if _outer else None


def resolve_comm(comm: MPI.Comm | None) -> MPI.Comm:
    """Return ``comm``, or :func:`default_comm` when it is ``None``."""
    return default_comm() if comm is None else comm


def rank(comm: MPI.Comm | None = None) -> int:
    """Rank of this process in ``comm`` (default: parcomp's default communicator)."""
    return int(resolve_comm(comm).Get_rank())


def size(comm: MPI.Comm | None = None) -> int:
    """Number of ranks in ``comm`` (default: parcomp's default communicator)."""
    return int(resolve_comm(comm).Get_size())


def _env_int(names: tuple[str, ...]) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def world_rank_size() -> tuple[int, int]:
    """Rank and size in ``COMM_WORLD`` without initialising MPI.

    Uses ``COMM_WORLD`` when MPI is already initialised, otherwise the launcher's
    environment (``PMI_RANK``, ``OMPI_COMM_WORLD_RANK``, ``SLURM_PROCID`` ...), otherwise
    ``(0, 1)``.  Local; never communicates.
    """
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized():
        return int(MPI.COMM_WORLD.Get_rank()), int(MPI.COMM_WORLD.Get_size())
    r = _env_int(_RANK_VARS)
    n = _env_int(_SIZE_VARS)
    if r is None or n is None or n < 1:
        return 0, 1
    return r, n


def format_ranks(ranks: list[int] | tuple[int, ...]) -> str:
    """``[0, 1, 2, 5]`` -> ``"ranks 0-2, 5"``; one rank -> ``"rank 3"``."""
    ranks = sorted(ranks)
    spans: list[str] = []
    start = prev = ranks[0]
    for r in [*ranks[1:], None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        spans.append(f"{start}" if start == prev else f"{start}-{prev}")
        if r is not None:
            start = prev = r
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(spans)


def mark_world(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised identically by every rank of the job (printed once, by rank
    0), without MPI: for errors of code every rank runs alike before any communicator
    exists (a kernel's declaration at import).  Local; returns ``exc``."""
    _rank, size = world_rank_size()
    if size > 1:
        exc.parcomp_report = (0, format_ranks(list(range(size))), size)  # type: ignore[attr-defined]
    return exc


def mark_everywhere(exc: BaseException, comm: MPI.Comm | None = None) -> BaseException:
    """Mark ``exc`` as raised identically by every rank of ``comm``; return it.

    For errors computed from metadata that all ranks agreed on (so every rank raises the
    same one at the same call without communicating).  The fail-fast hook then prints the
    traceback once, from the lowest rank, tagged with the ranks, instead of once per rank.
    Local.
    """
    comm = resolve_comm(comm)
    mark_ranks(exc, comm, tuple(range(comm.Get_size())))
    return exc


def mark_ranks(exc: BaseException, comm: Any, ranks: tuple[int, ...]) -> None:
    """Record who reports ``exc`` (the lowest failing rank, as a world rank) and for whom."""
    try:
        MPI = _mpi()
        world = MPI.Group.Translate_ranks(
            comm.Get_group(), [min(ranks)], MPI.COMM_WORLD.Get_group()
        )[0]
    except Exception:  # noqa: BLE001 - an intercommunicator or a revoked comm: no dedup
        return
    size = comm.Get_size()
    exc.parcomp_report = (int(world), format_ranks(ranks), size)  # type: ignore[attr-defined]
