"""The single-file collective (mpio) checkpoint writer against a shard per rank (issue 5).

Run:  make mpio-venv && .venv/bin/python bench/mpio.py [--repeats 7]

Runs bench/mpio_worker.py in the site-MPI venv (Debian MPICH 4.0.2, parallel HDF5 1.10.8,
h5py built with MPI) on 1 and 2 ranks: a 4096^2 float64 checkpoint (128 MiB) saved and
restored both ways, in the same job, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from _common import ROOT

VENV = ROOT / ".venv-mpio"
HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "bench-mpio")
    args = parser.parse_args()
    if not (VENV / "bin" / "parcomp").exists():
        raise SystemExit("run `make mpio-venv` first")
    env = dict(os.environ, PARCOMP_MPIEXEC="/usr/bin/mpiexec.mpich", PARCOMP_LOG_LEVEL="WARNING")
    info = subprocess.run(
        [
            VENV / "bin" / "python",
            "-c",
            "import h5py; from mpi4py import MPI; "
            "print(MPI.Get_library_version().splitlines()[0], '| HDF5', h5py.version.hdf5_version)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"site MPI venv: {info.stdout.strip()}; {os.cpu_count()} cores")
    for ranks in (1, 2):
        proc = subprocess.run(
            [
                VENV / "bin" / "parcomp",
                "run",
                "-n",
                str(ranks),
                "--timeout",
                "600",
                HERE / "mpio_worker.py",
                args.dir,
                str(args.repeats),
                "4096",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        gib = res["bytes"] / 2**30
        print(f"\n{ranks} rank(s), 128 MiB, medians of {args.repeats}:")
        for key in (
            "save, a shard per rank",
            "save, one file (mpio)",
            "restore, shards",
            "restore, one file",
        ):
            print(f"  {key:26s} {res[key] * 1e3:7.1f} ms  {gib / res[key]:5.2f} GiB/s")
        print(
            f"  one file / shards, save time: {res['save, one file (mpio)'] / res['save, a shard per rank']:.2f}"
        )


if __name__ == "__main__":
    main()
