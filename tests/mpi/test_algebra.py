"""DistArray vector algebra on 1..4 ranks against NumPy on the gathered arrays."""

import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import ShapeError
from parcomp.runtime.exactsum import exact_sum
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size
SHAPE = (13, 7)
A = np.random.default_rng(1).standard_normal(SHAPE)
B = np.random.default_rng(2).standard_normal(SHAPE)


def dist(G, **kw):
    return DistArray.from_global(
        G if RANK == 0 else None, global_shape=G.shape, dtype=G.dtype, **kw
    )


def same(d, G):
    full = d.gather(0)
    return np.array_equal(full, G) if RANK == 0 else True


def test_arithmetic_and_ufuncs_are_local_and_match_numpy():
    a, b = dist(A, halo=1), dist(B)
    c = a * 2.0 + b / 3.0 - 1
    parallel_assert(isinstance(c, DistArray) and c.halo == (1, 1))
    parallel_assert(same(c, A * 2.0 + B / 3.0 - 1))
    parallel_assert(same(np.exp(a), np.exp(A)))
    parallel_assert(same(a > b, A > B) and (a > b).dtype == np.bool_)
    out = a.zeros_like()
    r = np.add(a, b, out=out)
    parallel_assert(r is out and same(out, A + B))
    parallel_assert(same(-a, -A) and same(abs(a), np.abs(A)) and same(a**2, A**2))
    q, m = np.divmod(a, 0.5)
    parallel_assert(same(q, np.divmod(A, 0.5)[0]) and same(m, np.divmod(A, 0.5)[1]))
    i = dist(np.arange(91).reshape(SHAPE))
    parallel_assert(same(i + 1, np.arange(91).reshape(SHAPE) + 1) and (i + 1).dtype == i.dtype)
    a.axpy(0.5, b)
    parallel_assert(same(a, A + 0.5 * B))


def test_in_place_operators_match_numpy_and_check_like_ufuncs():
    a, b = dist(A, halo=1), dist(B)
    a *= 0.25
    a += b
    a -= 2
    a /= 3.0
    parallel_assert(same(a, ((A * 0.25 + B) - 2) / 3.0))
    a.axpy(-1.5, b)  # the compiled pass: the same bits as NumPy's y + (alpha * x)
    parallel_assert(same(a, ((A * 0.25 + B) - 2) / 3.0 + (-1.5 * B)))
    i = dist(np.arange(91).reshape(SHAPE))
    with pytest.raises(TypeError):
        i += b  # float into int: refused by same-kind casting, as in NumPy
    with pytest.raises(ShapeError, match="decomposed differently"):
        a += DistArray.zeros((7, 13))
    if SIZE > 1:  # a global-shaped NumPy array is not this rank's block (issue 24)
        with pytest.raises(ShapeError, match="must hold this rank's block"):
            a += np.ones(SHAPE)
    with pytest.raises(TypeError, match="not with a list"):
        a += [1.0, 2.0]
    parallel_assert(True)


def test_misuse_raises_clearly():
    a = dist(A)
    with pytest.raises(TypeError, match="gather"):
        np.asarray(a)
    if SIZE > 1:
        with pytest.raises(ShapeError, match=r"NumPy array of shape \(13, 7\)"):
            a + np.ones(SHAPE)
    other = DistArray.zeros((7, 13))
    with pytest.raises(ShapeError, match="decomposed differently"):
        a + other
    with pytest.raises(TypeError, match="collective reductions"):
        np.add.reduce(a)
    with pytest.raises(TypeError, match="global integer indices"):
        a[1:3]
    with pytest.raises(IndexError):
        a[13, 0]
    parallel_assert(True)


def test_reductions_match_numpy():
    a, b = dist(A), dist(B)
    parallel_assert(np.isclose(a.dot(b), np.sum(A * B)))
    parallel_assert(np.isclose(a.norm(), np.linalg.norm(A)))
    parallel_assert(np.isclose(a.norm(1), np.abs(A).sum()) and a.norm(np.inf) == np.abs(A).max())
    parallel_assert(np.isclose(a.sum(), A.sum()) and np.isclose(a.mean(), A.mean()))
    parallel_assert(a.min() == A.min() and a.max() == A.max())
    for axis in (0, 1, (0, 1), -1):
        parallel_assert(np.allclose(a.sum(axis=axis), A.sum(axis=axis)), f"sum axis {axis}")
        parallel_assert(np.array_equal(a.min(axis=axis), A.min(axis=axis)), f"min axis {axis}")
        parallel_assert(np.array_equal(a.max(axis=axis), A.max(axis=axis)), f"max axis {axis}")
        parallel_assert(np.allclose(a.mean(axis=axis), A.mean(axis=axis)), f"mean axis {axis}")
    z = dist(A + 1j * B)
    parallel_assert(np.isclose(z.vdot(z), np.vdot(A + 1j * B, A + 1j * B)))


def test_deterministic_reductions_are_exact_and_rank_count_independent():
    a, b = dist(A * 1e10), dist(B)
    want_dot = exact_sum((A * 1e10) * B)
    parallel_assert(a.dot(b, deterministic=True) == want_dot)
    parallel_assert(a.sum(deterministic=True) == exact_sum(A * 1e10))
    parallel_assert(a.norm(deterministic=True) == float(np.sqrt(exact_sum((A * 1e10) ** 2))))


def test_global_indexing_and_regions():
    a = dist(A)
    parallel_assert(a[3, 4] == A[3, 4] and a[-1, -1] == A[-1, -1])
    a[5, 6] = 42.0
    parallel_assert(a[5, 6] == 42.0)
    G = A.copy()
    G[5, 6] = 42.0
    parallel_assert(np.array_equal(a.get((slice(2, 11), slice(1, 6))), G[2:11, 1:6]))
    parallel_assert(np.array_equal(a.get((slice(None), slice(3, 4))), G[:, 3:4]))
    special = np.ones((8, 8))
    special[0, 0], special[7, 7] = -0.0, np.nan
    got = dist(special).get((slice(None), slice(None)))
    parallel_assert(np.signbit(got[0, 0]) and np.isnan(got[7, 7]), "exact bits, -0.0 and nan")
