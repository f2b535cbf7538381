"""MPI worker ranks for a notebook (or any plain Python process): start, run, stop.

COMMUNICATES: the notebook process spawns ``n`` worker processes with ``MPI_Comm_spawn``
and talks to them over the resulting intercommunicator; the workers compute among
themselves on their own ``COMM_WORLD`` (so ``parcomp.map``, ``DistArray``, checkpoints ...
work inside a task exactly as in a job script).

Why MPI spawn and not ipyparallel: spawn needs nothing beyond MPI (the wheel's Hydra starts
the processes; 2 workers start in ~0.1 s here), opens no control channel of parcomp's own
(no sockets, no keys to manage), and the workers are ordinary MPI ranks.  ipyparallel's MPI
engines add a controller listening on TCP (6.6 s to connect, as measured for the issue).

Safety rails:

* MPICH's singleton spawn runs the ``mpiexec`` found on PATH; a foreign one (another MPI)
  makes spawn hang silently.  :class:`Workers` takes the launcher parcomp uses everywhere
  (the venv's, or ``$PARCOMP_MPIEXEC``), puts its folder first on PATH, checks it against
  the MPI library mpi4py loaded before spawning, and a spawn that does not finish within
  ``start_timeout`` raises instead of hanging.
* Every call has a ``timeout``; on expiry, or on KeyboardInterrupt (the notebook's stop
  button), the busy workers are sent SIGINT (their task raises KeyboardInterrupt and they
  stay usable) and a clear error is raised here.  An exception on a worker comes back as :class:`WorkerError` naming the
  rank, with its traceback.
* Tasks travel as cloudpickle payloads over MPI between processes of the same user; nothing
  is read from disk.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from parcomp.launch.mpiexec import (
    find_mpiexec,
    loaded_mpi_identity,
    mpiexec_identity,
    mpiexec_mismatch,
)
from parcomp.mapreduce.items import map as parallel_map
from parcomp.mapreduce.items import map_reduce
from parcomp.runtime.errors import LaunchError, ParcompError

__all__ = ["Workers", "WorkerError", "worker_main"]

_RUN, _STOP = "run", "stop"
_open: weakref.WeakSet[Workers] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Stop workers left open: otherwise MPI_Finalize at exit would wait for them forever."""
    for workers in list(_open):
        if not workers.closed and not workers.stuck:
            workers.close()


class WorkerError(ParcompError, RuntimeError):
    """A task raised on a worker; ``rank`` is the worker, ``remote_traceback`` its traceback."""

    def __init__(self, message: str, rank: int, remote_traceback: str) -> None:
        super().__init__(message)
        self.rank = rank
        self.remote_traceback = remote_traceback


def _put_first_on_path(folder: str) -> None:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != folder:
        os.environ["PATH"] = os.pathsep.join([folder, *[p for p in parts if p != folder]])


