"""One timed heat2d run (launched by bench/heat2d.py under mpiexec); prints one JSON line.

Implementations (all the same 5-point update on an N x N grid with zero ghost cells):
  numba-bare    hand-written @numba.njit kernel, 1 process, no parcomp
  numpy         NumPy slicing, 1 process
  parcomp       jobs/heat2d.py's simulate(): DistArray + exchange_halos + run_stencil
  mpi4py-hand   hand-written 2-rank slab code: rows split, Sendrecv of one row each way
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))


@numba.njit
def bare_step(u, out, alpha):
    n0, n1 = u.shape
    for i in range(1, n0 - 1):
        for j in range(1, n1 - 1):
            c = u[i, j]
            out[i, j] = c + alpha * (
                u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * c
            )


def initial(n: int) -> np.ndarray:
    u = np.zeros((n + 2, n + 2))
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    u[1:-1, 1:-1] = np.sin(np.pi * (i + 1) / (n + 1)) * np.sin(np.pi * (j + 1) / (n + 1))
    return u


def run_single(step, n: int, steps: int, alpha: float) -> dict:
    u = initial(n)
    v = np.zeros_like(u)
    step(u, v, alpha)  # compile / warm up
    t0 = time.perf_counter()
    for _ in range(steps):
        step(u, v, alpha)
        u, v = v, u
    return {"seconds": time.perf_counter() - t0, "halo_seconds": 0.0}


def run_hand_mpi(n: int, steps: int, alpha: float) -> dict:
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    base, extra = divmod(n, size)
    rows = base + (rank < extra)
    start = rank * base + min(rank, extra)
    full = initial(n)
    u = np.ascontiguousarray(full[start : start + rows + 2])
    v = np.zeros_like(u)
    up = rank - 1 if rank > 0 else MPI.PROC_NULL
    down = rank + 1 if rank < size - 1 else MPI.PROC_NULL
    bare_step(u, v, alpha)
    halo = 0.0
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        comm.Sendrecv(u[1], up, 0, u[rows + 1], down, 0)
        comm.Sendrecv(u[rows], down, 1, u[0], up, 1)
        halo += time.perf_counter() - t
        bare_step(u, v, alpha)
        u, v = v, u
    comm.Barrier()
    return {"seconds": time.perf_counter() - t0, "halo_seconds": halo}


def run_parcomp(n: int, steps: int, alpha: float) -> dict:
    import heat2d

    u, seconds, halo, _ = heat2d.simulate(n, steps, alpha)
    # cost of one exchange, measured alone on the same array
    samples = []
    for _ in range(50):
        u.comm.Barrier()
        t = time.perf_counter()
        u.exchange_halos()
        samples.append(time.perf_counter() - t)
    return {
        "seconds": seconds,
        "halo_seconds": halo,
        "exchange_median_s": float(np.median(samples)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--impl", required=True, choices=["numba-bare", "numpy", "parcomp", "mpi4py-hand"]
    )
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.24)
    args = parser.parse_args()
    if args.impl == "numba-bare":
        result = run_single(bare_step, args.n, args.steps, args.alpha)
    elif args.impl == "numpy":
        from parcomp.kernels import heat_step_2d_numpy

        result = run_single(heat_step_2d_numpy, args.n, args.steps, args.alpha)
    elif args.impl == "mpi4py-hand":
        result = run_hand_mpi(args.n, args.steps, args.alpha)
    else:
        result = run_parcomp(args.n, args.steps, args.alpha)
    seconds = MPI.COMM_WORLD.allreduce(result["seconds"], op=MPI.MAX)
    halo = MPI.COMM_WORLD.allreduce(result["halo_seconds"], op=MPI.MAX)
    if MPI.COMM_WORLD.rank == 0:
        result.update(
            seconds=seconds,
            halo_seconds=halo,
            ranks=MPI.COMM_WORLD.size,
            gcells=args.n * args.n * args.steps / seconds / 1e9,
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
