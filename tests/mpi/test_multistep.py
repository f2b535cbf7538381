"""Several steps per halo exchange (run_stencil(steps=k)): bitwise what k single steps give,
on 1..4 ranks, periodic and with walls, 2-D and 3-D, one and several fields, tiled or not;
k times fewer messages; clear errors on every rank."""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.grid.halo import STATS
from parcomp.kernels import (
    gray_scott_step,
    heat_step_2d,
    heat_step_2d_numpy,
    heat_step_3d,
    life_step,
    wave_step,
)
from parcomp.runtime.errors import KernelSignatureError, ShapeError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD


def make(shape, halo, periodic, dtype, seed, kind="float"):
    """A DistArray whose whole buffer (ghost ring included) comes from one random padded
    global array: walls hold arbitrary, position-dependent boundary values."""
    rng = np.random.default_rng(seed)
    padded = tuple(n + 2 * halo for n in shape)
    if kind == "bits":
        P = rng.integers(0, 2, size=padded).astype(dtype)
    else:
        P = rng.uniform(0.5, 1.5, size=padded).astype(dtype)
    if periodic:
        inner = tuple(slice(halo, halo + n) for n in shape)
        P = np.pad(P[inner], halo, mode="wrap")
    a = DistArray.zeros(shape, dtype=dtype, halo=halo, periods=periodic)
    region = tuple(slice(lo, hi + 2 * h) for (lo, hi), h in zip(a.local_range, a.halo, strict=True))
    a.local[...] = P[region]
    return a


def single_steps(kernel, args, perm, k):
    """The reference: k plain run_stencil calls, the arguments rotated between them."""
    for _ in range(k):
        run_stencil(kernel, *args)
        args = tuple(args[i] for i in perm)
    return args


def copies(args):
    return tuple(a.copy() if isinstance(a, DistArray) else a for a in args)


def same_bits(xs, ys):
    ok = True
    for x, y in zip(xs, ys, strict=True):
        if isinstance(x, DistArray):
            ok &= np.array_equal(x.interior, y.interior)
    return ok


def walls_kept(before, after):
    """The ghost cells beside a wall (outside every neighbour's block) are unchanged."""
    ok = True
    for x, y in zip(before, after, strict=True):
        if not isinstance(x, DistArray):
            continue
        part, rank = x.partition, x.rank
        for axis in range(x.ndim):
            for side in (-1, 1):
                off = tuple(side if a == axis else 0 for a in range(x.ndim))
                if part.neighbor(rank, off) is None and x.halo[axis]:
                    h = x.halo[axis]
                    sl = [slice(None)] * x.ndim
                    sl[axis] = slice(0, h) if side < 0 else slice(-h, None)
                    ok &= np.array_equal(x.local[tuple(sl)], y.local[tuple(sl)])
    return ok


