"""Issue "no silent wrong answers, round two": each ordinary mistake a new user made that
gave a wrong answer with no error, now refused or right.  Run on 1-4 ranks.

Each test names what today's code (before this change) did instead.
"""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.array import DistArray
from parcomp.declared import run_stencil
from parcomp.errors import KernelSignatureError
from parcomp.testing import parallel_assert

RANK = MPI.COMM_WORLD.rank
SIZE = MPI.COMM_WORLD.size


# ---------------------------------------------------------------- 1. stores into read fields
def _store_into_read(u, out):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]
            u[i, j] = 0.5 * u[i, j]


def _augmented_store(u, out):
    for i in range(1, u.shape[0] - 1):
        out[i] = u[i - 1] + u[i + 1]
        u[i] *= 0.5


def _store_through_alias(u, out):
    w = u[1:-1]
    for i in range(1, u.shape[0] - 1):
        out[i] = u[i - 1] + u[i + 1]
        w[i - 1] = 0.0


def _store_through_chain(u, out, a):
    v = u
    w = v.T
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = a * (u[i - 1, j] + u[i + 1, j])
            w[j, i] = out[i, j]


@pytest.mark.parametrize(
    "kernel, where",
    [
        (_store_into_read, r"u\[i, j\] = 0.5"),
        (_augmented_store, r"u\[i\] \*= 0.5"),
        (_store_through_alias, r"w\[i - 1\] = 0.0"),
        (_store_through_chain, r"w\[j, i\] = out"),
    ],
    ids=["plain", "augmented", "alias", "alias-chain"],
)
def test_store_into_a_read_field_is_refused_at_declaration(kernel, where):
    # was: ran, 93.075 on 1 rank, 94.511 on 2, 95.856 on 3 (also overlap=True and steps=2)
    with pytest.raises(KernelSignatureError, match=rf"u is read with its neighbours.*{where}"):
        parcomp.stencil(radius=1)(kernel)
    with pytest.raises(KernelSignatureError, match="stores into it"):
        parcomp.stencil(radius=1, corners=True)(kernel)
    parallel_assert(True)


def test_radius_zero_and_pointwise_keep_in_place_updates():
    @parcomp.stencil(radius=0, reads=("u",), writes=("out",))
    def scale(u, out):
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                out[i, j] = 2.0 * u[i, j]
                u[i, j] = 0.0

    @parcomp.stencil(radius=1, reads=("u",), writes=("out", "old"), pointwise=("old",))
    def leap(u, out, old):
        for i in range(1, u.shape[0] - 1):
            for j in range(1, u.shape[1] - 1):
                out[i, j] = u[i - 1, j] + u[i + 1, j] - old[i, j]
                old[i, j] = u[i, j]

    u = DistArray.fromfunction(lambda i, j: i + 0.5 * j, (9, 7), halo=1)
    out = u.zeros_like()
    run_stencil(scale, u, out)
    i, j = np.meshgrid(np.arange(9), np.arange(7), indexing="ij")
    got = out.gather()
    parallel_assert(RANK != 0 or np.array_equal(got, 2.0 * (i + 0.5 * j)))
    parallel_assert(u.max() == 0.0 and u.min() == 0.0)
    assert leap.spec.pointwise == ("old",)


# ---------------------------------------------------------------- 4. FFT metadata travels
def test_rfftn_result_knows_its_frequencies():
    # was: frequencies(F) of an rfftn result gave fftfreq values (negatives too) on the
    # halved axis, silently
    from parcomp import fft

    shape = (6, 8, 9)  # an odd halved axis
    g = np.random.default_rng(3).standard_normal(shape)
    a = DistArray.from_global(g if RANK == 0 else None)
    F = fft.rfftn(a)
    fx, fy, fz = fft.frequencies(F, spacing=(0.5, 1.0, 2.0))
    (lx, hx), (ly, hy), (lz, hz) = F.local_range
    ok = (
        np.array_equal(fz.ravel(), np.fft.rfftfreq(9, 2.0)[lz:hz])
        and np.array_equal(fx.ravel(), np.fft.fftfreq(6, 0.5)[lx:hx])
        and np.array_equal(fy.ravel(), np.fft.fftfreq(8, 1.0)[ly:hy])
    )
    parallel_assert(ok, "frequencies of an rfftn result")
    # kept by arithmetic, zeros_like and redistribute; angular=True gives 2 pi f
    W = 1j * F
    kz = fft.frequencies(W.redistribute(), angular=True)[2]
    parallel_assert(bool(np.all(kz >= 0)), "angular wavenumbers of the halved axis")
    kz0 = fft.frequencies(F.zeros_like(), angular=True)[2]
    parallel_assert(np.allclose(kz0, 2 * np.pi * np.fft.rfftfreq(9)[lz:hz].reshape(1, 1, -1)))
    # irfftn round-trips the odd length without s=
    back = fft.irfftn(F, out_dims=a.partition.dims).gather()
    parallel_assert(RANK != 0 or (back.shape == shape and np.allclose(back, g, atol=1e-12)))
    # a shape contradicting the transform, or no metadata at all, is refused
    with pytest.raises(parcomp.errors.ShapeError, match="transform of a"):
        fft.frequencies(F, shape=(6, 8, 10))
    with pytest.raises(parcomp.errors.ShapeError, match="pass shape="):
        fft.frequencies(DistArray.zeros((6, 8, 5), dtype=np.complex128))
    parallel_assert(True)
