"""The Parallel Research Kernels "stencil" benchmark (star, radius 2), with its verification.

Run:  parcomp run -n 2 jobs/prk_stencil.py [--n 8192] [--iterations 20] [--steps-per-exchange 8]

Follows the PRK specification (Van der Wijngaart and Mattson, HPEC 2014; the MPI1 and
Python versions in github.com/ParRes/Kernels): an ``n x n`` grid ``in`` starts as
``i + j``, ``out`` as 0; each iteration adds the radius-2 star stencil of ``in`` to
``out`` on the cells at least 2 from the grid's edge, then adds 1 to all of ``in``.
Iteration 0 is not timed; ``--iterations`` more are.  The check: the mean of ``|out|``
over those cells equals ``(iterations + 1) * 2`` to 1e-8, and the job prints the rate
in MFlop/s as PRK counts it (19 flops per updated cell).

``--steps-per-exchange k`` does ``k`` iterations per halo exchange (deep halo of ``2k``
ghost cells) and cache-blocks them (see :mod:`parcomp.stencils.check_steps`); 1 is the plain
scheme, one exchange and one sweep per iteration.  The result is bitwise the same for
any ``k``, ``--tile`` and rank count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import parcomp
from parcomp import DistArray, run_stencil
from parcomp.kernels import PRK_RADIUS, prk_star2

#: flops per updated cell, as PRK counts them: 2 per stencil point (9) plus one
FLOPS_PER_CELL = 2 * (4 * PRK_RADIUS + 1) + 1
EPSILON = 1e-8


def setup(n: int, k: int, comm=None, dims=None) -> tuple[DistArray, ...]:
    """The PRK fields on a grid of ``n x n`` cells with ghost cells ``2k`` wide."""
    R = PRK_RADIUS
    halo = k * R
    inp = DistArray.fromfunction(
        lambda i, j: (i + j).astype(np.float64), (n, n), halo=halo, comm=comm, dims=dims
    )
    out = inp.zeros_like()
    active = DistArray.fromfunction(
        lambda i, j: ((i >= R) & (i < n - R) & (j >= R) & (j < n - R)).astype(np.int8),
        (n, n),
        dtype=np.int8,
        halo=halo,
        comm=comm,
        dims=dims,
    )
    return inp, out, active, inp.zeros_like(), out.zeros_like()


ROTATE = {"inp": "inp2", "inp2": "inp", "out": "out2", "out2": "out"}


def iterate(args: tuple[DistArray, ...], count: int, k: int, tile) -> tuple[DistArray, ...]:
    """``count`` PRK iterations, ``k`` per exchange (collective)."""
    done = 0
    while done < count:
        step = min(k, count - done)
        args = run_stencil(prk_star2, *args, steps=step, rotate=ROTATE, tile=tile)
        done += step
    return args


def norm(out: DistArray, active: DistArray) -> float:
    """Mean of ``|out|`` over the active cells (collective)."""
    local = float(np.abs(out.interior[active.interior.astype(bool)]).sum())
    cells = int(active.interior.sum())
    total, count = out.comm.allreduce(np.array([local, float(cells)]))
    return float(total / count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="prk_stencil.py",
        description="PRK star stencil (radius 2) with its standard verification.",
    )
    parser.add_argument("--n", type=int, default=4096, help="grid cells per side (default 4096)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations (default 20)")
    parser.add_argument(
        "--steps-per-exchange",
        type=int,
        default=8,
        metavar="K",
        help="iterations per halo exchange, cache-blocked (default 8; 1: one sweep per step)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        nargs="+",
        default=None,
        help="tile cells per axis (0: not cut); default from the L2 cache size",
    )
    args = parser.parse_args(argv)
    if args.n < 2 * PRK_RADIUS + 1 or args.iterations < 1 or args.steps_per_exchange < 1:
        parser.error("need --n >= 5, --iterations >= 1 and --steps-per-exchange >= 1")
    k = args.steps_per_exchange
    tile = None if args.tile is None else tuple(args.tile) if len(args.tile) > 1 else args.tile[0]
    fields = setup(args.n, k)
    rank = fields[0].rank
    if rank == 0:
        print(
            f"PRK stencil: {args.n}x{args.n} grid, radius {PRK_RADIUS} star, "
            f"{args.iterations} iterations, {fields[0].partition.size} ranks, "
            f"{k} iterations per exchange"
        )
    fields = iterate(fields, 1, k, tile)  # iteration 0: untimed (compiles, builds requests)
    fields[0].comm.Barrier()
    t0 = time.perf_counter()
    fields = iterate(fields, args.iterations, k, tile)
    fields[0].comm.Barrier()
    seconds = time.perf_counter() - t0
    mean = norm(fields[1], fields[2])
    reference = (args.iterations + 1) * 2.0
    active = (args.n - 2 * PRK_RADIUS) ** 2
    mflops = FLOPS_PER_CELL * active * args.iterations / seconds / 1e6
    if rank == 0:
        print(f"L1 norm = {mean:.15g}, reference L1 norm = {reference:.15g}")
        print(f"Rate (MFlops/s): {mflops:.1f}  Avg time (s): {seconds / args.iterations:.6f}")
    if abs(mean - reference) > EPSILON * reference:
        parcomp.exit_all(
            1, f"prk_stencil: ERROR: L1 norm {mean!r} differs from the reference {reference!r}"
        )
    if rank == 0:
        print("Solution validates")


if __name__ == "__main__":
    main()
