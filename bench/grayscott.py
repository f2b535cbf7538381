"""Gray-Scott per step: parcomp against hand-written mpi4py + Numba with one aggregated exchange.

Run:  .venv/bin/parcomp run -n 2 bench/grayscott.py [--repeats 7] [--steps 400] [--sizes 256 1024]

The same step both ways, in the same job, on the same rows split (parcomp picks a
(size, 1) grid for a square on 2 ranks), periodic on both axes:

* **parcomp**: ``jobs/grayscott.simulate``: ``run_stencil`` of the declared two-field
  kernel; both halos go in one message per neighbour (an MPI struct datatype), and the
  periodic wrap along the undivided axis is the exchange with itself.
* **hand-written**: NumPy blocks with one ghost ring; the periodic columns wrapped by
  copying; the two edge rows of both fields packed into one buffer per direction and
  sent with one ``Sendrecv`` each way (one aggregated message per neighbour); the same
  Numba kernel body (``parcomp.kernels.gray_scott_step``'s compiled dispatcher).

Each sample is a steady-state time per step: ``(T(W + steps) - T(W)) / steps`` with
``W = 20`` warm-up steps, so that set-up (allocation; for parcomp, the first calls'
checks, agreement and building of the exchange, about 1.3 ms per new set of arrays) is
left out of both; medians; rank 0 prints the ratio (goal, issue 14: <= 1.05 on 2 ranks).
The run fails if the two disagree on the final fields.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))

from grayscott import DEFAULTS, initial

from parcomp.kernels import gray_scott_step

WARM = 20
ARGS = tuple(DEFAULTS[k] for k in ("du", "dv", "f", "k", "dt"))


def hand_written(n: int, steps: int, comm: MPI.Comm) -> tuple[float, np.ndarray]:
    """Rows split over ranks; returns (seconds, this rank's final u and v interiors)."""
    rank, size = comm.rank, comm.size
    lo, hi = rank * n // size, (rank + 1) * n // size  # parcomp's block rows
    rows = hi - lo
    u0, v0 = initial(n)
    i, j = np.meshgrid(np.arange(lo, hi), np.arange(n), indexing="ij")
    u, v = np.zeros((rows + 2, n + 2)), np.zeros((rows + 2, n + 2))
    u[1:-1, 1:-1], v[1:-1, 1:-1] = u0(i, j), v0(i, j)
    u2, v2 = np.zeros_like(u), np.zeros_like(v)
    up, down = (rank - 1) % size, (rank + 1) % size
    send, recv = np.empty((2, n + 2)), np.empty((2, n + 2))
    kernel = gray_scott_step.dispatcher
    kernel(u, v, u2, v2, *ARGS)  # compiled already (the parcomp run), or compile now
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(steps):
        for a in (u, v):  # periodic columns: local copies
            a[:, 0] = a[:, -2]
            a[:, -1] = a[:, 1]
        send[0], send[1] = u[1], v[1]  # both fields' first rows: one message up
        comm.Sendrecv(send, dest=up, recvbuf=recv, source=down)
        u[-1], v[-1] = recv[0], recv[1]
        send[0], send[1] = u[-2], v[-2]  # both fields' last rows: one message down
        comm.Sendrecv(send, dest=down, recvbuf=recv, source=up)
        u[0], v[0] = recv[0], recv[1]
        kernel(u, v, u2, v2, *ARGS)
        u, u2, v, v2 = u2, u, v2, v
    comm.Barrier()
    return time.perf_counter() - t, np.stack([u[1:-1, 1:-1], v[1:-1, 1:-1]])


def with_parcomp(n: int, steps: int, comm: MPI.Comm) -> tuple[float, np.ndarray]:
    from grayscott import simulate

    comm.Barrier()
    u, v, seconds = simulate(n, steps, dict(DEFAULTS), comm=comm)
    comm.Barrier()
    return comm.allreduce(seconds, op=MPI.MAX), np.stack([u.interior, v.interior])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    lines = []
    for n in args.sizes:
        _, mine = with_parcomp(n, 3, comm)  # compile / warm up both, and compare them
        _, theirs = hand_written(n, 3, comm)
        if not comm.allreduce(np.array_equal(mine, theirs), op=MPI.LAND):
            raise SystemExit(f"{n}^2: parcomp and the hand-written code disagree: no benchmark")
        samples: dict[str, list[float]] = {"hand": [], "parcomp": []}
        for _ in range(args.repeats):
            for name, run in (("hand", hand_written), ("parcomp", with_parcomp)):
                short = run(n, WARM, comm)[0]
                whole = run(n, WARM + args.steps, comm)[0]
                samples[name].append((whole - short) / args.steps)
        lines.append((n, {k: statistics.median(v) * 1e6 for k, v in samples.items()}))
    if comm.rank == 0:
        print(
            f"machine: {machine()}; {comm.size} rank(s); {args.steps} steps; medians of {args.repeats}"
        )
        for n, m in lines:
            print(
                f"  {n}^2: hand-written {m['hand']:9.1f} us/step, parcomp {m['parcomp']:9.1f} "
                f"us/step: ratio {m['parcomp'] / m['hand']:.3f} (goal <= 1.05)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
