"""The single-file collective (mpio) checkpoint writer, on 1..4 ranks.

Needs h5py built with MPI: run with the site-MPI venv (``make mpio-tests``: Debian's MPICH
and parallel HDF5, mpi4py and h5py compiled against them).
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer
from parcomp.runtime.errors import ConfigError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size
SHAPE = (53, 31)


def test_this_h5py_is_parallel():
    parallel_assert(h5py.get_config().mpi, "h5py must be built with MPI for these tests")


@pytest.fixture
def folder(tmp_path_factory):
    return Path(COMM.bcast(str(tmp_path_factory.mktemp("mpio")) if RANK == 0 else None))


def field(step):
    return lambda i, j: np.sin(i * 0.37 + step) * 100.0 + j


def reference(step):
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    return field(step)(i, j)


def test_one_file_holds_the_global_array(folder):
    u = DistArray.fromfunction(field(1), SHAPE, halo=1)
    g = DistArray.fromfunction(
        lambda i, j, k: (i + 2 * j + 3 * k).astype(np.int32), (7, 6, 5), dtype=np.int32
    )
    path = Checkpointer(folder, mpio=True).save(1, arrays={"u": u, "g": g}, scalars={"dt": 0.25})
    names = sorted(p.name for p in path.iterdir())
    parallel_assert(names == ["manifest.json", "master.h5"], str(names))
    if RANK == 0:
        with h5py.File(path / "master.h5", "r") as fh:
            ok = not fh["arrays/u"].is_virtual and np.array_equal(fh["arrays/u"][...], reference(1))
            i, j, k = np.meshgrid(*(np.arange(n) for n in (7, 6, 5)), indexing="ij")
            ok = ok and np.array_equal(fh["arrays/g"][...], (i + 2 * j + 3 * k).astype(np.int32))
            ok = ok and fh["scalars"].attrs["dt"] == 0.25 and fh.attrs["nprocs"] == SIZE
    else:
        ok = True
    parallel_assert(ok)


def test_restore_on_the_same_and_on_fewer_ranks(folder):
    u = DistArray.fromfunction(field(2), SHAPE, halo=1)
    Checkpointer(folder, mpio=True).save(2, arrays={"u": u})
    back = Checkpointer(folder).restore()  # restore reads with plain h5py calls
    full = back.arrays["u"].gather(0)
    parallel_assert(np.array_equal(full, reference(2)) if RANK == 0 else True)
    sub = COMM.Split(0 if RANK < max(1, SIZE - 1) else MPI.UNDEFINED, RANK)
    ok = True
    if sub != MPI.COMM_NULL:
        fewer = Checkpointer(folder, comm=sub).restore()
        full = fewer.arrays["u"].gather(0)
        ok = fewer.arrays["u"].partition.size == sub.Get_size()
        ok = ok and (np.array_equal(full, reference(2)) if sub.Get_rank() == 0 else True)
        sub.Free()
    parallel_assert(ok)


def test_a_flipped_bit_falls_back_to_the_previous_checkpoint(folder):
    ck = Checkpointer(folder, mpio=True, keep=2)
    for step in (3, 4):
        ck.save(step, arrays={"u": DistArray.fromfunction(field(step), SHAPE)})
    COMM.Barrier()
    if RANK == 0:
        path = folder / "step-00000004" / "master.h5"
        with h5py.File(path, "r") as fh:
            offset = fh["arrays/u"].id.get_offset()
        raw = bytearray(path.read_bytes())
        raw[offset + 8 * 40] ^= 0x10
        path.write_bytes(bytes(raw))
    COMM.Barrier()
    back = Checkpointer(folder).restore()
    parallel_assert(back.step == 3)
    full = back.arrays["u"].gather(0)
    parallel_assert(np.array_equal(full, reference(3)) if RANK == 0 else True)


def test_mpio_refuses_what_it_cannot_do(folder):
    with pytest.raises(ConfigError, match="local_directory"):
        Checkpointer(folder, mpio=True, local_directory=folder / "local")
    with pytest.raises(ConfigError, match="asynchronous"):
        Checkpointer(folder, mpio=True, asynchronous=True)
