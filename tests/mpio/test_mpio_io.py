"""DistArray.to_hdf5 with parallel HDF5: one file written collectively (no parts, no
virtual dataset), read back onto another grid; and the serial back end chosen on request.

Needs h5py built with MPI (``make mpio-tests``)."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.io import save_hdf5
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK = COMM.rank


@pytest.fixture
def folder(tmp_path_factory):
    return Path(COMM.bcast(str(tmp_path_factory.mktemp("mpio-io")) if RANK == 0 else None))


@pytest.mark.parametrize("mpio", [None, False], ids=["collective-file", "parts"])
def test_round_trip(folder, mpio):
    G = np.arange(41 * 17, dtype=np.float64).reshape(41, 17) * 0.5
    H = np.arange(41 * 17, dtype=np.int16).reshape(41, 17)
    u = DistArray.from_global(G if RANK == 0 else None, global_shape=G.shape, halo=1)
    v = DistArray.from_global(H if RANK == 0 else None, global_shape=H.shape, dtype=np.int16)
    path = save_hdf5(folder / "out.h5", {"u": u, "v": v}, attrs={"t": 1.5}, mpio=mpio)
    back = DistArray.from_hdf5(path, "u", halo=2, dims=(1, None))
    w = DistArray.from_hdf5(path, "v", dtype=np.int16)
    gu, gv = back.gather(0), w.gather(0)
    ok = RANK != 0 or (np.array_equal(gu, G) and np.array_equal(gv, H))
    if RANK == 0:
        with h5py.File(path, "r") as fh:
            virtual = fh["u"].is_virtual
            ok = ok and fh.attrs["t"] == 1.5 and virtual == (mpio is False)
        parts = [p for p in folder.iterdir() if ".parts-" in p.name]
        ok = ok and (len(parts) == (1 if mpio is False else 0))
    parallel_assert(ok)
