"""Results I/O: to_hdf5 against dd, from_hdf5 against direct h5py reads, Series appends
against heat2d's step time; all in one job, interleaved, medians.

Run:  .venv/bin/parcomp run -n 1 bench/io.py   and   .venv/bin/parcomp run -n 2 bench/io.py
      [--repeats 5] [--dir out/bench-io]

1. ``DistArray.to_hdf5`` of a 4096² float64 field (halo 1, as a solver holds it), durable
   (fsync of every file, rename, fsync of the folder), against ``dd if=/dev/zero bs=4M
   count=32 conv=fdatasync`` of the same 128 MiB on rank 0 (goal, issue 16: >= 0.8x dd's
   bandwidth).
2. ``DistArray.from_hdf5`` of that file, against every rank reading its own hyperslab with
   h5py into a NumPy array (goal >= 0.85x).  The page cache is warm for both.
3. ``Series.append`` of a 2048² float64 field, synchronous and asynchronous (a copy of
   the block written by a background thread while the next steps run), against 100
   heat2d steps on the same array (goal: one append every 100 steps costs < 1 % of the
   run; the heat steps' median includes those that overlap a background write).
With serial h5py (the default wheel) ``to_hdf5`` writes part files and a virtual dataset.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from _common import ROOT, machine
from mpi4py import MPI

from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.io import Series
from parcomp.kernels import heat_step_2d


def timed(comm, fn) -> float:
    comm.Barrier()
    t = time.perf_counter()
    fn()
    comm.Barrier()
    return comm.allreduce(time.perf_counter() - t, op=MPI.MAX)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "bench-io")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank = comm.rank
    folder = args.dir / f"n{comm.size}"
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    comm.Barrier()
    n = 4096
    u = DistArray.fromfunction(lambda i, j: np.sin(i * 0.01) + j * 1e-3, (n, n), halo=1)
    target = folder / "field.h5"

    def dd() -> None:
        if rank == 0:
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={folder / 'dd.bin'}", "bs=4M", "count=32",
                 "conv=fdatasync"],
                check=True,
                capture_output=True,
            )  # fmt: skip

    def direct_read() -> None:
        with h5py.File(target, "r") as fh:
            region = tuple(slice(lo, hi) for lo, hi in u.local_range)
            block = np.empty(u.local_shape)
            fh["u"].read_direct(block, region)

    samples: dict[str, list[float]] = {k: [] for k in ("dd", "to_hdf5", "from_hdf5", "h5py")}
    for _ in range(args.repeats):
        samples["dd"].append(timed(comm, dd))
        samples["to_hdf5"].append(timed(comm, lambda: u.to_hdf5(target, "u")))
        samples["h5py"].append(timed(comm, direct_read))
        samples["from_hdf5"].append(timed(comm, lambda: DistArray.from_hdf5(target, "u")))
    back = DistArray.from_hdf5(target, "u", halo=1)
    if not comm.allreduce(np.array_equal(back.interior, u.interior), op=MPI.LAND):
        raise SystemExit("from_hdf5 read back something else: nothing measured")

    # Series append against heat steps, 2048^2
    m = 2048
    f = DistArray.fromfunction(lambda i, j: np.sin(i * 0.01) * np.sin(j * 0.01), (m, m), halo=1)
    g = f.zeros_like()
    run_stencil(heat_step_2d, f, g, 0.2)  # compile / build the exchange

    def hundred_steps() -> None:
        a, b = f, g
        for _ in range(100):
            run_stencil(heat_step_2d, a, b, 0.2)
            a, b = b, a

    modes = {
        "synchronous": Series(folder / "sync.h5", {"u": f}, every=100, overwrite=True),
        "asynchronous": Series(
            folder / "async.h5", {"u": f}, every=100, overwrite=True, asynchronous=True
        ),
    }
    step = [0]

    def appender(series: Series):
        def append() -> None:
            step[0] += 100
            series.append(step[0], float(step[0]), fields={"u": f})

        return append

    heat_s: list[float] = []
    append_s: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, series in modes.items():
            heat_s.append(timed(comm, hundred_steps))  # the background write overlaps these
            append_s[mode].append(timed(comm, appender(series)))
    for series in modes.values():
        series.close()
        if series.records != args.repeats:
            raise SystemExit(f"{series.records} series records written: nothing measured")
    med = {k: statistics.median(v) for k, v in samples.items()}
    if rank == 0:
        mib = n * n * 8 / 2**20
        print(f"machine: {machine()}; {comm.size} rank(s); medians of {args.repeats}")
        print(f"  dd 128 MiB conv=fdatasync: {mib / med['dd']:8.1f} MiB/s")
        print(
            f"  to_hdf5 4096^2 float64:    {mib / med['to_hdf5']:8.1f} MiB/s  ratio "
            f"{med['dd'] / med['to_hdf5']:.3f} of dd (goal >= 0.8)"
        )
        print(
            f"  from_hdf5 / direct h5py hyperslab reads: {med['h5py'] / med['from_hdf5']:.3f} "
            f"({med['from_hdf5'] * 1e3:.1f} vs {med['h5py'] * 1e3:.1f} ms; goal >= 0.85)"
        )
        h = statistics.median(heat_s)
        for mode, times in append_s.items():
            a = statistics.median(times)
            print(
                f"  Series.append 2048^2, {mode}: {a * 1e3:.1f} ms; 100 heat steps "
                f"{h * 1e3:.1f} ms: {100 * a / (h + a):.2f} % of the run when written every "
                "100 steps (goal < 1 %)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
