"""MPI side of bench/checkpoint.py: parcomp save/restore of a 4096x4096 float64 DistArray.

Prints one JSON line (rank 0): medians of save and restore seconds, and of the baselines
run by the same ranks in the same job (each rank np.save + fsync of its block; a direct
h5py read of the shard files).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from _common import collective_medians
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer

comm = MPI.COMM_WORLD
folder = Path(sys.argv[1])
repeats = int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 4096


def main() -> None:
    u = DistArray.fromfunction(lambda i, j: np.sin(i * 0.001) * np.cos(j * 0.002), (n, n))
    block = u.interior.copy()
    mine = folder / f"npsave-{comm.rank}.npy"

    def npsave():
        with open(mine, "wb") as fh:
            np.save(fh, block)
            fh.flush()
            os.fsync(fh.fileno())

    ck = Checkpointer(folder / "ck", keep=1, handle_signals=False)
    step = [0]

    def save():
        step[0] += 1
        ck.save(step[0], arrays={"u": u})

    reader = Checkpointer(folder / "ck", handle_signals=False)

    def restore():
        reader.restore()

    def construct_and_restore():
        Checkpointer(folder / "ck", handle_signals=False).restore()

    def direct_read():
        import h5py

        path = (
            sorted((folder / "ck").glob("step-*"))[-1]
            / f"shard-{comm.rank:05d}-of-{comm.size:05d}.h5"
        )
        with h5py.File(path, "r") as fh:
            fh["arrays/u"][...]

    cases = {
        "np.save+fsync": npsave,
        "parcomp.save": save,
        "h5py direct read": direct_read,
        "parcomp.restore": restore,
        "Checkpointer()+restore": construct_and_restore,
    }
    result = collective_medians(comm, cases, repeats)
    if comm.rank == 0:
        print(json.dumps(result | {"bytes": n * n * 8}))
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(folder / "ck", ignore_errors=True)


if __name__ == "__main__":
    main()
