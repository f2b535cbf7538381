"""parcomp.arrays.fft on 1..4 ranks against numpy.fft of the gathered array (1e-12 relative)."""

import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays import fft
from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import ConfigError, DTypeError, RankCountError, ShapeError
from parcomp.testing import parallel_assert

SIZE = MPI.COMM_WORLD.size
RANK = MPI.COMM_WORLD.rank


@pytest.fixture(params=["scipy", "numpy"], autouse=True)
def backend(request):
    """Every test with scipy.fft (the default) and with numpy.fft for the local transforms."""
    fft.set_backend(request.param)
    yield request.param
    fft.set_backend()


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def field(shape, complex_=False, seed=3):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal(shape)
    if complex_:
        G = G + 1j * rng.standard_normal(shape)
    return G


def check_block(out, ref, tol=1e-12):
    """Each rank's block of ``out`` equals ``ref`` there, and the gathered whole does."""
    parallel_assert(out.global_shape == ref.shape, f"{out.global_shape} != {ref.shape}")
    mine = ref[out.partition.local_slices(RANK)]
    parallel_assert(rel(out.interior, mine) < tol or mine.size == 0, "block differs")
    whole = out.gather()
    if RANK == 0:
        parallel_assert(rel(whole, ref) < tol, f"relative error {rel(whole, ref):.2e}")
    else:
        parallel_assert(whole is None)


SHAPES = [(8, 6), (7, 9), (6, 5, 4), (8, 8, 8), (5, 7, 9)]


def grids_for(shape):
    out = [None]
    if len(shape) == 3 and SIZE == 4:
        out.append((2, 2, 1))
    if SIZE > 1:
        out.append(
            (1,) * (len(shape) - 1) + (SIZE,)
        )  # the last axis split: first transform needs a transpose
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("complex_", [False, True])
def test_fftn_and_ifftn_equal_numpy(shape, complex_):
    G = field(shape, complex_)
    for dims in grids_for(shape):
        a = DistArray.from_global(G if RANK == 0 else None, dims=dims, halo=1)
        F = fft.fftn(a)
        check_block(F, np.fft.fftn(G))
        back = fft.ifftn(F, dims=a.partition.dims)
        parallel_assert(back.partition.dims == a.partition.dims)
        check_block(back, G.astype(complex))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rfftn_and_irfftn_equal_numpy(shape):
    G = field(shape)
    for dims in grids_for(shape):
        a = DistArray.from_global(G if RANK == 0 else None, dims=dims)
        F = fft.rfftn(a)
        check_block(F, np.fft.rfftn(G))
        back = fft.irfftn(F, s=shape, dims=a.partition.dims)
        parallel_assert(back.dtype == np.float64)
        check_block(back, G)


@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
@pytest.mark.parametrize("axes", [(0,), (1,), (0, 2), (2, 1)])
def test_axes_and_norm(norm, axes):
    G = field((6, 5, 8), True)
    a = DistArray.from_global(G if RANK == 0 else None)
    check_block(fft.fftn(a, axes=axes, norm=norm), np.fft.fftn(G, axes=axes, norm=norm))
    check_block(fft.ifftn(a, axes=axes, norm=norm), np.fft.ifftn(G, axes=axes, norm=norm))
    R = G.real.copy()
    r = DistArray.from_global(R if RANK == 0 else None)
    check_block(fft.rfftn(r, axes=axes, norm=norm), np.fft.rfftn(R, axes=axes, norm=norm))


def test_float32_stays_single_precision():
    G = field((8, 8)).astype(np.float32)
    a = DistArray.from_global(G if RANK == 0 else None)
    F = fft.fftn(a)
    parallel_assert(F.dtype == np.complex64, f"{F.dtype}")
    check_block(F, np.fft.fftn(G), tol=1e-5)


