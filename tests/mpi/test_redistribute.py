"""DistArray.redistribute / transpose_to on 1..4 ranks, against the gathered global array."""

import itertools
import math

import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import ConfigError, RankCountError, ShapeError
from parcomp.testing import parallel_assert

SIZE = MPI.COMM_WORLD.size
RANK = MPI.COMM_WORLD.rank


def grids(shape):
    out = []
    for dims in itertools.product(range(1, SIZE + 1), repeat=len(shape)):
        if math.prod(dims) == SIZE and all(d <= n for d, n in zip(dims, shape, strict=True)):
            out.append(dims)
    return out


def make(shape, dtype, dims, halo=0):
    G = (np.arange(math.prod(shape)) * 7 % 31).reshape(shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        G = G + 1j * G[::-1]
    return G, DistArray.from_global(G if RANK == 0 else None, dims=dims, halo=halo)


@pytest.mark.parametrize("shape", [(13,), (9, 8), (5, 6, 7)], ids=str)
@pytest.mark.parametrize("method", ["alltoallw", "alltoallv"])
def test_every_grid_to_every_grid(shape, method):
    for a, b in itertools.product(grids(shape), repeat=2):
        G, arr = make(shape, np.float64, a, halo=1)
        out = arr.redistribute(b, method=method, halo=0)
        parallel_assert(out.partition.dims == tuple(b), f"grid {out.partition.dims}")
        parallel_assert(
            np.array_equal(out.interior, G[out.partition.local_slices(RANK)]), f"{a}->{b}"
        )
        back = out.gather()
        parallel_assert(RANK != 0 or np.array_equal(back, G))


@pytest.mark.parametrize("dtype", [np.int8, np.float32, np.complex128, np.uint64])
def test_dtypes_and_halo_kept(dtype):
    shape = (8, 7)
    G, arr = make(shape, dtype, None, halo=1)
    out = arr.redistribute((1, SIZE) if SIZE <= 7 else None)
    parallel_assert(out.dtype == np.dtype(dtype) and out.halo in ((1, 1), (0, 0)))
    parallel_assert(np.array_equal(out.interior, G[out.partition.local_slices(RANK)]))
    out.exchange_halos()  # the new layout's halo exchange works


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_transpose_to_makes_a_pencil(axis):
    shape = (6, 5, 8)
    G, arr = make(shape, np.float64, None)
    out = arr.transpose_to(axis)
    parallel_assert(out.partition.dims[axis] == 1, f"{out.partition.dims}")
    parallel_assert(np.array_equal(out.interior, G[out.partition.local_slices(RANK)]))


def test_bad_grid_raises_on_every_rank():
    _G, arr = make((4, 3), np.float64, None)
    with pytest.raises(RankCountError, match="ranks"):
        arr.redistribute((SIZE + 1, 1))
    if SIZE > 3:
        with pytest.raises(RankCountError, match=r"blocks would be empty|without empty"):
            arr.redistribute((1, SIZE))
    with pytest.raises(ConfigError, match="unknown redistribution method"):
        arr.redistribute(None, method="pickle")
    with pytest.raises(ShapeError, match="halo width"):
        arr.redistribute((SIZE, 1), halo=5)


@pytest.mark.skipif(SIZE < 2, reason="needs ranks that disagree")
def test_grids_differing_between_ranks_raise():
    _G, arr = make((8, 8), np.float64, None)
    dims = (SIZE, 1) if RANK == 0 else (1, SIZE)
    with pytest.raises(ConfigError, match="differ between ranks"):
        arr.redistribute(dims)


@pytest.mark.skipif(SIZE < 2, reason="a 1-d array on one rank is whole")
def test_transpose_of_1d_array_raises():
    _G, arr = make((8,), np.float64, None)
    with pytest.raises(RankCountError, match="whole"):
        arr.transpose_to(0)


def test_out_must_match_periodicity_and_is_written():
    G, arr = make((8, 7), np.float64, None)
    out = DistArray((8, 7), dims=(1, SIZE) if SIZE <= 7 else None)
    got = arr.redistribute(out=out)
    parallel_assert(
        got is out and np.array_equal(out.interior, G[out.partition.local_slices(RANK)])
    )
    with pytest.raises(ShapeError, match="periodic axes"):
        arr.redistribute(out=DistArray((8, 7), periods=True))
    with pytest.raises(ShapeError, match="shape"):
        arr.redistribute(out=DistArray((8, 8)))


def test_out_cannot_be_the_array_itself():
    _G, arr = make((8, 7), np.float64, None)
    with pytest.raises(ShapeError, match="another array"):
        arr.redistribute(out=arr)
