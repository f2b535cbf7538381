"""parcomp.io.Series on 1..4 ranks: records land where they belong, a resume drops the
later records and continues (also on a sub-communicator of another size), a series of
another run is refused, and misuse raises on every rank."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.io import Series
from parcomp.runtime.errors import ConfigError, HDF5Error, ShapeError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK = COMM.rank
SHAPE = (11, 7)


@pytest.fixture
def folder(tmp_path_factory):
    return Path(COMM.bcast(str(tmp_path_factory.mktemp("series")) if RANK == 0 else None))


def field(step, comm=COMM, dtype=np.float64):
    return DistArray.fromfunction(
        lambda i, j: i * 10.0 + j + step * 1000.0, SHAPE, dtype=dtype, halo=1, comm=comm
    )


def expected(step):
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    return i * 10.0 + j + step * 1000.0


def test_records_and_resume_on_another_rank_count(folder):
    path = folder / "s.h5"
    u = field(0)
    s = Series(path, {"u": u}, every=5, scalars=("e",), units={"u": "K"}, overwrite=True)
    for step in (0, 5, 10, 15):
        s.append(step, step * 0.5, fields={"u": field(step)}, scalars={"e": step * 2.0})
    # the job "restarts" from a checkpoint of step 7 on a communicator of another size
    sub = COMM.Split(0 if RANK < max(1, COMM.size - 1) else MPI.UNDEFINED, RANK)
    if sub != MPI.COMM_NULL:
        r = Series(
            path, {"u": field(7, sub)}, every=5, scalars=("e",), units={"u": "K"}, resume_at=7
        )
        ok = r.records == 2 and r.steps == [0, 5]
        for step in (10, 15, 20):
            r.append(step, step * 0.5, fields={"u": field(step + 1, sub)}, scalars={"e": -1.0})
        sub.Free()
    else:
        ok = True
    COMM.Barrier()
    if RANK == 0:
        with h5py.File(path, "r") as fh:
            ok = ok and list(fh["step"][...]) == [0, 5, 10, 15, 20]
            ok = ok and list(fh["time"][...]) == [0.0, 2.5, 5.0, 7.5, 10.0]
            ok = ok and list(fh["e"][...]) == [0.0, 10.0, -1.0, -1.0, -1.0]
            for k, step in enumerate((0, 5)):
                ok = ok and np.array_equal(fh["u"][k], expected(step))
            for k, step in enumerate((10, 15, 20), start=2):
                ok = ok and np.array_equal(fh["u"][k], expected(step + 1))
            ok = ok and fh["u"].attrs["units"] == "K"
    parallel_assert(ok)


def test_another_runs_series_is_refused(folder):
    path = folder / "s.h5"
    s = Series(path, {"u": field(0)}, overwrite=True)
    s.append(1, 1.0, fields={"u": field(1)})
    with pytest.raises(HDF5Error, match="exists"):
        Series(path, {"u": field(0)})  # neither resume_at nor overwrite
    with pytest.raises(HDF5Error, match="another run"):
        Series(path, {"u": field(0)}, coords={"x": np.linspace(0, 1, SHAPE[0])}, resume_at=1)
    with pytest.raises(HDF5Error, match="another run"):
        Series(path, {"v": field(0)}, resume_at=1)
    with pytest.raises(HDF5Error, match="another run"):
        Series(path, {"u": field(0, dtype=np.float32)}, resume_at=1)
    if RANK == 0:
        with h5py.File(folder / "plain.h5", "w") as fh:
            fh["u"] = np.zeros(SHAPE)
    COMM.Barrier()
    with pytest.raises(HDF5Error, match="not a parcomp series"):
        Series(folder / "plain.h5", {"u": field(0)}, resume_at=0)
    parallel_assert(True)


def test_misuse_raises_on_every_rank(folder):
    u = field(0)
    s = Series(folder / "m.h5", {"u": u}, scalars=("e",), overwrite=True)
    s.append(3, 0.0, fields={"u": u}, scalars={"e": 1.0})
    cases = [
        (ConfigError, "not after", lambda: s.append(3, 1.0, fields={"u": u}, scalars={"e": 1.0})),
        (ConfigError, "scalars", lambda: s.append(4, 1.0, fields={"u": u})),
        (ConfigError, "fields", lambda: s.append(4, 1.0, fields={"w": u}, scalars={"e": 1.0})),
        (ConfigError, "finite", lambda: s.append(4, np.nan, fields={"u": u}, scalars={"e": 1})),
        (
            ShapeError,
            "not decomposed",
            lambda: s.append(4, 1.0, fields={"u": DistArray.zeros((5, 5))}, scalars={"e": 1}),
        ),
        (ConfigError, "coordinate", lambda: Series(folder / "c.h5", {"u": u}, coords={"x": [1]})),
        (ConfigError, "distinct", lambda: Series(folder / "d.h5", {"time": u})),
        (ConfigError, "every", lambda: Series(folder / "e.h5", {"u": u}, every=0)),
    ]
    for error, match, call in cases:
        with pytest.raises(error, match=match):
            call()
    parallel_assert(s.records == 1 and s.steps == [3])


def test_asynchronous_records_are_committed_by_the_next_append_or_close(folder):
    path = folder / "a.h5"
    u = field(0)
    block = tuple(slice(lo, hi) for lo, hi in u.local_range)
    with Series(path, {"u": u}, overwrite=True, asynchronous=True) as s:
        for step in range(1, 5):
            u.interior[...] = expected(step)[block]
            s.append(step, float(step), fields={"u": u})
            u.interior[...] = -1.0  # the solver goes on changing the array at once
            ok = s.records == step - 1  # committed by the next append
        with pytest.raises(ConfigError, match="not after"):
            s.append(4, 9.0, fields={"u": u})  # the pending record's step
    ok = ok and s.records == 4
    if RANK == 0:
        with h5py.File(path, "r") as fh:
            ok = ok and list(fh["step"][...]) == [1, 2, 3, 4]
            ok = ok and all(np.array_equal(fh["u"][k], expected(k + 1)) for k in range(4))
    parallel_assert(ok)


def test_a_damaged_part_is_refused_on_resume_not_read_as_zeros(folder):
    path = folder / "d.h5"
    s = Series(path, {"u": field(0)}, overwrite=True)
    for step in (1, 2):
        s.append(step, float(step), fields={"u": field(step)})
    COMM.Barrier()
    if RANK == 0:
        part = next(folder.glob("d.h5.parts-*")) / "rank-00000.h5"
        part.write_bytes(b"garbage, as a kill in the middle of a write could leave")
    COMM.Barrier()
    with pytest.raises(HDF5Error, match="cannot be read"):
        Series(path, {"u": field(0)}, resume_at=2)
    parallel_assert(True)
