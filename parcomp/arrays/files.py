"""``load_hdf5``: a dataset of any HDF5 file into a new DistArray (COMMUNICATES: collective
over the new array's communicator; see :meth:`DistArray.from_hdf5`, which it calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from parcomp.arrays.array import DistArray

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


def load_hdf5(
    path: Any,
    name: str,
    *,
    halo: int | Sequence[int] = 0,
    periods: bool | Sequence[bool] = False,
    dims: Sequence[int | None] | None = None,
    comm: MPI.Comm | None = None,
    dtype: Any = None,
    global_shape: Sequence[int] | None = None,
    decode: bool = True,
) -> DistArray:
    """Read an N-d dataset of any HDF5 file into a new DistArray; each rank reads its block.

    Parameters
    ----------
    path : path-like
        An HDF5 file (written by parcomp or not).
    name : str
        The dataset's path in the file (``"u"``, ``"/results/u"``).
    halo, periods, dims, comm
        The new array's layout, as for :class:`~parcomp.DistArray`: any rank count and
        process grid, whatever wrote the file.
    dtype : numpy dtype, optional
        The dtype expected (of the decoded values); another dtype raises (no silent
        conversion).
    global_shape : sequence of int, optional
        The shape expected; a dataset of another shape raises.
    decode : bool, default True
        Decode CF-packed and masked variables as xarray does (:mod:`parcomp.io.cf`):
        ``scale_factor``/``add_offset`` applied, ``_FillValue``/``missing_value`` and
        values outside ``valid_range`` become NaN (a float result), ``_Unsigned``
        honoured.  False: the stored values.  A dataset without those attributes is read
        as it is either way.

    Returns
    -------
    DistArray
        Interior filled from the file; ghost cells zero.  ``attrs`` holds the dataset's
        descriptive CF attributes (``units``, ``long_name``, ``standard_name`` ...).

    Raises
    ------
    HDF5Error
        Missing or unreadable file, not a regular file, no such dataset, a virtual
        dataset with missing source files, a failed read.
    ShapeError, DTypeError
        A shape or dtype that is not numeric, too large, or not the one expected.

    Notes
    -----
    Collective over ``comm``.  Every rank checks the file; the shape and dtype every rank
    saw are compared, so a rank that sees another file (node-local paths) raises
    everywhere instead of reading a different array.
    """
    return DistArray.from_hdf5(
        path,
        name,
        halo=halo,
        periods=periods,
        dims=dims,
        comm=comm,
        dtype=dtype,
        global_shape=global_shape,
        decode=decode,
    )
