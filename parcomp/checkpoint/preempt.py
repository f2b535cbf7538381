"""Preemption: SIGTERM, SIGUSR1 and SIGUSR2 only set a flag.

Local (the handlers); the ranks agree on the flag at a step boundary with one allreduce in
:meth:`parcomp.checkpoint.Checkpointer.checkpoint_if_due`.  Slurm sends these signals
before the walltime (``--signal=B:USR1@60``) or on ``scancel --signal``; ``mpiexec``
(Hydra) and ``parcomp run`` forward them to every rank.

After the checkpoint the job exits with :data:`PREEMPTED_STATUS` (75, ``EX_TEMPFAIL``:
"try again later"), which ``parcomp run`` passes on so that a batch script can requeue.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from parcomp.runtime import status

__all__ = [
    "PREEMPTED_STATUS",
    "Preempted",
    "SIGNALS",
    "active",
    "clear",
    "install_handlers",
    "requested",
    "uninstall_handlers",
]

#: Exit status of a job that checkpointed because it was asked to stop (:mod:`parcomp.runtime.status`).
PREEMPTED_STATUS = status.PREEMPTED
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

_received: list[int] = []
_installed = False


class Preempted(SystemExit):
    """Raised on every rank after the preemption checkpoint; exits with status 75."""

    def __init__(self, signum: int) -> None:
        super().__init__(PREEMPTED_STATUS)
        self.signum = signum


def _handler(signum: int, _frame: object) -> None:
    _received.append(signum)


def install_handlers() -> bool:
    """Install the flag-setting handlers (main thread only); returns whether they are active."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    _installed = True
    return True


def active() -> bool:
    """Whether the flag-setting handlers are installed."""
    return _installed


def uninstall_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers ``previous`` (signal number to handler) that
    :func:`install_handlers` replaced (main thread only); received signals stay recorded."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    _installed = False


def requested() -> int:
    """The first preemption signal received by this process, or 0."""
    return _received[0] if _received else 0


def clear() -> None:
    """Forget received signals (tests)."""
    _received.clear()
