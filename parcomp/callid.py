"""Which parcomp collective each rank is in, carried inside the reductions it already makes.

COMMUNICATES: :func:`reduce_checked` is one ``MPI_Allreduce``; on a mismatch (only then)
one ``allgather`` names who was where.  The bookkeeping (:func:`enter`, :func:`leave`) is
local.

A collective called on some ranks only (``if rank == 0: log(u.max())``) meets whatever
collective the other ranks make next: rank 0's maximum was reduced with the others' sums
and rank 0 printed 3075.07 for a field bounded by 3, then the job hung or died in
"Message truncated".  parcomp now numbers its collective calls per communicator and puts
the number and the call's name inside the reductions it makes, as two extra words in the
same buffer (no extra message for the scalars of a step loop):

* the outermost parcomp collective a rank enters (:func:`parcomp.watchdog.collective`)
  takes the next sequence number on its communicator; its identity is a 20-bit digest
  ``d`` of ``(name, sequence number)``;
* every checked reduction starts with one reduction of :data:`SLOT` (10) eight-byte
  words: up to 8 words of values, then the two identity words.  Larger values, or
  other types and operators, go after a first slot that holds the identity alone (one
  more latency, paid only by reductions that are not scalars).  Equal sizes mean that two
  ranks in different calls never make MPI compare buffers of different lengths, which
  MPICH reports as a fatal "Message truncated" with no Python traceback;
* with ``MAX`` or ``MIN`` the words are ``(d, -d)``: all ranks have the same ``d`` iff
  ``max(d) == -max(-d)``; with ``SUM`` they are ``(d, d**2)``: all equal iff
  ``(sum d)**2 == p * sum d**2`` (Cauchy-Schwarz; exact up to 8191 ranks);
* the check runs on every rank after the reduction and before any value is returned.  A
  mismatch raises :class:`~parcomp.errors.CollectiveError` on every rank, naming each
  rank's call, its number and the user's line that made it.  A peer that reduced other
  types or another operator in the same slot leaves words that read as garbage, NaN or
  huge integers, never as a match.

The identity is the call's (name, number), so two ranks in the same call on different
arrays are not told apart (nothing can tell).  Point-to-point exchanges (halos,
particles) carry no identity: a mismatch there is a wait, which ``parcomp run`` reports
(``--hang-after``, and a job whose finished rank leaves others in a collective).  An MPI
error raised inside a parcomp reduction is turned into a report on the rank that saw it,
pointing at the user's line.
"""

from __future__ import annotations

import math
import os
import sys
import zlib
from typing import Any

import numpy as np

__all__ = [
    "CHECKED_DTYPES",
    "SLOT",
    "allsum_scalar",
    "current",
    "enter",
    "leave",
    "reduce_checked",
    "user_line",
]

#: Buffer types that carry the identity words (complex128 travels as float64 pairs).
CHECKED_DTYPES = (np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.complex128))

_PARCOMP_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_current: list[Any] = [None]  # (name, seq, digest) of the outermost collective running
_KEY = "callid.seq"
_BITS = 20
#: Words of the first reduction of every checked call: up to VALUES values, then two words.
VALUES = 8
SLOT = VALUES + 2
_SCALAR = np.zeros(SLOT, np.float64)


def current() -> tuple[str, int] | None:
    """``(name, sequence number)`` of the parcomp collective this rank is in, if any."""
    ident = _current[0]
    return None if ident is None else (ident[0], ident[1])


def enter(comm: Any, name: str) -> Any:
    """Start the outermost parcomp collective ``name`` on ``comm`` (local); returns a token
    for :func:`leave`."""
    from parcomp.subcomm import comm_cache

    previous = _current[0]
    try:
        cache = comm_cache(comm)
    except Exception:  # noqa: BLE001 - not a live communicator: the call itself will say so
        _current[0] = None
        return previous
    seq = cache.get(_KEY, 0) + 1
    cache[_KEY] = seq
    digest = (zlib.crc32(f"{name}#{seq}".encode()) % ((1 << _BITS) - 1)) + 1
    _current[0] = (name, seq, digest)
    return previous


