"""Hang diagnosis on the rank side: stack dumps on demand, a heartbeat, collective tracing.

Local, except the debug-mode check of :func:`collective`, which COMMUNICATES (one
``Allgather`` per parcomp collective call, on a private communicator).

``parcomp run`` gives every job a watchdog folder (``$PARCOMP_WATCHDOG_DIR``).  When parcomp
is imported on a rank there, :func:`install` (called by ``import parcomp``)

* registers :mod:`faulthandler` on ``SIGQUIT`` with ``rank-<r>.stack`` as its file.  The
  handler is C code: it writes every thread's Python stack even while the rank is blocked
  inside an MPI call or a Numba kernel, where no Python-level handler could run;
* maps ``rank-<r>.beat``, a small file in which every parcomp collective call
  (:func:`collective`) records its sequence number, its name and whether it is still inside.
  That is two ``struct.pack_into`` calls per collective call, no system call, so the step
  loop pays nothing measurable (``bench/watchdog.py``).

The supervisor reads the beats to notice that no rank has progressed for ``--hang-after``
seconds, and on a hang or a timeout sends ``SIGQUIT`` to every rank, then prints the
stacks grouped by rank (:mod:`parcomp.launch.hang`).

``PARCOMP_DEBUG_COLLECTIVES=1`` also checks, at the entry of every parcomp collective call,
that all ranks of the communicator are entering the same call (the same name and the same
count of calls on that communicator).  A disagreement raises a :class:`CollectiveError` on
every rank, naming who is where ("rank 0 is in DistArray.sum (#3 on this communicator),
ranks 1-2 are in DistArray.exchange_halos (#3)").  It costs one small ``Allgather`` per
call, so it is for debugging only.
"""

from __future__ import annotations

import atexit
import faulthandler
import functools
import mmap
import os
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from parcomp.runtime import config
from parcomp.runtime.callid import current, user_line
from parcomp.runtime.errors import CollectiveError
from parcomp.runtime.ranks import format_ranks, mark_everywhere, resolve_comm, world_rank_size
from parcomp.runtime.subcomm import comm_cache, subsystem_comm

__all__ = [
    "BEAT_FORMAT",
    "BEAT_SIZE",
    "NAME_BYTES",
    "STACK_SIGNAL",
    "collective",
    "debug_collectives",
    "install",
    "mark_finished",
    "mark_initialized",
    "read_beat",
]

#: Signal that makes a rank write its stacks (``kill -QUIT <pid>`` works by hand too).
STACK_SIGNAL = signal.SIGQUIT
#: Heartbeat layout: pid, calls entered, the current call's name, calls left (-1 once the
#: script has finished and the rank waits in ``MPI_Finalize``).
NAME_BYTES = 64
BEAT_FORMAT = f"<qq{NAME_BYTES}sqq"  # ... then 1 once MPI is initialised
_LEFT_AT = 16 + NAME_BYTES
_INIT_AT = _LEFT_AT + 8
BEAT_SIZE = struct.calcsize(BEAT_FORMAT)
_ENTER = struct.Struct(f"<q{NAME_BYTES}s")  # precompiled: enter/leave run on every call
_COUNT = struct.Struct("<q")

F = TypeVar("F", bound=Callable[..., Any])


