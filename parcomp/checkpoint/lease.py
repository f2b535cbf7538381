"""One live job per checkpoint directory: a lease held with an OS lock.

Local (file locking), except :func:`claim`, which COMMUNICATES (the ranks agree on it).

A job that writes checkpoints into a directory holds ``DIR/.parcomp-lease`` locked with
``flock`` for as long as its Checkpointer lives.  The kernel releases the lock when the
holder exits or dies, however it dies, so "held" means "a live process is using it": a
second job, or an orphan of an earlier one, cannot start writing into the same directory
(two writers would prune and commit each other's checkpoints).  The file records who holds
it (host, pid, start time), for the error message.  On NFS, Linux maps ``flock`` to
byte-range locks, which NFSv4 (and NLM) honour across nodes.

Within one process (an in-job ULFM recovery builds a new Checkpointer while the old one may
still be alive) the lease is shared, not refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any

from parcomp.checkpoint.format import check_owned_dir, make_private_dir
from parcomp.runtime.agree import raise_if_any, raise_if_differ
from parcomp.runtime.errors import CheckpointError

__all__ = ["Lease", "LEASE_NAME", "claim"]

LEASE_NAME = ".parcomp-lease"
_held: dict[str, tuple[int, int]] = {}  # path -> (fd, users) held by this process


class Lease:
    """The lease on ``folder`` for this process; :meth:`release` when done."""

    def __init__(self, folder: Path) -> None:
        self.path = str((folder / LEASE_NAME).absolute())
        self._released = False
        if self.path in _held:
            fd, users = _held[self.path]
            _held[self.path] = (fd, users + 1)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointError(
                f"another live job writes checkpoints to {folder} ({holder}); two writers "
                "would prune and commit each other's checkpoints. Wait for it to end, stop "
                "it, or use another directory"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise CheckpointError(f"cannot lock {self.path}: {exc}") from None
        text = f"host {socket.gethostname()}, pid {os.getpid()}, since {time.ctime()}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        _held[self.path] = (fd, 1)

    def release(self) -> None:
        """Give the lease back (the last user in this process unlocks and closes it)."""
        if self._released or self.path not in _held:
            return
        self._released = True
        fd, users = _held[self.path]
        if users > 1:
            _held[self.path] = (fd, users - 1)
            return
        del _held[self.path]
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def claim(folders: list[Path], comm: Any, shared_ok: bool) -> Lease | None:
    """Create the checkpoint folders, prove every rank can write them, check who owns
    them, and take the first one's lease on rank 0 (collective, agreed).

    A read-only file system, a path under a file or ``/proc``, a folder another user owns
    or others may write, a folder another live job holds: each fails here, at
    construction, on every rank, instead of at the first save hours later.  Returns rank
    0's lease (None elsewhere).
    """

    raise_if_differ(
        [str(f.absolute()) for f in folders],
        comm,
        lambda differ, mine, _: (
            f"checkpoint directories differ between ranks: ranks "
            f"{differ} use another path than rank 0 ({mine}); every rank must name the same "
            "directory (compute it once, e.g. on rank 0, and broadcast it)"
        ),
    )
    error: BaseException | None = None
    lease = None
    for folder in folders:
        probe = folder / f".parcomp-probe-{comm.Get_rank()}-{os.getpid()}"
        try:
            if folder.exists() and not folder.is_dir():
                raise CheckpointError(
                    f"checkpoint directory {folder} exists and is not a directory"
                )
            make_private_dir(folder)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            os.unlink(probe)
            check_owned_dir(folder, shared_ok)
            if folder == folders[0] and comm.Get_rank() == 0:
                lease = Lease(folder)  # one live job per directory
        except CheckpointError as exc:
            error = exc
            break
        except OSError as exc:
            error = CheckpointError(
                f"cannot write checkpoints to {folder}: {exc.strerror or exc} "
                f"({type(exc).__name__}); choose a directory you can write"
            )
            break
    try:
        raise_if_any(error, comm)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    return lease
