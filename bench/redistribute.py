"""DistArray.redistribute against a raw MPI_Alltoallv of the same bytes, in the same run.

Run:  .venv/bin/python bench/redistribute.py [-n 2] [--size 4096] [--repeats 15]

A ``size x size`` float64 array moves from rows (grid ``(p, 1)``) to columns (``(1, p)``):
the transpose of a slab FFT.  Cases, interleaved, each timed barrier to barrier (the
slowest rank), medians of ``--repeats``:

* ``raw Alltoallv``: what a hand-written code pays at least: ``MPI_Alltoallv`` between
  two preallocated contiguous buffers, of exactly the bytes that change rank (this
  rank's own block is copied by MPI too, as in the redistribution);
* ``alltoallw``: ``redistribute(method="alltoallw")``, subarray datatypes, MPI packs;
* ``alltoallv``: ``redistribute(method="alltoallv")``, NumPy packs and unpacks;

each into a reused ``out=`` array (as the raw exchange reuses its buffers), and
allocating a new result (whose first touch, the kernel zeroing fresh pages, costs about
as much as the copy).  In both, this rank's own block is copied by NumPy.
The ratio is each case's median over the raw Alltoallv's; the target is <= 1.2.  Each
result is checked against the global array first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))


def worker(size: int, repeats: int) -> None:
    import numpy as np
    from _common import collective_medians, machine
    from mpi4py import MPI

    from parcomp.arrays.array import DistArray
    from parcomp.arrays.redistribute import redistribute_plan

    comm = MPI.COMM_WORLD
    p, rank = comm.size, comm.rank
    a = DistArray.fromfunction(lambda i, j: i * 1.0e4 + j, (size, size), dims=(p, 1), comm=comm)
    for method in ("alltoallw", "alltoallv"):  # correct first
        b = a.redistribute((1, p), method=method)
        lo, hi = b.local_range[1]
        i, j = np.meshgrid(np.arange(size), np.arange(lo, hi), indexing="ij")
        if not np.array_equal(b.interior, i * 1.0e4 + j):
            raise SystemExit(f"{method}: wrong result on rank {rank}")
    plan = redistribute_plan(a.partition, b.partition, rank)
    counts_s = [0] * p
    counts_r = [0] * p
    for t in plan.sends:
        counts_s[t.peer] = int(np.prod([y - x for x, y in t.region]))
    for t in plan.recvs:
        counts_r[t.peer] = int(np.prod([y - x for x, y in t.region]))
    sbuf = np.ones(sum(counts_s))
    rbuf = np.empty(sum(counts_r))
    ds = np.concatenate(([0], np.cumsum(counts_s)[:-1])).tolist()
    dr = np.concatenate(([0], np.cumsum(counts_r)[:-1])).tolist()

    def raw() -> None:
        comm.Alltoallv([sbuf, counts_s, ds, MPI.DOUBLE], [rbuf, counts_r, dr, MPI.DOUBLE])

    out = a.redistribute((1, p))
    cases = {
        "raw Alltoallv": raw,
        "alltoallw, into out=": lambda: a.redistribute(method="alltoallw", out=out),
        "alltoallv, into out=": lambda: a.redistribute(method="alltoallv", out=out),
        "alltoallw, new result": lambda: a.redistribute((1, p), method="alltoallw"),
        "alltoallv, new result": lambda: a.redistribute((1, p), method="alltoallv"),
    }
    result = collective_medians(comm, cases, repeats)
    if rank == 0:
        moved = sum(c for q, c in enumerate(counts_s) if q != rank) * 8
        print(json.dumps({"machine": machine(), "medians": result, "moved_bytes_rank0": moved}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="ranks")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.size, args.repeats)
        return 0
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec), "-n", str(args.n), sys.executable, str(HERE), "--worker",
           "--size", str(args.size), "--repeats", str(args.repeats)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1200)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    med = data["medians"]
    base = med["raw Alltoallv"]
    print(f"machine: {data['machine']}")
    print(
        f"{args.size}^2 float64 ({args.size**2 * 8 / 1e6:.0f} MB), rows -> columns on {args.n} "
        f"ranks; rank 0 sends {data['moved_bytes_rank0'] / 1e6:.1f} MB to others; medians of "
        f"{args.repeats}\n"
    )
    print("| case | median | vs raw Alltoallv |")
    print("|---|---:|---:|")
    for name, t in med.items():
        print(f"| {name} | {t * 1e3:.1f} ms | {t / base:.2f} |")
    if base <= 0:
        print("the raw exchange took no time: nothing was measured")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
