"""``parcomp run``: launch a script on N ranks with fail-fast behaviour and a timeout.

Local to the launching process (it starts ``mpiexec``; it does not communicate).

Each rank runs ``python -m parcomp.launch.runner``, which imports parcomp (installing the
fail-fast exception hook), checks that the world size is the one asked for, and runs the
script as ``__main__``.  The launcher's own ``timeout`` works for any MPI vendor: on expiry
the whole process group of ``mpiexec`` is terminated, then killed.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parcomp._renamed import moved_names, renamed_keywords
from parcomp.launch.cleanup import ShmJanitor, die_with_parent, sweep_orphans
from parcomp.launch.hang import HangWatch
from parcomp.launch.hosts import (
    Host,
    check_hosts,
    fit_ranks,
    launcher_host_args,
    network_settings,
    probe_hosts,
    reachable,
)
from parcomp.launch.listen import keep_local
from parcomp.launch.mpiexec import find_mpiexec, mpiexec_argv, mpiexec_identity
from parcomp.launch.supervise import TIMEOUT_STATUS, Signals, supervise
from parcomp.runtime import config
from parcomp.runtime.errors import ConfigError, LaunchError
from parcomp.runtime.failfast import INTERRUPTED_STATUS
from parcomp.runtime.status import PREEMPTED as PREEMPTED_STATUS

__all__ = ["launch_job", "TIMEOUT_STATUS"]


@renamed_keywords("parcomp.launch.launch_job", nprocs="n")
def launch_job(
    n: int,
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
    hang_after: float | None = None,
    signals: Signals | None = None,
    hosts: Sequence[Host] | None = None,
    shared_dir: Path | None = None,
) -> int:
    """Run ``target`` on ``n`` ranks and return the job's exit status.

    Parameters
    ----------
    n : int
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
    hang_after : float, optional
        End the job (status 124) when no rank has entered or left a parcomp collective
        call for this many seconds.  On a hang or a timeout every rank's stack is printed
        first, grouped by rank; ``kill -QUIT`` on ``parcomp run`` prints them at any time.
    hosts : sequence of Host, optional
        The machines of a multi-node job and the ranks each takes
        (:func:`~parcomp.launch.hosts.parse_hosts`); checked before anything runs
        (duplicates, too few slots, names that do not resolve, two names for one machine).
        A relaunch (``restarts``) probes them and runs on those still reachable, with as
        many ranks as their slots hold.
    shared_dir : pathlib.Path, optional
        A folder every host sees at the same path, for the job's watchdog files (heartbeats,
        stacks) in a multi-node job; default the working directory.

    Returns
    -------
    int
        The launcher's exit status (0 on success; 128+N when killed by signal N).

    Raises
    ------
    LaunchError
        If the script does not exist or ``mpiexec`` cannot be started.
    ConfigError
        If ``n`` or ``timeout`` is invalid.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"-n must be a positive integer number of ranks, got {n!r}")
    own = signals is None  # the CLI passes its own and keeps them until the process ends,
    if own:  # so that a signal just after the job ended cannot kill parcomp run
        signals = Signals()
        signals.install()  # first: a signal during start-up is kept, not lost
    try:
        return _run(
            signals,
            n,
            target,
            args,
            module,
            timeout,
            mpiexec,
            env,
            kill_grace,
            restarts,
            shrink,
            ulfm,
            hang_after,
            list(hosts) if hosts else None,
            shared_dir,
        )
    finally:
        if own:
            signals.uninstall()


