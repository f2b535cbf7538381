"""Running job scripts from a notebook: live log, exit status, results as NumPy arrays.

Local: starts ``parcomp run`` (the supervisor) as a subprocess and streams its output.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["JobResult", "run_job", "read_h5", "plot_rates"]


@dataclass
class JobResult:
    """What :func:`run_job` returns."""

    returncode: int
    seconds: float
    log: str

    @property
    def ok(self) -> bool:
        """Whether the job finished (status 0)."""
        return self.returncode == 0


def run_job(
    script: str | Path,
    *args: Any,
    n: int = 2,
    restarts: int = 0,
    timeout: float | None = None,
    echo: bool = True,
) -> JobResult:
    """Run ``script`` on ``n`` ranks through ``parcomp run``; print its log live.

    Parameters
    ----------
    script : str or Path
        The job script.
    *args
        Its arguments.
    n : int
        Ranks.
    restarts : int
        Relaunches after a failure (the job resumes from its checkpoint).
    timeout : float, optional
        Seconds before the whole job is killed.
    echo : bool
        Print each log line as it arrives (a notebook shows them live).

    Returns
    -------
    JobResult
        Exit status, wall seconds, and the whole log (stdout and stderr interleaved).
    """
    argv = [sys.executable, "-m", "parcomp", "run", "-n", str(n), "--restarts", str(restarts)]
    if timeout is not None:
        argv += ["--timeout", str(timeout)]
    argv += [str(script), *map(str, args)]
    t0 = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                print(line, end="", flush=True)
        returncode = proc.wait()
    return JobResult(returncode, time.monotonic() - t0, "".join(lines))


def read_h5(path: str | Path, dataset: str) -> np.ndarray:
    """A dataset of an HDF5 file (a job's output or a checkpoint's ``master.h5``) as an array."""
    import h5py

    with h5py.File(path, "r") as fh:
        return fh[dataset][...]


def plot_rates(
    rates: dict[str, float], unit: str = "Gcell/s", title: str = "", ax: Any = None
) -> Any:
    """Bar chart of benchmark results (``{label: value}``), best first; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(rates)))
    items = sorted(rates.items(), key=lambda kv: kv[1])
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color="tab:orange")
    ax.bar_label(bars, fmt="%.3g", padding=3)
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax
