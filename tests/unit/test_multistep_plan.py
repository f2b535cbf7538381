"""The pure plan of several steps per exchange (parcomp.stencils.plan): regions, the skewed
tile schedule and the walls option of halo_plan, checked exhaustively on small cases
without MPI, against a plain sequential simulation."""

import itertools

import numpy as np
import pytest

from parcomp.grid.halo import halo_plan
from parcomp.grid.partition import Partition
from parcomp.stencils.plan import default_tile, rotation, schedule, step_regions


def star(u, out, r):
    """A NumPy stencil kernel on a view: every cell r away from the edges, star-shaped,
    asymmetric weights (so a cell read from the wrong step shows)."""
    nd = u.ndim
    inner = tuple(slice(r, s - r) for s in u.shape)
    acc = 0.5 * u[inner]
    for ax in range(nd):
        for d in range(1, r + 1):
            lo = list(inner)
            hi = list(inner)
            lo[ax] = slice(r - d, u.shape[ax] - r - d)
            hi[ax] = slice(r + d, u.shape[ax] - r + d)
            acc = acc + (0.1 * d + 0.01 * ax) * u[tuple(lo)] - (0.07 * d) * u[tuple(hi)]
    out[inner] = acc


def run_schedule(bufs, calls, r):
    for s, view in calls:
        src, dst = bufs[s % 2], bufs[(s + 1) % 2]
        star(src[view], dst[view], r)


def cases(ndim, sizes, ks, seed):
    """Every (size, radius, k, walls) case with random buffers and the sequential
    reference: k full steps, each on its step's region (the view widened by r)."""
    rng = np.random.default_rng(seed)
    for n, r, k in itertools.product(sizes, (1, 2), ks):
        h = k * r
        for walls in itertools.product((False, True), repeat=2 * ndim):
            lower = [not walls[2 * a] for a in range(ndim)]
            upper = [not walls[2 * a + 1] for a in range(ndim)]
            shape = (n,) * ndim
            regions = step_regions(shape, (h,) * ndim, (r,) * ndim, lower, upper, k)
            start = rng.random(tuple(s + 2 * h for s in shape))
            other = rng.random(start.shape)
            ref = [start.copy(), other.copy()]
            for s in range(k):
                view = tuple(slice(lo - r, hi + r) for lo, hi in regions[s])
                star(ref[s % 2][view], ref[(s + 1) % 2][view], r)
            yield n, r, k, h, walls, lower, upper, regions, start, other, ref


@pytest.mark.parametrize("ndim", [1, 2])
def test_tiled_schedule_equals_sequential_steps(ndim):
    count = 0
    for n, r, k, h, walls, lower, upper, regions, start, other, ref in cases(
        ndim, (5, 8, 13), (1, 2, 3, 4), 3
    ):
        for tile in ((1,) * ndim, (2,) * ndim, (3, None)[:ndim], (None,) * ndim):
            calls = schedule(regions, (r,) * ndim, tile)
            got = [start.copy(), other.copy()]
            run_schedule(got, calls, r)
            inner = tuple(slice(h, h + n) for _ in range(ndim))
            last = k % 2
            assert np.array_equal(got[last][inner], ref[last][inner]), (n, r, k, walls, tile)
            # the wall ghost cells are never written
            for a in range(ndim):
                for side, wall in ((0, not lower[a]), (1, not upper[a])):
                    if wall:
                        sl = [slice(None)] * ndim
                        sl[a] = slice(0, h) if side == 0 else slice(h + n, None)
                        for g, s0 in zip(got, (start, other), strict=True):
                            assert np.array_equal(g[tuple(sl)], s0[tuple(sl)])
            count += 1
    assert count > 100


def test_each_cell_is_computed_once_per_step():
    regions = step_regions((20, 11), (6, 6), (2, 2), (True, False), (True, True), 3)
    calls = schedule(regions, (2, 2), (4, 3))
    for s in range(3):
        seen = np.zeros((32, 23), int)
        for step, view in calls:
            if step == s:
                seen[tuple(slice(v.start + 2, v.stop - 2) for v in view)] += 1
        want = np.zeros_like(seen)
        want[tuple(slice(lo, hi) for lo, hi in regions[s])] = 1
        assert np.array_equal(seen, want)


def test_regions_shrink_by_the_radius_towards_the_interior():
    regions = step_regions((10, 7), (6, 3), (2, 1), (True, False), (False, True), 3)
    assert regions[-1] == ((6, 16), (3, 10))
    assert regions[0] == ((2, 16), (3, 12))
    assert regions[1] == ((4, 16), (3, 11))


