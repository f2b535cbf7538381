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
* every checked reduction starts with one reduction of :data:`SLOT` (10) float64 words:
  up to 6 words of values (float64; complex128 as two words; int64 sums as exact 32-bit
  halves; int64 flags and 52-bit digests), then four identity words.  Other values
  (larger, other types, other operators) go after a first slot that holds the identity
  alone (one more latency, paid only by reductions that are not scalars).  One size and
  one type for every first slot mean that two ranks in different calls never make MPI
  compare buffers of different lengths or types (MPICH reports the first as a fatal
  "Message truncated" with no Python traceback);
* the identity words are ``(d, -d, d**2, -d**2)`` whatever the operator.  With ``SUM``
  all ranks had the same ``d`` iff ``(sum d)**2 == p * sum d**2`` (Cauchy-Schwarz; exact
  up to 8191 ranks); with ``MAX`` or ``MIN`` iff every word is still this rank's own.
  Because every operator uses the same words, a rank whose peer reduced with another
  operator (``max`` meeting ``sum``) sees them as a peer with another ``d``;
* the check runs on every rank after the reduction and before any value is returned.  A
  mismatch raises :class:`~parcomp.errors.CollectiveError`, naming each rank's call, its
  number and the user's line that made it; the ranks that saw it compare notes for up to
  :data:`MEET_WITHIN` seconds, so that the error is raised on every rank and printed once.
  When ranks reduced with different operators, some may see no mismatch (each computed
  its own result) and go on: the ranks that saw it then raise alone and fail-fast ends
  the job.

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
    "enabled",
    "set_enabled",
    "stats",
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
#: Words (float64) of the first reduction of every checked call: VALUES value words, then
#: the four identity words.
VALUES = 6
SLOT = VALUES + 4
_SCALAR = np.zeros(SLOT, np.float64)


