"""Output files as hostile as checkpoints (issue 31): load_hdf5 of a file save_hdf5 wrote
(part files and a virtual dataset) refuses every edit of the campaign, on 1-4 ranks, and
never returns other data with success.  Each case names what it did before.
"""

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import HDF5Error
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size
SHAPE = (12, 8)  # equal blocks on 1-4 ranks: parts of different ranks are interchangeable


@pytest.fixture
def written(tmp_path_factory):
    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("out")) if RANK == 0 else None))
    u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, SHAPE)
    path = parcomp.save_hdf5(folder / "field.h5", {"u": u})
    COMM.Barrier()
    parts = next(p for p in folder.iterdir() if ".parts-" in p.name)
    return path, parts


def expected():
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    return 100.0 * i + j


def on_rank0(fn):
    if RANK == 0:
        fn()
    COMM.Barrier()


def refused(path, match):
    with pytest.raises(HDF5Error, match=match):
        parcomp.load_hdf5(path, "u")
    parallel_assert(True)


def rewrite_sources(path, parts, source_of):
    """Replace the virtual dataset with one whose sources ``source_of(rank)`` names."""
    with h5py.File(path, "a") as fh:
        sources = [
            (vs.vspace.get_select_bounds(), vs.file_name) for vs in fh["u"].virtual_sources()
        ]
        del fh["u"]
        layout = h5py.VirtualLayout(shape=SHAPE, dtype=np.float64)
        for (lo, hi), name in sources:
            rank = int(name.rsplit("rank-", 1)[1][:5])
            extent = tuple(b - a + 1 for a, b in zip(lo, hi, strict=True))
            src = h5py.VirtualSource(source_of(rank), "u", shape=extent)
            layout[tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))] = src
        fh.create_virtual_dataset("u", layout)


def outside_copy(parts, tmp):
    """A copy of the parts elsewhere, holding other values."""
    other = tmp / "elsewhere"
    shutil.copytree(parts, other)
    for part in other.iterdir():
        with h5py.File(part, "a") as fh:
            fh["u"][...] = -7.0
    return other


def test_a_clean_file_reads_back(written):
    path, _ = written
    got = parcomp.load_hdf5(path, "u").gather()
    parallel_assert(RANK != 0 or np.array_equal(got, expected()))


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_virtual_sources_outside_the_parts_are_refused(written, how):
    # was: followed absolute and ../ sources and returned the outside values with success
    path, parts = written

    def edit():
        other = outside_copy(parts, path.parent)
        if how == "absolute":
            rewrite_sources(path, parts, lambda r: str(other / f"rank-{r:05d}.h5"))
        else:
            rewrite_sources(path, parts, lambda r: f"./{parts.name}/../elsewhere/rank-{r:05d}.h5")

    on_rank0(edit)
    refused(path, "points outside the file's own parts")


def test_a_symlinked_part_file_is_refused(written):
    # was: read through the link (the outside file's values, with success)
    path, parts = written

    def edit():
        other = outside_copy(parts, path.parent)
        victim = parts / "rank-00000.h5"
        victim.unlink()
        victim.symlink_to(other / "rank-00000.h5")

    on_rank0(edit)
    refused(path, r"rank-00000.h5 cannot be opened as a plain file")


def test_a_symlinked_parts_folder_is_refused(written):
    path, parts = written

    def edit():
        other = outside_copy(parts, path.parent)
        shutil.rmtree(parts)
        parts.symlink_to(other)

    on_rank0(edit)
    refused(path, "parts folder .* is a symbolic link")


def test_a_renamed_dataset_in_a_part_is_refused(written):
    # was: read back as zeros (the file was checked, the dataset was not)
    path, parts = written

    def edit():
        with h5py.File(parts / "rank-00000.h5", "a") as fh:
            fh.move("u", "v")

    on_rank0(edit)
    refused(path, "has no plain dataset 'u'")


@pytest.mark.skipif(SIZE < 2, reason="needs two parts to swap")
def test_a_part_of_another_rank_is_refused(written):
    # was: returned as it was
    path, parts = written

    def edit():
        a, b = parts / "rank-00000.h5", parts / "rank-00001.h5"
        a.rename(parts / "swap")
        b.rename(a)
        (parts / "swap").rename(b)

    on_rank0(edit)
    refused(path, "a part of another rank")


def test_a_flipped_bit_is_refused(written):
    # was: returned as it was (and a resumed heat2d carried it forward)
    path, parts = written

    def edit():
        part = parts / f"rank-{SIZE - 1:05d}.h5"
        with h5py.File(part, "r") as fh:
            offset = fh["u"].id.get_offset()
        with open(part, "r+b") as fh:
            fh.seek(offset + 13)
            byte = fh.read(1)[0]
            fh.seek(offset + 13)
            fh.write(bytes([byte ^ 0x04]))

    on_rank0(edit)
    refused(path, "fails its checksum")


