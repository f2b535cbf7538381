"""Conjugate gradients per iteration: parcomp against hand-written mpi4py + Numba.

Run:  .venv/bin/parcomp run -n 1 bench/cg.py   and   .venv/bin/parcomp run -n 2 bench/cg.py
      [--repeats 7] [--iterations 60] [--sizes 255 1023]

The same algorithm four ways on the same rows-split decomposition (parcomp picks a
(size, 1) grid for these shapes): ``q = A p`` with the 5-point stencil after a halo
exchange, two dot products, three vector updates.

* **parcomp**: :func:`jobs/poisson_cg.solve` with plain dot products (``--fast-dots``):
  ``run_stencil`` of a declared kernel, ``DistArray.dot``, ``axpy`` and in-place ufuncs;
  **parcomp fused**: the same loop inside ``with parcomp.fused():`` (the README's CG).
* **hand-written**: NumPy blocks with one ghost row on each side, ``Sendrecv`` of the edge
  rows, the same Numba kernel body, ``np.vdot`` (or ``np.einsum`` on the ghosted ``p``,
  no temporary) + buffer ``Allreduce``, the axpy updates with the same Numba loop as
  ``DistArray.axpy`` (one pass, no temporary), in-place NumPy updates for ``p``.  So
  both run the same arithmetic with the same kernels, and the ratio is parcomp's cost.
  **hand-fused**: as a CG written for speed (issue 28's baseline): ``x``, ``r`` and
  ``r.r`` in one ``fastmath`` Numba pass, ``p = r + beta p`` in another.

Each sample is ``iterations`` CG iterations between barriers (from the same start, so
both do identical work); medians; rank 0 prints the ratios (goals: issue 14, parcomp /
hand-written <= 1.05; issue 28, parcomp fused / hand-fused <= 1.1 at 1023**2, 1.2 at 255**2).
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


@numba.njit(cache=True, fastmath=True)
def update_xr(x, r, p, q, alpha):
    """x += alpha p; r -= alpha q; and r.r, in one pass (as hand-fused CGs do)."""
    rr = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += alpha * p[i, j]
            rv = r[i, j] - alpha * q[i, j]
            r[i, j] = rv
            rr += rv * rv
    return rr


@numba.njit(cache=True, fastmath=True)
def update_p(p, r, beta):
    """p = r + beta p, one pass."""
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            p[i, j] = r[i, j] + beta * p[i, j]


def hand_written(n: int, iterations: int, comm: MPI.Comm, fused: bool = False) -> float:
    """Rows split over ranks, one ghost row and column each side; returns seconds.

    ``fused``: the vector updates as a CG written for speed has them (``fastmath``
    Numba loops): x, r and r.r in one pass, p in another; 4 passes per iteration with
    the stencil and p.q, against 7."""
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
        if fused:
            mine[0] = update_xr(x, r, inner_p, inner_q, alpha)
            comm.Allreduce(mine, total, op=MPI.SUM)
            rs_new = float(total[0])
            update_p(inner_p, r, rs_new / rs)
            rs = rs_new
            continue
        axpy(x, alpha, inner_p)  # the same compiled loop as DistArray.axpy
        axpy(r, -alpha, inner_q)
        rs_new = dot(r, r)
        inner_p *= rs_new / rs
        inner_p += r
        rs = rs_new
    comm.Barrier()
    return time.perf_counter() - t


def with_parcomp(n: int, iterations: int, comm: MPI.Comm, fused: bool = True) -> float:
    from poisson_cg import solve

    # solve() times its iteration loop alone (set-up excluded); the slowest rank's time
    _, k, _, seconds = solve(n, 1e-300, iterations, comm=comm, deterministic=False,
                             fused=fused)  # fmt: skip
    if k != iterations:
        raise SystemExit(f"parcomp CG ran {k} iterations, not {iterations}: nothing comparable")
    return comm.allreduce(seconds, op=MPI.MAX)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--sizes", type=int, nargs="+", default=[255, 1023])
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    lines = []
    for n in args.sizes:
        runs = {
            "hand": lambda k, n=n: hand_written(n, k, comm),
            "hand fused": lambda k, n=n: hand_written(n, k, comm, fused=True),
            "parcomp": lambda k, n=n: with_parcomp(n, k, comm, fused=False),
            "parcomp fused": lambda k, n=n: with_parcomp(n, k, comm),
        }
        for run in runs.values():  # compile / warm up
            run(2)
        samples: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                samples[name].append(run(args.iterations) / args.iterations)
        m = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
        lines.append((n, m))
    if comm.rank == 0:
        print(f"machine: {machine()}; {comm.size} rank(s); medians of {args.repeats}")
        for n, m in lines:
            goal = 1.1 if n >= 1000 else 1.2
            print(
                f"  {n}^2 us/iteration: hand-written {m['hand']:8.1f}, parcomp "
                f"{m['parcomp']:8.1f} (ratio {m['parcomp'] / m['hand']:.3f}, goal <= 1.05); "
                f"hand-fused {m['hand fused']:8.1f}, parcomp fused {m['parcomp fused']:8.1f} "
                f"(ratio {m['parcomp fused'] / m['hand fused']:.3f}, goal <= {goal})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