def _run(
    signals: Signals,
    nprocs: int,
    target: str,
    args: list[str] | tuple[str, ...],
    module: bool,
    timeout: float | None,
    mpiexec: Path | None,
    env: dict[str, str] | None,
    kill_grace: float,
    restarts: int,
    shrink: bool,
    ulfm: bool,
    hang_after: float | None,
    hosts: list[Host] | None,
    shared_dir: Path | None,
) -> int:
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if hang_after is not None and not hang_after > 0:
        raise ConfigError(f"hang_after must be a positive number of seconds, got {hang_after!r}")
    if not module:
        script = Path(target)
        if not script.is_file():
            raise LaunchError(f"script not found: {target!r} (no such file)")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ConfigError(f"restarts must be a non-negative integer, got {restarts!r}")
    if hosts:
        check_hosts(hosts, nprocs)
    launcher = mpiexec if mpiexec is not None else find_mpiexec()
    vendor = mpiexec_identity(launcher).vendor
    log = supervisor_logger()
    base_env = dict(os.environ if env is None else env)
    config.check_all(base_env)  # a bad PARCOMP_* value stops here, before anything starts
    threads_per_rank(base_env, nprocs)
    yield_when_oversubscribed(base_env, nprocs, vendor)
    # Site-specific launcher options (a hostfile, binding, a launcher hook), shell-quoted.
    extra: list[str] = shlex.split(config.get("PARCOMP_MPIEXEC_ARGS", base_env))
    if hosts:
        # several machines: the transports and the launcher on the hosts' interface
        extra += network_settings(base_env, hosts, vendor)
    keep_local(base_env, vendor, extra + (["-hosts"] if hosts else []))
    failure_log = None
    if vendor == "Open MPI" and os.geteuid() == 0:
        # Open MPI refuses root unless told; containers and CI machines run as root.
        base_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        base_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if hosts:
        reachable(hosts, launcher, vendor, base_env)
    if ulfm:
        if vendor == "Open MPI":
            extra += ["--with-ft", "ulfm"]
            if base_env.get("SLURM_JOB_ID"):
                extra += ["--bind-to", "none"]  # ULFM's mpirun inside Slurm needs it
            base_env["PARCOMP_ULFM"] = "1"
            # The job records into a file of ours (read after each attempt, to excuse the
            # ranks lost in-job); a PARCOMP_FAILURE_LOG of the user's gets a copy.
            fd, failure_log = tempfile.mkstemp(prefix="parcomp-failures-", suffix=".jsonl")
            os.close(fd)
            base_env["PARCOMP_FAILURE_LOG_COPY"] = config.get("PARCOMP_FAILURE_LOG", base_env) or ""
            base_env["PARCOMP_FAILURE_LOG"] = failure_log
        else:
            log.warning(
                "--ulfm: %s has no usable ULFM (in-job recovery needs Open MPI 5); "
                "a lost rank ends the job%s",
                vendor or "this MPI",
                f" and --restarts {restarts} relaunches it" if restarts else "; add --restarts K",
            )
    program = [sys.executable, "-m", "parcomp.launch.runner"]
    program += (["-m", target] if module else [target]) + list(args)
    deadline = None if timeout is None else time.monotonic() + timeout
    if hosts:
        # the ranks on other machines write their heartbeats and stacks where this
        # process reads them: a folder every host sees
        watch = HangWatch(nprocs, hang_after, shared=shared_dir or Path.cwd())
    else:
        watch = HangWatch(nprocs, hang_after)
    job = _Launch(
        launcher,
        vendor,
        program,
        base_env,
        extra,
        deadline,
        timeout,
        kill_grace,
        restarts,
        shrink,
        hosts,
    )
    try:
        return _attempts(job, watch, signals, failure_log, log)
    finally:
        watch.close()


@dataclass(frozen=True)
class _Launch:
    """What every attempt of one ``launch_job`` launches, and its limits."""

    launcher: Path
    vendor: str | None
    program: list[str]
    env: dict[str, str]
    extra: list[str]
    deadline: float | None
    timeout: float | None
    kill_grace: float
    restarts: int
    shrink: bool
    hosts: list[Host] | None = None