def test_a_truncated_part_is_refused(written):
    path, parts = written

    def edit():
        part = parts / "rank-00000.h5"
        os.truncate(part, os.path.getsize(part) // 2)

    on_rank0(edit)
    refused(path, "rank-00000.h5")


def test_a_file_of_another_program_is_read_as_before(tmp_path_factory):
    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("foreign")) if RANK == 0 else None))

    def write():
        for r in range(2):
            with h5py.File(folder / f"p{r}.h5", "w") as fh:
                fh["x"] = np.full((3, 4), float(r))
        with h5py.File(folder / "v.h5", "w") as fh:
            layout = h5py.VirtualLayout(shape=(6, 4), dtype=np.float64)
            for r in range(2):
                layout[3 * r : 3 * r + 3] = h5py.VirtualSource(f"p{r}.h5", "x", shape=(3, 4))
            fh.create_virtual_dataset("x", layout)

    on_rank0(write)
    got = parcomp.load_hdf5(folder / "v.h5", "x").gather()
    parallel_assert(RANK != 0 or np.array_equal(got, np.repeat([0.0, 1.0], 12).reshape(6, 4)))


@pytest.mark.parametrize("how", ["part", "folder"])
def test_series_resume_refuses_symlinked_parts(tmp_path_factory, how):
    # was: Series._check_parts (and the appends after it) opened symlinked parts
    from parcomp.io import Series

    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("ser")) if RANK == 0 else None))
    u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, SHAPE)
    s = Series(folder / "run.h5", {"u": u}, overwrite=True)
    for step in range(3):
        s.append(step, float(step), fields={"u": u})
    s.close()
    COMM.Barrier()

    def edit():
        parts = next(p for p in folder.iterdir() if ".parts-" in p.name)
        other = folder / "elsewhere"
        shutil.copytree(parts, other)
        if how == "part":
            (parts / "rank-00000.h5").unlink()
            (parts / "rank-00000.h5").symlink_to(other / "rank-00000.h5")
        else:
            shutil.rmtree(parts)
            parts.symlink_to(other)

    on_rank0(edit)
    with pytest.raises(HDF5Error, match=r"symbolic link|no link followed"):
        Series(folder / "run.h5", {"u": u}, resume_at=1)
    parallel_assert(True)


@pytest.mark.parametrize("damage", ["bit", "other-rank"])
def test_series_resume_drops_damaged_records(tmp_path_factory, damage):
    # was: a flipped bit or another rank's part was carried forward by a resumed run
    from parcomp.io import Series

    if damage == "other-rank" and SIZE < 2:
        parallel_assert(True)
        return
    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("serd")) if RANK == 0 else None))
    u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, SHAPE)
    s = Series(folder / "run.h5", {"u": u}, overwrite=True)
    for step in range(6):
        u.interior[...] += 1.0
        s.append(step, float(step), fields={"u": u})
    s.close()
    COMM.Barrier()

    def edit():
        parts = next(p for p in folder.iterdir() if ".parts-" in p.name)
        if damage == "bit":  # one bit of record 2 of rank 0's part
            part = parts / "rank-00000.h5"
            with h5py.File(part, "a") as fh:
                record = fh["u"][2]
                record.reshape(-1).view(np.uint64)[3] ^= np.uint64(1 << 20)
                fh["u"][2] = record
        else:  # rank 1's records in rank 0's part (same block shape)
            with h5py.File(parts / "rank-00001.h5", "r") as fh:
                theirs = fh["u"][...]
            with h5py.File(parts / "rank-00000.h5", "a") as fh:
                fh["u"][...] = theirs

    on_rank0(edit)
    resumed = Series(folder / "run.h5", {"u": u}, resume_at=4)
    dropped_from = 2 if damage == "bit" else 0
    parallel_assert(resumed.steps == list(range(dropped_from)), resumed.steps)
    resumed.close()


@pytest.mark.parametrize("how", ["absolute", "dotdot", "link"])
def test_a_file_without_parcomp_metadata_cannot_escape_either(tmp_path_factory, how):
    # stripping parcomp's `creator` attribute must not turn the confinement off: another
    # program's virtual dataset may only read sources inside its own folder, not links
    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("foreign2")) if RANK == 0 else None))

    def write():
        outside = folder.parent / f"outside-{how}"
        outside.mkdir(exist_ok=True)
        with h5py.File(outside / "p.h5", "w") as fh:
            fh["x"] = np.full((6, 4), -7.0)
        if how == "absolute":
            source = str(outside / "p.h5")
        elif how == "dotdot":
            source = f"../outside-{how}/p.h5"
        else:
            (folder / "p.h5").symlink_to(outside / "p.h5")
            source = "p.h5"
        with h5py.File(folder / "v.h5", "w") as fh:
            layout = h5py.VirtualLayout(shape=(6, 4), dtype=np.float64)
            layout[:] = h5py.VirtualSource(source, "x", shape=(6, 4))
            fh.create_virtual_dataset("x", layout)

    on_rank0(write)
    with pytest.raises(HDF5Error, match=r"outside its folder|not a regular file"):
        parcomp.load_hdf5(folder / "v.h5", "x")
    parallel_assert(True)