def test_default_tile_cuts_rows_only_and_at_least_16():
    t = default_tile((4098, 4098), 16, (1, 1), 16, 2 << 20)
    assert t[1] is None and t[0] == max((2 << 20) // (4098 * 16) - 18, 16)
    assert default_tile((258, 258, 258), 16, (1, 1, 1), 4, 2 << 20) == (16, None, None)
    assert default_tile((10, 10), 16, (1, 1), 2, 2 << 20) == (None, None)  # one tile


@pytest.mark.parametrize("size", range(1, 9))
def test_walls_plan_carries_wall_ghosts_and_agrees_between_ranks(size):
    for periods in ((False, False), (True, False), (False, True)):
        part = Partition.create((12, 10), size, periods=periods)
        halo = (2, 2)
        plans = {r: halo_plan(part, r, halo, True, walls=True) for r in range(size)}
        for rank, plan in plans.items():
            shape = part.local_shape(rank)
            for m in plan:
                # sender's and receiver's regions have the same extent
                back = next(x for x in plans[m.neighbor] if x.offset == tuple(-o for o in m.offset))
                assert [s.stop - s.start for s in m.recv] == [s.stop - s.start for s in back.send]
                for ax, (o, sl) in enumerate(zip(m.offset, m.recv, strict=True)):
                    assert 0 <= sl.start < sl.stop <= shape[ax] + 2 * halo[ax]
                    if o == 0:
                        unit = tuple(-1 if a == ax else 0 for a in range(2))
                        wall_below = part.neighbor(rank, unit) is None
                        assert (sl.start == 0) == wall_below
            # no ghost cell is received twice
            seen = np.zeros(tuple(s + 2 * h for s, h in zip(shape, halo, strict=True)), int)
            for m in plan:
                seen[m.recv] += 1
            assert seen.max() <= 1


def test_rotation_defaults_and_explicit():
    class Spec:
        params = ("u", "v", "u2", "v2", "a")
        reads = ("u", "v")
        writes = ("u2", "v2")
        pointwise = ()

    assert rotation(Spec, None, "k") == (2, 3, 0, 1, 4)
    assert rotation(Spec, {"u": "v", "v": "u"}, "k") == (1, 0, 2, 3, 4)


@pytest.mark.parametrize("ndim", [1, 2])
def test_overlap_plan_reads_no_ghost_and_writes_nothing_being_sent(ndim):
    """Phase 1 runs with every ghost cell beside a neighbour still NaN (not received)
    and must leave the slabs being sent alone; phase 2 after the ghost cells arrive.
    Together they equal the sequential steps."""
    from parcomp.stencils.plan import overlap_plan

    checked = 0
    for n, r, k, h, walls, lower, upper, regions, start, other, ref in cases(
        ndim, (6, 11, 19), (1, 2, 3), 9
    ):
        for tile in ((2,) * ndim, (None,) * ndim):
            first, second = overlap_plan(
                regions, (r,) * ndim, lower, upper, tile, (False,) * ndim, (h,) * ndim
            )
            got = [start.copy(), other.copy()]
            ghosts = np.zeros(start.shape, bool)  # beside a neighbour: in flight
            sent = np.zeros(start.shape, bool)
            for a in range(ndim):
                for side, has in ((0, lower[a]), (1, upper[a])):
                    if has:
                        g = [slice(None)] * ndim
                        g[a] = slice(0, h) if side == 0 else slice(h + n, None)
                        ghosts[tuple(g)] = True
                        g[a] = slice(h, 2 * h) if side == 0 else slice(n, n + h)
                        sent[tuple(g)] = True
            got[0][ghosts] = np.nan
            got[1][ghosts] = np.nan
            before = [x[sent].copy() for x in got]
            run_schedule(got, first, r)
            for x, b in zip(got, before, strict=True):
                assert np.array_equal(x[sent], b, equal_nan=True), "phase 1 wrote a sent slab"
            got[0][ghosts] = start[ghosts]
            got[1][ghosts] = other[ghosts]
            run_schedule(got, second, r)
            inner = tuple(slice(h, h + n) for _ in range(ndim))
            assert np.array_equal(got[k % 2][inner], ref[k % 2][inner]), (n, r, k, walls)
            checked += 1
    assert checked > 50