def test_frequencies_match_numpy():
    shape = (8, 6, 7)
    G = field(shape)
    a = DistArray.from_global(G if RANK == 0 else None)
    F = fft.fftn(a)
    fx, _fy, fz = fft.frequencies(F, spacing=(0.5, 1.0, 2.0))
    want = np.meshgrid(
        np.fft.fftfreq(8, 0.5), np.fft.fftfreq(6, 1.0), np.fft.fftfreq(7, 2.0), indexing="ij"
    )
    sl = F.partition.local_slices(RANK)
    parallel_assert(np.array_equal(np.broadcast_to(fx, F.local_shape), want[0][sl]))
    parallel_assert(np.array_equal(np.broadcast_to(fz, F.local_shape), want[2][sl]))
    R = fft.rfftn(a)
    rz = fft.frequencies(R, shape=shape)[2]
    lo, hi = R.local_range[2]
    parallel_assert(np.array_equal(rz.ravel(), np.fft.rfftfreq(7)[lo:hi]))


def test_bad_input_raises_on_every_rank():
    a = DistArray.from_global(field((6, 6), True) if RANK == 0 else None)
    with pytest.raises(DTypeError, match="real array"):
        fft.rfftn(a)
    r = DistArray.from_global(field((6, 6)) if RANK == 0 else None)
    with pytest.raises(DTypeError, match="complex array"):
        fft.irfftn(r)
    with pytest.raises(ShapeError, match="out of range"):
        fft.fftn(a, axes=(2,))
    with pytest.raises(ShapeError, match="repeat"):
        fft.fftn(a, axes=(0, 0))
    with pytest.raises(ShapeError, match="norm"):
        fft.fftn(a, norm="sideways")
    with pytest.raises(ShapeError, match="does not match"):
        fft.irfftn(fft.rfftn(r), s=(6, 9))
    with pytest.raises(DTypeError, match="DistArray"):
        fft.fftn(np.zeros((4, 4)))


@pytest.mark.skipif(SIZE < 2, reason="a 1-d array is whole on one rank")
def test_1d_on_several_ranks_raises():
    a = DistArray.from_global(field((12,)) if RANK == 0 else None)
    with pytest.raises(RankCountError, match="whole"):
        fft.fftn(a)


@pytest.mark.skipif(SIZE < 2, reason="needs ranks that disagree")
def test_arguments_that_differ_between_ranks_raise_everywhere():
    a = DistArray.from_global(field((6, 6, 4), True) if RANK == 0 else None)
    with pytest.raises(ConfigError, match="differ between ranks"):
        fft.fftn(a, norm="ortho" if RANK else None)
    with pytest.raises(ConfigError, match="differ between ranks"):
        fft.fftn(a, axes=[0] if RANK else [1])
    r = DistArray.from_global(field((12, 11)) if RANK == 0 else None)
    F = fft.rfftn(r)
    with pytest.raises(ConfigError, match="differ between ranks"):
        fft.irfftn(F, s=(12, 10) if RANK == 0 else (12, 11))


@pytest.mark.skipif(SIZE != 4, reason="4 ranks: (7, 5) halves to (7, 3)")
def test_a_shape_that_cannot_be_made_into_pencils_names_the_users_shape():
    r = DistArray.from_global(field((7, 5)) if RANK == 0 else None)
    with pytest.raises(RankCountError, match=r"rfftn of a \(7, 5\) array over 4 ranks"):
        fft.rfftn(r)


def test_the_users_array_is_never_overwritten(backend):
    """scipy transforms parcomp's own temporaries in place, never the input."""
    G = field((8, 6, 4), True)
    for dims in (None, (1,) * 2 + (SIZE,) if SIZE <= 4 else None):
        a = DistArray.from_global(G if RANK == 0 else None, dims=dims)
        before = a.local.copy()
        fft.fftn(a)
        fft.ifftn(a)
        r = DistArray.from_global(G.real.copy() if RANK == 0 else None, dims=dims)
        rbefore = r.local.copy()
        fft.rfftn(r)
        parallel_assert(np.array_equal(a.local, before) and np.array_equal(r.local, rbefore))
        F = fft.rfftn(r)
        Fbefore = F.local.copy()
        fft.irfftn(F, s=(8, 6, 4))
        parallel_assert(np.array_equal(F.local, Fbefore), "irfftn input kept")


def test_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="unknown FFT backend"):
        fft.set_backend("fftw")
