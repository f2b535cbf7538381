"""What the hostile review of several-field stencils found, each now refused or right,
on 1..4 ranks: overlap with a kernel reading its output, a halo wider than the radius on
walls, an output read at a neighbour, pointwise fields that cannot be proven pointwise,
and parameter kinds that differ between ranks (a hang before)."""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.kernels import heat_step_2d, heat_step_2d_numpy, wave_step, wave_step_numpy
from parcomp.runtime.errors import KernelSignatureError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD


def f0(i, j):
    return np.cos(i * 0.2 - j * 0.5)


def f1(i, j):
    return np.sin(i * 0.7 + j * 0.3)


def test_overlap_refuses_a_kernel_that_reads_what_it_writes():
    uold = DistArray.fromfunction(f0, (12, 10), halo=1)
    u = DistArray.fromfunction(f1, (12, 10), halo=1)
    # the leapfrog step in place: unew written over uold (its pointwise input)
    run_stencil(wave_step, uold, u, uold, 0.1)  # fine without overlap
    i, j = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    want = wave_step_numpy(f0(i, j), f1(i, j), 0.1)
    got = uold.gather(0)
    parallel_assert(COMM.rank != 0 or np.array_equal(got, want))

    @parcomp.stencil(radius=1, reads=("u",), writes=("out",))
    def accumulate(u, out):
        for i in range(1, u.shape[0] - 1):
            for j in range(1, u.shape[1] - 1):
                out[i, j] += u[i - 1, j] + u[i, j + 1]

    @parcomp.stencil(radius=1, reads=("u",), writes=("w",), pointwise=("w",))
    def in_place(u, w):
        for i in range(1, u.shape[0] - 1):
            for j in range(1, u.shape[1] - 1):
                w[i, j] = 0.5 * w[i, j] + u[i - 1, j]

    for kernel in (accumulate, in_place):
        with pytest.raises(KernelSignatureError, match="reads a field it writes"):
            run_stencil(kernel, u, u.zeros_like(), overlap=True)
        run_stencil(kernel, u, u.zeros_like())  # without overlap: allowed
    parallel_assert(True)


@pytest.mark.parametrize("halo", [1, 2, 3])
@pytest.mark.parametrize("overlap", [False, True], ids=["blocking", "overlap"])
def test_a_halo_wider_than_the_radius_keeps_the_walls(halo, overlap):
    """The kernel gets the interior plus `radius` ghost cells, never the outer ghosts,
    which on a wall hold the boundary condition."""
    shape = (12, 10)
    u = DistArray.fromfunction(f1, shape, halo=halo)
    v = u.zeros_like()
    for _ in range(5):
        run_stencil(heat_step_2d, u, v, 0.2, overlap=overlap)
        u, v = v, u
    got = u.gather(0)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    U = f1(i, j)
    for _ in range(5):
        P = np.pad(U, 1)
        N = np.zeros_like(P)
        heat_step_2d_numpy(P, N, 0.2)
        U = N[1:-1, 1:-1]
    walls_zero = all(
        np.all(u.local[tuple(slice(0, halo) if ax == a else slice(None) for ax in range(2))] == 0)
        for a in range(2)
        if u.local_range[a][0] == 0
    )
    parallel_assert((COMM.rank != 0 or np.array_equal(got, U)) and walls_zero)


def test_an_output_read_at_a_neighbour_is_refused():
    with pytest.raises(KernelSignatureError, match="reads out\\[i - 1, j\\], a neighbour"):

        @parcomp.stencil(radius=1, reads=("u",), writes=("out",))
        def sweep(u, out):
            for i in range(1, u.shape[0] - 1):
                for j in range(1, u.shape[1] - 1):
                    out[i, j] = u[i, j] + 0.5 * out[i - 1, j]

    parallel_assert(True)


def alias(u, uold, unew):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            w = uold
            unew[i, j] = u[i, j] + w[i - 1, j]


def computed(u, uold, unew):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            im = i - 1
            unew[i, j] = u[i, j] + uold[im, j]


def sliced(u, uold, unew):
    for i in range(1, u.shape[0] - 1):
        unew[i, 1:-1] = u[i, 1:-1] + uold[i - 1, 1:-1]


