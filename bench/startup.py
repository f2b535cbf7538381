"""Startup cost of a 2-rank job: importing parcomp against importing only its dependencies.

Run:  .venv/bin/python bench/startup.py [--repeats 9]

Each case is ``mpiexec -n 2 python -c CODE`` with the venv's mpiexec, timed end to end;
cases are interleaved and the median of the repeats is reported, with ratios measured in
the same run.
"""

from __future__ import annotations

import argparse
import sys

from _common import MPIEXEC, machine, median, medians, wall

CASES = {
    "bare mpi4py": "from mpi4py import MPI; MPI.COMM_WORLD.Get_rank()",
    "parcomp": "import parcomp; parcomp.rank()",
    "mpi4py+numpy+numba+h5py": "import numpy, numba, h5py; from mpi4py import MPI; MPI.COMM_WORLD.Get_rank()",
    "parcomp+numba+h5py": "import parcomp, numba, h5py; parcomp.rank()",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("-n", type=int, default=2, help="ranks")
    args = parser.parse_args()
    runs = {
        name: (
            lambda code=code: wall([str(MPIEXEC), "-n", str(args.n), sys.executable, "-c", code])
        )
        for name, code in CASES.items()
    }
    for fn in runs.values():  # warm the page cache once
        fn()
    samples = medians(runs, args.repeats)
    print(f"machine: {machine()}")
    print(
        f"startup of `mpiexec -n {args.n} python -c ...`, median of {args.repeats} interleaved runs"
    )
    print(f"{'case':28s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for name, values in samples.items():
        print(f"{name:28s} {median(values):9.3f} {min(values):7.3f} {max(values):7.3f}")
    base, pc = median(samples["bare mpi4py"]), median(samples["parcomp"])
    full, pcfull = median(samples["mpi4py+numpy+numba+h5py"]), median(samples["parcomp+numba+h5py"])
    print(
        f"ratio parcomp / bare mpi4py:               {pc / base:.2f}  (+{(pc - base) * 1e3:.0f} ms)"
    )
    print(
        f"ratio parcomp+deps / mpi4py+same deps:     {pcfull / full:.2f}  (+{(pcfull - full) * 1e3:.0f} ms)"
    )


if __name__ == "__main__":
    main()