def _attempts(
    job: _Launch, watch: HangWatch, signals: Signals, failure_log: str | None, log: logging.Logger
) -> int:
    """Launch, supervise, and relaunch after a failure while restarts remain."""
    launcher, vendor, base_env, restarts = job.launcher, job.vendor, job.env, job.restarts
    attempt, ranks = 0, watch.nprocs
    hosts = job.hosts
    janitor = ShmJanitor()
    swept = sweep_orphans()
    if swept:
        log.debug("removed %d orphaned shared-memory segment(s) from /dev/shm", swept)
    while True:
        if signals.preempt:  # asked to stop before (re)launching: nothing to checkpoint yet
            log.warning(
                "preemption signal %d received before the job started; exit status %d",
                signals.preempt[0],
                PREEMPTED_STATUS,
            )
            return PREEMPTED_STATUS
        watch.reset(ranks)
        host_args = launcher_host_args(hosts, vendor) if hosts else []
        argv = mpiexec_argv(
            ranks, job.program, mpiexec=launcher, vendor=vendor, extra=(*job.extra, *host_args)
        )
        job_env = dict(base_env)
        earlier = int(config.get("PARCOMP_RESTART_COUNT", base_env))
        job_env.update(
            PARCOMP_NPROCS=str(ranks),
            PARCOMP_RESTART_COUNT=str(earlier + attempt),
            PARCOMP_WATCHDOG_DIR=str(watch.folder),
        )
        if watch.shared:
            job_env["PARCOMP_WATCHDOG_SHARED"] = "1"
        if vendor == "Open MPI" and hosts:
            argv[1:1] = forward_env_args(job_env)
        started = time.monotonic()
        janitor.start()
        try:
            # die_with_parent: if parcomp run is killed (even by SIGKILL), so is mpiexec,
            # and with it the ranks; no orphaned job keeps writing checkpoints.
            proc = subprocess.Popen(
                argv, env=job_env, start_new_session=True, preexec_fn=die_with_parent
            )
        except OSError as exc:
            raise LaunchError(f"could not start {launcher}: {exc}") from exc
        remaining = None if job.deadline is None else max(0.001, job.deadline - time.monotonic())
        status = supervise(proc, signals, watch, remaining, job.kill_grace, job.timeout)
        # after every attempt: a failed job leaves its segments, and so does a job that
        # succeeded after losing a rank in-job (ULFM); no wait after a success (a segment
        # still mapped then is another live job's)
        removed = janitor.clean(settle=3.0 if status != 0 else 0.0)
        if removed:
            log.debug("removed %d shared-memory segment(s) the job left in /dev/shm", removed)
        lost = (
            _report_recoveries(failure_log, log, config.get("PARCOMP_FAILURE_LOG_COPY", job.env))
            if failure_log is not None
            else set()
        )
        if status == 0 and (quiet := [r for r in watch.unfinished() if r not in lost]):
            # mpiexec said success, but these ranks ended (os._exit, a signal) before their
            # script did: their part of the work is missing.  Not a success.
            log.error(
                "mpiexec exited 0, but rank(s) %s ended before finishing the script (os._exit "
                "or killed): the job did not complete",
                quiet,
            )
            status = 1
        if hosts and status not in (0, PREEMPTED_STATUS):
            _name_unreachable(job, hosts, log)
        stopped_itself = status == PREEMPTED_STATUS
        if signals.preempt and status != 0:
            # Preemption is final: whatever happened after the signal (a second signal,
            # Hydra ending the ranks, a rank killed before it could checkpoint), the job
            # was asked to stop, so it stops with 75 and is requeued, never restarted here.
            status = PREEMPTED_STATUS
        if (
            status in (0, TIMEOUT_STATUS, PREEMPTED_STATUS, INTERRUPTED_STATUS)
            or attempt >= restarts
        ):
            if status == PREEMPTED_STATUS and stopped_itself:
                log.warning(
                    "job checkpointed on a preemption signal; exit status %d (requeue it)", status
                )
            elif status == PREEMPTED_STATUS:
                log.warning(
                    "job stopped on a preemption signal without checkpointing (it had no "
                    "Checkpointer, or had not reached one yet); exit status %d",
                    status,
                )
            elif status not in (0, TIMEOUT_STATUS) and restarts:
                log.error("job failed with status %d; no restarts left (%d used)", status, attempt)
            return status
        attempt += 1
        if job.shrink and ranks > 1:
            ranks -= 1
        if hosts:
            hosts, ranks = _surviving_hosts(job, hosts, ranks, log)
            if not hosts:
                log.error("job failed with status %d; none of its hosts is reachable", status)
                return status
        log.warning(
            "job failed with status %d after %.2f s; restart %d/%d on %d ranks from the last checkpoint",
            status,
            time.monotonic() - started,
            attempt,
            restarts,
            ranks,
        )


def _name_unreachable(job: _Launch, hosts: list[Host], log: logging.Logger) -> None:
    """After a multi-node job failed: say which of its hosts cannot be reached (a lost node,
    a cut link), within a few seconds."""
    why: dict[str, str] = {}
    probe_hosts(hosts, job.launcher, job.vendor, timeout=5.0, why=why, env=job.env)
    for name, reason in why.items():
        log.error("host %s cannot be reached: %s", name, reason)


def _surviving_hosts(
    job: _Launch, hosts: list[Host], ranks: int, log: logging.Logger
) -> tuple[list[Host], int]:
    """Before a relaunch of a multi-node job: the hosts still reachable, and the ranks
    their slots hold (a lost node's ranks are not relaunched on the others)."""
    alive = probe_hosts(hosts, job.launcher, job.vendor, env=job.env)
    lost = [h.name for h in hosts if h not in alive]
    if lost:
        fitted = fit_ranks(alive, ranks)
        log.warning(
            "host(s) %s unreachable: relaunching on %s with %d rank(s)",
            ", ".join(lost),
            ", ".join(h.name for h in alive) or "no host",
            fitted,
        )
        return alive, fitted
    return hosts, ranks


