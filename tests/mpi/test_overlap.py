"""run_stencil(overlap=True): the exchange overlapped with the inner cells, then the
boundary strips; bitwise the same interiors as overlap=False, on 1..4 ranks."""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.kernels import heat_step_2d, heat_step_3d, life_step
from parcomp.runtime.errors import KernelSignatureError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD


@parcomp.stencil(radius=2)
def wide_2d(u, out, c):
    """A radius-2 cross: reads two cells away along each axis."""
    for i in range(2, u.shape[0] - 2):
        for j in range(2, u.shape[1] - 2):
            out[i, j] = c * (u[i - 2, j] + u[i + 2, j] + u[i, j - 2] + u[i, j + 2]) - u[i, j]


def steps(kernel, u, v, n, overlap, *params):
    for _ in range(n):
        run_stencil(kernel, u, v, *params, overlap=overlap)
        u, v = v, u
    return u.gather(0)


CASES = [
    ("heat", heat_step_2d, (37, 23), 1, False, np.float64, (0.2,)),
    ("heat-periodic-halo2", heat_step_2d, (29, 31), 2, True, np.float64, (0.2,)),
    ("life-corners", life_step, (33, 27), 1, True, np.int8, ()),
    ("wide-radius2", wide_2d, (30, 26), 2, False, np.float64, (0.3,)),
    ("heat-3d", heat_step_3d, (13, 11, 9), 1, False, np.float64, (0.15,)),
]


@pytest.mark.parametrize(
    ("name", "kernel", "shape", "halo", "periodic", "dtype", "params"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_overlap_is_bitwise_the_same(name, kernel, shape, halo, periodic, dtype, params):
    rng = np.random.default_rng(len(name))
    G = (rng.random(shape) * (2 if dtype == np.int8 else 1)).astype(dtype)
    results = []
    for overlap in (False, True):
        u = DistArray.from_global(
            G if COMM.rank == 0 else None,
            global_shape=shape,
            dtype=dtype,
            halo=halo,
            periods=periodic,
        )
        results.append(steps(kernel, u, u.zeros_like(), 5, overlap, *params))
    parallel_assert(COMM.rank != 0 or np.array_equal(results[0], results[1]), name)


def test_overlap_needs_a_declared_kernel():
    @parcomp.jit
    def plain(u, out):
        for i in range(1, u.shape[0] - 1):
            out[i] = u[i - 1] + u[i + 1]

    u = DistArray.zeros((16,), halo=1)
    with pytest.raises(KernelSignatureError, match="needs a declared kernel"):
        run_stencil(plain, u, u.zeros_like(), overlap=True)
    parallel_assert(True)


def test_checked_calls_are_remembered_only_for_the_same_live_arrays():
    """run_stencil skips its checks for a call it already checked: same kernel, same
    arrays (alive), same kinds.  An array that replaces a dead one (even at the same
    address) is checked again."""
    import gc

    from parcomp.runtime.errors import ShapeError

    for _ in range(5):
        u = DistArray.zeros((16, 12), halo=1)
        run_stencil(heat_step_2d, u, u.zeros_like(), 0.2)
        run_stencil(heat_step_2d, u, u.zeros_like(), 0.2)
        del u
        gc.collect()
        bad = DistArray.zeros((16, 12), halo=0)  # may reuse a freed object's id
        with pytest.raises(ShapeError, match="halo"):
            run_stencil(heat_step_2d, bad, bad.zeros_like(), 0.2)
    u = DistArray.zeros((16, 12), halo=1)
    v = u.zeros_like()
    run_stencil(heat_step_2d, u, v, 0.2)
    with pytest.raises(KernelSignatureError):
        run_stencil(heat_step_2d, u, v, u)  # a DistArray where a number goes
    parallel_assert(True)
