"""MPI side of bench/mapreduce.py: parcomp against hand-written mpi4py in one 2-rank job.

Prints one JSON object (rank 0) with the median seconds of every case.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import parcomp
from parcomp.grid.partition import block_range

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import medium, tiny

comm = MPI.COMM_WORLD
# Upper half-plane, seam at the bottom: rows near the real axis are the heavy ones, so a
# block split gives rank 0 most of the work (the full view is symmetric and would balance).
VIEW = (-2.2, 0.8, 0.0, 1.2)
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 7


def hand_static(fn, n):
    start, stop = block_range(n, comm.size, comm.rank)
    local = 0
    for i in range(start, stop):
        local += fn(i)
    return comm.allreduce(local)


def timed(fn):
    comm.Barrier()
    t = time.perf_counter()
    value = fn()
    comm.Barrier()
    return time.perf_counter() - t, value


def main() -> None:
    import mandelbrot

    big = np.random.default_rng(comm.rank).random(10_000_000)  # 80 MB
    out = np.empty_like(big)
    cases = {
        "tiny/hand-static": lambda: hand_static(tiny, 10_000),
        "tiny/parcomp-block": lambda: parcomp.map_reduce(tiny, range(10_000)),
        "tiny/parcomp-dynamic": lambda: parcomp.map_reduce(tiny, range(10_000), schedule="dynamic"),
        "tiny/parcomp-deterministic": lambda: parcomp.map_reduce(
            tiny, range(10_000), deterministic=True
        ),
        "medium/hand-static": lambda: hand_static(medium, 100),
        "medium/parcomp-block": lambda: parcomp.map_reduce(medium, range(100)),
        "medium/parcomp-dynamic": lambda: parcomp.map_reduce(
            medium, range(100), schedule="dynamic"
        ),
        "mandelbrot/parcomp-block": lambda: mandelbrot.render(800, 600, 800, "block", view=VIEW),
        "mandelbrot/parcomp-cyclic": lambda: mandelbrot.render(800, 600, 800, "cyclic", view=VIEW),
        "mandelbrot/parcomp-dynamic": lambda: mandelbrot.render(
            800, 600, 800, "dynamic", view=VIEW
        ),
        "reduce80MB/raw-Allreduce": lambda: comm.Allreduce(big, out, op=MPI.SUM),
        "reduce80MB/raw-Allreduce-new-array": lambda: comm.Allreduce(
            big, np.empty_like(big), op=MPI.SUM
        ),
        "reduce80MB/parcomp.allreduce-out": lambda: parcomp.allreduce(big, "sum", comm, out=out),
        "reduce80MB/parcomp.map_reduce-out": lambda: parcomp.map_reduce(
            lambda _: big, range(comm.size), "sum", comm=comm, out=out
        ),
        "reduce80MB/parcomp.map_reduce-new-array": lambda: parcomp.map_reduce(
            lambda _: big, range(comm.size), "sum", comm=comm
        ),
    }
    for fn in cases.values():  # warm-up: compile kernels, create communicators, page in
        fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(REPEATS):
        for name, fn in cases.items():
            samples[name].append(timed(fn)[0])
    if comm.rank == 0:
        print(json.dumps({name: statistics.median(v) for name, v in samples.items()}))


if __name__ == "__main__":
    main()
