"""The pure particle plans, delivered in NumPy for every rank: owners, wrap, ghosts, CIC."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parcomp.grid.partition import Partition
from parcomp.particles import plan as plan
from parcomp.runtime.errors import ShapeError


def grids(shape, size):
    for dims in itertools.product(range(1, size + 1), repeat=len(shape)):
        if math.prod(dims) == size and all(d <= n for d, n in zip(dims, shape, strict=True)):
            yield dims


@pytest.mark.parametrize("shape", [(13,), (7, 9), (5, 6, 4)], ids=str)
@pytest.mark.parametrize("size", range(1, 9))
def test_owner_of_agrees_with_owner(shape, size):
    for dims in grids(shape, size):
        p = Partition(shape, dims, (False,) * len(shape))
        idx = np.array(list(itertools.product(*(range(n) for n in shape))))
        got = p.owner_of(idx)
        assert got.dtype == np.int64 and got.shape == (idx.shape[0],)
        assert got.tolist() == [p.owner(tuple(i)) for i in idx]
        assert int(p.owner_of(idx[5])) == p.owner(tuple(idx[5]))  # one point


def test_owner_of_rejects_bad_input():
    p = Partition((8, 8), (2, 2), (True, True))
    with pytest.raises(ShapeError, match=r"outside global_shape .* axis 1"):
        p.owner_of(np.array([[0, 0], [3, 8]]))
    with pytest.raises(ShapeError, match="row 0"):
        p.owner_of(np.array([[-1, 0]]))
    with pytest.raises(ShapeError, match="integer indices"):
        p.owner_of(np.array([[0.5, 1.0]]))
    with pytest.raises(ShapeError, match=r"shape \(m, 2\)"):
        p.owner_of(np.array([[0, 1, 2]]))


def test_wrap_and_cells():
    box = plan.Box.create([(0.0, 2.0), (-1.0, 1.0)], (4, 4))
    x = np.array([[2.0, 0.0], [-1e-300, 0.5], [4.5, -3.5], [1.0, 1.0], [0.25, -1.0]])
    outside = plan.wrap(x, box, (True, False))
    assert outside.tolist() == [False, False, True, True, False]
    assert 0.0 <= x[:, 0].min() and x[:, 0].max() < 2.0
    assert x[0, 0] == 0.0 and x[1, 0] == 0.0  # the tiny negative wraps to lo, not to hi
    c = plan.cells(x[~outside], box, (4, 4))
    assert c.tolist() == [[0, 2], [0, 3], [0, 0]]


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50))
@settings(max_examples=200, deadline=None)
def test_wrap_lands_inside_the_box(values):
    box = plan.Box.create([(-0.3, 1.7)], (5,))
    x = np.array(values, dtype=float)[:, None]
    plan.wrap(x, box, (True,))
    assert (x >= -0.3).all() and (x < 1.7).all()
    c = plan.cells(x, box, (5,))
    assert ((c >= 0) & (c < 5)).all()


def test_box_errors():
    with pytest.raises(ShapeError, match="lo < hi"):
        plan.Box.create([(1.0, 1.0)], (4,))
    with pytest.raises(ShapeError, match="2 axes"):
        plan.Box.create([(0, 1), (0, 1)], (4,))
    with pytest.raises(ShapeError, match="pairs"):
        plan.Box.create(5, (4,))


def brute_ghosts(x, box, p, rank, cutoff):
    """Every image of every other particle within cutoff of rank's block (a box distance)."""
    lo, hi = box.block(p, rank)
    L = box.length
    out = set()
    for shifts in itertools.product(*((-1, 0, 1) if per else (0,) for per in p.periods)):
        img = x + np.asarray(shifts) * L
        owner = plan.owners(x, box, p)
        for i in range(len(x)):
            if owner[i] == rank and not any(shifts):
                continue  # its own particle, not a ghost
            d = np.maximum(0, np.maximum(lo - img[i], img[i] - hi))
            if (d < cutoff).all() and not ((img[i] >= lo) & (img[i] < hi)).all():
                out.add((i, tuple(np.round(img[i], 9))))
    return out


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 6, 8])
def test_ghost_plan_delivers_exactly_the_particles_within_cutoff(periodic, size):
    shape = (8, 6)
    rng = np.random.default_rng(size)
    box = plan.Box.create([(0.0, 4.0), (0.0, 3.0)], shape)
    x = rng.uniform(0, 1, (300, 2)) * box.length
    for dims in grids(shape, size):
        p = Partition(shape, dims, (periodic, periodic))
        cutoff = (
            min(plan.Box.spacing(box, shape)[a] * (shape[a] // dims[a]) for a in range(2)) * 0.9
        )
        if periodic:
            cutoff = min(cutoff, 1.4)
        assert plan.check_cutoff(cutoff, box, p) is None
        owner = plan.owners(x, box, p)
        received = {r: set() for r in range(size)}
        for r in range(size):
            mine = np.flatnonzero(owner == r)
            gp = plan.ghost_plan(x[mine], box, p, r, cutoff)
            assert (np.diff(gp.dest) >= 0).all(), "sorted by destination"
            for i, d, s in zip(gp.index, gp.dest, gp.shift, strict=True):
                key = (int(mine[i]), tuple(np.round(x[mine[i]] + s, 9)))
                received[int(d)].add(key)
        for r in range(size):
            want = brute_ghosts(x, box, p, r, cutoff)
            # the plan's copies are a superset of what lies within cutoff by box distance
            # (the plan tests each axis separately: same set, corners included)
            assert want <= received[r], (dims, r, sorted(want - received[r])[:3])
            lo, hi = box.block(p, r)
            for _i, img in received[r]:
                d = np.maximum(0, np.maximum(lo - np.array(img), np.array(img) - hi))
                assert (d <= cutoff).all(), "nothing beyond the cutoff along any axis"


def test_cutoff_checks():
    box = plan.Box.create(None, (8, 8))
    p = Partition((8, 8), (4, 1), (True, True))
    assert "wider than the smallest block along axis 0" in plan.check_cutoff(2.5, box, p)
    assert "half the periodic length" in plan.check_cutoff(
        4.5, box, Partition((8, 8), (1, 1), (True, True))
    )
    assert "positive" in plan.check_cutoff(float("nan"), box, p)
    assert "positive" in plan.check_cutoff(-1, box, p)
    assert "number" in plan.check_cutoff("x", box, p)
    assert plan.check_cutoff(2.0, box, p) is None


@pytest.mark.parametrize("periodic", [False, True])
def test_cic_weights_sum_to_one_and_match_a_serial_deposit(periodic):
    shape = (6, 5)
    box = plan.Box.create([(0.0, 3.0), (0.0, 5.0)], shape)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (500, 2)) * box.length
    w = rng.uniform(0.5, 2.0, 500)
    ref = np.zeros(shape)  # serial CIC written out independently
    h = box.spacing(shape)
    for (px, py), wi in zip(x, w, strict=True):
        sx, sy = px / h[0] - 0.5, py / h[1] - 0.5
        ix, iy = math.floor(sx), math.floor(sy)
        fx, fy = sx - ix, sy - iy
        for dx, wx in ((0, 1 - fx), (1, fx)):
            for dy, wy in ((0, 1 - fy), (1, fy)):
                cx, cy = ix + dx, iy + dy
                if periodic:
                    cx, cy = cx % shape[0], cy % shape[1]
                else:
                    cx, cy = min(max(cx, 0), shape[0] - 1), min(max(cy, 0), shape[1] - 1)
                ref[cx, cy] += wi * wx * wy
    for dims in [(1, 1), (2, 1), (3, 2)]:
        p = Partition(shape, dims, (periodic, periodic))
        owner = plan.owners(x, box, p)
        total = np.zeros(shape)
        for r in range(p.size):
            mine = owner == r
            local, glob, frac = plan.cic_stencil(x[mine], box, p, r)
            assert np.allclose(frac.sum(axis=1), 1.0)
            n = p.local_shape(r)
            assert (local >= 0).all() and (local <= np.asarray(n) + 1).all(), "in the padded block"
            np.add.at(total, tuple(glob.reshape(-1, 2).T), (frac * w[mine, None]).ravel())
        assert np.allclose(total, ref, rtol=1e-13, atol=1e-13)
        assert np.isclose(total.sum(), w.sum())


@pytest.mark.parametrize(
    "dims,periods",
    [((1, 1, 1), (True, True, True)), ((3, 2, 1), (True, False, True)), ((2, 2, 2), (False,) * 3)],
)
def test_compiled_locate_equals_the_numpy_plan(dims, periods):
    """The one-pass Numba kernel migrate uses: the same wrap, owners and counts as the plan."""
    from parcomp.particles._kernels import locate

    p = Partition((13, 7, 9), dims, periods)
    box = plan.Box.create([(-1.0, 2.5), (0, 7.0), (3, 4)], p.global_shape)
    rng = np.random.default_rng(sum(dims))
    x = rng.uniform(-0.5, 1.5, (20000, 3)) * box.length + box.lo
    x[:6] = [
        [box.lo[0] - 1e-300, 1, 3.5],
        [box.hi[0], 1, 3.5],
        [box.hi[0] * 7, 1, 3.5],
        [0, 0, np.nextafter(4.0, 0)],
        [-1e-17, 6.9999999, 3.0],
        [np.nan, 1, 3.5],
    ]
    ref = x.copy()
    finite = np.isfinite(ref).all(axis=1)
    out = plan.wrap(ref, box, periods) & finite
    inside = finite & ~out
    want = np.full(len(x), -2)
    want[out] = -1
    want[inside] = plan.owners(ref[inside], box, p)
    got, bad, outside = locate(x, box, p)
    assert np.array_equal(got, want)
    assert bad == 1 and outside == int(out.sum())
    assert np.array_equal(x[finite], ref[finite])  # wrapped in place, the same bits
