"""Which parcomp collective each rank is in, carried inside the reductions it already makes.

COMMUNICATES: :func:`reduce_checked` and :func:`allsum_scalar` are one ``MPI_Allreduce``
each (two for values that do not fit the first slot); on a mismatch (only then) one
``Iallgather`` names who was where.

A collective called on some ranks only (``if rank == 0: log(u.max())``) meets whatever
collective the other ranks make next: rank 0's maximum was reduced with the others' sums
and rank 0 printed 3075.07 for a field bounded by 3, then the job hung or died in
"Message truncated".  parcomp now puts the identity of the call inside the reductions it
makes, as extra words in the same buffer (no extra message for the scalars of a step
loop):

* the outermost parcomp collective a rank enters (:func:`parcomp.runtime.watchdog.collective`)
  sets :data:`current` to its name: one assignment, nothing else on the way in;
* every checked reduction is numbered on its own communicator (every rank of it makes
  the same reductions on it, so the numbers agree), and its identity is a 20-bit digest
  ``d`` of the call's name, that number and the slot's kind (a value summed, a flag, or
  the identity alone before a payload, with the payload's size, type and operator);
* every checked reduction starts with one reduction of a single complex128 word with
  ``SUM`` (the slot): its real part carries the value when the reduction is a float64
  sum of one number (a dot product, ``sum()``, an agreement's flag: the hot cases, so
  they cost no extra message), else 0; its imaginary part carries ``d``.  Anything else
  (arrays, ``max``/``min``, integers, complex values) follows the slot in a reduction of
  its own (one more latency, paid only off the hot path).  One size, one type and one
  operator for every slot mean that two ranks in different calls never make MPI compare
  buffers of different lengths (MPICH reports that as a fatal "Message truncated" with no
  Python traceback), and that every rank computes the same sum;
* all ranks had the same ``d`` iff the summed digests equal ``p`` times this rank's, on
  every rank (exact: digests below 2**20).  The check runs on every rank after the slot
  and before any value is returned.  A mismatch raises
  :class:`~parcomp.runtime.errors.CollectiveError`, naming each rank's call, the reduction's
  number and the user's line that made it; the ranks that saw it compare notes for up to
  :data:`MEET_WITHIN` seconds, so that the error is raised on every rank and printed
  once.  (When the digests differ but sum to ``p`` times some rank's own, about one in a
  million mismatches, that rank goes on; the others then raise alone and fail-fast ends
  the job.)

The identity is the call's name and the reduction's number, so two ranks in the same
call on different arrays are not told apart (nothing can tell).  Point-to-point exchanges (halos,
particles) carry no identity: a mismatch there is a wait, which ``parcomp run`` reports
(``--hang-after``, and a job whose finished rank leaves others in a collective).  An MPI
error raised inside a parcomp reduction is turned into a report on the rank that saw it,
pointing at the user's line.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from parcomp.runtime import config
from parcomp.runtime.errors import CollectiveError
from parcomp.runtime.ranks import format_ranks, mark_everywhere
from parcomp.runtime.subcomm import comm_cache

__all__ = [
    "enabled",
    "set_enabled",
    "checked",
    "any_flag",
    "check_in",
    "allreduce_scalar",
    "allsum_scalar",
    "current",
    "reduce_checked",
    "user_line",
]

_PARCOMP_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # parcomp/
#: The first reduction of every checked call: ONE complex128 word reduced with SUM, its
#: real part a value (or 0), its imaginary part the identity digest.  One element: MPICH
#: reduces a single element on a faster path than two (1.5 against 2.5 us here).
_SLOT = np.zeros(1, np.complex128)
_SLOT_WORDS = _SLOT.view(np.float64)  # (real, imaginary): written and read as floats
_PAYLOAD = np.zeros(1, np.float64)


def _env_enabled() -> bool:
    return bool(config.get("PARCOMP_CHECK_COLLECTIVES"))


_enabled = [_env_enabled()]
#: Checked reductions made by this process (the benchmark proves it measured some).
_COUNT = [0]


def checked() -> int:
    """Checked reductions made by this process so far (a benchmark proves with it that it
    measured some)."""
    return _COUNT[0]


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


#: The name of the outermost parcomp collective this rank is in (None outside), set by
#: :func:`parcomp.runtime.watchdog.collective`: a list, so that the decorator sets it in one step.
current: list[str | None] = [None]

#: Checked reductions per communicator, counted on the communicator itself (``[count,
#: size]`` in its attribute dict, :func:`parcomp.runtime.subcomm.comm_cache`: every rank
#: of a communicator makes the same reductions on it, so the counts agree, and the count
#: dies with it); the last communicator used and its entry, for the next call.
_LAST: list[Any] = [None, None]
_NAMES: dict[tuple[str, int], int] = {}


def _base(name: str, kind: int) -> int:
    """64 random-looking bits for a call name and slot kind, the same in every process."""
    import hashlib

    digest = hashlib.blake2b(f"{name}\0{kind}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


#: The digests are residues modulo this prime (2**20 - 3), plus 1: 20 bits, never 0.
_PRIME = 1_048_573


#: Slot kinds, mixed into the digest: a value summed, a flag, the identity alone.
SUM, FLAG, PRE = 0, 104_729, 209_459


def user_line() -> str:
    """``file:line`` of the innermost frame outside parcomp (the user's call), or ``?``."""
    frame = sys._getframe(1)  # noqa: SLF001 - the stdlib's frame access; inspect.stack costs 100x
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
    MPI = _MPI[0]
    if MPI is None:
        from mpi4py import MPI

        _MPI[0] = MPI
        _SUM_OP[0] = MPI.SUM
        _IN_PLACE[0] = MPI.IN_PLACE
    return MPI


_MPI: list[Any] = [None]


def reduce_checked(comm: Any, values: np.ndarray, op: Any, out: np.ndarray | None = None) -> Any:
    """``MPI_Allreduce`` of ``values`` with ``op`` over ``comm``, checking first that every
    rank is in the same parcomp collective (see the module docstring).

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
        When the ranks are in different parcomp collectives (on every rank that saw it);
        on the rank that saw it, when MPI raises inside the reduction.

    Notes
    -----
    Collective over `comm`: call on all ranks.  A single float64 summed travels in the
    slot itself (one ``Allreduce``); anything else after a slot holding the identity
    alone (two).
    """
    MPI = _MPI[0] or _mpi()
    if out is None:
        out = np.empty(values.shape, values.dtype)
    name = current[0]
    if name is not None and _enabled[0]:
        if values.size == 1 and values.dtype.char == "d" and (op is MPI.SUM or op == MPI.SUM):
            out.flat[0] = _slot(comm, name, float(values.reshape(-1)[0]), SUM)
            return out
        # the payload's size, type and operator in the digest: ranks about to reduce
        # different payloads (an array of another shape) meet here, not in MPI
        _slot(comm, name, 0.0, PRE + _payload_code(values.size, values.dtype.char, op))
        name = None
    _plain(comm, values, out, op)
    return out


def _payload_code(size: int, char: str, op: Any) -> int:
    """A number for a payload's size, type and operator, the same in every process."""
    MPI = _MPI[0] or _mpi()
    code = _OPCODES.get(op.handle)
    if code is None:  # numbered alike in every process (handles may differ between them)
        builtin = (MPI.SUM, MPI.MAX, MPI.MIN, MPI.PROD, MPI.LAND, MPI.LOR, MPI.BAND, MPI.BOR)
        code = _OPCODES[op.handle] = next((k for k, o in enumerate(builtin, 1) if op == o), 0)
    return (size * 1_009 + ord(char) * 31 + code) % 100_003


_OPCODES: dict[int, int] = {}


def _slot(comm: Any, name: str, value: float, kind: int) -> float:
    """Reduce ``(value, digest)`` as one complex128 word with SUM; check the digests;
    return the sum of the values.  Written flat: it runs in every dot product."""
    last = _LAST
    if last[0] is comm:
        entry = last[1]
    else:
        _mpi()
        store = comm_cache(comm)
        entry = store.get("checked reductions")
        if entry is None:
            entry = store["checked reductions"] = [0, comm.Get_size()]
        last[0], last[1] = comm, entry
    seq = entry[0] = entry[0] + 1
    base = _NAMES.get((name, kind))
    if base is None:
        base = _NAMES[(name, kind)] = _base(name, kind)
    # a random base per (call, kind) and a multiply-xorshift mix of the number: no
    # structure left for ranks whose numbers or payload sizes are in arithmetic
    # progression (a linear digest summed to p times the middle one's and passed)
    x = ((base ^ seq) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    d = (x ^ (x >> 29)) % _PRIME + 1
    words = _SLOT_WORDS
    words[0] = value
    words[1] = d
    _COUNT[0] += 1
    try:
        comm.Allreduce(_IN_PLACE[0], _SLOT, op=_SUM_OP[0])
    except _MPI[0].Exception as exc:
        _translate(comm, exc, (name, seq, d))
    total, digests = words.tolist()
    # the same digest on every rank iff the sum of digests is p times this rank's (on
    # every rank: the sum is the same everywhere); exact below 2**53
    if digests != entry[1] * d:
        _mismatch(comm, (name, seq, d))
    return total


def check_in(comm: Any, code: int = 0) -> None:
    """Check that every rank is in the same parcomp collective, in one slot (one
    ``Allreduce`` of one word), before a collective that carries no identity of its own
    (a gather's point-to-point messages).  ``code``: a number the call's arguments give,
    the same on every rank that agrees (a gather's root).

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    name = current[0]
    if name is not None and _enabled[0]:
        _slot(comm, name, 0.0, PRE + 7 + code % 99_991)


def any_flag(comm: Any, flag: bool) -> bool:
    """Whether ``flag`` is true on any rank, in the checked slot (one ``Allreduce``).

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    name = current[0]
    if name is not None and _enabled[0]:
        return _slot(comm, name, 1.0 if flag else 0.0, FLAG) > 0
    MPI = _MPI[0] or _mpi()
    box = np.array([1 if flag else 0], np.int64)
    _plain(comm, box, box, MPI.MAX)
    return bool(box[0])


def allreduce_scalar(comm: Any, value: Any, op: Any = None) -> Any:
    """The reduction over ``comm`` of one float64 or complex128 number (``op``: ``SUM``,
    the default, ``MAX`` or ``MIN`` for floats), checked like :func:`reduce_checked`: a
    CG iteration makes two dot products, so a float sum goes in the slot itself, one
    ``Allreduce`` as without the check.  Returns a ``numpy.float64`` or a ``complex``.
    """
    MPI = _MPI[0] or _mpi()
    if op is None:
        op = _SUM_OP[0]
    name = current[0]
    if isinstance(value, complex | np.complexfloating):
        box = np.array([value], np.complex128)
        reduce_checked(comm, box, op, box)
        return complex(box[0])
    if name is not None and _enabled[0]:
        if op is _SUM_OP[0] or op == MPI.SUM:
            return np.float64(_slot(comm, name, float(value), SUM))
        _slot(comm, name, 0.0, PRE + _payload_code(1, "d", op))
    box = _PAYLOAD
    box[0] = value
    _allreduce(comm, MPI.IN_PLACE, box, op, None)
    return np.float64(box[0])


def allsum_scalar(comm: Any, value: Any) -> Any:
    """:func:`allreduce_scalar` with ``SUM`` (a float goes straight into the slot)."""
    name = current[0]
    if name is not None and _enabled[0] and type(value) is not complex and value.dtype.char == "d":
        return np.float64(_slot(comm, name, float(value), SUM))
    return allreduce_scalar(comm, value)


def _plain(comm: Any, values: np.ndarray, out: np.ndarray, op: Any) -> None:
    MPI = _MPI[0] or _mpi()
    if out is values:
        _allreduce(comm, MPI.IN_PLACE, out, op, None)
    else:
        _allreduce(comm, np.ascontiguousarray(values), out, op, None)


_SUM_OP: list[Any] = [None]


_IN_PLACE: list[Any] = [None]


def _allreduce(comm: Any, send: Any, recv: np.ndarray, op: Any, ident: Any) -> None:
    MPI = _mpi()
    try:
        comm.Allreduce(send, recv, op=op)
    except MPI.Exception as exc:
        _translate(comm, exc, ident)


def _translate(comm: Any, exc: Any, ident: Any) -> None:
    """Raise MPI's error ``exc`` from inside a parcomp reduction: as it is, unless it says
    that the ranks reduced buffers of different sizes or types (different collectives)."""
    MPI = _mpi()
    if exc.Get_error_class() not in (MPI.ERR_TRUNCATE, MPI.ERR_COUNT, MPI.ERR_TYPE):
        raise exc  # a lost process (ULFM recovers from it), a revoked communicator ...

    where = f"{ident[0]} (reduction #{ident[1]} on this communicator)" if ident else "a reduction"
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

    Every slot is the same sum on every rank, so every rank normally sees the mismatch and
    they compare notes (one ``Iallgather`` of fixed-size records); the error is then
    raised on every rank and printed once.  When the digests happen to sum to ``p`` times
    some rank's own, that rank saw nothing: after :data:`MEET_WITHIN` seconds this rank
    raises with what it knows (the job then ends through fail-fast).
    """
    import time

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
            f"(reduction #{c[1]} on this communicator, called at {c[2]})"
            for c, ranks in groups.items()
        ]
        odd = tuple(r for r, c in enumerate(calls) if c != calls[0])
        text = ", ".join(parts)
    else:
        rank = comm.Get_rank()
        odd = (rank,)
        text = (
            f"rank {rank} is in {ident[0]} (reduction #{ident[1]} on this communicator, called at "
            f"{line}) and some other rank was not (it did not answer within {MEET_WITHIN:g} s)"
        )
    if calls and all(c == calls[0] for c in calls):
        c = calls[0]
        exc = CollectiveError(
            f"every rank is in {c[0]} (reduction #{c[1]} on this communicator, called at "
            f"{c[2]}), but they reduce different things: an array of another shape or "
            "dtype, or another operator, on some rank. Pass the same on every rank",
            tuple(range(len(calls))),
        )
    else:
        exc = CollectiveError(
            "ranks met in different parcomp collectives, so their values were mixed: "
            + text
            + ". Every rank of a communicator must make the same parcomp collective calls "
            "(reductions, exchange_halos, gather, save ...) in the same order: is one "
            "inside `if rank == 0:`?",
            odd,
        )
    if calls:
        raise mark_everywhere(exc, comm)
    raise exc