def supervisor_logger() -> logging.Logger:
    """The supervisor's logger: ``parcomp run: LEVEL: message``, never tagged as a rank."""
    log = logging.getLogger("parcomp.run")
    if not any(getattr(h, "_parcomp_supervisor", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("parcomp run: %(levelname)s: %(message)s"))
        handler._parcomp_supervisor = True  # noqa: SLF001 - our mark on our handler; type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.INFO)
    return log


#: Thread pools that each rank would otherwise size to every core of the machine.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def threads_per_rank(env: dict[str, str], nprocs: int) -> None:
    """Give each rank its share of this machine's cores for its thread pools (in place).

    OpenBLAS, MKL, OpenMP and Numba's parallel kernels start one thread per core in every
    rank; with several ranks per machine they fight over the cores, and spinning BLAS
    threads starve the ranks' MPI progress.  Measured here (2 cores, 2 ranks, CG at 256²):
    9.3 ms per iteration with NumPy's default threads, 0.25 ms with one thread per rank.
    Variables the user (or Slurm) set are left alone.  Under Slurm the share is the
    allocation's ``SLURM_CPUS_PER_TASK`` (the ranks may span nodes, so this machine's core
    count divided by all ranks would be too small); elsewhere cores ÷ ranks.
    """
    cpus = env.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        share = cpus
    else:
        share = str(max(1, (os.cpu_count() or 1) // max(1, nprocs)))
    for name in THREAD_VARIABLES:
        env.setdefault(name, share)


#: MPICH's settings for more ranks than cores (from MPICH's own CI for mpi4py): a rank
#: waiting in MPI yields the CPU after one empty poll instead of spinning.
MPICH_OVERSUBSCRIBED = {
    "MPIR_CVAR_POLLS_BEFORE_YIELD": "1",
    "MPIR_CVAR_CH4_PROGRESS_THROTTLE": "true",
    "MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT": "1",
}


# What the ranks read from the environment: parcomp's settings, the compiler's, the
# transports', the thread pools', HDF5's and Python's.
FORWARDED_PREFIXES = ("PARCOMP_", "NUMBA_", "UCX_", "OMP_", "MKL_", "OPENBLAS_", "HDF5_",
                      "PYTHON", "TMPDIR")  # fmt: skip


def forward_env_args(env: dict[str, str]) -> list[str]:
    """``-x NAME`` for each variable of ``env`` the ranks read (Open MPI with a host list).

    Hydra hands the launcher's whole environment to every rank; Open MPI's PRRTE gives the
    ranks on other machines only what ``-x`` names (its daemon starts there through ssh,
    with a login environment): without these, a remote rank would run without its
    watchdog folder, restart count or thread settings (found on the cluster rig, whose
    launcher passes a login environment only, as ssh does).
    """
    out: list[str] = []
    for name in sorted(env):
        if name.startswith(FORWARDED_PREFIXES):
            out += ["-x", name]
    return out


def yield_when_oversubscribed(env: dict[str, str], nprocs: int, vendor: str | None) -> None:
    """With MPICH and more ranks than this machine's cores (outside Slurm), make waiting
    ranks yield the CPU (in place; variables the user set are left alone).

    A spinning rank takes CPU from the ranks that have work: at 32 ranks on 2 cores, one
    rank compiling a kernel while 31 spun in ``MPI_Allreduce`` took over 60 s (the hang
    watchdog fired).  Open MPI yields by itself when it knows it is oversubscribed.
    """
    if vendor != "MPICH" or env.get("SLURM_JOB_ID"):
        return
    if nprocs <= (os.cpu_count() or 1):
        return
    for name, value in MPICH_OVERSUBSCRIBED.items():
        env.setdefault(name, value)


def _report_recoveries(path: str, log: Any, copy: str | None = None) -> set[int]:
    """Log the failures the job survived in-job (``mpirun`` exits 0 after them); the lost
    world ranks.  ``copy``: the user's ``PARCOMP_FAILURE_LOG``, which gets the events too."""
    lost: set[int] = set()
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
        os.unlink(path)
    except OSError:
        return lost
    if copy and lines:
        try:
            with open(copy, "a", encoding="utf-8") as fh:
                fh.writelines(lines)
        except OSError as exc:
            log.warning("could not copy the failure log to %s: %s", copy, exc)
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        log.warning(
            "the job lost world rank(s) %s and recovered in-job on %s ranks (ULFM)",
            event.get("lost_world_ranks"),
            event.get("ranks_after"),
        )
        ranks = event.get("lost_world_ranks")
        if isinstance(ranks, list):
            lost.update(r for r in ranks if isinstance(r, int) and not isinstance(r, bool))
    return lost


#: 0.2 names, until 0.4.
__getattr__ = moved_names(__name__, {"run_job": "parcomp.launch.run.launch_job"})
