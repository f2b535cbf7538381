"""Launching parcomp jobs: finding the right ``mpiexec``, building argv, running with a timeout.

Local to the launching process; the launched ranks communicate, this package does not.
Names are imported on first use, so that ``parcomp run`` can install its signal handlers
(:mod:`parcomp.launch.supervise`) before the heavier modules load.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MPIIdentity": "parcomp.launch.mpiexec",
    "find_mpiexec": "parcomp.launch.mpiexec",
    "loaded_mpi_identity": "parcomp.launch.mpiexec",
    "mpiexec_argv": "parcomp.launch.mpiexec",
    "mpiexec_identity": "parcomp.launch.mpiexec",
    "mpiexec_mismatch": "parcomp.launch.mpiexec",
    "launch_job": "parcomp.launch.run",
}

__all__ = [
    "MPIIdentity",
    "find_mpiexec",
    "loaded_mpi_identity",
    "mpiexec_argv",
    "mpiexec_identity",
    "mpiexec_mismatch",
    "launch_job",
]


def __getattr__(name: str) -> Any:
    if name == "run_job":  # 0.2's name; parcomp.run_job is the notebook's
        import warnings

        warnings.warn(
            "parcomp.launch.run_job is now parcomp.launch.launch_job (its rank count is n=); "
            "the old name goes in parcomp 0.4",
            DeprecationWarning,
            stacklevel=2,
        )
        name = "launch_job"
    if name not in _LAZY:
        raise AttributeError(f"module 'parcomp.launch' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
