"""Rank FAIL_RANK raises; the others block in a collective (a hang without fail-fast)."""

import sys
import time

from mpi4py import MPI

import parcomp  # noqa: F401 - installs the fail-fast hook

fail_rank = int(sys.argv[1]) if len(sys.argv) > 1 else 1
stamp_file = sys.argv[2] if len(sys.argv) > 2 else None
comm = MPI.COMM_WORLD
comm.Barrier()
if comm.rank == fail_rank:
    if stamp_file:
        with open(stamp_file, "w") as fh:
            fh.write(repr(time.time()))
    raise RuntimeError(f"deliberate failure on rank {comm.rank}")
comm.Barrier()  # the other ranks wait here forever unless the job is aborted
print("unreachable", flush=True)
