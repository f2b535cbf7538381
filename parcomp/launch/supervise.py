"""Watching one launched job: signals, the timeout, hangs, and ending it cleanly.

Local to the ``parcomp run`` process (signals and ``/proc``); it never talks MPI.

Signal handlers only record (:class:`Signals`); the supervision loop acts on them every
:data:`POLL` seconds:

* ``SIGINT`` (Ctrl-C) goes straight to the ranks, which exit with status 130 and print
  nothing; the job gets ``kill_grace`` seconds, then it is killed.  Status 130.
* The first preemption signal (``SIGTERM``, ``SIGUSR1``, ``SIGUSR2``) goes to every rank
  once (to ``mpiexec`` while the ranks are still starting); more of them are recorded and
  not passed on, because a second ``SIGTERM`` to Hydra ends the ranks in the middle of
  their checkpoint.  Whatever follows, :func:`parcomp.launch.run.launch_job` then stops with
  status 75 and never restarts.  A signal that arrives while ``parcomp run`` itself is
  starting is kept (the handlers are installed first) and no job is launched.
* ``SIGQUIT`` prints every rank's stack (:mod:`parcomp.launch.hang`); the job goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any

from parcomp.launch.hang import HangWatch, descendants, kill_pids, rank_processes
from parcomp.runtime import config
from parcomp.runtime.failfast import INTERRUPTED_STATUS
from parcomp.runtime.ranks import format_ranks
from parcomp.runtime.status import TIMEOUT

__all__ = ["POLL", "PREEMPT", "TIMEOUT_STATUS", "Signals", "supervise", "kill_job", "say"]

#: Exit status when the job exceeded its timeout or hung (as coreutils ``timeout``).
TIMEOUT_STATUS = TIMEOUT
#: Seconds between the supervisor's checks of the job (exit, timeout, signals, heartbeats).
POLL = 0.1
PREEMPT = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
#: Seconds a rank may be gone during start-up, the launcher still running, before the job is
#: ended (an abort ends it sooner by itself).
LOST_GRACE = 2.0
_HANDLED = (signal.SIGINT, *PREEMPT, signal.SIGQUIT)


class Signals:
    """``parcomp run``'s signal handlers: they record, the supervision loop acts."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        #: Preemption signals received so far (over all attempts).
        self.preempt: list[int] = []
        self.interrupted = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Install the handlers (main thread only; elsewhere signals are left alone)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _HANDLED:
            self._previous[sig] = signal.signal(sig, self._record)

    def uninstall(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.pending.append(signum)
        if signum in PREEMPT:
            self.preempt.append(signum)
        elif signum == signal.SIGINT:
            self.interrupted = True

    def take(self) -> list[int]:
        """The signals recorded since the last call, in order."""
        taken, self.pending[:] = list(self.pending), []
        return taken


def say(text: str) -> None:
    """Write ``text`` to stderr, each line prefixed ``parcomp run:``."""
    sys.stderr.write("".join(f"parcomp run: {line}\n" for line in text.splitlines()))
    sys.stderr.flush()


def _pause(proc: subprocess.Popen[bytes], stop: bool) -> bool:
    """SIGSTOP (``stop``) or SIGCONT the launcher and its local daemons; whether sent.

    The daemons (Hydra's ``hydra_pmi_proxy``, Open MPI's ``prted``: every process below
    the launcher that is not a rank) are paused too.  A proxy that saw one rank leave
    with status 130 would SIGKILL its siblings that are still on their way out, and the
    launcher would then print its "BAD TERMINATION" banner for them (seen in CI: ranks
    leave up to a second apart on a loaded machine).  Paused, the proxy reaps them all
    at once when it is resumed, each with its own status 130.
    """
    sig = signal.SIGSTOP if stop else signal.SIGCONT
    try:
        os.kill(proc.pid, sig)  # the launcher first, then its daemons
    except ProcessLookupError:
        return False
    ranks = set(rank_processes(proc.pid))
    daemons = [pid for pid in descendants(proc.pid) if pid not in ranks]
    for pid in daemons:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return True


def _deliver(proc: subprocess.Popen[bytes], watch: HangWatch, signum: int) -> bool:
    """To every rank if all have started (heartbeats), else through ``mpiexec``; whether
    the ranks got it directly."""
    if watch.all_started() and watch.signal_ranks(proc.pid, signum):
        return True
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass
    return False


def supervise(
    proc: subprocess.Popen[bytes],
    signals: Signals,
    watch: HangWatch,
    timeout: float | None,
    kill_grace: float,
    total: float | None = None,
) -> int:
    """Wait for ``proc`` while acting on signals, the timeout and hangs; its exit status.

    Returns the launcher's status (128+N if killed by signal N), :data:`TIMEOUT_STATUS`
    after a timeout or a hang, or 130 after ``SIGINT``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    interrupted_at = None
    paused = False
    preempt_sent = False
    resend: int | None = None
    lost_since: float | None = None
    while True:
        for signum in signals.take():
            if signum == signal.SIGQUIT:
                say(
                    "stacks of the job's ranks on request (SIGQUIT), most recent call last:\n"
                    + watch.dump(proc.pid)
                )
            elif signum == signal.SIGINT and interrupted_at is None:
                interrupted_at = time.monotonic()
                # Straight to the ranks: through mpiexec, Hydra prints a Ctrl-C banner
                # first.  The launcher and its proxies are paused *before* the ranks get
                # the signal: the ranks leave one by one (status 130), and a proxy that
                # saw the first one go would SIGKILL the rest and the launcher print its
                # "BAD TERMINATION" banner after all (pausing after signalling left a
                # window: 7 banners in 14 runs under CPU hogs, found by a review).
                paused = watch.all_started() and _pause(proc, True)
                if not (paused and watch.signal_ranks(proc.pid, signum)):
                    if paused:
                        _pause(proc, False)
                        paused = False
                    _deliver(proc, watch, signum)
            elif signum in PREEMPT and not preempt_sent:
                preempt_sent = True
                direct = _deliver(proc, watch, signum)
                resend = None if direct else signum
        if resend is not None and watch.all_started():
            # It went through mpiexec while the ranks were starting; Hydra may have had no
            # process to pass it to yet.  Now that every rank is up, it goes to them too.
            watch.signal_ranks(proc.pid, resend)
            resend = None
        try:
            status = proc.wait(timeout=POLL)
            break
        except subprocess.TimeoutExpired:
            pass
        if interrupted_at is not None:
            if paused and not rank_processes(proc.pid):
                paused = not _pause(proc, False)  # the ranks are gone: let it reap them
            elif paused and time.monotonic() - interrupted_at > kill_grace / 2:
                # A rank has not left (starved of CPU on an oversubscribed node, seen in
                # CI).  Resuming the launcher now would let it SIGKILL that rank and print
                # its "BAD TERMINATION" banner: end the job while it is still stopped.
                below = descendants(proc.pid)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                kill_pids(below)
                try:
                    proc.wait(timeout=kill_grace)
                except subprocess.TimeoutExpired:
                    pass
                break
            if time.monotonic() - interrupted_at > kill_grace:
                _pause(proc, False)
                kill_job(proc, kill_grace)
                break
            continue
        why = None
        lost = watch.lost_at_startup()
        gone = bool(lost) or watch.vanished_at_startup(proc.pid)
        lost_since = (lost_since or time.monotonic()) if gone else None
        if gone and time.monotonic() - lost_since >= LOST_GRACE:  # not an abort under way
            who = format_ranks(lost) if lost else "a rank process"
            say(
                f"{who} ended while the job was starting (before every rank had "
                "initialised MPI); the others would wait in MPI_Init for good: ending the job"
            )
            kill_job(proc, kill_grace)
            return 1
        if deadline is not None and time.monotonic() >= deadline:
            why = f"job exceeded its timeout of {total if total is not None else timeout:g} s"
        elif (idle := watch.stalled()) is not None:
            why = (
                f"no rank entered or left a parcomp collective call for {idle:.0f} s "
                f"(--hang-after {watch.hang_after:g}): the job looks hung"
            )
        elif (stuck := watch.stranded(stranded_after())) is not None:
            why = stuck
        if why is not None and watch.missing_at_startup(proc.pid):
            report = watch.dump(proc.pid)
            say(
                f"{why}: a rank process is missing and MPI was not initialised everywhere "
                f"(a rank lost while the job started); stacks, most recent call last:\n{report}"
            )
            kill_job(proc, kill_grace)
            return 1  # a failure a relaunch can fix, not a hang
        if why is not None:
            report = watch.dump(proc.pid)
            say(f"{why}; stacks of its ranks, most recent call last:\n{report}" if report else why)
            say("terminating the job")
            kill_job(proc, kill_grace)
            return TIMEOUT_STATUS
    if signals.interrupted:
        say("interrupted (SIGINT); the job was stopped")
        return INTERRUPTED_STATUS
    return 128 - status if status < 0 else status


def stranded_after() -> float:
    """Seconds a job may wait in a collective after one of its ranks finished its script
    before it is ended with a report (``PARCOMP_STRANDED_AFTER``, default 30)."""
    return float(config.get("PARCOMP_STRANDED_AFTER"))


#: Default of :func:`stranded_after`.
STRANDED_AFTER = 30.0


def kill_job(proc: subprocess.Popen[bytes], grace: float) -> None:
    """End the launcher's process group, then any of its processes that left the group."""
    below = descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    kill_pids(below)
