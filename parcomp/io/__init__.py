"""Results in and out in parallel: DistArrays to and from HDF5 files, time series.

COMMUNICATES: every function here is collective over the arrays' communicator.
"""

from parcomp.io.hdf5 import dataset_sha256, load_hdf5, mpio_available, save_hdf5
from parcomp.io.series import Series

__all__ = ["save_hdf5", "load_hdf5", "mpio_available", "dataset_sha256", "Series"]
