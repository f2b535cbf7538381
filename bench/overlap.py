"""Overlapping the halo exchange with computation: ``run_stencil(overlap=True)`` vs False.

Run:  .venv/bin/parcomp run -n 2 bench/overlap.py [--repeats 7] [--steps 40]

heat2d's 5-point step on 2 ranks, at 256², 512² and 1024² cells *per rank*, interleaved:
each sample is ``steps`` steps of ``run_stencil(heat_step_2d, u, v, alpha, overlap=...)``
between barriers; medians of ``repeats`` samples.  Also the exchange alone, to show what
share of a step it is.  Rank 0 prints the table.  Fails (exit 1) if a case measured
nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from _common import machine
from mpi4py import MPI

from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.kernels import heat_step_2d


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rows = []
    for per_rank in (256, 512, 1024):
        shape = (per_rank * comm.size, per_rank)  # a block of per_rank^2 on every rank
        u = DistArray.fromfunction(lambda i, j: np.sin(i * 0.01) + np.cos(j * 0.02), shape, halo=1)
        v = u.zeros_like()

        def run(overlap: bool, u=u, v=v) -> float:
            comm.Barrier()
            t = time.perf_counter()
            a, b = u, v
            for _ in range(args.steps):
                run_stencil(heat_step_2d, a, b, 0.2, overlap=overlap)
                a, b = b, a
            comm.Barrier()
            return (time.perf_counter() - t) / args.steps

        def exchange_only(u=u) -> float:
            comm.Barrier()
            t = time.perf_counter()
            for _ in range(args.steps):
                u.exchange_halos()
            comm.Barrier()
            return (time.perf_counter() - t) / args.steps

        for case in (False, True):
            run(case)  # compile and build the persistent requests outside the timing
        samples: dict[str, list[float]] = {"plain": [], "overlap": [], "exchange": []}
        for _ in range(args.repeats):
            samples["plain"].append(run(False))
            samples["overlap"].append(run(True))
            samples["exchange"].append(exchange_only())
        rows.append((per_rank, {k: statistics.median(v) * 1e3 for k, v in samples.items()}))
    if comm.rank == 0:
        print(f"machine: {machine()}; {comm.size} ranks; medians of {args.repeats}")
        print("per rank   plain step   overlapped step   overlap/plain   exchange alone")
        for per_rank, m in rows:
            print(
                f"{per_rank:5d}^2   {m['plain']:8.3f} ms   {m['overlap']:10.3f} ms   "
                f"{m['plain'] / m['overlap']:10.3f}x   {m['exchange']:8.3f} ms "
                f"({100 * m['exchange'] / m['plain']:.0f}% of a plain step)"
            )
    bad = any(min(m.values()) <= 0 for _, m in rows)
    if bad and comm.rank == 0:
        print("FAILED: a case measured nothing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
