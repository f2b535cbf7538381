"""DistArray.to_hdf5 / from_hdf5 (parcomp.io): parallel round trips onto other rank counts
and grids, files parcomp did not write, and hostile files: errors on every rank, no
partial files, the old file kept.  Runs on 1..4 ranks (serial h5py: part files and a
virtual dataset); tests/mpio runs the collective single-file back end."""

import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from parcomp import load_hdf5, save_hdf5
from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import ConfigError, DTypeError, HDF5Error, ShapeError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK = COMM.rank


@pytest.fixture
def folder(tmp_path_factory):
    return Path(COMM.bcast(str(tmp_path_factory.mktemp("io")) if RANK == 0 else None))


def dist(G, **kw):
    return DistArray.from_global(
        G if RANK == 0 else None, global_shape=G.shape, dtype=G.dtype, **kw
    )


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize(
    ("shape", "dtype", "halo", "read_dims"),
    [
        ((37, 23), np.float64, 1, (1, None)),
        ((16, 9, 5), np.int32, 0, (None, 1, 1)),
        ((50,), np.complex128, 2, None),
        ((12, 13), np.float32, (2, 1), (None, None)),
    ],
)
def test_round_trip_onto_another_grid(folder, shape, dtype, halo, read_dims):
    rng = np.random.default_rng(len(shape))
    G = (rng.random(shape) * 100).astype(dtype)
    a = dist(G, halo=halo)
    path = a.to_hdf5(folder / "field.h5", "u", attrs={"step": 7, "model": "test"})
    b = DistArray.from_hdf5(path, "u", halo=1, dims=read_dims, periods=True)
    g = b.gather(0)
    ok = RANK != 0 or (np.array_equal(g, G) and g.dtype == G.dtype)
    if RANK == 0:  # a plain h5py user sees the global array and the attributes
        with h5py.File(path, "r") as fh:
            ok = ok and np.array_equal(fh["u"][...], G)
            ok = ok and fh.attrs["step"] == 7 and fh.attrs["model"] == "test"
    parallel_assert(ok and not leftovers(folder))


def test_several_arrays_one_file_and_replacing_it(folder):
    G, H = np.arange(30.0).reshape(6, 5), np.arange(30, dtype=np.int64).reshape(6, 5)
    u, v = dist(G, halo=1), dist(H)
    path = save_hdf5(folder / "state.h5", {"u": u, "v": v})
    first_parts = sorted(p.name for p in folder.iterdir() if ".parts-" in p.name)
    save_hdf5(path, {"u": u * 2.0, "v": v})  # replaced: the old parts go (in the background)
    deadline = time.monotonic() + 10
    while True:
        parts = sorted(p.name for p in folder.iterdir() if ".parts-" in p.name)
        if len(parts) <= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    got_u = DistArray.from_hdf5(path, "u").gather(0)
    got_v = DistArray.from_hdf5(path, "v", dtype=np.int64, global_shape=(6, 5)).gather(0)
    ok = RANK != 0 or (np.array_equal(got_u, 2 * G) and np.array_equal(got_v, H))
    parallel_assert(ok and len(first_parts) <= 1 and len(parts) <= 1 and parts != first_parts)


def test_reads_a_file_plain_h5py_wrote(folder):
    G = np.arange(7 * 11 * 3, dtype=np.float64).reshape(7, 11, 3)
    if RANK == 0:
        with h5py.File(folder / "plain.h5", "w") as fh:
            fh.create_group("results").create_dataset("T", data=G, chunks=(2, 5, 3))
    COMM.Barrier()
    b = load_hdf5(folder / "plain.h5", "/results/T", halo=1)
    g = b.gather(0)  # collective: on every rank, outside the condition
    parallel_assert(RANK != 0 or np.array_equal(g, G))
    # each rank holds only its block
    lo = [r[0] for r in b.local_range]
    hi = [r[1] for r in b.local_range]
    parallel_assert(np.array_equal(b.interior, G[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]))


def test_hostile_and_mistaken_inputs_raise_on_every_rank(folder):
    G = np.arange(20.0).reshape(4, 5)
    a = dist(G)
    path = a.to_hdf5(folder / "good.h5", "u")
    if RANK == 0:
        with h5py.File(folder / "odd.h5", "w") as fh:
            fh.create_dataset("text", data=np.array([b"a", b"b"]))
            fh.create_group("g")
            fh.create_dataset("scalar", data=3.0)
        (folder / "notes.txt").write_text("not hdf5")
        (folder / "adir.h5").mkdir()
    COMM.Barrier()
    cases = [
        (HDF5Error, "does not exist", lambda: load_hdf5(folder / "missing.h5", "u")),
        (HDF5Error, "no dataset 'w'", lambda: load_hdf5(path, "w")),
        (HDF5Error, "not a readable HDF5", lambda: load_hdf5(folder / "notes.txt", "u")),
        (HDF5Error, "not a regular file", lambda: load_hdf5(folder / "adir.h5", "u")),
        (HDF5Error, "not a dataset", lambda: load_hdf5(folder / "odd.h5", "g")),
        (DTypeError, "not a numeric", lambda: load_hdf5(folder / "odd.h5", "text")),
        (ShapeError, "at least one axis", lambda: load_hdf5(folder / "odd.h5", "scalar")),
        (DTypeError, "float32 was asked", lambda: load_hdf5(path, "u", dtype=np.float32)),
        (ShapeError, r"\(4, 6\) was asked", lambda: load_hdf5(path, "u", global_shape=(4, 6))),
        (ConfigError, "dataset name", lambda: save_hdf5(folder / "x.h5", {"1bad": a})),
        (ShapeError, "not a DistArray", lambda: save_hdf5(folder / "x.h5", {"u": G})),
        (HDF5Error, "not a regular file", lambda: a.to_hdf5(folder / "adir.h5")),
        (HDF5Error, "does not exist", lambda: a.to_hdf5(folder / "no" / "such.h5")),
    ]
    for error, match, call in cases:
        with pytest.raises(error, match=match):
            call()
    parallel_assert(not leftovers(folder) and not (folder / "x.h5").exists())


def test_missing_parts_are_refused_not_read_as_zeros(folder):
    """A copied file without its part folder: HDF5 would fill the holes with zeros."""
    import shutil

    a = dist(np.arange(1.0, 41.0).reshape(8, 5))
    path = a.to_hdf5(folder / "moved.h5", "u")
    COMM.Barrier()
    if RANK == 0:
        lone = folder / "lone"
        lone.mkdir()
        shutil.copy(path, lone / "moved.h5")
    COMM.Barrier()
    with pytest.raises(HDF5Error, match="source file"):
        load_hdf5(folder / "lone" / "moved.h5", "u")
    parallel_assert(True)


def test_a_refused_write_keeps_the_old_file(folder):
    """Refused before anything is written (disk full mid-write: tests/system/test_io_jobs.py)."""
    G = np.arange(12.0).reshape(4, 3)
    a = dist(G)
    path = a.to_hdf5(folder / "keep.h5", "u")
    before = path.read_bytes() if RANK == 0 else b""
    with pytest.raises(ConfigError, match="numbers and strings"):
        save_hdf5(path, {"u": a}, attrs={"when": object()})
    parallel_assert(RANK != 0 or path.read_bytes() == before)
    parallel_assert(not leftovers(folder))
