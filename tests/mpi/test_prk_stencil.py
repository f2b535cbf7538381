"""The PRK star stencil job: bitwise the serial NumPy reference for any k, tile and rank
count, and the PRK verification value."""

import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from parcomp.kernels import prk_star2_numpy
from parcomp.testing import parallel_assert

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))

import prk_stencil

COMM = MPI.COMM_WORLD


@pytest.mark.parametrize("k,tile", [(1, 0), (3, None), (4, 5), (2, (3, 0))])
def test_prk_fields_equal_serial_numpy_bitwise(k, tile):
    n, iterations = 37, 7
    fields = prk_stencil.setup(n, k)
    fields = prk_stencil.iterate(fields, iterations + 1, k, tile)
    inp, out = fields[0].gather(), fields[1].gather()
    if COMM.rank == 0:
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        ref_in = (i + j).astype(np.float64)
        ref_out = prk_star2_numpy(ref_in, np.zeros((n, n)), iterations)
        ok = np.array_equal(out, ref_out) and np.array_equal(inp, ref_in)
    else:
        ok = True
    parallel_assert(ok, f"PRK k={k} tile={tile} differs from serial NumPy", comm=COMM)
    mean = prk_stencil.norm(fields[1], fields[2])
    parallel_assert(
        abs(mean - (iterations + 1) * 2.0) < 1e-8 * (iterations + 1) * 2.0,
        f"PRK verification failed: {mean}",
        comm=COMM,
    )
