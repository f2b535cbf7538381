"""Exhaustive tests of the pure decomposition (no MPI)."""

import itertools
import math

import numpy as np
import pytest

from parcomp.grid.partition import Partition, block_range, dims_create
from parcomp.runtime.errors import RankCountError, ShapeError

SHAPES = [(1,), (7,), (16,), (5, 5), (16, 3), (3, 16), (9, 11), (4, 4, 4), (6, 5, 7), (2, 17, 3)]


@pytest.mark.parametrize("n", range(0, 20))
@pytest.mark.parametrize("parts", range(1, 17))
def test_block_range_tiles(n, parts):
    ranges = [block_range(n, parts, i) for i in range(parts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (_a0, a1), (b0, _b1) in itertools.pairwise(ranges):
        assert a1 == b0
    lengths = [b - a for a, b in ranges]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)


def _feasible(size, shape):
    return any(
        all(d <= n for d, n in zip(dims, shape, strict=True))
        for dims in itertools.product(range(1, size + 1), repeat=len(shape))
        if math.prod(dims) == size
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", range(1, 17))
def test_partition_tiles_exactly(shape, size):
    if not _feasible(size, shape):
        with pytest.raises(RankCountError, match="without empty blocks"):
            Partition.create(shape, size)
        return
    part = Partition.create(shape, size)
    assert math.prod(part.dims) == size
    owner = np.full(shape, -1)
    for rank in range(size):
        assert part.rank_of(part.coords(rank)) == rank
        block = owner[part.local_slices(rank)]
        assert block.size > 0, "no empty blocks"
        assert (block == -1).all(), "blocks overlap"
        owner[part.local_slices(rank)] = rank
        assert block.shape == part.local_shape(rank)
    assert (owner >= 0).all(), "blocks tile the domain"
    for axis in range(len(shape)):
        lengths = {part.local_shape(r)[axis] for r in range(size)}
        assert max(lengths) - min(lengths) <= 1
    # owner() and the index maps agree with the painted array
    for index in itertools.product(*(range(n) for n in shape)):
        r = part.owner(index)
        assert r == owner[index]
        local = part.global_to_local(index, r)
        assert part.local_to_global(local, r) == index


@pytest.mark.parametrize("shape", [(8,), (6, 5), (4, 5, 6)])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("periodic", [False, True])
def test_neighbors_symmetric(shape, size, periodic):
    if not _feasible(size, shape):
        return
    part = Partition.create(shape, size, periods=periodic)
    for rank in range(size):
        for offset in part.offsets(corners=True):
            other = part.neighbor(rank, offset)
            back = tuple(-o for o in offset)
            if other is None:
                assert not periodic
                continue
            assert part.neighbor(other, back) == rank
            # the neighbour's grid coordinates differ by offset, modulo the grid
            for c, o, oc, d in zip(
                part.coords(rank), offset, part.coords(other), part.dims, strict=True
            ):
                assert (c + o) % d == oc


def test_non_periodic_edges_have_no_neighbor():
    part = Partition.create((10, 10), 4)
    assert part.dims == (2, 2)
    assert part.neighbor(0, (-1, 0)) is None
    assert part.neighbor(0, (1, 0)) == 2
    assert part.neighbor(0, (0, 1)) == 1
    assert part.neighbor(0, (1, 1)) == 3


def test_offsets_counts():
    part = Partition.create((4, 4, 4), 1)
    assert len(part.offsets(corners=False)) == 6
    assert len(part.offsets(corners=True)) == 26


@pytest.mark.parametrize("size", [2, 3, 5, 7, 11, 13])
def test_primes_split_longest_axis(size):
    assert dims_create(size, (20, 100)) == (1, size)
    assert dims_create(size, (100, 20)) == (size, 1)


def test_dims_minimise_interface():
    assert dims_create(4, (64, 64)) == (2, 2)
    assert dims_create(8, (32, 32, 32)) == (2, 2, 2)
    assert dims_create(6, (60, 60)) == (3, 2)


def test_fixed_dims():
    assert dims_create(6, (60, 60), fixed=(1, None)) == (1, 6)
    part = Partition.create((60, 60), 6, dims=(2, 3))
    assert part.dims == (2, 3)
    with pytest.raises(RankCountError, match="has 4 ranks but the job has 6"):
        Partition.create((60, 60), 6, dims=(2, 2))


@pytest.mark.parametrize("bad", [(), (0, 4), (4, -1), (2.5,), (True, 3)])
def test_bad_shapes(bad):
    with pytest.raises(ShapeError, match="global_shape"):
        Partition.create(bad, 1)


def test_bad_sizes_and_indices():
    with pytest.raises(RankCountError, match="positive integer"):
        dims_create(0, (4,))
    with pytest.raises(RankCountError, match="more ranks than cells"):
        dims_create(5, (4,))
    part = Partition.create((4, 4), 2)
    with pytest.raises(RankCountError, match="outside the process grid"):
        part.coords(2)
    with pytest.raises(ShapeError, match="not owned by rank 1"):
        part.global_to_local((0, 0), 1)
    with pytest.raises(ShapeError, match="outside global_shape"):
        part.owner((4, 0))
    with pytest.raises(RankCountError, match="blocks would be empty"):
        Partition((3,), (4,), (False,))


def test_numpy_integers_accepted():
    part = Partition.create(np.array([6, 4]).tolist(), np.int64(2).item())
    assert part.global_shape == (6, 4)
    assert Partition.create((np.int64(6), np.int32(4)), 2).global_shape == (6, 4)
