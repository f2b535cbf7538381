"""parcomp: an MPI parallel compute toolkit for scientific Python.

Write a kernel once as a Numba function; parcomp decomposes the data over MPI ranks,
exchanges halos, reduces with MPI collectives and checkpoints to HDF5.

Importing parcomp never talks to MPI (no collective at import: importing on a subset of
ranks, or in a notebook, cannot hang).  It installs the fail-fast exception hook
(:func:`parcomp.comm.install_excepthook`) unless ``PARCOMP_FAILFAST=0``.  Modules that pull
in heavy dependencies (numba) are imported on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from parcomp import errors
from parcomp.comm import _failfast_enabled as _failfast_enabled
from parcomp.comm import (
    agree,
    configure_logging,
    default_comm,
    exit_all,
    get_logger,
    install_excepthook,
    raise_if_any,
    rank,
    resolve_comm,
    size,
    uninstall_excepthook,
)
from parcomp.errors import (
    CheckpointError,
    CheckpointSchemaError,
    CollectiveError,
    ConfigError,
    DTypeError,
    HDF5Error,
    KernelSignatureError,
    LaunchError,
    MPIExecNotFoundError,
    ParcompError,
    RankCountError,
    ShapeError,
    TaskError,
)
from parcomp.numba_jit import Kernel, compile_for_job, jit
from parcomp.testing import parallel_assert
from parcomp.watchdog import install as _install_watchdog

__version__ = "0.1.0"

# Names whose modules are imported on first access (explicit table, no star imports).
_LAZY: dict[str, tuple[str, str]] = {
    "DistArray": ("parcomp.array", "DistArray"),
    "run_stencil": ("parcomp.declared", "run_stencil"),
    "exchange_halos": ("parcomp.exchange", "exchange_halos"),
    "start_exchange": ("parcomp.exchange", "start_exchange"),
    "finish_exchange": ("parcomp.exchange", "finish_exchange"),
    "save_hdf5": ("parcomp.io.hdf5", "save_hdf5"),
    "load_hdf5": ("parcomp.io.hdf5", "load_hdf5"),
    "stencil": ("parcomp.declared", "stencil"),
    "StencilKernel": ("parcomp.declared", "StencilKernel"),
    "Partition": ("parcomp.partition", "Partition"),
    "DistParticles": ("parcomp.particles", "DistParticles"),
    "allreduce": ("parcomp.reduce", "allreduce"),
    "map": ("parcomp.mapreduce", "map"),
    "map_reduce": ("parcomp.mapreduce", "map_reduce"),
    "map_reduce_keyed": ("parcomp.keyed", "map_reduce_keyed"),
    "Checkpointer": ("parcomp.checkpoint", "Checkpointer"),
    "Workers": ("parcomp.workers", "Workers"),
    "WorkerError": ("parcomp.workers", "WorkerError"),
    "run_job": ("parcomp.notebook", "run_job"),
    "run_resilient": ("parcomp.resilient", "run_resilient"),
}

__all__ = [
    "__version__",
    "errors",
    "agree",
    "configure_logging",
    "default_comm",
    "exit_all",
    "get_logger",
    "install_excepthook",
    "raise_if_any",
    "rank",
    "resolve_comm",
    "size",
    "uninstall_excepthook",
    "parallel_assert",
    "jit",
    "compile_for_job",
    "Kernel",
    "ParcompError",
    "ConfigError",
    "ShapeError",
    "DTypeError",
    "KernelSignatureError",
    "RankCountError",
    "CollectiveError",
    "LaunchError",
    "MPIExecNotFoundError",
    "CheckpointError",
    "CheckpointSchemaError",
    "HDF5Error",
    "TaskError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'parcomp' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if _failfast_enabled():
    install_excepthook()
_install_watchdog()  # only under `parcomp run` (PARCOMP_WATCHDOG_DIR); never touches MPI
