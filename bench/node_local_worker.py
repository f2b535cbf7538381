"""MPI side of bench/node_local.py: checkpoint write time, shared directory vs node-local tier.

argv: SHARED_DIR LOCAL_DIR REPEATS N.  Prints one JSON line (rank 0) of medians (seconds):
a save to the shared directory alone (durable: fsync), a node-local save with partner
copies and no flush, and a node-local save whose flush then runs in the background
(time blocked in ``save``, and until the flush is committed).
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
shared, local = Path(sys.argv[1]), Path(sys.argv[2])
repeats, n = int(sys.argv[3]), int(sys.argv[4])


def main() -> None:
    u = DistArray.fromfunction(lambda i, j: np.sin(i * 0.001) * np.cos(j * 0.002), (n, n))
    only_shared = Checkpointer(shared / "a", keep=1, handle_signals=False)
    no_flush = Checkpointer(
        shared / "b", local_directory=local / "b", flush_every=None, keep=1, handle_signals=False
    )
    flushing = Checkpointer(shared / "c", local_directory=local / "c", keep=1, handle_signals=False)
    step = [0]

    def save(ck):
        step[0] += 1
        ck.save(step[0], arrays={"u": u})

    cases = {
        "shared directory": lambda: save(only_shared),
        "node-local + partner copy": lambda: save(no_flush),
        "node-local + partner, flush started": lambda: save(flushing),
        "flush committed": flushing.wait,
    }
    result = collective_medians(comm, cases, repeats)
    if comm.rank == 0:
        print(json.dumps(result | {"bytes": n * n * 8, "ranks": comm.size}))
    for ck in (only_shared, no_flush, flushing):
        ck.close()
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(local, ignore_errors=True)


if __name__ == "__main__":
    main()
