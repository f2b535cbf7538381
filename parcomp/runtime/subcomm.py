"""One private communicator per subsystem, cached on the user's communicator.

COMMUNICATES: the first :func:`subsystem_comm` call for a ``(comm, subsystem)`` pair is a
collective over ``comm`` (``MPI_Comm_dup``); later calls are local lookups.

Every parcomp module that sends point-to-point messages does so on its own ``Dup`` of the
communicator it was given, so its messages can never match another subsystem's or the
user's, whatever tags either uses.  The duplicates are cached on the parent communicator
with an MPI attribute (``MPI_Comm_create_keyval``), not in a process-wide table keyed by a
counter: a process-wide counter drifts when only some ranks create objects on a
sub-communicator (ranks then disagree on tags and a halo exchange hangs).  The attribute
lives and dies with the parent: freeing the parent frees its duplicates.

Tags inside a subsystem are small constants (see :data:`TAGS`), checked against the MPI
library's ``MPI_TAG_UB`` once per communicator.  The standard guarantees at least 32767.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parcomp.runtime.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["SUBSYSTEMS", "TAGS", "comm_cache", "subsystem_comm", "tag_upper_bound", "check_tags"]

#: Subsystems with a private communicator.
SUBSYSTEMS = ("halo", "array", "partner", "counter", "debug", "particles")

#: Largest tag each subsystem uses (``halo``: one per direction, 3**ndim for ndim axes; the
#: exact need is checked by :func:`check_tags` when an array is made; ``particles``: its
#: collectives use none, its reverse halo exchange one per direction, checked when used).
TAGS = {"array": 2, "partner": 2, "counter": 0, "debug": 0, "particles": 0}

_keyval: int | None = None


def _delete(_comm: Any, _keyval: int, value: dict[str, Any]) -> None:
    from mpi4py import MPI

    if MPI.Is_finalized():
        return
    for sub in value.values():
        if isinstance(sub, MPI.Comm) and sub != MPI.COMM_NULL:
            sub.Free()
        elif hasattr(sub, "evict"):  # a runtime.cache.BoundedCache: its entries freed
            sub.clear()
    value.clear()


def _get_keyval() -> int:
    global _keyval
    if _keyval is None:
        from mpi4py import MPI

        _keyval = MPI.Comm.Create_keyval(delete_fn=_delete)
    return _keyval


def tag_upper_bound() -> int:
    """``MPI_TAG_UB`` of the running MPI library (at least 32767 by the standard)."""
    from mpi4py import MPI

    value = MPI.COMM_WORLD.Get_attr(MPI.TAG_UB)
    return int(value) if value is not None else 32767


def check_tags(largest: int, what: str) -> None:
    """Raise :class:`ConfigError` if ``largest`` exceeds the library's ``MPI_TAG_UB``.

    Parameters
    ----------
    largest : int
        The largest tag a subsystem will use.
    what : str
        What needs it, for the message.
    """
    bound = tag_upper_bound()
    if largest > bound:
        raise ConfigError(
            f"{what} needs message tags up to {largest}, but this MPI library allows only "
            f"{bound} (MPI_TAG_UB)"
        )


def comm_cache(comm: MPI.Comm) -> dict[str, Any]:
    """The dict parcomp keeps on ``comm`` (an MPI attribute): subsystem communicators and state.

    Local.  Entries that are communicators are freed with ``comm``.
    """
    keyval = _get_keyval()
    cache = comm.Get_attr(keyval)
    if cache is None:
        cache = {}
        comm.Set_attr(keyval, cache)
    return cache


def subsystem_comm(comm: MPI.Comm, subsystem: str) -> MPI.Comm:
    """The private duplicate of ``comm`` for ``subsystem``, created on first use.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The user's (or parcomp's default) communicator.
    subsystem : str
        One of :data:`SUBSYSTEMS`.

    Returns
    -------
    mpi4py.MPI.Comm
        The same object for the same ``(comm, subsystem)`` on every later call.

    Notes
    -----
    The first call for a pair is collective over `comm`: make it where all ranks of `comm`
    are together (parcomp makes it when a DistArray or Checkpointer is constructed).
    """
    if subsystem not in SUBSYSTEMS:
        raise ConfigError(f"unknown subsystem {subsystem!r}; expected one of {SUBSYSTEMS}")
    cache = comm_cache(comm)
    sub = cache.get(subsystem)
    if sub is None:
        if subsystem in TAGS:
            check_tags(TAGS[subsystem], f"parcomp's {subsystem} messages")
        sub = comm.Dup()
        name = comm.Get_name() or "comm"
        sub.Set_name(f"{name}/parcomp.{subsystem}")
        cache[subsystem] = sub
    return sub
