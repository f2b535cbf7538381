"""from_hdf5 right after to_hdf5 and again on the same file: medians of each.

Run:  .venv/bin/python bench/io_reread.py [--base 689dc86] [--repeats 7]

Runs itself under ``mpiexec -n 2`` twice, from a git worktree at ``--base`` (main before
issue 31's checked reads) and from this tree, and prints the median ``from_hdf5`` time
of a 4096² float64 file just written by ``to_hdf5`` and of a second read of that file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(folder: Path, repeats: int) -> None:
    import numpy as np
    from mpi4py import MPI

    from parcomp import DistArray

    comm = MPI.COMM_WORLD
    target = folder / "field.h5"
    u = DistArray.fromfunction(lambda i, j: np.sin(i * 0.01) + j * 1e-3, (4096, 4096), halo=1)

    def timed() -> float:
        comm.Barrier()
        t = time.perf_counter()
        DistArray.from_hdf5(target, "u")
        comm.Barrier()
        return comm.allreduce(time.perf_counter() - t, op=MPI.MAX) * 1e3

    u.to_hdf5(target, "u")
    timed()  # first call: kernels loaded
    fresh, again = [], []
    for _ in range(repeats):
        u.to_hdf5(target, "u")
        fresh.append(timed())
        again.append(timed())
    if comm.rank == 0:
        print(f"RESULT {statistics.median(fresh):.2f} {statistics.median(again):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="689dc86")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return 0
    sys.path.insert(0, str(HERE))
    from _common import MPIEXEC, ROOT, machine, worktree

    folder = Path(tempfile.mkdtemp(prefix="parcomp-io-reread-"))
    before = worktree(args.base, folder)
    rows = {}
    try:
        for name, tree in (("before", before), ("now", ROOT)):
            out = folder / f"out-{name}"
            out.mkdir()
            proc = subprocess.run(
                [str(MPIEXEC), "-n", "2", sys.executable, str(ROOT / "bench" / "io_reread.py"),
                 "--worker", str(out), "--repeats", str(args.repeats)],
                env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True, text=True,
                timeout=900, cwd=tree,
            )  # fmt: skip
            found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
            if proc.returncode != 0 or not found:
                raise SystemExit(f"{name}: nothing measured\n{proc.stdout}\n{proc.stderr[-2000:]}")
            rows[name] = [float(x) for x in found[0].split()[1:]]
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
    print(f"machine: {machine()}; 2 ranks; medians of {args.repeats}; base {args.base}")
    for k, label in enumerate(("just written", "read again")):
        b, n = rows["before"][k], rows["now"][k]
        print(
            f"  from_hdf5 {label:12s}: before {b:6.1f} ms  now {n:6.1f} ms  now/before {n / b:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
