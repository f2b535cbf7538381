"""map / map_reduce / map_reduce_keyed on 1..4 ranks against serial Python and NumPy."""

import collections
import functools
import math
import operator

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import ConfigError, TaskError
from parcomp.testing import parallel_assert
from tests.helpers import reference_tree_sum

SIZE, RANK = MPI.COMM_WORLD.size, MPI.COMM_WORLD.rank
SCHEDULES = ["block", "cyclic", "dynamic"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("items", [range(0), range(1), range(37), list("abcdefg"), np.arange(20.0)])
def test_map_in_order(schedule, items):
    got = parcomp.map(lambda x: (x, 2 * x), items, schedule=schedule)
    parallel_assert(got == [(x, 2 * x) for x in items], f"{got}")


def test_map_generator_chunksize_and_root():
    got = parcomp.map(
        str, (i * i for i in range(50)), schedule="dynamic", chunksize=3, root=SIZE - 1
    )
    if RANK == SIZE - 1:
        parallel_assert(got == [str(i * i) for i in range(50)])
    else:
        parallel_assert(got is None)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(
    ("op", "mapper", "reference"),
    [
        ("sum", lambda x: x * x, lambda xs: sum(x * x for x in xs)),
        ("prod", lambda x: 1 + x % 3, lambda xs: math.prod(1 + x % 3 for x in xs)),
        ("min", lambda x: (x * 7) % 23, lambda xs: min((x * 7) % 23 for x in xs)),
        ("max", lambda x: (x * 7) % 23, lambda xs: max((x * 7) % 23 for x in xs)),
        ("land", lambda x: x < 1000, lambda xs: all(x < 1000 for x in xs)),
        ("lor", lambda x: x == 40, lambda xs: any(x == 40 for x in xs)),
        ("lxor", lambda x: x % 2 == 0, lambda xs: sum(x % 2 == 0 for x in xs) % 2 == 1),
        (
            "band",
            lambda x: x | 0xF0,
            lambda xs: functools.reduce(operator.and_, (x | 0xF0 for x in xs)),
        ),
        (
            "bor",
            lambda x: 1 << (x % 9),
            lambda xs: functools.reduce(operator.or_, (1 << (x % 9) for x in xs)),
        ),
        ("bxor", lambda x: x * 3, lambda xs: functools.reduce(operator.xor, (x * 3 for x in xs))),
        (
            "minloc",
            lambda x: ((x - 20) ** 2 % 17, x),
            lambda xs: min(((x - 20) ** 2 % 17, x) for x in xs),
        ),
        ("maxloc", lambda x: ((x * 5) % 11, x), lambda xs: min(((-((x * 5) % 11)), x) for x in xs)),
    ],
)
def test_builtin_reductions(schedule, op, mapper, reference):
    items = range(61)
    got = parcomp.map_reduce(mapper, items, op, schedule=schedule)
    want = reference(items)
    if op == "maxloc":
        want = (-want[0], want[1])
    parallel_assert(got == want, f"{op}: {got} != {want}")


@pytest.mark.parametrize("shape", [(5,), (300, 40)])  # small: gathered; 96 KB: buffer Allreduce
def test_elementwise_array_reductions(shape):
    def mapper(i):
        return np.random.default_rng(i).integers(-50, 50, shape)

    items = range(23)
    arrays = [mapper(i) for i in items]
    for op, fn in (("sum", np.add), ("max", np.maximum), ("min", np.minimum)):
        got = parcomp.map_reduce(mapper, items, op, schedule="cyclic")
        parallel_assert(np.array_equal(got, functools.reduce(fn, arrays)), op)
    got = parcomp.map_reduce(mapper, items, "sum", root=0)
    parallel_assert(np.array_equal(got, sum(arrays)) if RANK == 0 else got is None)


def test_custom_python_and_numba_reducers():
    got = parcomp.map_reduce(lambda x: [x], range(10), lambda a, b: a + b, schedule="block")
    parallel_assert(sorted(got) == list(range(10)))

    @parcomp.jit
    def hypot(a, b):
        return math.sqrt(a * a + b * b)

    got = parcomp.map_reduce(float, range(1, 30), hypot, schedule="dynamic")
    want = math.sqrt(sum(x * x for x in range(1, 30)))
    parallel_assert(abs(got - want) < 1e-9 * want, f"{got} vs {want}")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_deterministic_sum_is_bitwise_rank_independent(schedule):
    n = 5003
    rng = np.random.default_rng(7)
    values = (rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12, n)).tolist()
    got = parcomp.map_reduce(
        values.__getitem__, range(n), "sum", schedule=schedule, deterministic=True
    )
    want = reference_tree_sum(values, math.ceil(n / 256))
    parallel_assert(got == want, f"{got!r} != {want!r}")
    # arrays too, with an explicit leaf size
    arr = parcomp.map_reduce(
        lambda i: np.full(3, values[i]),
        range(n),
        "sum",
        schedule=schedule,
        deterministic=True,
        chunksize=10,
    )
    parallel_assert(np.array_equal(arr, np.full(3, reference_tree_sum(values, 10))))


