"""Several fields per kernel: one aggregated halo exchange (one message per neighbour),
mixed dtypes, pointwise fields never exchanged, and clear errors; on 1..4 ranks."""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.arrays.exchange import exchange_halos
from parcomp.grid.halo import STATS, halo_plan
from parcomp.kernels import gray_scott_numpy
from parcomp.kernels import gray_scott_step as gray_scott
from parcomp.runtime.errors import KernelSignatureError, ShapeError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD


def padded(G, periodic, h):
    """The global array with its ring of h ghost cells (wrapped if periodic, else 0)."""
    return np.pad(G, h, mode="wrap") if periodic else np.pad(G, h)


def local_window(a, P):
    """This rank's buffer region (interior plus ghosts) cut out of a padded global P."""
    h = a.halo
    region = tuple(slice(lo, hi + 2 * hd) for (lo, hi), hd in zip(a.local_range, h, strict=True))
    return P[region]


@pytest.mark.parametrize("periodic", [False, True], ids=["walls", "periodic"])
@pytest.mark.parametrize("corners", [False, True], ids=["faces", "corners"])
def test_one_exchange_fills_every_field_with_one_message_per_neighbour(periodic, corners):
    shape, halo = (19, 14), 2
    rng = np.random.default_rng(5)
    dtypes = (np.float64, np.int32, np.float32, np.complex128)
    globals_ = [(rng.random(shape) * 1000).astype(dt) for dt in dtypes]
    arrays = [
        DistArray.from_global(
            G if COMM.rank == 0 else None,
            global_shape=shape,
            dtype=G.dtype,
            halo=halo,
            periods=periodic,
        )
        for G in globals_
    ]
    before = STATS.messages
    exchange_halos(*arrays, corners=corners)
    sent = STATS.messages - before
    first = arrays[0]
    plan = halo_plan(first.partition, first.rank, first.halo, corners)
    neighbours = sum(1 for m in plan if m.neighbor != first.rank)  # itself: copied, not sent
    ok = sent == neighbours
    for a, G in zip(arrays, globals_, strict=True):
        want = local_window(a, padded(G, periodic, halo))
        got = a.local.copy()
        if not corners:  # edges and corners of the ghost ring are not exchanged: compare faces
            mask = np.zeros(got.shape, bool)
            mask[halo:-halo, :] = True
            mask[:, halo:-halo] = True
            ok = ok and np.array_equal(got[mask], want[mask])
        else:
            ok = ok and np.array_equal(got, want)
    parallel_assert(ok, f"sent {sent} messages for {neighbours} neighbours")


@pytest.mark.parametrize("overlap", [False, True], ids=["blocking", "overlap"])
def test_two_fields_one_kernel_is_bitwise_numpy(overlap):
    shape = (23, 17)
    rng = np.random.default_rng(2)
    U, V = rng.random(shape), rng.random(shape) * 0.3
    params = (0.16, 0.08, 0.035, 0.065, 1.0)
    kw = dict(global_shape=shape, halo=1, periods=True)
    u = DistArray.from_global(U if COMM.rank == 0 else None, **kw)
    v = DistArray.from_global(V if COMM.rank == 0 else None, **kw)
    u2, v2 = u.zeros_like(), v.zeros_like()
    before = STATS.exchanges
    for _ in range(7):
        run_stencil(gray_scott, u, v, u2, v2, *params, overlap=overlap)
        u, u2, v, v2 = u2, u, v2, v
        U, V = gray_scott_numpy(U, V, *params)
    exchanges = STATS.exchanges - before
    gu, gv = u.gather(0), v.gather(0)
    ok = COMM.rank != 0 or (np.array_equal(gu, U) and np.array_equal(gv, V))
    # one exchange per step for both fields (a periodic axis on one rank is its own
    # neighbour, so every rank count exchanges)
    parallel_assert(ok and exchanges == 7, f"{exchanges} exchanges for 7 steps")


