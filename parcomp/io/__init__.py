"""Results in and out in parallel: decomposed arrays to and from HDF5 files, time series,
CF decoding, and the slabs and checksums of blocks on disk.

Works on anything with a :class:`~parcomp.grid.layout.Layout` (a ``DistArray``) without
importing :mod:`parcomp.arrays`, which builds on it (``DistArray.to_hdf5``/``from_hdf5``).
COMMUNICATES: every function here is collective over the arrays' communicator.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.grid`.
"""

from typing import Any

from parcomp.io.hdf5 import dataset_sha256, mpio_available, save_hdf5
from parcomp.io.series import Series

__all__ = ["save_hdf5", "mpio_available", "dataset_sha256", "Series"]


def __getattr__(name: str) -> Any:
    if name == "load_hdf5":  # 0.2's spelling; it makes a DistArray, so it is parcomp's now
        import importlib
        import warnings

        warnings.warn(
            "parcomp.io.load_hdf5 is now parcomp.load_hdf5 (or DistArray.from_hdf5); "
            "the old name goes in parcomp 0.4",
            DeprecationWarning,
            stacklevel=2,
        )
        # The one arrow from io up to arrays, on purpose: a deprecated name that makes a
        # DistArray (io is below arrays); it goes with the alias in parcomp 0.4.
        return importlib.import_module("parcomp.arrays.array").load_hdf5
    raise AttributeError(f"module 'parcomp.io' has no attribute {name!r}")
