"""``Layout``: where a decomposed array's data lives, as one frozen public value (PURE).

A layout is the partition of the global index space over a communicator's ranks, the
ghost-cell width per axis, and the communicators the data moves on: the user's, and the
two private ones parcomp makes on it (:mod:`parcomp.runtime.subcomm`) for halo exchanges
and for scatter/gather/redistribution.  Every module that moves an array's data (halo
exchange, redistribution, FFTs, HDF5 files, the stencil engine, particles) reads it from
``DistArray.layout``; none reaches into an array's private state.

Arrays made alike share one layout (``a.zeros_like()``, arithmetic); "on the same
communicators" is ``a.layout.halo_comm is b.layout.halo_comm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from parcomp.grid.partition import Partition

__all__ = ["Layout", "Decomposed", "is_decomposed"]


@dataclass(frozen=True, eq=False)
class Layout:
    """The decomposition of one array over the ranks of a communicator (frozen).

    Parameters
    ----------
    partition : Partition
        Blocks of the global shape over the process grid.
    halo : tuple of int
        Ghost cells on each side, per axis.
    comm : mpi4py.MPI.Comm
        The user's communicator (collectives on the array are collective over it).
    halo_comm, array_comm : mpi4py.MPI.Comm
        parcomp's private communicators on ``comm``: halo exchanges; scatter, gather,
        redistribution and planes.
    rank : int
        This process's rank in ``comm``.

    Notes
    -----
    Local: making a layout communicates nothing; the ranks must already agree on the
    partition and halo (:class:`~parcomp.DistArray` checks that when it makes one).
    """

    partition: Partition
    halo: tuple[int, ...]
    comm: Any
    halo_comm: Any
    array_comm: Any
    rank: int
    #: This rank's block (without ghost cells).
    local_shape: tuple[int, ...] = field(init=False)
    #: This rank's buffer (with ghost cells).
    buffer_shape: tuple[int, ...] = field(init=False)
    #: The block inside the buffer: ``local[layout.interior]`` is the rank's own cells.
    interior: tuple[slice, ...] = field(init=False)

    def __post_init__(self) -> None:
        local = self.partition.local_shape(self.rank)
        object.__setattr__(self, "local_shape", tuple(local))
        object.__setattr__(
            self,
            "buffer_shape",
            tuple(n + 2 * h for n, h in zip(local, self.halo, strict=True)),
        )
        object.__setattr__(
            self,
            "interior",
            tuple(slice(h, h + n) for h, n in zip(self.halo, local, strict=True)),
        )

    @property
    def global_shape(self) -> tuple[int, ...]:
        """Shape of the whole array."""
        return self.partition.global_shape

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self.partition.ndim

    @property
    def dims(self) -> tuple[int, ...]:
        """Ranks per axis of the process grid."""
        return self.partition.dims

    @property
    def periods(self) -> tuple[bool, ...]:
        """Periodic axes."""
        return self.partition.periods

    def with_partition(self, partition: Partition, halo: tuple[int, ...]) -> Layout:
        """Another partition and halo on the same communicators (local: the caller agreed)."""
        return Layout(partition, tuple(halo), self.comm, self.halo_comm, self.array_comm, self.rank)


@runtime_checkable
class Decomposed(Protocol):
    """What the modules below :mod:`parcomp.arrays` need of an array: a layout, the local
    buffer (ghost cells included) and its dtype.  :class:`parcomp.DistArray` is one;
    ``isinstance(x, Decomposed)`` is how they recognise it without importing it."""

    layout: Layout
    local: np.ndarray
    dtype: np.dtype


def is_decomposed(value: Any) -> bool:
    """``value`` has a real :class:`Layout` and buffer (not just attributes of those names)."""
    return (
        isinstance(value, Decomposed)
        and isinstance(value.layout, Layout)
        and isinstance(value.local, np.ndarray)
    )


def layout_difference(a: Any, b: Any) -> str:
    """What differs between two DistArrays' decompositions, in words."""
    pa, pb = a.partition, b.partition
    parts = []
    if a.global_shape != b.global_shape:
        parts.append(f"shapes {a.global_shape} and {b.global_shape}")
    if pa.dims != pb.dims:
        parts.append(f"process grids {pa.dims} and {pb.dims}")
    if pa.periods != pb.periods:
        parts.append(f"periods {pa.periods} and {pb.periods}")
    what = "; ".join(parts) or f"{a.global_shape} over grid {pa.dims} (differently made)"
    return (
        f"the DistArrays are decomposed differently: {what}. Make the second like the "
        "first (a.zeros_like(), or the same shape, dims= and periods=)"
    )
