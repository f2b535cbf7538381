"""DistArray on 1..4 ranks, compared with NumPy on the global array."""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import (
    ConfigError,
    DTypeError,
    KernelSignatureError,
    RankCountError,
    ShapeError,
)
from parcomp.testing import parallel_assert
from tests.helpers import expected_buffer as _expected

SIZE = MPI.COMM_WORLD.size
RANK = MPI.COMM_WORLD.rank


def global_field(shape, dtype=np.float64):
    data = np.arange(np.prod(shape)).reshape(shape) * 7 % 23
    return data.astype(dtype)


def expected_buffer(arr, G, corners, fill):
    """What arr.local must hold after an exchange, from the global array G."""
    return _expected(arr.partition, arr.rank, arr.halo, corners, G, fill)


@pytest.mark.parametrize("shape", [(11,), (9, 7), (5, 6, 7)])
@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.complex128, np.float32])
def test_scatter_gather_roundtrip(shape, dtype):
    G = global_field(shape, dtype)
    arr = DistArray.from_global(G if RANK == 0 else None, halo=1)
    parallel_assert(np.array_equal(arr.interior, G[arr.partition.local_slices(RANK)]))
    back = arr.gather(root=0)
    if RANK == 0:
        parallel_assert(back.dtype == G.dtype and np.array_equal(back, G), "roundtrip")
    else:
        parallel_assert(back is None)


def test_gather_to_other_root():
    G = global_field((8, 6))
    root = SIZE - 1
    arr = DistArray.from_global(G if RANK == root else None, root=root)
    back = arr.gather(root=root)
    parallel_assert(np.array_equal(back, G) if RANK == root else back is None)


@pytest.mark.parametrize("shape", [(12,), (8, 9), (6, 5, 4)])
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("corners", [False, True])
def test_exchange_halos(shape, periodic, corners):
    G = global_field(shape)
    arr = DistArray.from_global(G if RANK == 0 else None, halo=1, periods=periodic)
    arr.fill_boundary(-5.0)
    arr.exchange_halos(corners=corners)
    want = expected_buffer(arr, G, corners, fill=0.0)
    # ghost cells outside a non-periodic domain hold the boundary value
    mask = _outside_domain(arr)
    want[mask] = -5.0
    parallel_assert(np.array_equal(arr.local, want), f"rank {RANK} buffer differs")
    # and again: buffers and datatypes are reused from exchange to exchange
    arr.interior[...] += 1
    arr.exchange_halos(corners=corners)
    want2 = expected_buffer(arr, G + 1, corners, fill=0.0)
    want2[mask] = -5.0
    parallel_assert(np.array_equal(arr.local, want2), "second exchange")


def _outside_domain(arr):
    mask = np.zeros(arr.local.shape, bool)
    for axis, (h, per) in enumerate(zip(arr.halo, arr.partition.periods, strict=True)):
        if per or h == 0:
            continue
        start, stop = arr.local_range[axis]
        idx = [slice(None)] * arr.ndim
        if start == 0:
            idx[axis] = slice(0, h)
            mask[tuple(idx)] = True
        if stop == arr.global_shape[axis]:
            idx[axis] = slice(arr.local.shape[axis] - h, None)
            mask[tuple(idx)] = True
    return mask


def test_wide_halo_and_split_exchange():
    shape = (4 * SIZE + 4, 9)
    G = global_field(shape)
    arr = DistArray.from_global(G if RANK == 0 else None, halo=(2, 2), periods=True, dims=(SIZE, 1))
    arr.start_exchange(corners=True)
    arr.finish_exchange(corners=True)
    parallel_assert(np.array_equal(arr.local, expected_buffer(arr, G, True, 0.0)))


def test_constructors_and_reductions():
    shape = (10, 7)
    z = DistArray.zeros(shape, halo=1)
    f = DistArray.full(shape, 2.5, np.float32)
    g = DistArray.fromfunction(lambda i, j: i * 100 + j, shape, dtype=np.int64)
    ref = np.fromfunction(lambda i, j: i * 100 + j, shape, dtype=np.int64)
    back = g.gather(0)
    parallel_assert(np.array_equal(back, ref) if RANK == 0 else back is None)
    parallel_assert(z.sum() == 0 and f.sum() == 2.5 * 70)
    parallel_assert(g.sum() == ref.sum() and g.min() == ref.min() and g.max() == ref.max())
    parallel_assert(isinstance(g.sum(), np.integer))
    c = g.copy()
    c.interior[...] = 0
    parallel_assert(g.sum() == ref.sum() and c.sum() == 0, "copy is independent")
    h = DistArray.fromfunction(lambda i, j: 1.0, shape)  # scalar broadcast
    parallel_assert(h.sum() == 70.0)