def literal(u, uold, unew):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            unew[i, j] = u[i, j] + uold[i + (-1), j]


@pytest.mark.parametrize("func", [alias, computed, sliced, literal], ids=lambda f: f.__name__)
def test_a_pointwise_field_that_cannot_be_proven_pointwise_is_refused(func):
    with pytest.raises(KernelSignatureError, match="declared pointwise"):
        parcomp.stencil(radius=1, reads=("u",), writes=("unew",), pointwise=("uold",))(func)
    parallel_assert(True)


def test_plain_parameters_of_other_kinds_on_other_ranks_raise_instead_of_hanging():
    u = DistArray.zeros((16, 16), halo=1, periods=True)
    v = u.zeros_like()
    alike = 0.1 if COMM.rank == 0 else np.float64(0.1)  # both float64 to Numba: fine
    run_stencil(heat_step_2d, u, v, alike)
    run_stencil(heat_step_2d, u, v, 0.1)
    if COMM.size > 1:
        differ = 1 if COMM.rank == 0 else 1.0
        # "other kinds" (always); in debug mode the value check may say it first
        with pytest.raises(parcomp.ParcompError, match=r"other (kinds|parameter values)"):
            run_stencil(heat_step_2d, v, u, differ)
    run_stencil(heat_step_2d, v, u, 1.0)  # and the next call works on every rank
    parallel_assert(True)


def test_exchange_misuse_is_a_parcomp_error_on_every_rank():
    from parcomp.arrays.exchange import exchange_halos, finish_exchange, start_exchange
    from parcomp.runtime.errors import CollectiveError

    u = DistArray.zeros((12, 8), halo=1, periods=True)
    v = u.zeros_like()
    start_exchange(u, v)
    with pytest.raises(CollectiveError, match="same order"):
        finish_exchange(v, u)  # another order: another exchange, never started
    with pytest.raises(CollectiveError, match="in progress"):
        exchange_halos(u, v)  # the started one is still in flight
    finish_exchange(u, v)
    exchange_halos(u, v)  # and all is well again
    w = DistArray.zeros((12, 8), halo=1, periods=False)
    with pytest.raises(parcomp.ShapeError, match="periods"):
        exchange_halos(u, w)
    parallel_assert(True)


def test_one_array_as_two_outputs_is_refused():
    from parcomp.kernels import gray_scott_step

    u = DistArray.zeros((12, 8), halo=1, periods=True)
    v, out = u.zeros_like(), u.zeros_like()
    with pytest.raises(KernelSignatureError, match="same memory"):
        run_stencil(gray_scott_step, u, v, out, out, 0.1, 0.1, 0.1, 0.1, 1.0)
    parallel_assert(True)


def test_calls_on_a_sub_communicator_do_not_drop_a_world_call_on_some_ranks():
    """Rank 0 alone runs the same kernel on many fresh arrays of its own communicator; the
    world call that follows must still agree on every rank.  With one process-wide bound
    per kernel, rank 0 dropped the world call's runner and went into the checks'
    agreement while the other ranks took the fast path into the exchange: a hang."""
    u = DistArray.fromfunction(f0, (12, 8), halo=1)
    v = u.zeros_like()
    run_stencil(heat_step_2d, u, v, 0.2)  # checked and remembered on every rank
    u, v = v, u
    if COMM.rank == 0:
        for _ in range(12):  # more than a kernel's runners per communicator
            a = DistArray.fromfunction(f0, (6, 6), halo=1, comm=MPI.COMM_SELF)
            run_stencil(heat_step_2d, a, a.zeros_like(), 0.2)
    for _ in range(3):
        run_stencil(heat_step_2d, u, v, 0.2)
        u, v = v, u
    got = u.gather()
    U = np.fromfunction(f0, (12, 8))
    for _ in range(4):  # the serial reference: zero walls
        P = np.pad(U, 1)
        N = np.zeros_like(P)
        heat_step_2d_numpy(P, N, 0.2)
        U = N[1:-1, 1:-1]
    parallel_assert(COMM.rank != 0 or np.array_equal(got, U))
