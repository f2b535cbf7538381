"""The pure redistribution plan, delivered by hand in NumPy: every pair of grids, 1-8 ranks."""

import itertools
import math

import numpy as np
import pytest

from parcomp.arrays.redistribute import _axis_blocks, pencil_dims, redistribute_plan
from parcomp.grid.partition import Partition
from parcomp.runtime.errors import RankCountError, ShapeError

SHAPES = [(11,), (8, 9), (5, 6, 8)]


def grids(shape, size):
    """Every process grid of ``size`` ranks that fits ``shape`` (no empty blocks)."""
    out = []
    for dims in itertools.product(range(1, size + 1), repeat=len(shape)):
        if math.prod(dims) == size and all(d <= n for d, n in zip(dims, shape, strict=True)):
            out.append(dims)
    return out


def deliver(src, dst, halo_src, halo_dst, G):
    """Run every rank's plan: copy each send into the matching receive; return dst buffers."""
    size = src.size
    plans = [redistribute_plan(src, dst, r) for r in range(size)]
    bufs = []
    for r in range(size):
        shape = src.local_shape(r)
        buf = np.full([n + 2 * halo_src for n in shape], -1.0)
        buf[tuple(slice(halo_src, halo_src + n) for n in shape)] = G[src.local_slices(r)]
        bufs.append(buf)
    out = [np.full([n + 2 * halo_dst for n in dst.local_shape(r)], -1.0) for r in range(size)]
    sent = {}
    for r, plan in enumerate(plans):
        peers = [t.peer for t in plan.sends]
        assert peers == sorted(set(peers)), "one send per peer, sorted"
        for t in plan.sends:
            start = [
                a - b0 + halo_src
                for (a, _), (b0, _) in zip(t.region, src.local_range(r), strict=True)
            ]
            sl = tuple(slice(s, s + b - a) for s, (a, b) in zip(start, t.region, strict=True))
            assert all(b > a for a, b in t.region), "no empty transfers"
            sent[(r, t.peer)] = (t.region, bufs[r][sl].copy())
    for r, plan in enumerate(plans):
        for t in plan.recvs:
            region, data = sent.pop((t.peer, r))
            assert region == t.region, "a send matches its receive"
            start = [
                a - b0 + halo_dst
                for (a, _), (b0, _) in zip(t.region, dst.local_range(r), strict=True)
            ]
            sl = tuple(slice(s, s + b - a) for s, (a, b) in zip(start, t.region, strict=True))
            assert (out[r][sl] == -1.0).all(), "no cell is written twice"
            out[r][sl] = data
    assert not sent, "every send is received"
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("size", range(1, 9))
def test_every_pair_of_grids_moves_every_cell_once(shape, size):
    G = np.arange(math.prod(shape), dtype=float).reshape(shape)
    gs = grids(shape, size)
    assert gs, "at least one grid fits"
    for a, b in itertools.product(gs, repeat=2):
        src, dst = (
            Partition(shape, a, (False,) * len(shape)),
            Partition(shape, b, (True,) * len(shape)),
        )
        for hs, hd in ((0, 0), (1, 2)):
            out = deliver(src, dst, hs, hd, G)
            for r in range(size):
                n = dst.local_shape(r)
                interior = tuple(slice(hd, hd + k) for k in n)
                np.testing.assert_array_equal(out[r][interior], G[dst.local_slices(r)])
                ghosts = out[r].copy()
                ghosts[interior] = -1.0
                assert (ghosts == -1.0).all(), "ghost cells are never written"


def test_same_grid_is_a_local_copy():
    p = Partition((8, 9), (2, 2), (False, False))
    for r in range(4):
        plan = redistribute_plan(p, p, r)
        assert [t.peer for t in plan.sends] == [r] and [t.peer for t in plan.recvs] == [r]


def test_axis_blocks_cover_the_range():
    for n in range(1, 20):
        for d in range(1, n + 1):
            for lo in range(n):
                for hi in range(lo + 1, n + 1):
                    got = _axis_blocks(n, d, lo, hi)
                    cells = [i for _, (a, b) in got for i in range(a, b)]
                    assert cells == list(range(lo, hi))


def test_mismatched_partitions_raise():
    a = Partition((8, 9), (2, 1), (False, False))
    with pytest.raises(ShapeError, match="different global shapes"):
        redistribute_plan(a, Partition((8, 8), (2, 1), (False, False)), 0)
    with pytest.raises(RankCountError, match="2 and 4 ranks"):
        redistribute_plan(a, Partition((8, 9), (2, 2), (False, False)), 0)


@pytest.mark.parametrize("size", range(1, 9))
def test_pencil_dims_keep_the_axis_whole(size):
    shape = (8, 9, 10)
    for dims in grids(shape, size):
        p = Partition(shape, dims, (False,) * 3)
        for axis in range(3):
            got = pencil_dims(p, axis)
            assert got[axis] == 1 and math.prod(got) == size
            Partition(shape, got, (False,) * 3)  # fits: no empty block
            if dims[axis] == 1:
                assert got == dims
            elif any(d == 1 for a, d in enumerate(dims) if a != axis):
                moved = [a for a in range(3) if got[a] != dims[a]]
                assert len(moved) == 2, "one swap: the transpose stays within grid rows"


def test_pencil_dims_errors():
    with pytest.raises(RankCountError, match="whole"):
        pencil_dims(Partition((8,), (2,), (False,)), 0)
    with pytest.raises(ShapeError, match="out of range"):
        pencil_dims(Partition((8, 8), (2, 1), (False, False)), 2)


def test_contiguity_test_matches_numpy():
    from parcomp.arrays.redistribute import _contiguous

    rng = np.random.default_rng(0)
    for _ in range(2000):
        shape = tuple(int(v) for v in rng.integers(1, 5, rng.integers(1, 4)))
        region = []
        for n in shape:
            a = int(rng.integers(0, n))
            region.append(slice(a, int(rng.integers(a + 1, n + 1))))
        view = np.empty(shape)[tuple(region)]
        assert _contiguous(tuple(region), shape) == view.flags.c_contiguous, (shape, region)