@parcomp.stencil(radius=1, reads=("u",), writes=("unew",), pointwise=("uold",))
def leapfrog(uold, u, unew, c2):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            lap = u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * u[i, j]
            unew[i, j] = 2.0 * u[i, j] - uold[i, j] + c2 * lap


def test_pointwise_field_is_not_exchanged_and_mixed_dtypes_work():
    shape = (21, 18)
    rng = np.random.default_rng(3)
    U0, U1 = rng.random(shape), rng.random(shape)
    kw = dict(global_shape=shape, halo=1)
    uold = DistArray.from_global(U0 if COMM.rank == 0 else None, **kw)
    u = DistArray.from_global(U1 if COMM.rank == 0 else None, **kw)
    inner = uold.interior.copy()
    uold.local[:] = -7.0  # poison uold's ghost ring: a kernel reading it would show it
    uold.interior[...] = inner
    unew = u.zeros_like()
    before = STATS.exchanges
    run_stencil(leapfrog, uold, u, unew, 0.1)
    exchanged = STATS.exchanges - before
    P = np.pad(U1, 1)
    lap = P[:-2, 1:-1] + P[2:, 1:-1] + P[1:-1, :-2] + P[1:-1, 2:] - 4.0 * U1
    want = 2.0 * U1 - U0 + 0.1 * lap
    got = unew.gather(0)
    ghosts_untouched = bool(np.all(uold.local[0, :] == -7.0)) if uold.local.size else True
    neighbours = len(halo_plan(u.partition, u.rank, u.halo, False))
    parallel_assert(
        (COMM.rank != 0 or np.array_equal(got, want))
        and exchanged == (1 if neighbours else 0)
        and ghosts_untouched
    )


def test_pointwise_declaration_that_reads_a_neighbour_is_refused():
    with pytest.raises(KernelSignatureError, match="declared pointwise"):

        @parcomp.stencil(radius=1, reads=("u",), writes=("out",), pointwise=("w",))
        def bad(u, w, out):
            for i in range(1, u.shape[0] - 1):
                out[i] = u[i - 1] + w[i + 1]

    with pytest.raises(KernelSignatureError, match="both reads"):

        @parcomp.stencil(radius=1, reads=("u",), writes=("out",), pointwise=("u",))
        def twice(u, out):
            for i in range(1, u.shape[0] - 1):
                out[i] = u[i]

    parallel_assert(True)


def test_fields_decomposed_differently_raise_on_every_rank():
    u = DistArray.zeros((24, 20), halo=1)
    v_other_halo = DistArray.zeros((24, 20), halo=2)
    v_other_shape = DistArray.zeros((24, 21), halo=1)
    for v in (v_other_halo, v_other_shape):
        with pytest.raises(ShapeError, match="decomposed differently"):
            run_stencil(gray_scott, u, v, u.zeros_like(), u.zeros_like(), 0.1, 0.1, 0.1, 0.1, 1.0)
        with pytest.raises(ShapeError, match="decomposed differently"):
            exchange_halos(u, v)
    sub = COMM.Split(0, COMM.rank)  # the same ranks, another communicator
    w = DistArray.zeros((24, 20), halo=1, comm=sub)
    with pytest.raises(ShapeError, match="other communicators"):
        exchange_halos(u, w)
    with pytest.raises(ShapeError, match="given twice"):
        exchange_halos(u, u)
    w = None
    sub.Free()
    parallel_assert(True)


def test_a_distarray_as_a_plain_parameter_raises():
    u = DistArray.zeros((16, 12), halo=1)
    with pytest.raises(KernelSignatureError, match="plain parameter"):
        run_stencil(leapfrog, u.zeros_like(), u, u.zeros_like(), u)
    with pytest.raises(KernelSignatureError, match="must be a DistArray"):
        run_stencil(leapfrog, u.local, u, u.zeros_like(), 0.1)
    parallel_assert(True)