def test_tags_of_two_arrays_do_not_mix():
    a = DistArray.fromfunction(lambda i: i * 1.0, (12,), halo=1, periods=True)
    b = DistArray.fromfunction(lambda i: -i * 1.0, (12,), halo=1, periods=True)
    a.start_exchange()
    b.start_exchange()
    b.finish_exchange()
    a.finish_exchange()
    ga = np.arange(12.0)
    parallel_assert(np.array_equal(a.local, expected_buffer(a, ga, False, 0.0)))
    parallel_assert(np.array_equal(b.local, expected_buffer(b, -ga, False, 0.0)))


# ------------------------------------------------------------------ bad input, on all ranks
def test_halo_wider_than_block():
    with pytest.raises(ShapeError, match="wider than the smallest block"):
        DistArray.zeros((SIZE * 2,), halo=3)


@pytest.mark.parametrize("shape", [(0, 4), (-1,), ()])
def test_nonpositive_sizes(shape):
    with pytest.raises(ShapeError, match="global_shape"):
        DistArray.zeros(shape)


def test_more_ranks_than_cells():
    if SIZE == 1:
        pytest.skip("needs 2 ranks to have more ranks than cells")
    with pytest.raises(RankCountError, match="without empty blocks"):
        DistArray.zeros((SIZE - 1,))


def test_bad_dtype():
    with pytest.raises(DTypeError, match="numeric or bool dtype, got <U1"):
        DistArray.zeros((4,), "U1")


def test_from_global_wrong_shape_and_dtype():
    G = np.zeros((6, 6))
    with pytest.raises(
        ShapeError, match=r"array has shape \(6, 6\), expected global_shape \(6, 5\)"
    ):
        DistArray.from_global(G if RANK == 0 else None, global_shape=(6, 5))
    with pytest.raises(DTypeError, match="array has dtype float64, expected int32"):
        DistArray.from_global(G if RANK == 0 else None, dtype=np.int32)
    with pytest.raises(DTypeError, match="needs a numpy array, got list"):
        DistArray.from_global([[1.0]] if RANK == 0 else None)
    with pytest.raises(DTypeError, match="numeric or bool dtype"):
        DistArray.from_global(np.array(["a", "b"], dtype=object) if RANK == 0 else None)


def test_arguments_differ_between_ranks():
    if SIZE == 1:
        pytest.skip("needs 2 ranks")
    with pytest.raises(ConfigError, match="differ between ranks"):
        DistArray.zeros((8, 8 + (RANK == SIZE - 1)))


def test_fromfunction_wrong_shape():
    with pytest.raises(ShapeError, match="fromfunction: function returned shape"):
        DistArray.fromfunction(lambda i, j: np.zeros(5), (8, 6))


def test_fromfunction_error_on_one_rank_reaches_all():
    def f(i, j):
        if RANK == SIZE - 1:
            raise ZeroDivisionError("bad cell")
        return i + j

    with pytest.raises(ZeroDivisionError, match="bad cell"):
        DistArray.fromfunction(f, (8, 8))
    parallel_assert(True)  # nobody was left behind in a collective


def test_run_stencil_mismatched_arrays():
    from parcomp.kernels import heat_step_2d

    a = DistArray.zeros((8, 8), halo=1)
    b = DistArray.zeros((8, 10), halo=1)
    c = DistArray.zeros((8, 8), halo=1, dtype=np.int8)
    with pytest.raises(ShapeError, match="decomposed differently"):
        run_stencil(heat_step_2d, a, b, 0.1)
    with pytest.raises(KernelSignatureError, match="different arrays"):
        run_stencil(heat_step_2d, a, a, 0.1)
    with pytest.raises(KernelSignatureError, match="must be a DistArray"):
        run_stencil(heat_step_2d, a, np.zeros((10, 10)), 0.1)
    with pytest.raises(
        KernelSignatureError, match="kernel 'heat_step_2d' does not compile for the arguments given"
    ):
        run_stencil(heat_step_2d, a, c, "hot")
    parallel_assert(True)


def test_default_comm_used():
    arr = DistArray.zeros((8,))
    parallel_assert(MPI.Comm.Compare(arr.comm, parcomp.default_comm()) == MPI.IDENT)
