"""parcomp: an MPI parallel compute toolkit for scientific Python.

Write a kernel once as a Numba function; parcomp decomposes the data over MPI ranks,
exchanges halos, reduces with MPI collectives and checkpoints to HDF5.

Importing parcomp never talks to MPI (no collective at import: importing on a subset of
ranks, or in a notebook, cannot hang).  It installs the fail-fast exception hook
(:func:`parcomp.runtime.failfast.install_excepthook`) unless ``PARCOMP_FAILFAST=0``.  Modules that pull
in heavy dependencies (numba) are imported on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from parcomp import _renamed
from parcomp._version import __version__
from parcomp.runtime import errors
from parcomp.runtime.agree import agree, agreed, alike, raise_if_any
from parcomp.runtime.errors import (
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
from parcomp.runtime.failfast import _failfast_enabled as _failfast_enabled
from parcomp.runtime.failfast import exit_all, install_excepthook, uninstall_excepthook
from parcomp.runtime.log import configure_logging, get_logger
from parcomp.runtime.numba_jit import Kernel, compile_for_job, jit
from parcomp.runtime.ranks import default_comm, rank, resolve_comm, size
from parcomp.runtime.watchdog import install as _install_watchdog
from parcomp.testing import parallel_assert

# Names whose modules are imported on first access (explicit table, no star imports).
_LAZY: dict[str, tuple[str, str | None]] = {
    "fft": ("parcomp.arrays.fft", None),  # the module: parcomp.fft.fftn(a)
    "DistArray": ("parcomp.arrays.array", "DistArray"),
    "fused": ("parcomp.arrays.fused", "fused"),
    "run_stencil": ("parcomp.stencils.run", "run_stencil"),
    "exchange_halos": ("parcomp.arrays.exchange", "exchange_halos"),
    "start_exchange": ("parcomp.arrays.exchange", "start_exchange"),
    "finish_exchange": ("parcomp.arrays.exchange", "finish_exchange"),
    "save_hdf5": ("parcomp.io.hdf5", "save_hdf5"),
    "load_hdf5": ("parcomp.arrays.files", "load_hdf5"),
    "stencil": ("parcomp.stencils.spec", "stencil"),
    "StencilKernel": ("parcomp.stencils.spec", "StencilKernel"),
    "Partition": ("parcomp.grid.partition", "Partition"),
    "DistParticles": ("parcomp.particles.dist", "DistParticles"),
    "allreduce": ("parcomp.runtime.reduce", "allreduce"),
    "map": ("parcomp.mapreduce.items", "map"),
    "map_reduce": ("parcomp.mapreduce.items", "map_reduce"),
    "map_reduce_keyed": ("parcomp.mapreduce.keyed", "map_reduce_keyed"),
    "Checkpointer": ("parcomp.checkpoint", "Checkpointer"),
    "Workers": ("parcomp.front.workers", "Workers"),
    "WorkerError": ("parcomp.front.workers", "WorkerError"),
    "run_job": ("parcomp.front.notebook", "run_job"),
    "run_resilient": ("parcomp.runtime.resilient", "run_resilient"),
    "read_h5": ("parcomp.front.notebook", "read_h5"),
    "Series": ("parcomp.io.series", "Series"),
    "Layout": ("parcomp.grid.layout", "Layout"),
    "block_range": ("parcomp.grid.partition", "block_range"),
    "exact_allsum": ("parcomp.runtime.exactsum", "exact_allsum"),
    "recoveries": ("parcomp.runtime.resilient", "recoveries"),
    "plot_rates": ("parcomp.front.notebook", "plot_rates"),
}

__all__ = [
    "__version__",
    "errors",
    "agree",
    "agreed",
    "alike",
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
    *[name for name in _LAZY if name != "map"],  # parcomp.map: not on import *, it
    # would shadow the built-in map
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'parcomp' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_renamed.install()  # 0.2's module paths (parcomp.array ...) keep working, with a warning
if _failfast_enabled():
    install_excepthook()
_install_watchdog()  # only under `parcomp run` (PARCOMP_WATCHDOG_DIR); never touches MPI
