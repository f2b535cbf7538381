"""Shared helpers for the benchmarks: machine description and repeated timing."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    """One line describing the machine: CPU model, cores, memory, Python and MPI."""
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(open("/proc/meminfo", encoding="utf-8").readline().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    from mpi4py import MPI

    mpi = MPI.Get_library_version().splitlines()[0].strip()
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, {mpi}"


def wall(argv: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> float:
    """Wall time of one run of ``argv`` (which must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(
        argv,
        check=True,
        timeout=timeout,
        env=env,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def medians(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case ``repeats`` times, interleaved (so drift hits all cases alike)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(fn())
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def collective_medians(
    comm: Any, cases: dict[str, Callable[[], object]], repeats: int
) -> dict[str, float]:
    """Inside an MPI job: each case once to warm up, then ``repeats`` interleaved timings.

    Each timing spans barrier to barrier, so it is the slowest rank's; returns the medians.
    """

    def timed(fn: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            comm.Barrier()
            t = time.perf_counter()
            fn()
            comm.Barrier()
            return time.perf_counter() - t

        return run

    for fn in cases.values():
        fn()
    samples = medians({name: timed(fn) for name, fn in cases.items()}, repeats)
    return {name: statistics.median(values) for name, values in samples.items()}


def worktree(rev: str, folder: Path) -> Path:
    """A detached git worktree of ``rev`` in ``folder / "before"``, importable with
    ``PYTHONPATH`` (``parcomp.kernels`` mirrored, as the install's package-dir does)."""
    tree = folder / "before"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
        check=True,
        capture_output=True,
    )
    (tree / "parcomp" / "kernels").symlink_to(tree / "kernels")
    return tree