CASES = {
    "heat2d": (
        heat_step_2d,
        2,
        lambda h, p: (
            make((23, 17), h, p, np.float64, 1),
            make((23, 17), h, p, np.float64, 2),
            0.2,
        ),
        (1, 0, 2),
    ),
    "heat3d": (
        heat_step_3d,
        3,
        lambda h, p: (
            make((16, 14, 13), h, p, np.float64, 3),
            make((16, 14, 13), h, p, np.float64, 4),
            0.15,
        ),
        (1, 0, 2),
    ),
    "life": (
        life_step,
        2,
        lambda h, p: (
            make((21, 18), h, p, np.int8, 5, "bits"),
            make((21, 18), h, p, np.int8, 6, "bits"),
        ),
        (1, 0),
    ),
    "grayscott": (
        gray_scott_step,
        2,
        lambda h, p: (
            make((19, 22), h, p, np.float64, 7),
            make((19, 22), h, p, np.float64, 8),
            make((19, 22), h, p, np.float64, 9),
            make((19, 22), h, p, np.float64, 10),
            0.16,
            0.08,
            0.035,
            0.065,
            1.0,
        ),
        (2, 3, 0, 1, 4, 5, 6, 7, 8),
    ),
}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("periodic", [False, True], ids=["walls", "periodic"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tile", [None, 3, 0], ids=["tile-default", "tile-3", "untiled"])
@pytest.mark.parametrize("overlap", [False, True], ids=["blocking", "overlap"])
def test_k_steps_per_exchange_are_bitwise_k_single_steps(case, periodic, k, tile, overlap):
    kernel, _, build, perm = CASES[case]
    args = build(k, periodic)
    ref = single_steps(kernel, copies(args), perm, k)
    before = copies(args)
    got = run_stencil(kernel, *args, steps=k, tile=tile, overlap=overlap)
    parallel_assert(
        same_bits(got, ref), f"{case} {k} steps differ from {k} single steps", comm=COMM
    )
    parallel_assert(walls_kept(before, args), "a wall's ghost cells were overwritten", comm=COMM)
    # the returned arguments are the single-step loop's, rotated k times
    parallel_assert(
        all((g is a) for g, a in zip(got, tuple(args[i] for i in _power(perm, k)), strict=True)),
        "the arguments returned are not the inputs rotated k times",
        comm=COMM,
    )


def _power(perm, k):
    p = tuple(range(len(perm)))
    for _ in range(k):
        p = tuple(p[i] for i in perm)
    return p


@pytest.mark.parametrize("periodic", [False, True], ids=["walls", "periodic"])
def test_three_time_levels_rotate_as_declared(periodic):
    """The leapfrog wave equation: u read with ghosts, uold pointwise, unew written."""
    k = 3
    shape = (20, 15)
    args = (
        make(shape, k, periodic, np.float64, 11),
        make(shape, k, periodic, np.float64, 12),
        make(shape, k, periodic, np.float64, 13),
        0.3,
    )
    rotate = {"uold": "u", "u": "unew", "unew": "uold"}
    perm = (1, 2, 0, 3)  # next uold = u, next u = unew, next unew = uold
    ref = single_steps(wave_step, copies(args), perm, 2 * k)
    got = run_stencil(wave_step, *args, steps=k, rotate=rotate, tile=4)
    got = run_stencil(wave_step, *got, steps=k, rotate=rotate, tile=4, overlap=True)
    parallel_assert(same_bits(got, ref), "wave: 2 x 3 steps differ from 6 single steps", comm=COMM)


def test_many_steps_match_serial_numpy():
    """Against an independent reference: the serial NumPy stencil on the gathered array."""
    shape, k, n = (40, 33), 5, 4
    rng = np.random.default_rng(21)
    G = rng.random(shape)
    u = DistArray.from_global(G if COMM.rank == 0 else None, global_shape=shape, halo=k)
    v = u.copy()
    for _ in range(n):
        u, v, _ = run_stencil(heat_step_2d, u, v, 0.21, steps=k)
    got = u.gather()
    if COMM.rank == 0:
        P, Q = np.pad(G, 1), np.pad(G, 1)
        for _ in range(n * k):
            heat_step_2d_numpy(P, Q, 0.21)
            P, Q = Q, P
        ok = np.array_equal(got, P[1:-1, 1:-1])
    else:
        ok = True
    parallel_assert(ok, "20 steps in 4 calls differ from serial NumPy", comm=COMM)


@pytest.mark.parametrize("k", [2, 4])
def test_messages_drop_by_k(k):
    shape = (64, 64)
    u = DistArray.zeros(shape, halo=k)
    v = u.copy()
    run_stencil(heat_step_2d, u, v, 0.1, steps=k)  # build the exchange once
    before = STATS.messages
    for _ in range(k):
        run_stencil(heat_step_2d, u, v, 0.1)
        u, v = v, u
    single = STATS.messages - before
    before = STATS.messages
    run_stencil(heat_step_2d, u, v, 0.1, steps=k)
    deep = STATS.messages - before
    # one exchange per k steps instead of k; with corners (needed for k > 1) a 2-D grid
    # of ranks also has diagonal neighbours
    part = u.partition
    faces = sum(1 for o in part.offsets(False) if part.neighbor(u.rank, o) not in (None, u.rank))
    every = sum(1 for o in part.offsets(True) if part.neighbor(u.rank, o) not in (None, u.rank))
    parallel_assert(
        single == k * faces and deep == every,
        f"messages: {single} for {k} steps, {deep} deep",
        comm=COMM,
    )


def test_a_halo_narrower_than_k_radius_is_refused_on_every_rank():
    u = DistArray.zeros((16, 16), halo=2, periods=True)
    v = u.copy()
    with pytest.raises(ShapeError, match=r"3 steps per exchange need ghost cells \(3, 3\)"):
        run_stencil(heat_step_2d, u, v, 0.1, steps=3)
    parcomp.agree(True)  # everyone is still in step


def test_an_undeclared_kernel_is_refused():
    @parcomp.jit
    def plain(u, out, a):
        for i in range(1, u.shape[0] - 1):
            for j in range(1, u.shape[1] - 1):
                out[i, j] = a * u[i - 1, j]

    u = DistArray.zeros((16, 16), halo=2)
    v = u.copy()
    with pytest.raises(KernelSignatureError, match="is not declared"):
        run_stencil(plain, u, v, 0.1, steps=2)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_steps_are_refused(bad):
    u = DistArray.zeros((16, 16), halo=2)
    v = u.copy()
    with pytest.raises(KernelSignatureError, match="steps must be an int >= 1"):
        run_stencil(heat_step_2d, u, v, 0.1, steps=bad)


def test_a_kernel_without_a_default_rotation_needs_rotate():
    u = DistArray.zeros((16, 16), halo=2)
    with pytest.raises(KernelSignatureError, match="Pass rotate="):
        run_stencil(wave_step, u, u.copy(), u.copy(), 0.1, steps=2)
    with pytest.raises(KernelSignatureError, match="not a permutation"):
        run_stencil(wave_step, u, u.copy(), u.copy(), 0.1, steps=2, rotate={"u": "unew"})
    with pytest.raises(KernelSignatureError, match="not fields"):
        run_stencil(wave_step, u, u.copy(), u.copy(), 0.1, steps=2, rotate={"c2": "u"})


def test_rotate_or_tile_without_steps_is_refused():
    u = DistArray.zeros((16, 16), halo=2)
    with pytest.raises(KernelSignatureError, match="go with steps="):
        run_stencil(heat_step_2d, u, u.copy(), 0.1, tile=4)


@parcomp.stencil(radius=1)
def sloppy(u, out, a):
    """Writes its arrays' outer ring too (zeros): k single steps and k tiled steps differ."""
    for i in range(0, u.shape[0]):
        for j in range(1, u.shape[1] - 1):
            if 0 < i < u.shape[0] - 1:
                out[i, j] = u[i, j] + a * (u[i - 1, j] + u[i + 1, j] - 2.0 * u[i, j])
            else:
                out[i, j] = 0.0


@parcomp.stencil(radius=1)
def positional(u, out, a):
    """Uses the loop index as a coordinate: depends on where its view starts."""
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = u[i - 1, j] + a * i


@pytest.mark.parametrize("kernel", [sloppy, positional], ids=lambda k: k.__name__)
def test_debug_mode_catches_a_kernel_that_is_not_translation_invariant(kernel, monkeypatch):
    from parcomp.runtime import watchdog

    monkeypatch.setattr(watchdog, "_debug", True)  # what PARCOMP_DEBUG_COLLECTIVES=1 sets
    u = make((24, 20), 3, False, np.float64, 30)
    v = make((24, 20), 3, False, np.float64, 31)
    with pytest.raises(KernelSignatureError, match="when its 3 steps are tiled"):
        run_stencil(kernel, u, v, 0.1, steps=3)


def test_debug_mode_accepts_the_library_kernels(monkeypatch):
    from parcomp.runtime import watchdog

    monkeypatch.setattr(watchdog, "_debug", True)
    for case in sorted(CASES):
        kernel, _, build, perm = CASES[case]
        args = build(2, True)
        ref = single_steps(kernel, copies(args), perm, 2)
        got = run_stencil(kernel, *args, steps=2)
        parallel_assert(same_bits(got, ref), f"{case}: debug-mode steps differ", comm=COMM)


@pytest.mark.parametrize("tile", [None, 0, 2, (5, 0)], ids=["default", "untiled", "2", "5x0"])
@pytest.mark.parametrize("periodic", [False, True], ids=["walls", "periodic"])
def test_a_halo_wider_than_k_radius_keeps_walls_and_bits(periodic, tile):
    k, halo = 3, 5
    args = (
        make((26, 21), halo, periodic, np.float64, 40),
        make((26, 21), halo, periodic, np.float64, 41),
        0.2,
    )
    ref = single_steps(heat_step_2d, copies(args), (1, 0, 2), k)
    before = copies(args)
    got = run_stencil(heat_step_2d, *args, steps=k, tile=tile)
    parallel_assert(same_bits(got, ref), "wide halo: steps differ", comm=COMM)
    parallel_assert(walls_kept(before, args), "wide halo: a wall was overwritten", comm=COMM)


@pytest.mark.parametrize("k", [2, 5])
def test_an_axis_without_neighbours_needs_only_the_radius(k):
    """Slabs (one rank along axis 1, walls): halo (k, 1) is enough, and bitwise right."""
    shape = (30, 17)
    rng = np.random.default_rng(50)
    G = rng.random(shape)
    kw = dict(global_shape=shape, halo=(k, 1), dims=(COMM.size, 1))
    u = DistArray.from_global(G if COMM.rank == 0 else None, **kw)
    v = u.copy()
    ref = single_steps(heat_step_2d, copies((u, v, 0.2)), (1, 0, 2), 2 * k)
    got = run_stencil(heat_step_2d, u, v, 0.2, steps=k)
    got = run_stencil(heat_step_2d, *got, steps=k)
    parallel_assert(same_bits(got, ref), "slabs with halo (k, 1) differ", comm=COMM)
    with pytest.raises(ShapeError, match="too narrow on axis"):
        w = DistArray.zeros(shape, halo=(k, 1), dims=(1, COMM.size), periods=(False, True))
        run_stencil(heat_step_2d, w, w.copy(), 0.2, steps=k)


@pytest.mark.parametrize(
    "periods", [(True, False), (False, True)], ids=["rows-periodic", "cols-periodic"]
)
@pytest.mark.parametrize("k", [2, 3])
def test_mixed_periodic_and_walls_with_a_copy_as_output(periods, k):
    """One periodic axis, walls on the other, position-dependent wall values set on the
    interior rows only, and v = u.copy() (equal values: once taken for the same array)."""
    shape, h = (23, 17), k
    u = DistArray.zeros(shape, halo=h, periods=periods)
    rng = np.random.default_rng(60 + COMM.rank)
    u.local[...] = rng.random(u.local.shape)  # every ghost cell arbitrary, per rank
    u.interior[...] = 1.0
    v = u.copy()
    ref = single_steps(heat_step_2d, copies((u, v, 0.2)), (1, 0, 2), k)
    ref2 = copies((u, v, 0.2))
    got = run_stencil(heat_step_2d, u, v, 0.2, steps=k)
    parallel_assert(same_bits(got, ref), f"periods {periods}: steps differ", comm=COMM)
    got2 = run_stencil(heat_step_2d, *ref2, steps=k, overlap=True)
    parallel_assert(same_bits(got2, ref), f"periods {periods}: overlapped differ", comm=COMM)


def test_steps_that_differ_between_ranks_raise_instead_of_hanging():
    u = DistArray.zeros((24, 24), halo=3, periods=True)
    v = u.copy()
    if COMM.size == 1:  # nobody to differ from: one step, as asked
        ref = single_steps(heat_step_2d, copies((u, v, 0.2)), (1, 0, 2), 1)
        got = run_stencil(heat_step_2d, u, v, 0.2, steps=1)
        parallel_assert(same_bits(got, ref), "one rank, one step", comm=COMM)
        return
    with pytest.raises(parcomp.ParcompError, match="steps/rotate differ between ranks"):
        run_stencil(heat_step_2d, u, v, 0.2, steps=1 + (COMM.rank > 0))
    parcomp.agree(True)


def test_tile_numbers_of_numpy_types_and_bad_tiles():
    u = DistArray.zeros((24, 24), halo=2, periods=True)
    v = u.copy()
    ref = single_steps(heat_step_2d, copies((u, v, 0.2)), (1, 0, 2), 2)
    got = run_stencil(heat_step_2d, u, v, 0.2, steps=np.int64(2), tile=np.int64(3))
    parallel_assert(same_bits(got, ref), "numpy-typed steps/tile", comm=COMM)
    for bad in (2.0, "3", [[1]], -1, (1, 2, 3)):
        with pytest.raises(ShapeError, match="tile must be"):
            run_stencil(heat_step_2d, u, v, 0.2, steps=2, tile=bad)


@pytest.mark.parametrize("periodic", [False, True], ids=["walls", "periodic"])
def test_overlap_with_large_messages(periodic):
    """Slabs of 64 KiB and more per message (past MPICH's eager limit: the data leaves
    while the first phase computes)."""
    k, shape = 4, (160, 1100)
    args = (
        make(shape, k, periodic, np.float64, 70),
        make(shape, k, periodic, np.float64, 71),
        0.2,
    )
    ref = single_steps(heat_step_2d, copies(args), (1, 0, 2), 2 * k)
    got = run_stencil(heat_step_2d, *args, steps=k, overlap=True)
    got = run_stencil(heat_step_2d, *got, steps=k, overlap=True)
    parallel_assert(same_bits(got, ref), "large overlapped exchange differs", comm=COMM)


@pytest.mark.parametrize("k", [2, 3])
def test_repeated_overlapped_calls_in_3d_with_walls(k):
    """Two overlapped calls on a grid of ranks with walls along the uncut axis, every ghost
    cell random: the wall bands put back during the exchange must stay inside the call's
    view (beyond it a neighbour's wall band is being received; found by a helper)."""
    dims = (2, 2, 1) if COMM.size == 4 else (COMM.size, 1, 1)
    shape = tuple((2 * k + 1) * d + 1 for d in dims)
    args = (
        make(shape, k, False, np.float64, 80 + COMM.rank),
        make(shape, k, False, np.float64, 90 + COMM.rank),
        0.1,
    )
    for a in args[:2]:  # per-rank random ghost cells, walls included
        a.local[...] = np.random.default_rng(100 + COMM.rank).uniform(0.5, 1.5, a.local.shape)
    ref = single_steps(heat_step_3d, copies(args), (1, 0, 2), 2 * k)
    got = run_stencil(heat_step_3d, *args, steps=k, overlap=True)
    got = run_stencil(heat_step_3d, *got, steps=k, overlap=True)
    parallel_assert(same_bits(got, ref), "repeated overlapped 3-D calls differ", comm=COMM)
