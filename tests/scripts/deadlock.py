"""Rank 0 waits in a barrier that rank 1 never enters: a deadlock."""

import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
if comm.rank == 0:
    comm.Barrier()
else:
    time.sleep(3600)
