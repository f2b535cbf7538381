"""Results in and out in parallel: decomposed arrays to and from HDF5 files, time series,
CF decoding, and the slabs and checksums of blocks on disk.

Works on anything with a :class:`~parcomp.grid.layout.Layout` (a ``DistArray``) without
importing :mod:`parcomp.arrays`, which builds on it (``DistArray.to_hdf5``/``from_hdf5``).
COMMUNICATES: every function here is collective over the arrays' communicator.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.grid`.
"""

from parcomp._renamed import moved_names
from parcomp.io.hdf5 import dataset_sha256, mpio_available, save_hdf5
from parcomp.io.series import Series

__all__ = ["save_hdf5", "mpio_available", "dataset_sha256", "Series"]


# 0.2's spelling: load_hdf5 makes a DistArray, so it is parcomp's now (looked up by name
# on first use: io is below arrays)
__getattr__ = moved_names(__name__, {"load_hdf5": "parcomp.load_hdf5"})