def leave(token: Any) -> None:
    """End the call started by :func:`enter` (local)."""
    _current[0] = token


def user_line() -> str:
    """``file:line`` of the innermost frame outside parcomp (the user's call), or ``?``."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not os.path.abspath(name).startswith(_PARCOMP_DIR) and "<frozen" not in name:
            if not name.startswith("<"):
                rel = os.path.relpath(name)
                name = name if rel.startswith("..") else rel
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def reduce_checked(comm: Any, values: np.ndarray, op: Any, out: np.ndarray | None = None) -> Any:
    """``MPI_Allreduce`` of ``values`` with ``op`` over ``comm``, checking that every rank
    is in the same parcomp collective (see the module docstring).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator.
    values : numpy.ndarray
        This rank's contribution (any numeric dtype, any shape).
    op : mpi4py.MPI.Op
        A built-in operator.
    out : numpy.ndarray, optional
        Where the result goes (same shape and dtype, C-contiguous); ``values`` itself
        reduces in place.

    Returns
    -------
    numpy.ndarray
        ``out`` (or a new array) holding the reduction.

    Raises
    ------
    CollectiveError
        On every rank, when the ranks are in different parcomp collectives; on the rank
        that saw it, when MPI raises inside the reduction.

    Notes
    -----
    Collective over `comm`: call on all ranks.  Every checked reduction starts with one
    reduction of the same size, :data:`SLOT` words: the values themselves when they fit
    (up to 8 float64/int64 words, 4 complex128), else the identity words alone, then the
    values.  So two ranks in different calls never reduce buffers of different sizes
    (which MPICH reports as a fatal "Message truncated", with no Python traceback).
    """
    MPI = _mpi()
    ident = _current[0]
    if out is None:
        out = np.empty(values.shape, values.dtype)
    if ident is None:
        _plain(comm, values, out, op, ident)
        return out
    kind = values.dtype
    words = values.size * (2 if kind.kind == "c" else 1)
    if kind in CHECKED_DTYPES and op in (MPI.SUM, MPI.MAX, MPI.MIN) and words <= VALUES:
        base = np.float64 if kind.kind in "fc" else np.int64
        buf = np.zeros(SLOT, base)
        flat = np.ascontiguousarray(values).reshape(-1)
        buf[:words] = flat.view(np.float64) if kind.kind == "c" else flat
        _stamp(buf, op, ident[2])
        _allreduce(comm, MPI.IN_PLACE, buf, op, ident)
        _check(comm, op, buf, ident)
        out.reshape(-1).view(base)[:] = buf[:words]
        return out
    buf = np.zeros(SLOT, np.int64)  # the identity alone, then the values
    _stamp(buf, MPI.MAX, ident[2])
    _allreduce(comm, MPI.IN_PLACE, buf, MPI.MAX, ident)
    _check(comm, MPI.MAX, buf, ident)
    _plain(comm, values, out, op, ident)
    return out


def _plain(comm: Any, values: np.ndarray, out: np.ndarray, op: Any, ident: Any) -> None:
    MPI = _mpi()
    if out is values:
        _allreduce(comm, MPI.IN_PLACE, out, op, ident)
    else:
        _allreduce(comm, np.ascontiguousarray(values), out, op, ident)


def _stamp(buf: np.ndarray, op: Any, d: int) -> None:
    buf[VALUES] = d
    buf[VALUES + 1] = d * d if op == _mpi().SUM else -d


def _check(comm: Any, op: Any, buf: np.ndarray, ident: Any) -> None:
    """Raise on every rank unless the reduced words say that all ranks were in one call.

    Robust to a peer that reduced other types or another operator in the same slot (its
    words then read as garbage, NaN or huge integers: never as a match)."""
    a, b = buf[VALUES].item(), buf[VALUES + 1].item()
    if isinstance(a, float):
        if not (math.isfinite(a) and math.isfinite(b) and a.is_integer() and b.is_integer()):
            _mismatch(comm, ident)
        a, b = int(a), int(b)
    same = a * a == comm.Get_size() * b if op == _mpi().SUM else (a == -b and a == ident[2])
    if not same:
        _mismatch(comm, ident)


def allsum_scalar(comm: Any, value: Any) -> Any:
    """The sum over ``comm`` of one float or complex number (a dot product's last step),
    checked like :func:`reduce_checked`, with a preallocated buffer: a CG iteration makes
    two, and every Python step on the way to the one-number ``Allreduce`` counts."""
    MPI = _mpi()
    ident = _current[0]
    buf = _SCALAR
    buf[:] = 0.0
    is_complex = isinstance(value, complex | np.complexfloating)
    if is_complex:
        buf[0], buf[1] = value.real, value.imag
    else:
        buf[0] = value
    if ident is None:
        _allreduce(comm, MPI.IN_PLACE, buf[:2], MPI.SUM, None)
    else:
        _stamp(buf, MPI.SUM, ident[2])
        _allreduce(comm, MPI.IN_PLACE, buf, MPI.SUM, ident)
        _check(comm, MPI.SUM, buf, ident)
    return complex(buf[0], buf[1]) if is_complex else np.float64(buf[0])


def _allreduce(comm: Any, send: Any, recv: np.ndarray, op: Any, ident: Any) -> None:
    MPI = _mpi()
    try:
        comm.Allreduce(send, recv, op=op)
    except MPI.Exception as exc:
        from parcomp.errors import CollectiveError

        where = f"{ident[0]} (#{ident[1]} on this communicator)" if ident else "a reduction"
        rank = comm.Get_rank()
        raise CollectiveError(
            f"MPI failed inside parcomp's {where}, called at {user_line()} on rank {rank}: "
            f"{exc.Get_error_string().strip()}. This happens when the ranks call different "
            "collectives (one inside `if rank == 0:`?): every rank of the communicator "
            "must make the same parcomp collective calls in the same order",
            (rank,),
        ) from None


def _mismatch(comm: Any, ident: tuple[str, int, int]) -> None:
    """Every rank here saw the words differ: name who is where, then raise everywhere."""
    from parcomp.comm import mark_everywhere
    from parcomp.errors import CollectiveError
    from parcomp.watchdog import format_ranks
    from parcomp.wire import allgather_json

    mine = [ident[0], ident[1], user_line()]
    try:
        calls = [tuple(c) for c in allgather_json(comm, mine)]
    except Exception:  # noqa: BLE001 - the others are elsewhere: say what this rank knows
        calls = []
    if calls:
        groups: dict[tuple, list[int]] = {}
        for r, call in enumerate(calls):
            groups.setdefault(call, []).append(r)
        parts = [
            f"{format_ranks(ranks)} {'is' if len(ranks) == 1 else 'are'} in {c[0]} "
            f"(#{c[1]} on this communicator, called at {c[2]})"
            for c, ranks in groups.items()
        ]
        odd = tuple(r for r, c in enumerate(calls) if c != calls[0])
        text = ", ".join(parts)
    else:
        odd = (comm.Get_rank(),)
        text = f"rank {comm.Get_rank()} is in {ident[0]} (#{ident[1]}, called at {mine[2]})"
    exc = CollectiveError(
        "ranks met in different parcomp collectives, so their values were mixed: "
        + text
        + ". Every rank of a communicator must make the same parcomp collective calls "
        "(reductions, exchange_halos, gather, save ...) in the same order: is one inside "
        "`if rank == 0:`?",
        odd,
    )
    if calls:
        raise mark_everywhere(exc, comm)
    raise exc
