"""A pytest test that deadlocks under MPI (run explicitly by tests/system/test_deadlock.py)."""

import time

import pytest
from mpi4py import MPI


@pytest.mark.mpi(min_size=2)
def test_deadlocks():
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        comm.Barrier()
    else:
        time.sleep(3600)
