"""Launching parcomp jobs: finding the right ``mpiexec``, building argv, running with a timeout.

Local to the launching process; the launched ranks communicate, this package does not.
"""

from parcomp.launch.mpiexec import (
    MPIIdentity,
    find_mpiexec,
    loaded_mpi_identity,
    mpiexec_argv,
    mpiexec_identity,
    mpiexec_mismatch,
)
from parcomp.launch.run import run_job

__all__ = [
    "MPIIdentity",
    "find_mpiexec",
    "loaded_mpi_identity",
    "mpiexec_argv",
    "mpiexec_identity",
    "mpiexec_mismatch",
    "run_job",
]