@pytest.mark.skipif(SIZE < 2, reason="needs two parts to swap")
def test_series_resume_drops_records_of_swapped_part_files(tmp_path_factory):
    # whole part files swapped (their checksums travel with them): the part's own rank
    from parcomp.io import Series

    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("sersw")) if RANK == 0 else None))
    u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, SHAPE)
    s = Series(folder / "run.h5", {"u": u}, overwrite=True)
    for step in range(4):
        s.append(step, float(step), fields={"u": u})
    s.close()
    COMM.Barrier()

    def edit():
        parts = next(p for p in folder.iterdir() if ".parts-" in p.name)
        a, b = parts / "rank-00000.h5", parts / "rank-00001.h5"
        a.rename(parts / "swap")
        b.rename(a)
        (parts / "swap").rename(b)

    on_rank0(edit)
    resumed = Series(folder / "run.h5", {"u": u}, resume_at=3)
    parallel_assert(resumed.steps == [], resumed.steps)
    resumed.close()


@pytest.mark.parametrize(
    ("shape", "dtype", "halo"),
    [
        ((1400, 900), np.float64, 1),  # several slabs, gathered from between halo columns
        ((1400, 900), np.int64, 0),
        ((700, 900), np.float32, 1),  # not 8-byte items: HDF5 gathers, then summed
        ((60, 50, 40), np.float64, 1),
        ((5000,), np.complex128, 2),
    ],
)
def test_written_slab_checksums_are_those_of_the_stored_bytes(tmp_path_factory, shape, dtype, halo):
    """Every slab checksum a part records is the checksum of what the part stores
    (read back by h5py, summed by the same Fletcher-64), and the file reads back."""
    from parcomp.io.slabs import checksum, slab_bounds

    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("sums")) if RANK == 0 else None))
    rng = np.random.default_rng(5)
    full = (rng.random(shape) * 1e6).astype(dtype)
    u = DistArray.fromfunction(lambda *idx: full[idx], shape, dtype=dtype, halo=halo)
    path = parcomp.save_hdf5(folder / "field.h5", {"u": u})
    COMM.Barrier()
    parts = next(p for p in folder.iterdir() if ".parts-" in p.name)
    with h5py.File(parts / f"rank-{RANK:05d}.h5", "r") as fh:
        d = fh["u"]
        stored = d[...]
        rows = int(d.attrs["slab_rows"])
        want = [checksum(stored[a:b]) for a, b in slab_bounds(stored.shape[0], rows)]
        got = [bytes(x).decode() for x in d.attrs["slab_checksums"]]
    parallel_assert(got == want and np.array_equal(stored, u.interior))
    back = parcomp.load_hdf5(path, "u")
    parallel_assert(np.array_equal(back.interior, u.interior))


def test_damaged_part_metadata_is_an_hdf5error_on_every_rank(tmp_path_factory):
    """Bytes of a part's metadata flipped one at a time (superblock, root group, heap):
    each read gives the data written or HDF5Error on every rank (h5py's RuntimeError
    for some of them once escaped on the damaged rank alone, and the others waited)."""
    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("meta")) if RANK == 0 else None))
    u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, SHAPE)
    path = parcomp.save_hdf5(folder / "field.h5", {"u": u})
    COMM.Barrier()
    parts = next(p for p in folder.iterdir() if ".parts-" in p.name)
    victim = parts / f"rank-{SIZE - 1:05d}.h5"
    pristine = victim.read_bytes() if RANK == 0 else None
    outcomes = set()
    for pos in range(96, 400, 8):
        if RANK == 0:
            damaged = bytearray(pristine)
            damaged[pos] ^= 0xFF
            victim.write_bytes(bytes(damaged))
        COMM.Barrier()
        try:
            back = parcomp.load_hdf5(path, "u")
            ok = bool(np.array_equal(back.interior, u.interior))
            outcomes.add("data" if ok else "WRONG")
        except HDF5Error:
            outcomes.add("HDF5Error")
    parallel_assert("WRONG" not in outcomes and "HDF5Error" in outcomes, outcomes)


def test_a_negative_slab_rows_is_refused(written):
    # was: slab_bounds of a negative count covered no row: zeros came back with success
    path, parts = written

    def damage():
        for part in parts.iterdir():
            with h5py.File(part, "r+") as fh:
                fh["u"].attrs["slab_rows"] = np.int64(-5)

    on_rank0(damage)
    refused(path, "slab_rows=-5")


def test_a_fortran_order_buffer_is_written_as_its_values(tmp_path_factory):
    # was: HDF5 refused the buffer with a TypeError on each rank apart, and rank 0's
    # cleanup removed the parts folder under a slower rank (a hang)
    folder = Path(COMM.bcast(str(tmp_path_factory.mktemp("fortran")) if RANK == 0 else None))
    u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, SHAPE, dtype=np.float32, halo=1)
    u.local = np.asfortranarray(u.local)
    path = parcomp.save_hdf5(folder / "field.h5", {"u": u})
    whole = parcomp.load_hdf5(path, "u").gather()
    parallel_assert(RANK != 0 or np.array_equal(whole, expected().astype(np.float32)))
