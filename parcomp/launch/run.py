"""``parcomp run``: launch a script on N ranks with fail-fast behaviour and a timeout.

Local to the launching process (it starts ``mpiexec``; it does not communicate).

Each rank runs ``python -m parcomp.launch.runner``, which imports parcomp (installing the
fail-fast exception hook), checks that the world size is the one asked for, and runs the
script as ``__main__``.  The launcher's own ``timeout`` works for any MPI vendor: on expiry
the whole process group of ``mpiexec`` is terminated, then killed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from parcomp.checkpoint.preempt import PREEMPTED_STATUS
from parcomp.comm import get_logger
from parcomp.errors import ConfigError, LaunchError
from parcomp.launch.mpiexec import find_mpiexec, mpiexec_argv, mpiexec_identity

__all__ = ["run_job", "TIMEOUT_STATUS"]

#: Exit status of :func:`run_job` when the job exceeded its timeout (as coreutils ``timeout``).
TIMEOUT_STATUS = 124

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def run_job(
    nprocs: int,
    target: str,
    args: list[str] | tuple[str, ...] = (),
    *,
    module: bool = False,
    timeout: float | None = None,
    mpiexec: Path | None = None,
    env: dict[str, str] | None = None,
    kill_grace: float = 5.0,
    restarts: int = 0,
    shrink: bool = False,
    ulfm: bool = False,
) -> int:
    """Run ``target`` on ``nprocs`` ranks and return the job's exit status.

    Parameters
    ----------
    nprocs : int
        Number of MPI ranks, at least 1.
    target : str
        Path of a Python script, or a module name when ``module`` is true.
    args : sequence of str
        Arguments passed to the script.
    module : bool
        Run ``target`` like ``python -m target``.
    timeout : float, optional
        Seconds after which the whole job is terminated; the status is then
        :data:`TIMEOUT_STATUS` (124).
    mpiexec : pathlib.Path, optional
        Launcher (default: :func:`~parcomp.launch.mpiexec.find_mpiexec`).
    env : dict, optional
        Environment for the job (default: this process's).
    kill_grace : float
        Seconds between SIGTERM and SIGKILL when the timeout expires.
    restarts : int
        Relaunch the job up to this many times after it fails (a rank died or exited
        non-zero); the job resumes from its last valid checkpoint.  Each attempt sees
        ``PARCOMP_RESTART_COUNT``.  Not after a timeout or a preemption (status 75).
    shrink : bool
        Relaunch on one rank fewer each time (down to 1), as after losing a node.
    ulfm : bool
        In-job recovery: with Open MPI 5 the job is started with ``--with-ft ulfm`` and
        ``PARCOMP_ULFM=1``, so that :func:`parcomp.run_resilient` survives lost ranks
        without a relaunch; failures it survived are logged here (``mpirun`` exits 0).
        With another MPI a warning says so and ``restarts`` remains the recovery.

    Returns
    -------
    int
        The launcher's exit status (0 on success; 128+N when killed by signal N).

    Raises
    ------
    LaunchError
        If the script does not exist or ``mpiexec`` cannot be started.
    ConfigError
        If ``nprocs`` or ``timeout`` is invalid.
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ConfigError(f"-n must be a positive integer number of ranks, got {nprocs!r}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not module:
        script = Path(target)
        if not script.is_file():
            raise LaunchError(f"script not found: {target!r} (no such file)")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ConfigError(f"restarts must be a non-negative integer, got {restarts!r}")
    launcher = mpiexec if mpiexec is not None else find_mpiexec()
    vendor = mpiexec_identity(launcher).vendor
    log = get_logger("parcomp.run")
    base_env = dict(os.environ if env is None else env)
    # Site-specific launcher options (a hostfile, binding, a launcher hook), shell-quoted.
    extra: list[str] = shlex.split(base_env.get("PARCOMP_MPIEXEC_ARGS", ""))
    failure_log = None
    if vendor == "Open MPI" and os.geteuid() == 0:
        # Open MPI refuses root unless told; containers and CI machines run as root.
        base_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        base_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if ulfm:
        if vendor == "Open MPI":
            extra += ["--with-ft", "ulfm"]
            if base_env.get("SLURM_JOB_ID"):
                extra += ["--bind-to", "none"]  # ULFM's mpirun inside Slurm needs it
            base_env["PARCOMP_ULFM"] = "1"
            if not base_env.get("PARCOMP_FAILURE_LOG"):
                fd, failure_log = tempfile.mkstemp(prefix="parcomp-failures-", suffix=".jsonl")
                os.close(fd)
                base_env["PARCOMP_FAILURE_LOG"] = failure_log
        else:
            log.warning(
                "--ulfm: %s has no usable ULFM (in-job recovery needs Open MPI 5); "
                "a lost rank ends the job%s",
                vendor or "this MPI",
                f" and --restarts {restarts} relaunches it" if restarts else "; add --restarts K",
            )
    program = [sys.executable, "-m", "parcomp.launch.runner"]
    program += ["-m", target] if module else [target]
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt, ranks = 0, nprocs
    while True:
        argv = mpiexec_argv(
            ranks, program + list(args), mpiexec=launcher, vendor=vendor, extra=tuple(extra)
        )
        job_env = dict(base_env)
        earlier = int(base_env.get("PARCOMP_RESTART_COUNT", "0") or 0)
        job_env.update(PARCOMP_NPROCS=str(ranks), PARCOMP_RESTART_COUNT=str(earlier + attempt))
        started = time.monotonic()
        try:
            proc = subprocess.Popen(argv, env=job_env, start_new_session=True)
        except OSError as exc:
            raise LaunchError(f"could not start {launcher}: {exc}") from exc
        remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
        status = _supervise(proc, remaining, kill_grace, timeout)
        if failure_log is not None:
            _report_recoveries(failure_log, log)
        if status in (0, TIMEOUT_STATUS, PREEMPTED_STATUS) or attempt >= restarts:
            if status == PREEMPTED_STATUS:
                log.warning(
                    "job checkpointed on a preemption signal; exit status %d (requeue it)", status
                )
            elif status not in (0, TIMEOUT_STATUS) and restarts:
                log.error("job failed with status %d; no restarts left (%d used)", status, attempt)
            return status
        attempt += 1
        if shrink and ranks > 1:
            ranks -= 1
        log.warning(
            "job failed with status %d after %.2f s; restart %d/%d on %d ranks from the last checkpoint",
            status,
            time.monotonic() - started,
            attempt,
            restarts,
            ranks,
        )


def _report_recoveries(path: str, log: Any) -> None:
    """Log the failures the job survived in-job (``mpirun`` exits 0 after them)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
        os.unlink(path)
    except OSError:
        return
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        log.warning(
            "the job lost world rank(s) %s and recovered in-job on %s ranks (ULFM)",
            event.get("lost_world_ranks"),
            event.get("ranks_after"),
        )


def _supervise(
    proc: subprocess.Popen[bytes],
    timeout: float | None,
    kill_grace: float,
    total: float | None = None,
) -> int:
    """Wait for ``proc``, forwarding signals to it and enforcing ``timeout``."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {}
    for sig in _FORWARDED:
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                status = proc.wait(timeout=remaining)
                break
            except subprocess.TimeoutExpired:
                sys.stderr.write(
                    f"parcomp run: job exceeded its timeout of {total if total is not None else timeout:g} s; terminating it\n"
                )
                sys.stderr.flush()
                _kill_group(proc, kill_grace)
                return TIMEOUT_STATUS
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - status if status < 0 else status


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
