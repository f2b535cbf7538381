"""Exact (``deterministic=True``) reductions against the plain ones, in the same job.

Run:  .venv/bin/parcomp run -n 1 bench/exact_sum.py   (and -n 2)   [--repeats 21]

``DistArray.sum``, ``dot`` and ``norm`` of float64 arrays with one ghost cell (the
interior is a strided view, as in every solver), at about 10**5 values per rank (in
cache) and 10**7 (memory-bound), ``deterministic=True`` against ``False``, interleaved;
then the CG of ``jobs/poisson_cg.py`` at 1023**2 with exact dots against plain dots.
Medians; rank 0 prints the ratios (goals, issue 28: <= 4x in cache, <= 2x at 10**7,
CG <= 1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine
from mpi4py import MPI

import parcomp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))


def timed(fn, comm) -> float:
    comm.Barrier()
    t = time.perf_counter()
    fn()
    comm.Barrier()
    return time.perf_counter() - t


def reductions(side: int, repeats: int, comm) -> dict[str, float]:
    rows = side * comm.size  # about side**2 values on every rank
    a = parcomp.DistArray.fromfunction(lambda i, j: np.sin(i * 0.37 + j) * np.exp(-j * 1e-3),
                                       (rows, side), comm=comm)  # fmt: skip
    b = parcomp.DistArray.fromfunction(lambda i, j: np.cos(i + j * 0.11), (rows, side), comm=comm)
    cases = {
        "sum": (lambda: a.sum(), lambda: a.sum(deterministic=True)),
        "dot": (lambda: a.dot(b), lambda: a.dot(b, deterministic=True)),
        "norm": (lambda: a.norm(), lambda: a.norm(deterministic=True)),
    }
    out = {}
    for name, (plain, exact) in cases.items():
        plain(), exact()
        samples = {"plain": [], "exact": []}
        for _ in range(repeats):
            samples["plain"].append(timed(plain, comm))
            samples["exact"].append(timed(exact, comm))
        out[name] = (statistics.median(samples["plain"]), statistics.median(samples["exact"]))
    return out


def cg(n: int, iterations: int, repeats: int, comm) -> tuple[float, float]:
    from poisson_cg import solve

    def run(det: bool) -> float:
        _, k, _, seconds = solve(n, 1e-300, iterations, comm=comm, deterministic=det)
        if k != iterations:
            raise SystemExit(f"CG ran {k} iterations, not {iterations}: nothing comparable")
        return comm.allreduce(seconds, op=MPI.MAX) / iterations

    run(False), run(True)
    plain, exact = [], []
    for _ in range(repeats):
        plain.append(run(False))
        exact.append(run(True))
    return statistics.median(plain), statistics.median(exact)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--cg-iterations", type=int, default=40)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    lines = []
    for side, label, goal in ((316, "1e5 values per rank (in cache)", 4.0),
                              (3162, "1e7 values per rank (memory)", 2.0)):  # fmt: skip
        for name, (p, e) in reductions(side, args.repeats, comm).items():
            lines.append(f"  {label:32s} {name:5s}: plain {p * 1e6:9.1f} us, exact "
                         f"{e * 1e6:9.1f} us: {e / p:5.2f}x (goal <= {goal:g}x)")  # fmt: skip
    p, e = cg(1023, args.cg_iterations, max(3, args.repeats // 4), comm)
    lines.append(f"  CG 1023^2 per iteration: plain dots {p * 1e6:8.1f} us, exact dots "
                 f"{e * 1e6:8.1f} us: {e / p:5.2f}x (goal <= 1.3x)")  # fmt: skip
    if comm.rank == 0:
        print(f"machine: {machine()}; {comm.size} rank(s); medians of {args.repeats}")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
