"""Fused DistArray algebra (parcomp.fused): the same results as the calls one by one."""

import contextlib

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.runtime.errors import ShapeError
from parcomp.testing import parallel_assert

pytestmark = pytest.mark.mpi(min_size=1)


def fields(shape=(37, 29), halo=1, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        values = rng.standard_normal(shape) * np.exp(rng.uniform(-20, 20, shape))
        out.append(parcomp.DistArray.from_global(values, halo=halo))
    return out


def whole(a):
    """The whole array on every rank."""
    return MPI.COMM_WORLD.bcast(a.gather(0))


def gathered(arrays):
    return [whole(a) for a in arrays]


@pytest.mark.parametrize("shape", [(37, 29), (501,), (9, 11, 7)], ids=["2d", "1d", "3d"])
def test_cg_update_fused_is_bitwise_the_eager_one(shape):
    eager = fields(shape)
    lazy = [a.copy() for a in eager]
    alpha, rs = 0.37, 2.5

    def step(x, r, p, q, fused):
        if fused:
            with parcomp.fused():
                x.axpy(alpha, p)
                r.axpy(-alpha, q)
                rr = r.dot(r, deterministic=True)
                pq = p.dot(q)
                total = x.sum(deterministic=True)
            p *= float(rr) / rs
            with parcomp.fused():
                p *= 0.5
                p += r
                p -= 3.0
                p /= 1.5
                n = p.norm(deterministic=True)
        else:
            x.axpy(alpha, p)
            r.axpy(-alpha, q)
            rr = r.dot(r, deterministic=True)
            pq = p.dot(q)
            total = x.sum(deterministic=True)
            p *= rr / rs
            p *= 0.5
            p += r
            p -= 3.0
            p /= 1.5
            n = p.norm(deterministic=True)
        return float(rr), float(pq), float(total), float(n)

    want = step(*eager, fused=False)
    got = step(*lazy, fused=True)
    for a, b in zip(gathered(eager), gathered(lazy), strict=True):
        parallel_assert(a.tobytes() == b.tobytes(), "updates differ from the eager ones")
    parallel_assert(got[0] == want[0] and got[2] == want[2] and got[3] == want[3])
    parallel_assert(got[1] == pytest.approx(want[1], rel=1e-12, abs=1e-300))


def test_the_cg_updates_are_one_pass_each():
    from parcomp.arrays.fused import recording

    x, r, p, q = fields(seed=4)
    with parcomp.fused():
        program = recording()
        x.axpy(0.5, p)
        r.axpy(-0.5, q)
        rr = r.dot(r, deterministic=True)
    parallel_assert(program.passes == 1, f"{program.passes} passes")
    with parcomp.fused():
        program = recording()
        p *= float(rr) / 3.0
        p += r
        n = p.norm()
        s = p.sum()
    parallel_assert(program.passes == 1 and float(n) > 0 and np.isfinite(float(s)))


def test_a_reduction_sees_the_values_at_its_place():
    x, _, _, _ = fields(seed=1)
    ref = whole(x)
    with parcomp.fused():
        before = x.sum(deterministic=True)
        x *= 2.0
        after = x.sum(deterministic=True)
    from parcomp.runtime.exactsum import exact_sum

    parallel_assert(float(before) == exact_sum(ref))
    parallel_assert(float(after) == exact_sum(ref * 2.0))


def test_using_a_value_inside_the_block_runs_what_is_recorded():
    x, y, _, _ = fields(seed=2)
    ref_x, ref_y = whole(x), whole(y)
    with parcomp.fused():
        y.axpy(2.0, x)
        d = y.dot(y, deterministic=True)
        x *= float(d) > 0  # uses the value: the pass runs here
        y += x
    from parcomp.runtime.exactsum import exact_sum

    yy = ref_y + 2.0 * ref_x
    parallel_assert(float(d) == exact_sum(yy * yy))
    parallel_assert(np.array_equal(whole(y), yy + ref_x * 1.0))


def test_anything_else_touching_the_data_sees_the_updates():
    x, y, _, _ = fields(seed=3)
    ref = whole(x)
    with parcomp.fused():
        x *= 3.0
        local = x.interior.copy()  # the buffer is read: the recorded update runs first
        z = x + y  # a ufunc: also after the update
    mine = ref[tuple(slice(a, b) for a, b in x.local_range)]
    parallel_assert(np.array_equal(local, mine * 3.0))
    parallel_assert(np.array_equal(whole(z), ref * 3.0 + whole(y)))
    parallel_assert(type(x) is parcomp.DistArray)


def test_arrays_decomposed_differently_are_refused_on_every_rank():
    comm = MPI.COMM_WORLD
    a = parcomp.DistArray.zeros((12, 8))
    b = parcomp.DistArray.zeros((12, 9))
    with pytest.raises(ShapeError, match="decomposed differently"):
        with parcomp.fused():
            a.axpy(1.0, a)
            b.axpy(1.0, a)
    comm.Barrier()


def test_other_dtypes_run_at_once():
    a = parcomp.DistArray.from_global(np.arange(40, dtype=np.int64).reshape(8, 5))
    with parcomp.fused():
        a += 2
        total = a.sum()
    parallel_assert(int(total) == int(np.arange(40).sum() + 80))


@parcomp.stencil(radius=1, reads=("p",), writes=("q",))
def _laplace(p, q):
    for i in range(1, p.shape[0] - 1):
        for j in range(1, p.shape[1] - 1):
            q[i, j] = 4 * p[i, j] - p[i - 1, j] - p[i + 1, j] - p[i, j - 1] - p[i, j + 1]


def test_stencils_and_exchanges_in_a_block_see_the_updates():
    """A halo exchange keeps its requests on the buffer (it does not read .local again):
    the stencil and the exchange run what is recorded first (hostile review)."""
    results = []
    for fused in (False, True):
        p = parcomp.DistArray.fromfunction(lambda i, j: i * 1.0 + j, (24, 16), halo=1)
        q = p.zeros_like()
        for _ in range(2):  # the second call takes the cached fast path
            with parcomp.fused() if fused else contextlib.nullcontext():
                p *= 2.0
                parcomp.run_stencil(_laplace, p, q)
                p += 100.0
                p.exchange_halos()
                ghosts = p.local.copy()
        results.append((whole(q), ghosts))
    parallel_assert(np.array_equal(results[0][0], results[1][0]))
    parallel_assert(np.array_equal(results[0][1], results[1][1]))


def test_blocks_reentered_printed_and_mixed_with_other_grids():
    x = parcomp.DistArray.fromfunction(lambda i, j: 1.0 + 0 * i, (8, 8))
    other = parcomp.DistArray.zeros((6, 6))
    block = parcomp.fused()
    with block:
        with block:  # the same object nested: the outer exit still runs and ends the block
            x += 1.0
        other += 3.0  # another grid: the stretch so far runs, a new one starts
        d = x.dot(x)
    from parcomp.arrays.fused import recording

    parallel_assert(recording() is None and type(x) is parcomp.DistArray)
    parallel_assert(str(d) == str(4.0 * 64) and repr(d) == f"Deferred({4.0 * 64!r})")
    parallel_assert(float(whole(other).sum()) == 3.0 * 36)
    with parcomp.fused():
        y = x * d + d  # a Deferred is a number where a DistArray wants one
        z = x.copy()
        w = x.zeros_like()
    parallel_assert(np.allclose(whole(y), 2.0 * 256 + 256))
    parallel_assert(type(z) is parcomp.DistArray and type(w) is parcomp.DistArray)


def test_what_outside_a_block_raises_or_rounds_differently_runs_at_once():
    x = parcomp.DistArray.fromfunction(lambda i, j: 1.0 + i * 0.1 + j, (8, 8))
    with pytest.raises(AttributeError):
        with parcomp.fused():
            x.axpy(2.0, 3.0)  # a scalar x: the error axpy gives outside a block
    eager, lazy = x.copy(), x.copy()
    third = np.longdouble(1) / 3
    eager *= third
    with parcomp.fused():
        lazy *= third  # long double: NumPy keeps it wide; the loop would round it first
    parallel_assert(np.array_equal(whole(eager), whole(lazy)))
