"""Cost of the collective identity check (parcomp.runtime.callid) on heat2d, CG and map/reduce.

Run:  .venv/bin/parcomp run -n 2 bench/collective_ids.py [--repeats 9]

The same workload, in the same process, with the check on and off
(``parcomp.runtime.callid.set_enabled``), alternating on/off in every repeat (on first in odd
repeats, off first in even ones) so that drift and the other core's noise fall on both
alike.  Off is the code path of a parcomp without the
check (the collective decorator returns at once, reductions carry no words).  Medians;
rank 0 prints, per case, the median of the on/off ratios of each back-to-back pair and
their quartiles (goal, issue 24: within 1%).

* **heat2d**: 512^2 five-point ``run_stencil`` steps with ``u.sum()`` every 10 steps (the
  monitoring a job script does), 1000 steps;
* **cg**: ``jobs/poisson_cg.solve`` (two dots, three updates, one stencil per iteration),
  255^2 and 1023^2, plain (fast) dots, 300 iterations;
* **map_reduce**: 20,000 small items summed (block schedule), then a keyed-free
  ``map_reduce`` of a 4096-float array per item over 200 items (the array path).

A case whose "on" runs made no checked reduction, or whose "off" runs made some, did not
measure what it says: the benchmark stops with an error then.
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
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.runtime import callid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))


@parcomp.stencil(radius=1)
def heat(u, out, a):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = u[i, j] + a * (
                u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * u[i, j]
            )


def heat2d(comm: MPI.Comm) -> float:
    u = DistArray.fromfunction(lambda i, j: np.sin(0.01 * i * j), (512, 512), halo=1, comm=comm)
    v = u.zeros_like()
    comm.Barrier()
    t = time.perf_counter()
    for step in range(STEPS):
        run_stencil(heat, u, v, 0.1)
        u, v = v, u
        if step % 10 == 0:
            u.sum()
    comm.Barrier()
    return time.perf_counter() - t


def cg(n: int, comm: MPI.Comm) -> float:
    from poisson_cg import solve

    _, k, _, seconds = solve(n, 1e-300, ITERATIONS, comm=comm, deterministic=False)
    if k != ITERATIONS:
        raise SystemExit(f"CG ran {k} iterations, not {ITERATIONS}: nothing comparable")
    return comm.allreduce(seconds, op=MPI.MAX)


STEPS = 1000
ITERATIONS = 300


def _small(i: int) -> float:
    return float(i % 7) * 0.5


def _row(i: int) -> np.ndarray:
    return np.full(4096, float(i % 5))


def mapreduce(comm: MPI.Comm) -> float:
    comm.Barrier()
    t = time.perf_counter()
    total = parcomp.map_reduce(_small, range(20_000), "sum", comm=comm)
    rows = parcomp.map_reduce(_row, range(200), "sum", comm=comm)
    comm.Barrier()
    expect = sum(_small(i) for i in range(20_000))
    if total != expect or rows[0] != sum(i % 5 for i in range(200)):
        raise SystemExit("map_reduce gave a wrong answer: nothing comparable")
    return time.perf_counter() - t


def per_call(comm: MPI.Comm, repeats: int) -> list[tuple[str, float, float]]:
    """Microseconds per call of ``sum``, ``dot`` and ``max`` on an 8x8 array (the fixed
    cost that the ratios above dilute), check on and off, medians of ``repeats``."""
    u = DistArray.fromfunction(lambda i, j: i + 0.5 * j, (8, 8), halo=1, comm=comm)
    out = []
    for name, call in (("sum", u.sum), ("dot", lambda: u.dot(u)), ("max", u.max)):
        samples: dict[bool, list[float]] = {True: [], False: []}
        for k in range(repeats):
            for flag in (True, False) if k % 2 else (False, True):
                callid.set_enabled(flag)
                comm.Barrier()
                t = time.perf_counter()
                for _ in range(5000):
                    call()
                samples[flag].append((time.perf_counter() - t) / 5000 * 1e6)
        callid.set_enabled(True)
        out.append((name, statistics.median(samples[True]), statistics.median(samples[False])))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    cases = {
        f"heat2d 512^2, {STEPS} steps, sum every 10": lambda: heat2d(comm),
        f"cg 255^2, {ITERATIONS} iterations": lambda: cg(255, comm),
        f"cg 1023^2, {ITERATIONS} iterations": lambda: cg(1023, comm),
        "map_reduce 20k items + 200 arrays": lambda: mapreduce(comm),
    }
    rows = []
    for name, run in cases.items():
        run()  # compile and warm up
        samples: dict[bool, list[float]] = {True: [], False: []}
        checked: dict[bool, int] = {True: 0, False: 0}
        for k in range(args.repeats):
            for flag in (True, False) if k % 2 else (False, True):  # either goes first
                callid.set_enabled(flag)
                before = callid.checked()
                samples[flag].append(run())
                checked[flag] += callid.checked() - before
        callid.set_enabled(True)
        if checked[True] == 0 or checked[False] != 0:
            raise SystemExit(
                f"{name}: {checked[True]} checked reductions with the check on, "
                f"{checked[False]} with it off: this case did not measure the check"
            )
        on, off = (statistics.median(samples[f]) for f in (True, False))
        # each repeat's on/off pair ran back to back: the median of their ratios is
        # robust to the drift between repeats; the quartiles show the noise
        ratios = sorted(a / b for a, b in zip(samples[True], samples[False], strict=True))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        rows.append(
            (name, on, off, statistics.median(ratios), q[0], q[2], checked[True] // args.repeats)
        )
    micro = per_call(comm, args.repeats)
    if comm.rank == 0:
        print(f"machine: {machine()}; {comm.size} rank(s); medians of {args.repeats}")
        for name, on, off in micro:
            print(
                f"  per call, {name:4s} of 8x8: on {on:6.2f} us  off {off:6.2f} us  "
                f"(+{on - off:.2f} us)"
            )
        for name, on, off, ratio, lo, hi, n in rows:
            print(
                f"  {name:38s} on {on * 1e3:8.2f} ms  off {off * 1e3:8.2f} ms  ratio "
                f"{ratio:.4f} (quartiles {lo:.3f}-{hi:.3f}; {n} checked reductions per run)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
