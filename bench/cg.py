"""Conjugate gradients per iteration: parcomp against hand-written mpi4py + Numba.

Run:  .venv/bin/parcomp run -n 1 bench/cg.py   and   .venv/bin/parcomp run -n 2 bench/cg.py
      [--repeats 7] [--iterations 60] [--sizes 256 1024]

The same algorithm both ways on the same rows-split decomposition (parcomp picks a
(size, 1) grid for these shapes): ``q = A p`` with the 5-point stencil after a halo
exchange, two dot products, three vector updates.

* **parcomp**: :func:`jobs/poisson_cg.solve` with plain dot products (``--fast-dots``):
  ``run_stencil`` of a declared kernel, ``DistArray.dot``, ``axpy`` and in-place ufuncs.
* **hand-written**: NumPy blocks with one ghost row on each side, ``Sendrecv`` of the edge
  rows, the same Numba kernel body, ``np.vdot`` (or ``np.einsum`` on the ghosted ``p``,
  no temporary) + buffer ``Allreduce``, the axpy updates with the same Numba loop as
  ``DistArray.axpy`` (one pass, no temporary), in-place NumPy updates for ``p``.  So
  both run the same arithmetic with the same kernels, and the ratio is parcomp's cost.

Each sample is ``iterations`` CG iterations between barriers (from the same start, so
both do identical work); medians; rank 0 prints the ratio (goal, issue 14: <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from _common import machine
from mpi4py import MPI

from parcomp.arrays.algebra import axpy_loops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))


axpy = numba.njit(cache=True)(axpy_loops)


@numba.njit(cache=True)
def laplacian(p, q, inv_h2):
    for i in range(1, p.shape[0] - 1):
        for j in range(1, p.shape[1] - 1):
            q[i, j] = (
                4.0 * p[i, j] - p[i - 1, j] - p[i + 1, j] - p[i, j - 1] - p[i, j + 1]
            ) * inv_h2


def hand_written(n: int, iterations: int, comm: MPI.Comm) -> float:
    """Rows split over ranks, one ghost row and column each side; returns seconds."""
    rank, size = comm.rank, comm.size
    lo, hi = rank * n // size, (rank + 1) * n // size  # matches parcomp's block rows
    rows = hi - lo
    h = 1.0 / (n + 1)
    i, j = np.meshgrid(np.arange(lo, hi), np.arange(n), indexing="ij")
    x_, y_ = (i + 1) * h, (j + 1) * h
    b = 2.0 * (x_ * (1 - x_) + y_ * (1 - y_))
    p = np.zeros((rows + 2, n + 2))
    q = np.zeros_like(p)
    x = np.zeros((rows, n))
    r = b.copy()
    p[1:-1, 1:-1] = r
    up = rank - 1 if rank > 0 else MPI.PROC_NULL
    down = rank + 1 if rank < size - 1 else MPI.PROC_NULL
    inv_h2 = float((n + 1) ** 2)

    mine, total = np.zeros(1), np.zeros(1)

    def dot(a: np.ndarray, c: np.ndarray) -> float:
        # buffer Allreduce: mpi4py's pickle-based allreduce took 8 ms per call here
        mine[0] = np.vdot(a, c) if a.flags.c_contiguous else np.einsum("ij,ij->", a, c)
        comm.Allreduce(mine, total, op=MPI.SUM)
        return float(total[0])

    rs = dot(r, r)
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(iterations):
        comm.Sendrecv(p[1], dest=up, recvbuf=p[-1], source=down)
        comm.Sendrecv(p[-2], dest=down, recvbuf=p[0], source=up)
        laplacian(p, q, inv_h2)
        inner_p, inner_q = p[1:-1, 1:-1], q[1:-1, 1:-1]
        alpha = rs / dot(inner_p, inner_q)
        axpy(x, alpha, inner_p)  # the same compiled loop as DistArray.axpy
        axpy(r, -alpha, inner_q)
        rs_new = dot(r, r)
        inner_p *= rs_new / rs
        inner_p += r
        rs = rs_new
    comm.Barrier()
    return time.perf_counter() - t


def with_parcomp(n: int, iterations: int, comm: MPI.Comm) -> float:
    from poisson_cg import solve

    # solve() times its iteration loop alone (set-up excluded); the slowest rank's time
    _, k, _, seconds = solve(n, 1e-300, iterations, comm=comm, deterministic=False)
    if k != iterations:
        raise SystemExit(f"parcomp CG ran {k} iterations, not {iterations}: nothing comparable")
    return comm.allreduce(seconds, op=MPI.MAX)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    lines = []
    for n in args.sizes:
        hand_written(n, 2, comm)  # compile / warm up both
        with_parcomp(n, 2, comm)
        samples: dict[str, list[float]] = {"hand": [], "parcomp": []}
        for _ in range(args.repeats):
            samples["hand"].append(hand_written(n, args.iterations, comm) / args.iterations)
            samples["parcomp"].append(with_parcomp(n, args.iterations, comm) / args.iterations)
        m = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
        lines.append((n, m))
    if comm.rank == 0:
        print(f"machine: {machine()}; {comm.size} rank(s); medians of {args.repeats}")
        for n, m in lines:
            print(
                f"  {n}^2: hand-written {m['hand']:9.1f} us/iteration, parcomp "
                f"{m['parcomp']:9.1f} us/iteration: ratio {m['parcomp'] / m['hand']:.3f} "
                "(goal <= 1.05)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
