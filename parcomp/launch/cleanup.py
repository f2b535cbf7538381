"""What a job leaves behind when it dies: tie it to its supervisor, clear its shared memory.

Local to the ``parcomp run`` process (Linux ``prctl`` and ``/proc``); never talks MPI.

* :func:`die_with_parent` runs in the forked ``mpiexec`` before it executes: the kernel
  sends it ``SIGKILL`` when ``parcomp run`` dies, by any signal including ``SIGKILL``
  (``PR_SET_PDEATHSIG``).  Hydra's proxies then see their control connection close and
  end the ranks: no orphaned job goes on checkpointing into a directory that a relaunch
  also writes.
* MPICH keeps intra-node shared memory in ``/dev/shm/mpich_shm_*``, Open MPI 5 in
  ``/dev/shm/sm_segment.<host>.<uid>.<job>.<rank>`` (16 MiB each; ``vader_segment.*`` in
  Open MPI 4); a job killed before ``MPI_Finalize`` leaves its segments there (hundreds
  after a fault campaign), and an Open MPI job that recovered from a lost rank (ULFM)
  leaves the lost rank's.  :class:`ShmJanitor` removes, after every attempt, the segments
  that appeared during it and that no live process maps; :func:`sweep_orphans`, at the
  start of ``parcomp run``, those left by jobs whose supervisor was killed too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

__all__ = ["die_with_parent", "ShmJanitor", "sweep_orphans"]

_PR_SET_PDEATHSIG = 1
SHM = Path("/dev/shm")
#: Shared-memory segment names of the MPIs parcomp launches (MPICH; Open MPI 5's btl/sm;
#: Open MPI 4's vader).
PREFIXES = ("mpich_shm_", "sm_segment.", "vader_segment.")


def die_with_parent() -> None:
    """``preexec_fn``: be killed with the process that started us (Linux; else no-op)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _segments() -> dict[str, float]:
    try:
        entries = list(os.scandir(SHM))
    except OSError:
        return {}
    out = {}
    for entry in entries:
        if entry.name.startswith(PREFIXES):
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_uid == os.getuid():
                out[entry.name] = info.st_mtime
    return out


def _mapped() -> set[str]:
    """Names of /dev/shm segments some live process maps."""
    names: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    at = line.find(str(SHM) + "/")
                    if at >= 0:
                        names.add(line[at + len(str(SHM)) + 1 :].split()[0])
        except OSError:
            continue
    return names


def sweep_orphans(min_age: float = 60.0) -> int:
    """Remove this user's MPI segments (:data:`PREFIXES`) that no live process maps and that are
    older than ``min_age`` seconds: leftovers of jobs whose supervisor was killed too
    (``parcomp run`` calls this when it starts).  The age keeps a job that is just
    starting (segment created, not yet mapped) safe.  Returns how many were removed."""
    now = time.time()
    return _remove_unmapped([name for name, mtime in _segments().items() if now - mtime > min_age])


def _remove_unmapped(names: list[str]) -> int:
    """Delete those of ``names`` that no live process maps; how many were deleted."""
    if not names:
        return 0
    in_use = _mapped()
    removed = 0
    for name in names:
        if name in in_use:
            continue
        try:
            (SHM / name).unlink()
            removed += 1
        except OSError:
            pass
    return removed


class ShmJanitor:
    """Remembers the segments present before an attempt; removes the attempt's leftovers."""

    def __init__(self) -> None:
        self.before: dict[str, float] = {}
        self.started = 0.0

    def start(self) -> None:
        """Call just before launching an attempt."""
        self.before = _segments()
        self.started = time.time()

    def clean(self, settle: float = 3.0) -> int:
        """Remove segments created since :meth:`start` that nobody maps; return how many.

        ``mpiexec`` can return while the ranks it killed are still exiting and still map
        their segments; those are waited for, up to ``settle`` seconds (a segment a live
        job of someone else maps stays, and costs that wait once).
        """
        names = [
            name
            for name, mtime in _segments().items()
            if name not in self.before and mtime >= self.started - 1.0
        ]
        removed = _remove_unmapped(names)
        deadline = time.monotonic() + settle
        while removed < len(names) and time.monotonic() < deadline:
            left = [n for n in names if (SHM / n).exists()]
            if not left:
                break
            time.sleep(0.1)
            removed += _remove_unmapped(left)
        return removed
