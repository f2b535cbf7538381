"""MPI side of bench/mpio.py: one-file collective (mpio) checkpoints against a shard per rank.

argv: FOLDER REPEATS N.  Prints one JSON line (rank 0) of median seconds.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from _common import collective_medians
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer

comm = MPI.COMM_WORLD
folder, repeats, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def main() -> None:
    u = DistArray.fromfunction(lambda i, j: np.sin(i * 0.001) * np.cos(j * 0.002), (n, n))
    shards = Checkpointer(folder / "shards", keep=1, handle_signals=False)
    single = Checkpointer(folder / "mpio", keep=1, handle_signals=False, mpio=True)
    step = [0]

    def save(ck):
        step[0] += 1
        ck.save(step[0], arrays={"u": u})

    cases = {
        "save, a shard per rank": lambda: save(shards),
        "save, one file (mpio)": lambda: save(single),
        "restore, shards": lambda: Checkpointer(folder / "shards", handle_signals=False).restore(),
        "restore, one file": lambda: Checkpointer(folder / "mpio", handle_signals=False).restore(),
    }
    result = collective_medians(comm, cases, repeats)
    if comm.rank == 0:
        print(json.dumps(result | {"bytes": n * n * 8, "ranks": comm.size}))
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
