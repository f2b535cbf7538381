"""Raising on every rank: the one way parcomp's collectives agree on an error.

A collective checks its input on each rank; a rank that finds a problem must not raise
alone, or the others wait forever in the next collective.  Two situations, two helpers:

* The check uses this rank's own data (a file it opened, a local block's shape): wrap it in
  ``with agreed(comm):``.  Leaving the block costs one checked ``Allreduce`` of a flag;
  when any rank raised, every rank raises (the failing ones their own error, the others the
  same type naming the failing ranks and their messages), printed once when alike.
* The check uses data every rank already agreed on (a declaration, a shape broadcast
  before): every rank raises the same error at the same call without communicating; wrap
  it in ``with alike(comm):``, which only marks the error so it is printed once.

:func:`raise_if_any` (one error or ``None`` per rank) is what ``agreed`` does when its
block ends, for code whose errors are not raised but computed; :func:`raise_if_differ`
checks that a value is the same on every rank; :func:`agree` is the boolean form.

COMMUNICATES: ``agreed``, ``raise_if_any``, ``raise_if_differ`` and ``agree`` are
collectives over their communicator; ``alike`` never communicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.runtime import errors
from parcomp.runtime.callid import any_flag, reduce_checked
from parcomp.runtime.errors import CollectiveError, ConfigError, ParcompError
from parcomp.runtime.ranks import mark_everywhere, mark_ranks, resolve_comm
from parcomp.runtime.wire import allgather_ints, allgather_json

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["agreed", "alike", "raise_if_any", "raise_if_differ", "agree"]

Catch = type[BaseException] | tuple[type[BaseException], ...]


class agreed:  # noqa: N801 - used as a statement: ``with agreed(comm):``
    """Run a block of rank-local checks; what any rank raised is raised on every rank.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Communicator to agree over (default: parcomp's default communicator).
    catch : exception type or tuple, default ParcompError
        What the block may raise to be agreed.  Anything else propagates on its rank alone
        (a bug, not a user's mistake: the fail-fast hook ends the job).
    wrap : callable, optional
        Turns a caught exception that is not a :class:`ParcompError` into one
        (``lambda exc: HDF5Error(f"cannot read {path}: {exc}")``).

    Notes
    -----
    Collective over `comm`: every rank must reach the end of the block (one checked
    ``Allreduce`` of a flag, which also carries the call's identity; the messages travel
    only when a rank failed; nothing is pickled).  A block left early (``return``,
    ``break``) still agrees on leaving, so every rank must leave it alike.
    """

    __slots__ = ("catch", "comm", "wrap")

    def __init__(
        self,
        comm: MPI.Comm | None = None,
        *,
        catch: Catch = ParcompError,
        wrap: Callable[[BaseException], BaseException] | None = None,
    ) -> None:
        self.comm = comm
        self.catch = catch
        self.wrap = wrap

    def __enter__(self) -> agreed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None and not isinstance(exc, self.catch):
            return False  # not ours to agree: it propagates on this rank
        error = exc
        if exc is not None and self.wrap is not None and not isinstance(exc, ParcompError):
            error = self.wrap(exc)
            error.__cause__ = exc
        raise_if_any(error, self.comm)
        return False


class alike:  # noqa: N801 - used as a statement: ``with alike(comm):``
    """A block whose errors come from agreed data: every rank raises the same one.

    The error is marked (:func:`~parcomp.runtime.ranks.mark_everywhere`) so that the
    fail-fast hook prints it once, tagged with every rank.  Local: nothing is sent.
    """

    __slots__ = ("catch", "comm")

    def __init__(self, comm: MPI.Comm | None = None, *, catch: Catch = ParcompError) -> None:
        self.comm = comm
        self.catch = catch

    def __enter__(self) -> alike:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None and isinstance(exc, self.catch):
            mark_everywhere(exc, self.comm)
        return False


def agree(ok: bool, comm: MPI.Comm | None = None) -> bool:
    """Return True on every rank iff ``ok`` is true on every rank.

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    return not any_flag(resolve_comm(comm), not ok)


def raise_if_any(error: BaseException | None, comm: MPI.Comm | None = None) -> None:
    """Raise on every rank if ``error`` is not ``None`` on any rank.

    A rank-local check computes an exception (or ``None``); this agrees on the outcome so
    that no rank goes on into a collective that a failing rank has left.

    Parameters
    ----------
    error : BaseException or None
        This rank's problem, if any.
    comm : mpi4py.MPI.Comm, optional
        Communicator to agree over (default: parcomp's default communicator).

    Raises
    ------
    Exception
        On the failing ranks, ``error`` itself.  On the others, an exception of the same
        type as the first failing rank's when it can be built from a message, else a
        :class:`~parcomp.runtime.errors.CollectiveError`; its message names the failing
        ranks and their messages.

    Notes
    -----
    Collective over `comm`: call on all ranks.  One ``Allreduce`` of a flag; only when a
    rank failed, type names and messages travel, as JSON text (:mod:`parcomp.runtime.wire`):
    nothing is pickled, so a survivor of a peer's death never unpickles garbage.
    """
    comm = resolve_comm(comm)
    # the common case: one word, which carries the call's identity too (parcomp.runtime.callid)
    if not any_flag(comm, error is not None):
        return
    mine = None if error is None else [type(error).__name__, str(error)]
    everyone = [tuple(v) if v else None for v in allgather_json(comm, mine)]
    failed = [(r, item) for r, item in enumerate(everyone) if item is not None]
    if error is not None:
        if all(item == failed[0][1] for _, item in failed):
            mark_ranks(error, comm, tuple(r for r, _ in failed))
        _agreed(error)
        raise error
    type_name = failed[0][1][0]
    text = "; ".join(f"rank {r}: {name}: {msg}" for r, (name, msg) in failed)
    message = f"failed on rank(s) {[r for r, _ in failed]} of {comm.Get_size()}: {text}"
    exc_type = _find_error_type(type_name)
    if exc_type is not None:
        try:
            exc = exc_type(message)
        except Exception:  # noqa: BLE001 - an exotic constructor; fall back below
            exc = None
        if exc is not None:
            exc.failed_ranks = tuple(r for r, _ in failed)  # type: ignore[attr-defined]
            mark_ranks(exc, comm, exc.failed_ranks)  # type: ignore[attr-defined]
            _agreed(exc)
            raise exc
    exc = CollectiveError(message, tuple(r for r, _ in failed))
    mark_ranks(exc, comm, exc.failed_ranks)
    _agreed(exc)
    raise exc


def _agreed(exc: BaseException) -> None:
    """Mark ``exc`` as raised by :func:`raise_if_any`: every rank of the communicator
    raises at the same call, so a handler may still use the communicator (a barrier
    before cleaning up) without leaving a rank behind."""
    try:
        exc.parcomp_agreed = True  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _find_error_type(name: str) -> type[BaseException] | None:
    import builtins

    candidate = getattr(errors, name, None) or getattr(builtins, name, None)
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        return candidate
    return None


def raise_if_differ(
    value: Any,
    comm: MPI.Comm | None,
    message: Callable[[list[int], Any, Any], str],
    error: type[Exception] = ConfigError,
) -> None:
    """Raise a :class:`ConfigError` on every rank if ``value`` differs between ranks.

    Parameters
    ----------
    value : object
        A small JSON-able value this rank computed (others are compared by ``repr``).
        Compared as a SHA-256 digest in one ``Allreduce`` of two int64 (the largest digest
        and the largest negated one agree iff all digests are equal): O(log p), nothing
        pickled.  Only on a mismatch do the digests and values travel to name the ranks.
    comm : mpi4py.MPI.Comm or None
        Communicator (None: the default).
    message : callable
        ``message(differing_ranks, rank0_value, first_differing_value)``: the error text,
        the same on every rank (it is printed once).
    error : type, default ConfigError
        The exception raised (a :class:`ParcompError` subclass).

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    from mpi4py import MPI

    comm = resolve_comm(comm)
    text = json.dumps(value, sort_keys=True, default=repr)
    # 63 bits, so that its negation fits: max(d) == -max(-d) iff every rank has the same d
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True) >> 1
    # O(log p); nothing is pickled; the call's identity is checked first (parcomp.runtime.callid)
    both = reduce_checked(comm, np.array([digest, -digest], np.int64), MPI.MAX)
    if both[0] == -both[1]:
        return
    digests = allgather_ints(comm, [digest])[:, 0]  # only on a mismatch: who differs
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        everyone = allgather_json(comm, json.loads(text))  # only to name the difference
        raise mark_everywhere(error(message(differ, everyone[0], everyone[differ[0]])), comm)
