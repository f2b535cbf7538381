"""One timed run for bench/temporal.py (under mpiexec); prints one JSON line.

Implementations of the same explicit heat step (zero walls):
  bare       hand-written @numba.njit 5-point (2-D) or 7-point (3-D) sweep, one per step,
             one process, no parcomp: the one-sweep-per-step rate
  hand       hand-written mpi4py slab code (2-D): one Sendrecv pair and one sweep per step
  steps      parcomp: DistArray with a halo of k cells, run_stencil(steps=k, tile=T):
             one exchange per k steps, skewed cache tiles
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heat2d_worker import bare_step, initial, run_hand_mpi


@numba.njit
def bare_step_3d(u, out, alpha):
    n0, n1, n2 = u.shape
    for i in range(1, n0 - 1):
        for j in range(1, n1 - 1):
            for k in range(1, n2 - 1):
                c = u[i, j, k]
                out[i, j, k] = c + alpha * (
                    u[i - 1, j, k]
                    + u[i + 1, j, k]
                    + u[i, j - 1, k]
                    + u[i, j + 1, k]
                    + u[i, j, k - 1]
                    + u[i, j, k + 1]
                    - 6.0 * c
                )


def start(n: int, ndim: int) -> np.ndarray:
    if ndim == 2:
        return initial(n)
    rng = np.random.default_rng(1)
    u = np.zeros((n + 2,) * 3)
    u[1:-1, 1:-1, 1:-1] = rng.random((n,) * 3)
    return u


def run_bare(n: int, ndim: int, steps: int, alpha: float) -> dict:
    step = bare_step if ndim == 2 else bare_step_3d
    u = start(n, ndim)
    v = np.zeros_like(u)
    step(u, v, alpha)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(u, v, alpha)
        u, v = v, u
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "messages_per_step": 0.0, "check": float(u[(n + 2) // 2].sum())}


def run_steps(
    n: int, ndim: int, steps: int, alpha: float, k: int, tile, overlap: bool = False
) -> dict:
    from parcomp import run_stencil
    from parcomp.arrays.array import DistArray
    from parcomp.grid.halo import STATS
    from parcomp.kernels import heat_step_2d, heat_step_3d

    kernel = heat_step_2d if ndim == 2 else heat_step_3d
    full = start(n, ndim)
    inner = (slice(1, -1),) * ndim
    u = DistArray.from_global(
        np.ascontiguousarray(full[inner]) if MPI.COMM_WORLD.rank == 0 else None,
        global_shape=(n,) * ndim,
        halo=(k,) + (1,) * (ndim - 1),  # slabs: deep only along the axis with neighbours
        dims=(MPI.COMM_WORLD.size,) + (1,) * (ndim - 1),
    )
    v = u.zeros_like()
    u, v, _ = run_stencil(
        kernel, u, v, alpha, steps=k, tile=tile, overlap=overlap
    )  # compile, plan, requests
    u, v, _ = run_stencil(kernel, u, v, alpha, steps=k, tile=tile, overlap=overlap)
    calls = max(1, steps // k)
    before = STATS.messages
    MPI.COMM_WORLD.Barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        u, v, _ = run_stencil(kernel, u, v, alpha, steps=k, tile=tile, overlap=overlap)
    MPI.COMM_WORLD.Barrier()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds * steps / (calls * k),  # per the steps asked for
        "messages_per_step": (STATS.messages - before) / (calls * k),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", required=True, choices=["bare", "hand", "steps"])
    parser.add_argument("--ndim", type=int, default=2, choices=[2, 3])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--tile", type=int, nargs="*", default=None)
    parser.add_argument("--overlap", action="store_true")
    args = parser.parse_args()
    alpha = 0.24 if args.ndim == 2 else 0.15
    tile = None if not args.tile else (args.tile[0] if len(args.tile) == 1 else tuple(args.tile))
    if args.impl == "bare":
        result = run_bare(args.n, args.ndim, args.steps, alpha)
    elif args.impl == "hand":
        result = run_hand_mpi(args.n, args.steps, alpha)
        # rank 0 of the slabs: one neighbour, one message per step (Sendrecv to PROC_NULL
        # on the other side sends nothing)
        result["messages_per_step"] = 1.0 if MPI.COMM_WORLD.size > 1 else 0.0
    else:
        result = run_steps(args.n, args.ndim, args.steps, alpha, args.k, tile, args.overlap)
    comm = MPI.COMM_WORLD
    seconds = comm.allreduce(result["seconds"], op=MPI.MAX)
    if comm.rank == 0:
        cells = args.n**args.ndim * args.steps
        result.update(seconds=seconds, ranks=comm.size, gcells=cells / seconds / 1e9)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