class _Beat:
    """The mapped heartbeat file of this rank."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, BEAT_SIZE)
            self.map = mmap.mmap(fd, BEAT_SIZE)
        finally:
            os.close(fd)
        self.entered = 0
        self.left = 0
        struct.pack_into("<q", self.map, 0, os.getpid())

    def enter(self, name: bytes) -> int:
        self.entered += 1
        _ENTER.pack_into(self.map, 8, self.entered, name)
        return self.entered

    def leave(self) -> None:
        self.left += 1
        _COUNT.pack_into(self.map, _LEFT_AT, self.left)

    def finished(self) -> None:
        struct.pack_into("<q", self.map, _LEFT_AT, -1)

    def initialized(self) -> None:
        struct.pack_into("<q", self.map, _INIT_AT, 1)


_beat: _Beat | None = None
_nesting = [0]  # parcomp collectives currently running in this process (main thread)
_stack_file: Any = None
_debug = False


def mark_initialized() -> None:
    """Record that MPI is initialised on this rank (``parcomp run``'s runner calls it)."""
    if _beat is not None:
        _beat.initialized()


def mark_finished() -> None:
    """Record that this rank's script has finished (for exits that skip ``atexit``)."""
    if _beat is not None:
        _beat.finished()


def read_beat(path: Path) -> tuple[int, int, int, str, int] | None:
    """``(pid, entered, left, name, initialised)`` from a heartbeat file, or None.

    ``left == -1`` means the rank's script has finished; ``initialised`` is 1 once MPI is.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(BEAT_SIZE)
    except OSError:
        return None
    if len(data) != BEAT_SIZE:
        return None
    pid, entered, raw, left, init = struct.unpack(BEAT_FORMAT, data)
    return pid, entered, left, raw.rstrip(b"\0").decode("utf-8", "replace"), init


def _flag(name: str) -> bool:
    return bool(config.get(name))


def debug_collectives() -> bool:
    """Whether ``PARCOMP_DEBUG_COLLECTIVES`` is on in this process."""
    return _debug


def install() -> bool:
    """Set up the stack dump and the heartbeat if ``$PARCOMP_WATCHDOG_DIR`` is set.

    Returns whether the watchdog is active.  Local; safe to call more than once.  The rank
    comes from the launcher's environment (``PMI_RANK`` ...), so MPI is not initialised.
    """
    global _beat, _stack_file, _debug
    _debug = _flag("PARCOMP_DEBUG_COLLECTIVES")
    folder = config.get("PARCOMP_WATCHDOG_DIR")
    if not folder or _beat is not None:
        return _beat is not None

    rank, _size = world_rank_size()
    base = Path(folder)
    try:
        if not base.is_dir():
            return False
        _stack_file = open(base / f"rank-{rank}.stack", "w", encoding="utf-8")
        faulthandler.register(STACK_SIGNAL, file=_stack_file, all_threads=True, chain=False)
        if not faulthandler.is_enabled():  # a segfault in a kernel prints where it happened
            faulthandler.enable(file=sys.stderr, all_threads=False)
        _beat = _Beat(base / f"rank-{rank}.beat")
        if config.get("PARCOMP_WATCHDOG_SHARED"):
            # a multi-node job: the supervisor cannot signal this rank if it runs on
            # another node; it asks through the shared folder instead
            (base / f"rank-{rank}.node").write_text(node_identity() + "\n", encoding="utf-8")
            _watch_requests(base / "dump-request")
        # mpi4py finalizes MPI after the interpreter (and faulthandler) is gone: say that the
        # script is done, so the supervisor neither signals it nor counts it as hung.
        atexit.register(_beat.finished)
        _watch_interrupts()
    except (OSError, ValueError, RuntimeError) as exc:
        sys.stderr.write(f"[rank {rank}] parcomp: hang watchdog not available: {exc}\n")
        return False
    return True


def node_identity() -> str:
    """This machine: ``"<hostname> <boot id>/<network namespace>"`` (a real cluster's nodes
    differ in their boot id; the nodes of a one-machine test rig, in their namespaces)."""
    import socket

    try:
        net = os.readlink("/proc/self/ns/net")
    except OSError:
        net = ""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()} {boot}/{net}"


def _watch_requests(path: Path, every: float = 0.2) -> None:
    """Write this rank's stacks each time ``path`` changes (a daemon thread; mpi4py
    releases the GIL while it waits in MPI, so the thread runs while the rank is blocked)."""
    import threading
    import time

    def stamp() -> tuple[int, int] | None:
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns

    def watch() -> None:
        last = stamp()
        while True:
            time.sleep(every)
            now = stamp()
            if now is not None and now != last and _stack_file is not None:
                faulthandler.dump_traceback(file=_stack_file, all_threads=True)
                _stack_file.flush()
            last = now

    threading.Thread(target=watch, name="parcomp-stack-requests", daemon=True).start()


def _watch_interrupts(grace: float = 1.0) -> None:
    """Make Ctrl-C end a rank that is blocked inside MPI, quietly, with status 130.

    Python runs its SIGINT handler only when the main thread returns to the interpreter,
    which a rank waiting in ``MPI_Waitall`` never does.  The C-level handler still writes
    the signal's number to the wakeup fd (``signal.set_wakeup_fd``); a daemon thread
    waiting on it (mpi4py releases the GIL in blocking calls, so it can run) gives the
    main thread ``grace`` seconds to raise ``KeyboardInterrupt`` as usual, then leaves with
    ``os._exit(130)``.  Otherwise ``parcomp run`` would wait and kill the job, and Hydra
    print its "BAD TERMINATION" banner.  Main thread only; nothing when a wakeup fd is
    already in use (an asyncio loop).
    """
    import socket
    import threading
    import time

    if threading.current_thread() is not threading.main_thread():
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        reader.close()
        writer.close()
        return
    if previous != -1:  # someone else's: give it back
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
        return

    def wait() -> None:
        while True:
            data = reader.recv(64)
            if not data:
                return
            if signal.SIGINT in data:
                time.sleep(grace)
                os._exit(130)

    threading.Thread(target=wait, name="parcomp-interrupt", daemon=True).start()
    _keep.extend([reader, writer])


_keep: list[Any] = []


def collective(name: str, comm_of: Callable[..., Any] | None = None) -> Callable[[F], F]:
    """Mark a parcomp function as a collective call for the watchdog.

    Only the outermost of nested parcomp collectives is recorded and checked: the one the
    user called (``DistArray.sum``, not the ``allreduce`` inside it).

    Parameters
    ----------
    name : str
        What the hang report calls it (``"DistArray.sum"``).
    comm_of : callable, optional
        ``comm_of(*args, **kwargs)`` gives the communicator the call is collective over,
        for the debug-mode check (default: ``args[0].comm``, for methods).
    """
    encoded = name.encode()[:NAME_BYTES]

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if _nesting[0]:
                # inside another parcomp collective: the outermost call is the one the
                # user made, and the one named, reported and checked
                return fn(*args, **kwargs)
            beat = _beat
            if beat is not None:
                beat.enter(encoded)  # first, so a hang in the debug check below names the call
            _nesting[0] += 1
            current[0] = name  # the reductions inside carry it (parcomp.runtime.callid)
            try:
                if _debug:
                    try:
                        comm = comm_of(*args, **kwargs) if comm_of is not None else args[0].comm
                        comm = _resolve(comm)
                    except Exception:  # noqa: BLE001 - a bad argument: the call says so
                        comm = None
                    if comm is not None:
                        _check_same_call(comm, name)
                return fn(*args, **kwargs)
            finally:
                _nesting[0] -= 1
                current[0] = None
                if beat is not None:
                    beat.leave()

        return call  # type: ignore[return-value]

    return decorate


def _resolve(comm: Any) -> Any:
    """:func:`parcomp.runtime.ranks.resolve_comm`, looked up once."""
    global _resolve_comm
    if _resolve_comm is None:
        _resolve_comm = resolve_comm
    return _resolve_comm(comm)


_resolve_comm: Any = None


def _check_same_call(comm: Any, name: str) -> None:
    """Debug mode: raise on every rank unless all ranks of ``comm`` enter the same call."""
    import numpy as np

    comm = resolve_comm(comm)
    debug = subsystem_comm(comm, "debug")
    counts = comm_cache(comm).setdefault("debug.calls", [0])
    counts[0] += 1
    mine = np.zeros(1, dtype=[("n", "<i8"), ("name", f"S{NAME_BYTES}"), ("line", "S184")])
    mine[0] = (counts[0], name.encode()[:NAME_BYTES], user_line().encode()[:184])
    everyone = np.empty(debug.Get_size(), dtype=mine.dtype)
    debug.Allgather(mine.view(np.uint8), everyone.view(np.uint8))
    calls = [(int(n), raw.decode(), line.decode()) for n, raw, line in everyone.tolist()]
    if all(call[:2] == calls[0][:2] for call in calls):
        return
    groups: dict[tuple[int, str, str], list[int]] = {}
    for r, call in enumerate(calls):
        groups.setdefault(call, []).append(r)
    parts = [
        f"{format_ranks(ranks)} {'is' if len(ranks) == 1 else 'are'} in {n_name[1]} "
        f"(#{n_name[0]} on this communicator, called at {n_name[2]})"
        for n_name, ranks in groups.items()
    ]

    raise mark_everywhere(
        CollectiveError(
            "ranks disagree on the parcomp collective they call: "
            + ", ".join(parts)
            + ". A collective (reductions, exchange_halos, gather, save ...) must be called by "
            "every rank of its communicator, in the same order (is one inside `if rank == 0:`?)",
            tuple(r for r, call in enumerate(calls) if call[:2] != calls[0][:2]),
        ),
        comm,
    )