def _env_enabled() -> bool:
    return os.environ.get("PARCOMP_CHECK_COLLECTIVES", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


_enabled = [_env_enabled()]
#: Checked reductions made by this process (the benchmark proves it measured some).
stats = {"checked": 0}


def enabled() -> bool:
    """Whether calls are numbered and reductions checked (``PARCOMP_CHECK_COLLECTIVES``,
    on unless ``0``)."""
    return _enabled[0]


def set_enabled(flag: bool) -> bool:
    """Turn the check on or off in this process (local; do it on every rank at the same
    point, outside any parcomp collective); returns the previous setting."""
    previous = _enabled[0]
    _enabled[0] = bool(flag)
    return previous


def current() -> tuple[str, int] | None:
    """``(name, sequence number)`` of the parcomp collective this rank is in, if any."""
    ident = _current[0]
    return None if ident is None else (ident[0], ident[1])


def enter(comm: Any, name: str) -> Any:
    """Start the outermost parcomp collective ``name`` on ``comm`` (local); returns a token
    for :func:`leave`."""
    from parcomp.subcomm import comm_cache

    previous = _current[0]
    if not _enabled[0]:
        _current[0] = None
        return previous
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


def reduce_checked(
    comm: Any, values: np.ndarray, op: Any, out: np.ndarray | None = None, *, small: bool = False
) -> Any:
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
    small : bool
        The caller guarantees that int64 values are below 2**52 in magnitude on every
        rank (flags, 52-bit digests): their ``MAX``/``MIN`` then travel in the slot.

    Returns
    -------
    numpy.ndarray
        ``out`` (or a new array) holding the reduction.

    Raises
    ------
    CollectiveError
        When the ranks are in different parcomp collectives (on every rank that saw it);
        on the rank that saw it, when MPI raises inside the reduction.

    Notes
    -----
    Collective over `comm`: call on all ranks.  Which path a reduction takes depends only
    on its dtype, operator, size and ``small``, which every rank of one call shares.
    """
    MPI = _mpi()
    ident = _current[0]
    if out is None:
        out = np.empty(values.shape, values.dtype)
    if ident is None:
        _plain(comm, values, out, op, ident)
        return out
    kind, n = values.dtype, values.size
    summing = op == MPI.SUM
    flat = np.ascontiguousarray(values).reshape(-1)
    buf = np.zeros(SLOT, np.float64)
    if kind == np.float64 and op in (MPI.SUM, MPI.MAX, MPI.MIN) and n <= VALUES:
        buf[:n] = flat
        unpack = "float"
    elif kind == np.complex128 and summing and 2 * n <= VALUES:
        buf[: 2 * n] = flat.view(np.float64)
        unpack = "complex"
    elif kind == np.int64 and summing and 2 * n <= VALUES:
        buf[:n] = flat >> 32  # exact halves: sums of p of them stay below 2**53
        buf[n : 2 * n] = flat & 0xFFFFFFFF
        unpack = "int-split"
    elif kind == np.int64 and small and op in (MPI.MAX, MPI.MIN) and n <= VALUES:
        buf[:n] = flat
        unpack = "int"
    else:
        unpack = ""
    # the digest of this reduction: the call's, mixed with what is reduced (two ranks in
    # one call whose reductions differ, a row of sums against one sum, differ too)
    ident = (*ident[:2], _mix(ident[2], op, kind, values.shape))
    _stamp(buf, ident[2])
    stats["checked"] += 1
    _allreduce(comm, MPI.IN_PLACE, buf, op if unpack else MPI.MAX, ident)
    _check(comm, op if unpack else MPI.MAX, buf, ident)
    target = out.reshape(-1)
    if unpack == "float":
        target[:] = buf[:n]
    elif unpack == "complex":
        target.view(np.float64)[:] = buf[: 2 * n]
    elif unpack == "int-split":
        high = buf[:n].astype(np.int64)
        low = buf[n : 2 * n].astype(np.int64)
        target[:] = (high << 32) + low  # wraps as an int64 MPI sum would
    elif unpack == "int":
        target[:] = buf[:n].astype(np.int64)
    else:  # the identity went alone: now the values
        _plain(comm, values, out, op, ident)
    return out


def _mix(d: int, op: Any, kind: np.dtype, shape: tuple[int, ...]) -> int:
    """A 20-bit digest of the call's digest ``d`` and the reduction's operator, type and
    shape (never 0)."""
    text = f"{d}/{_op_name(op)}/{kind.str}/{shape}"
    return (zlib.crc32(text.encode()) % ((1 << _BITS) - 1)) + 1


def _op_name(op: Any) -> str:
    MPI = _mpi()
    for name in ("SUM", "MAX", "MIN", "PROD", "LAND", "LOR", "BAND", "BOR", "LXOR", "BXOR"):
        if op == getattr(MPI, name):
            return name
    return "user"


def _plain(comm: Any, values: np.ndarray, out: np.ndarray, op: Any, ident: Any) -> None:
    MPI = _mpi()
    if out is values:
        _allreduce(comm, MPI.IN_PLACE, out, op, ident)
    else:
        _allreduce(comm, np.ascontiguousarray(values), out, op, ident)


def _stamp(buf: np.ndarray, d: int) -> None:
    """The identity words: the same four for every operator (see the module docstring)."""
    buf[VALUES] = d
    buf[VALUES + 1] = -d
    buf[VALUES + 2] = d * d
    buf[VALUES + 3] = -d * d


def _check(comm: Any, op: Any, buf: np.ndarray, ident: Any) -> None:
    """Raise unless the reduced words say that all ranks were in this call."""
    words = buf[VALUES:].tolist()
    if not all(math.isfinite(w) and float(w).is_integer() for w in words):
        _mismatch(comm, ident)
    a, b, c, e = (int(w) for w in words)
    d = ident[2]
    if op == _mpi().SUM:
        same = a == -b and c == -e and a * a == comm.Get_size() * c and a > 0
    else:  # MAX and MIN select: every position must hold this rank's own word
        same = a == d and b == -d and c == d * d and e == -d * d
    if not same:
        _mismatch(comm, ident)


def allsum_scalar(comm: Any, value: Any) -> Any:
    """The sum over ``comm`` of one float or complex number (a dot product's last step),
    checked like :func:`reduce_checked`, with a preallocated buffer: a CG iteration makes
    two, and every Python step on the way to the one-number ``Allreduce`` counts."""
    MPI = _mpi()
    ident = _current[0]
    buf = _SCALAR
    is_complex = isinstance(value, complex | np.complexfloating)
    if is_complex:
        buf[0], buf[1] = value.real, value.imag
    else:
        buf[0], buf[1] = value, 0.0
    if ident is None:
        _allreduce(comm, MPI.IN_PLACE, buf[:2], MPI.SUM, None)
    else:
        buf[2:VALUES] = 0.0
        _stamp(buf, ident[2])
        stats["checked"] += 1
        _allreduce(comm, MPI.IN_PLACE, buf, MPI.SUM, ident)
        _check(comm, MPI.SUM, buf, ident)
    return complex(buf[0], buf[1]) if is_complex else np.float64(buf[0])


def _allreduce(comm: Any, send: Any, recv: np.ndarray, op: Any, ident: Any) -> None:
    MPI = _mpi()
    try:
        comm.Allreduce(send, recv, op=op)
    except MPI.Exception as exc:
        if exc.Get_error_class() not in (MPI.ERR_TRUNCATE, MPI.ERR_COUNT, MPI.ERR_TYPE):
            raise  # a lost process (ULFM recovers from it), a revoked communicator ...
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


_RECORD = np.dtype([("seq", "<i8"), ("name", "S64"), ("line", "S184")])
#: Seconds the ranks that saw a mismatch wait for each other to compare notes.
MEET_WITHIN = 3.0


def _mismatch(comm: Any, ident: tuple[str, int, int]) -> None:
    """This rank saw the words differ: name who is where, then raise.

    With the same operator and type on every rank, every rank sees the mismatch and they
    compare notes (one ``Iallgather`` of fixed-size records); the error is then raised on
    every rank and printed once.  When the ranks reduced with different operators, each
    computed its own result and some may have seen nothing: after :data:`MEET_WITHIN`
    seconds this rank raises with what it knows (the job then ends through fail-fast).
    """
    import time

    from parcomp.comm import mark_everywhere
    from parcomp.errors import CollectiveError
    from parcomp.watchdog import format_ranks

    line = user_line()
    mine = np.zeros(1, _RECORD)
    mine[0] = (ident[1], ident[0].encode()[:64], line.encode()[:184])
    size = comm.Get_size()
    everyone = np.zeros(size, _RECORD)
    calls: list[tuple[str, int, str]] = []
    try:
        request = comm.Iallgather(mine.view(np.uint8), everyone.view(np.uint8))
        deadline = time.monotonic() + MEET_WITHIN
        while not request.Test():
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        else:
            calls = [
                (n.decode(errors="replace"), int(q), w.decode(errors="replace"))
                for q, n, w in everyone.tolist()
            ]
    except Exception:  # noqa: BLE001 - MPI refused: say what this rank knows
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
        rank = comm.Get_rank()
        odd = (rank,)
        text = (
            f"rank {rank} is in {ident[0]} (#{ident[1]} on this communicator, called at "
            f"{line}) and some other rank was not (it did not answer within {MEET_WITHIN:g} s)"
        )
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
