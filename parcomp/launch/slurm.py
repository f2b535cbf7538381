"""Slurm batch scripts for parcomp jobs (``parcomp slurm``).

PURE: renders text; nothing here talks to Slurm or MPI.

The rendered script

* requests tasks, nodes and time, ``--requeue --open-mode=append`` and
  ``--signal=B:USR1@<lead>`` (Slurm signals the batch shell ``lead`` seconds before the
  walltime);
* launches the ranks with ``parcomp run -n $SLURM_NTASKS``: the MPICH wheel's ``mpiexec``
  (Hydra), which under Slurm starts its proxies on the allocated nodes through srun, ends
  the whole job when a rank dies (like ``srun --kill-on-bad-exit=1``) and forwards signals;
  it runs in the background and the script forwards USR1 and TERM to it (a trap interrupts
  ``wait``, so it loops until the launcher has really exited).  ``srun --mpi=pmi2`` works
  with the wheel too, but MPI start-up hung in 2 of ~10 jobs under the test Slurm (all
  ranks spinning in ``MPI_Init``), while Hydra never did;
* every rank checks that the MPI world has ``$SLURM_NTASKS`` ranks (``PARCOMP_EXPECT_NTASKS``),
  so a plain ``srun`` without ``--mpi=pmi2``, which starts N singletons of size 1, fails
  clearly instead of computing N times;
* on status 75 (the job checkpointed after a signal), or on any failure after the batch
  shell got a signal, requeues itself with ``scontrol requeue``: preemption is final,
  never a restart in the allocation; the requeued run resumes from the last checkpoint
  (``SLURM_RESTART_COUNT`` > 0);
* on any other failure (a rank died) restarts inside the allocation, up to a budget;
* leaves compiled kernels in each node's local cache (``$TMPDIR``, else ``/dev/shm``):
  one rank compiles each kernel for the job and MPI carries it to the other nodes, with
  no lock on the shared file system (:mod:`parcomp.runtime.numba_jit`).  A persistent cache
  shared by jobs is an opt-in: ``numba_cache`` (``parcomp slurm --numba-cache DIR``)
  exports ``PARCOMP_CACHE_DIR``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from parcomp.runtime.errors import ConfigError
from parcomp.runtime.status import PREEMPTED as PREEMPTED_STATUS

__all__ = ["SlurmOptions", "render_sbatch", "walltime_seconds", "lead_warning"]

_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SlurmOptions:
    """What ``parcomp slurm`` renders.  Paths are relative to the submit directory."""

    script: str
    args: Sequence[str] = field(default_factory=tuple)
    name: str = "parcomp"
    ntasks: int = 2
    nodes: int = 1
    time: str = "00:10:00"
    signal_lead: int = 60
    restarts: int = 2
    output: str = "%x-%j.out"
    numba_cache: str | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option."""
        if not self.script.endswith(".py"):
            raise ConfigError(f"script must be a Python file, got {self.script!r}")
        if not _NAME.match(self.name):
            raise ConfigError(f"job name {self.name!r}: use letters, digits, '_', '-', '.'")
        for label, value in (("ntasks", self.ntasks), ("nodes", self.nodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, got {value!r}")
        if self.nodes > self.ntasks:
            raise ConfigError(f"nodes ({self.nodes}) cannot exceed ntasks ({self.ntasks})")
        if self.numba_cache is not None and (
            not self.numba_cache
            or any(c in self.numba_cache for c in '"`\\\n')
            or "$(" in self.numba_cache
        ):
            raise ConfigError(
                f"numba_cache {self.numba_cache!r}: give a directory without quotes, "
                "backquotes, backslashes, newlines or $( (only $VARIABLES are expanded)"
            )
        if not _TIME.match(self.time):
            raise ConfigError(f"time {self.time!r}: use Slurm's [D-]HH:MM:SS, MM:SS or MM")
        if self.signal_lead < 1 or self.restarts < 0:
            raise ConfigError(
                f"signal lead must be >= 1 s and restarts >= 0, got {self.signal_lead} and {self.restarts}"
            )


def walltime_seconds(text: str) -> int:
    """Seconds in a Slurm time limit: ``[D-]HH:MM:SS``, ``HH:MM:SS``, ``MM:SS`` or ``MM`` (PURE)."""
    if not _TIME.match(text):
        raise ConfigError(f"time {text!r}: use Slurm's [D-]HH:MM:SS, MM:SS or MM")
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if "-" in text:  # with days, the fields are hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        h, m, sec = parts
    elif len(parts) == 3:
        h, m, sec = parts
    elif len(parts) == 2:
        h, m, sec = 0, parts[0], parts[1]
    else:
        h, m, sec = 0, parts[0], 0
    return int(days or 0) * 86400 + h * 3600 + m * 60 + sec


def lead_warning(opts: SlurmOptions) -> str | None:
    """A warning when the pre-walltime signal cannot come in time, else None (PURE)."""
    wall = walltime_seconds(opts.time)
    if opts.signal_lead >= wall:
        return (
            f"--signal-lead {opts.signal_lead} s is not shorter than the walltime {opts.time} "
            f"({wall} s): Slurm would ask the job to checkpoint and stop as soon as it starts. "
            "Use a lead of a few minutes at most, well under the walltime"
        )
    if opts.signal_lead > wall // 2:
        return (
            f"--signal-lead {opts.signal_lead} s is more than half the walltime {opts.time} "
            f"({wall} s): each run stops early and spends much of its time requeued"
        )
    return None


def render_sbatch(opts: SlurmOptions) -> str:
    """The batch script for ``opts`` (see the module docstring)."""
    opts.check()
    command = " ".join(shlex.quote(a) for a in (opts.script, *opts.args))
    if opts.numba_cache is None:
        cache_line = (
            "# kernels compile once per job into each node's local cache ($TMPDIR or /dev/shm);\n"
            "# a persistent cache shared by jobs: parcomp slurm --numba-cache DIR"
        )
    else:
        cache_line = f'export PARCOMP_CACHE_DIR="${{PARCOMP_CACHE_DIR:-{opts.numba_cache}}}"'
    return f"""#!/bin/bash
# Generated by `parcomp slurm`; submit from the project directory: sbatch THIS_FILE
#SBATCH --job-name={opts.name}
#SBATCH --ntasks={opts.ntasks}
#SBATCH --nodes={opts.nodes}
#SBATCH --time={opts.time}
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@{opts.signal_lead}
#SBATCH --output={opts.output}
set -u
cd "${{SLURM_SUBMIT_DIR:-.}}"
PYTHON="${{PARCOMP_PYTHON:-$PWD/.venv/bin/python}}"
RESTART_BUDGET={opts.restarts}
{cache_line}
export PARCOMP_EXPECT_NTASKS="$SLURM_NTASKS"
requeued="${{SLURM_RESTART_COUNT:-0}}"
if [ "$requeued" -gt 0 ]; then
  echo "parcomp: requeued run $requeued of job $SLURM_JOB_ID: resuming from the last checkpoint"
fi

child=0
preempted=0  # once Slurm asked the job to stop, it is requeued, never restarted here
forward() {{ preempted=1; if [ "$child" -gt 0 ]; then kill -USR1 "$child" 2>/dev/null; fi; }}
trap forward USR1 TERM

attempt=0
while :; do
  export PARCOMP_RESTART_COUNT=$((requeued + attempt))
  "$PYTHON" -m parcomp run -n "$SLURM_NTASKS" {command} &
  child=$!
  if [ "$preempted" -eq 1 ]; then kill -USR1 "$child" 2>/dev/null; fi  # signal came first
  while :; do  # a trapped signal interrupts wait: wait again until parcomp run has exited
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=0
  if [ "$preempted" -eq 1 ] && [ "$status" -ne 0 ]; then status={PREEMPTED_STATUS}; fi
  case $status in
    0)
      echo "parcomp: job finished"
      exit 0 ;;
    {PREEMPTED_STATUS})
      echo "parcomp: checkpointed after a signal; requeueing job $SLURM_JOB_ID"
      scontrol requeue "$SLURM_JOB_ID"
      exit 0 ;;
    *)
      if [ "$attempt" -lt "$RESTART_BUDGET" ]; then
        attempt=$((attempt + 1))
        echo "parcomp: launcher exited with status $status; restart $attempt/$RESTART_BUDGET in the allocation"
        continue
      fi
      echo "parcomp: launcher exited with status $status; no restarts left"
      exit "$status" ;;
  esac
done
"""