def test_distarray_items():
    a = DistArray.fromfunction(lambda i, j: i * 10.0 + j, (9, 7))
    total = parcomp.map_reduce(np.sum, a)
    parallel_assert(total == np.fromfunction(lambda i, j: i * 10.0 + j, (9, 7)).sum())

    @parcomp.jit
    def block_max(block):
        return block.max()

    parallel_assert(parcomp.map_reduce(block_max, a, "max") == 86.0)
    shapes = parcomp.map(lambda b: b.shape, a)
    parallel_assert(shapes == [a.partition.local_shape(r) for r in range(SIZE)])
    with pytest.raises(ConfigError, match="deterministic=True is not available for DistArray"):
        parcomp.map_reduce(np.sum, a, deterministic=True)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_error_names_item_and_rank_on_every_rank(schedule):
    bad = 53

    def mapper(x):
        if x == bad:
            raise KeyError(f"no data for {x}")
        return x

    with pytest.raises(TaskError) as info:
        parcomp.map_reduce(mapper, range(80), schedule=schedule)
    err = info.value
    parallel_assert(
        err.index == bad and f"item {bad} ({bad})" in str(err) and "KeyError" in str(err)
    )
    parallel_assert(f"task failed on rank {err.rank} of {SIZE}" in str(err))
    parallel_assert("raise KeyError" in err.remote_traceback)
    # every rank agrees on where it failed, and the communicator still works
    parallel_assert(len(set(MPI.COMM_WORLD.allgather((err.rank, err.index)))) == 1)
    with pytest.raises(TaskError):
        parcomp.map(mapper, range(80), schedule=schedule)
    parallel_assert(parcomp.map_reduce(int, range(5)) == 10)


@pytest.mark.parametrize("deterministic", [False, True])
def test_reducer_error_reaches_every_rank(deterministic):
    def picky(a, b):
        if a + b > 100:
            raise OverflowError("too big")
        return a + b

    with pytest.raises(TaskError, match="OverflowError: too big"):
        parcomp.map_reduce(
            lambda x: x,
            range(40),
            picky,
            schedule="cyclic",
            chunksize=20,
            deterministic=deterministic,
        )
    parallel_assert(True)


def test_deterministic_reducer_error_only_in_the_tree_reaches_every_rank():
    """Each rank's own fold succeeds; only combining the ranks' partials fails (on the
    rank that evaluates the tree): every rank must raise, none may wait."""
    calls = {"n": 0}

    def picky(a, b):
        calls["n"] += 1
        if a > 1000 and b > 1000:
            raise OverflowError("too big to combine")
        return a + b

    if SIZE == 1:
        pytest.skip("the tree combines partials of several ranks")
    with pytest.raises(TaskError, match="too big to combine"):
        parcomp.map_reduce(
            lambda x: 2000,
            range(2 * SIZE),
            picky,
            schedule="block",
            chunksize=1,
            deterministic=True,
        )
    parallel_assert(parcomp.map_reduce(int, range(5), deterministic=True) == 10)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown schedule"):
        parcomp.map(str, range(3), schedule="guided")
    with pytest.raises(ConfigError, match="needs initial="):
        parcomp.map_reduce(int, range(0))
    parallel_assert(parcomp.map_reduce(int, range(0), initial=5) == 5)
    parallel_assert(parcomp.map_reduce(int, range(4), initial=5) == 11)


# --------------------------------------------------------------------------- keyed
TEXT = "it was the best of times it was the worst of times it was the age of wisdom".split()


def test_keyed_words_match_counter():
    got = parcomp.map_reduce_keyed(
        lambda i: [(w, 1) for w in TEXT[i % 5 :]], range(40), schedule="cyclic"
    )
    want = collections.Counter(w for i in range(40) for w in TEXT[i % 5 :])
    parallel_assert(got == dict(want) if RANK == 0 else got is None)


def test_keyed_distributed_result_partitions_keys():
    mine = parcomp.map_reduce_keyed(lambda i: [(i % 11, float(i))], range(200), "max", root=None)
    parts = MPI.COMM_WORLD.allgather(mine)
    keys = [k for p in parts for k in p]
    parallel_assert(len(keys) == len(set(keys)) == 11, "each key on exactly one rank")
    merged = {k: v for p in parts for k, v in p.items()}
    parallel_assert(
        merged == {k: float(max(i for i in range(200) if i % 11 == k)) for k in range(11)}
    )


def test_keyed_millions_of_skewed_pairs_vectorised():
    def mapper(i):
        rng = np.random.default_rng(i)
        keys = rng.integers(0, 5000, 250_000)
        keys[:200_000] = 42  # one hot key: 80 % of all pairs
        return keys, np.ones(keys.size, np.int64)

    got = parcomp.map_reduce_keyed(mapper, range(8))  # 2,000,000 pairs
    if RANK == 0:
        want = np.bincount(np.concatenate([mapper(i)[0] for i in range(8)]), minlength=5000)
        ok = len(got) == np.count_nonzero(want) and all(got[k] == want[k] for k in got)
        parallel_assert(ok and got[42] == want[42] >= 1_600_000)
    else:
        parallel_assert(got is None)


def test_keyed_float_and_tuple_keys():
    got = parcomp.map_reduce_keyed(lambda i: [(i / 4, i)], range(12), "sum", schedule="dynamic")
    parallel_assert(got == {i / 4: i for i in range(12)} if RANK == 0 else True)
    got = parcomp.map_reduce_keyed(lambda i: [((i % 2, "x"), i)], range(12), "sum")
    parallel_assert(got == {(0, "x"): 30, (1, "x"): 36} if RANK == 0 else True)


def test_keyed_error_on_every_rank():
    def mapper(i):
        if i == 9:
            raise ValueError("bad record")
        return [(i, 1)]

    with pytest.raises(TaskError, match=r"item 9 \(9\): ValueError: bad record"):
        parcomp.map_reduce_keyed(mapper, range(12))
    parallel_assert(True)
