"""Stencil kernels on DistArrays against NumPy on the whole array, and the heat2d job."""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.kernels import (
    heat_step_2d,
    heat_step_2d_numpy,
    heat_step_3d,
    heat_step_3d_numpy,
    life_step,
    life_step_numpy,
)
from parcomp.runtime.errors import KernelSignatureError
from parcomp.testing import parallel_assert

RANK = MPI.COMM_WORLD.rank


def serial(step, G, steps, periodic, *args):
    """Reference: the NumPy kernel on the whole array, padded with wrap or zero ghosts."""
    u = G.copy()
    for _ in range(steps):
        padded = np.pad(u, 1, mode="wrap" if periodic else "constant")
        out = np.zeros_like(padded)
        step(padded, out, *args)
        u = out[(slice(1, -1),) * G.ndim]
    return u


def distributed(kernel, G, steps, periodic, corners, *args):
    u = DistArray.from_global(G if RANK == 0 else None, halo=1, periods=periodic)
    v = u.zeros_like()
    for _ in range(steps):
        run_stencil(kernel, u, v, *args, corners=corners)
        u, v = v, u
    return u.gather(0)


@pytest.mark.parametrize("periodic", [False, True])
def test_heat_2d(periodic):
    G = np.random.default_rng(1).random((13, 11))
    got = distributed(heat_step_2d, G, 7, periodic, False, 0.2)
    if RANK == 0:
        want = serial(heat_step_2d_numpy, G, 7, periodic, 0.2)
        parallel_assert(np.array_equal(got, want), f"max diff {np.max(np.abs(got - want))}")
    else:
        parallel_assert(got is None)


@pytest.mark.parametrize("periodic", [False, True])
def test_heat_3d(periodic):
    G = np.random.default_rng(2).random((7, 6, 9))
    got = distributed(heat_step_3d, G, 5, periodic, False, 0.12)
    want = serial(heat_step_3d_numpy, G, 5, periodic, 0.12) if RANK == 0 else None
    parallel_assert(np.array_equal(got, want) if RANK == 0 else True)


def test_life_glider_on_torus_needs_corners():
    G = np.zeros((12, 10), np.int8)
    G[1, 2] = G[2, 3] = G[3, 1] = G[3, 2] = G[3, 3] = 1  # a glider
    got = distributed(life_step, G, 40, True, True)  # crosses every block boundary
    want = serial(life_step_numpy, G, 40, True) if RANK == 0 else None
    if RANK == 0:
        parallel_assert(got.dtype == np.int8 and np.array_equal(got, want) and got.sum() == 5)
    else:
        parallel_assert(True)


def test_life_without_corners_raises_on_every_rank():
    # life_step is declared corners=True: asking for faces only used to give 4 live cells
    # instead of 5 without a word; now every rank raises before any exchange
    G = np.zeros((12, 10), np.int8)
    G[1, 2] = G[2, 3] = G[3, 1] = G[3, 2] = G[3, 3] = 1
    with pytest.raises(KernelSignatureError, match="declared with corners=True"):
        distributed(life_step, G, 40, True, False)
    parallel_assert(True)  # nobody is left in an exchange


def test_life_corners_come_from_the_declaration():
    G = np.zeros((12, 10), np.int8)
    G[1, 2] = G[2, 3] = G[3, 1] = G[3, 2] = G[3, 3] = 1
    got = distributed(life_step, G, 40, True, None)
    want = serial(life_step_numpy, G, 40, True) if RANK == 0 else None
    parallel_assert(np.array_equal(got, want) and got.sum() == 5 if RANK == 0 else True)


def test_undeclared_life_without_corners_raises():
    # an undeclared kernel whose source reads diagonal neighbours needs corners=True
    plain = parcomp.jit(life_step.py_func)
    G = np.zeros((12, 10), np.int8)
    with pytest.raises(KernelSignatureError, match="a diagonal neighbour"):
        distributed(plain, G, 1, True, False)
    got = distributed(plain, G, 3, True, True)
    parallel_assert(got.sum() == 0 if RANK == 0 else True)


def test_faces_only_exchange_is_wrong_for_life_somewhere():
    # why the checks matter: exchanging faces only, then calling the 9-point kernel by
    # hand, differs from the reference once the process grid splits both axes
    if MPI.COMM_WORLD.size < 4:
        pytest.skip("needs a 2x2 process grid")
    G = np.zeros((12, 10), np.int8)
    G[1, 2] = G[2, 3] = G[3, 1] = G[3, 2] = G[3, 3] = 1
    u = DistArray.from_global(G if RANK == 0 else None, halo=1, periods=True)
    v = u.zeros_like()
    for _ in range(40):
        u.exchange_halos(corners=False)
        life_step(u.local, v.local)
        u, v = v, u
    got = u.gather(0)
    want = serial(life_step_numpy, G, 40, True) if RANK == 0 else None
    parallel_assert(not np.array_equal(got, want) if RANK == 0 else True)


def test_heat2d_job_matches_numpy_and_exact(job):
    heat = job("heat2d")
    n, steps, alpha = 40, 30, 0.24
    u, _, _, _ = heat.simulate(n, steps, alpha)
    field = u.gather(0)
    same, err = True, 0.0
    if RANK == 0:
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        G = heat.initial(n)(i, j)
        same = np.array_equal(field, serial(heat_step_2d_numpy, G, steps, False, alpha))
        err = float(np.max(np.abs(field - heat.exact(n, steps, alpha))))
    parallel_assert(same, "bitwise equal to the serial NumPy scheme")
    parallel_assert(err < 1e-13, f"error against the exact discrete solution {err}")