class Workers:
    """``n`` MPI worker processes started from this process.

    Parameters
    ----------
    n : int
        Number of workers (their ``COMM_WORLD`` has this size).
    start_timeout : float
        Seconds to wait for the workers to start before raising :class:`LaunchError`.

    Examples
    --------
    >>> with parcomp.Workers(2) as w:                     # doctest: +SKIP
    ...     w.map(lambda x: x * x, range(10))
    [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    """

    def __init__(self, n: int = 2, start_timeout: float = 60.0) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise LaunchError(f"number of workers must be a positive integer, got {n!r}")

        launcher = find_mpiexec()  # the venv's, or $PARCOMP_MPIEXEC
        _put_first_on_path(str(launcher.parent))  # MPICH's singleton spawn runs PATH's mpiexec
        problems = mpiexec_mismatch(mpiexec_identity(launcher), loaded_mpi_identity())
        if problems:
            raise LaunchError(f"cannot spawn workers with {launcher}: " + "; ".join(problems))
        from mpi4py import MPI

        self.n = n
        self._MPI = MPI
        box: dict[str, Any] = {}

        def spawn() -> None:
            try:
                box["inter"] = MPI.COMM_SELF.Spawn(
                    sys.executable, args=["-m", "parcomp.front.workers"], maxprocs=n
                )
            except Exception as exc:  # noqa: BLE001 - reported below
                box["error"] = exc

        thread = threading.Thread(target=spawn, daemon=True, name="parcomp-spawn")
        t0 = time.monotonic()
        thread.start()
        thread.join(start_timeout)
        if thread.is_alive():
            raise LaunchError(
                f"{n} workers did not start within {start_timeout:g} s (MPI_Comm_spawn with {launcher}); "
                "check `parcomp info`"
            )
        if "error" in box:
            raise LaunchError(f"spawning {n} workers failed: {box['error']}") from box["error"]
        self.inter = box["inter"]
        hello = [self.inter.recv(source=r, tag=0) for r in range(n)]
        self.pids = [pid for _, pid in sorted(hello)]
        self.start_seconds = time.monotonic() - t0
        self._seq = 0
        self.closed = False
        self.stuck: list[int] = []
        _open.add(self)

    # ------------------------------------------------------------------ tasks
    def run(
        self, fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run ``fn(*args, **kwargs)`` on every worker (SPMD); return the results in rank order.

        Raises
        ------
        WorkerError
            If ``fn`` raised on a worker (the lowest failing rank is named).
        TimeoutError
            If the workers did not all answer within ``timeout`` (they are then stopped).
        """
        import cloudpickle

        if self.closed:
            raise LaunchError(
                "these workers were shut down; start new ones with parcomp.Workers(n)"
            )
        MPI = self._MPI
        self._seq += 1
        tag = self._seq
        self.inter.bcast((_RUN, tag, cloudpickle.dumps((fn, args, kwargs))), root=MPI.ROOT)
        replies: list[Any] = [None] * self.n
        pending = set(range(self.n))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._collect(tag, replies, pending, deadline)
        except KeyboardInterrupt:
            self._interrupt(tag, replies, pending)
            raise KeyboardInterrupt("interrupted: the workers were interrupted too") from None
        if pending:
            late = sorted(pending)
            self._interrupt(tag, replies, pending)
            raise TimeoutError(
                f"workers {late} did not finish within {timeout:g} s; they were interrupted"
            )
        failures = [(r, reply) for r, reply in enumerate(replies) if reply[0] != "ok"]
        if failures:
            rank, (_, name, message, tb) = failures[0]
            raise WorkerError(
                f"worker rank {rank} of {self.n} failed: {name}: {message}\n{tb}", rank, tb
            )
        return [cloudpickle.loads(reply[1]) for reply in replies]

    def map(
        self, fn: Callable[[Any], Any], items: Any, timeout: float | None = None, **options: Any
    ) -> list[Any]:
        """``parcomp.map`` on the workers; the list comes back here."""
        return self.run(lambda: parallel_map(fn, items, root=0, **options), timeout=timeout)[0]

    def map_reduce(
        self,
        mapper: Callable[[Any], Any],
        items: Any,
        reduce: Any = "sum",
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        """``parcomp.map_reduce`` on the workers; the value comes back here."""
        return self.run(
            lambda: map_reduce(mapper, items, reduce, root=0, **options), timeout=timeout
        )[0]

    # ------------------------------------------------------------------ shutdown
    def _collect(
        self, tag: int, replies: list[Any], pending: set[int], deadline: float | None
    ) -> None:
        """Receive replies as they arrive (probe, then a receive sized to the message)."""
        while pending and (deadline is None or time.monotonic() < deadline):
            for r in list(pending):
                if self.inter.iprobe(source=r, tag=tag):
                    replies[r] = self.inter.recv(source=r, tag=tag)
                    pending.discard(r)
            if pending:
                time.sleep(0.001)

    def _interrupt(
        self, tag: int, replies: list[Any], pending: set[int], grace: float = 5.0
    ) -> None:
        """SIGINT the workers still busy and wait for their (error) replies.

        Workers that answer stay usable.  Workers that do not (stuck in C code or in a
        collective) cannot be killed from here: MPICH's process manager treats spawned and
        spawning processes as one job, so killing a worker ends this process too (seen:
        the notebook process was SIGKILLed).  They are left alone and the handle is closed.
        """
        for r in pending:
            _signal(self.pids[r], signal.SIGINT)
        self._collect(tag, replies, pending, time.monotonic() + grace)
        if pending:
            self.closed = True
            self.stuck = sorted(pending)

    def close(self, timeout: float = 0.0) -> None:
        """Stop the workers: their loops end and they disconnect.

        With MPICH they then wait in ``MPI_Finalize`` until this process ends MPI (at exit),
        so ``timeout`` (seconds to wait for them to disappear) defaults to 0.
        """
        if self.closed:
            return
        self.closed = True
        self.inter.bcast((_STOP, 0, b""), root=self._MPI.ROOT)
        self.inter.Disconnect()
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(_alive(p) for p in self.pids):
            time.sleep(0.05)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running"
        return f"<parcomp.Workers n={self.n} {state} pids={self.pids}>"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reap if it is our child (it is not, under MPI spawn, but be safe)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def worker_main() -> None:
    """The worker loop (``python -m parcomp.front.workers``, started by :class:`Workers`)."""
    import cloudpickle
    from mpi4py import MPI

    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        raise SystemExit(
            "parcomp.front.workers is started by parcomp.Workers (MPI spawn), not by hand"
        )
    rank = MPI.COMM_WORLD.Get_rank()
    parent.send((rank, os.getpid()), dest=0, tag=0)
    while True:
        kind, tag, payload = parent.bcast(None, root=0)
        if kind == _STOP:
            break
        try:
            fn, args, kwargs = cloudpickle.loads(payload)
            reply = ("ok", cloudpickle.dumps(fn(*args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: sent back
            reply = ("error", type(exc).__name__, str(exc), traceback.format_exc())
        parent.send(reply, dest=0, tag=tag)
    parent.Disconnect()


if __name__ == "__main__":
    worker_main()
