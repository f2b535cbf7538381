"""Reductions over ranks with MPI collectives (minimal layer; map/reduce extends it).

COMMUNICATES: every function here is a collective.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.comm import resolve_comm
from parcomp.errors import ConfigError, DTypeError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["allreduce", "OPS"]

#: Names of the built-in reduction operators.
OPS = ("sum", "prod", "min", "max")


def _mpi_op(op: str) -> Any:
    from mpi4py import MPI

    table = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX}
    try:
        return table[op]
    except KeyError:
        raise ConfigError(f"unknown reduction {op!r}; expected one of {', '.join(OPS)}") from None


def allreduce(value: Any, op: str = "sum", comm: MPI.Comm | None = None) -> Any:
    """Reduce a numeric scalar or array elementwise over all ranks; every rank gets the result.

    Parameters
    ----------
    value : scalar or numpy.ndarray
        This rank's contribution (numeric dtype; same shape and dtype on every rank).
    op : {"sum", "prod", "min", "max"}
        The operator.
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: parcomp's default communicator).

    Returns
    -------
    numpy scalar or numpy.ndarray
        The reduced value, of ``value``'s dtype.

    Notes
    -----
    Collective over `comm`: call on all ranks.  Uses buffer ``Allreduce``; nothing is
    pickled.  Floating-point sums depend on the rank count in their last bits; the
    deterministic mode of :mod:`parcomp.mapreduce` removes that.
    """
    mpi_op = _mpi_op(op)
    comm = resolve_comm(comm)
    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        raise DTypeError(f"allreduce needs a numeric value, got dtype {array.dtype}")
    send = np.ascontiguousarray(array).reshape(array.shape)  # keeps 0-d as 0-d
    out = np.empty_like(send)
    comm.Allreduce(send, out, op=mpi_op)
    return out[()] if out.ndim == 0 else out
