"""map_reduce_keyed(max_shuffle_bytes=B): the shuffle in rounds within a memory budget.

Checked against collections.Counter / NumPy on the whole input (computed on every rank),
and against the same call without a budget.
"""

import collections
import re
import sys

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.mapreduce.shuffle import shuffle as _shuffle
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.reduce import resolve_op
from parcomp.testing import parallel_assert

SIZE, RANK = MPI.COMM_WORLD.size, MPI.COMM_WORLD.rank


def _words(i: int) -> list[str]:
    rng = np.random.default_rng(i)
    return [f"w{int(k)}-{'x' * int(k % 7)}" for k in rng.integers(0, 6000, 3000)]


def _status() -> dict[str, int]:
    text = open("/proc/self/status").read()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def test_word_count_ten_times_the_budget_matches_counter():
    items = range(24)
    want = collections.Counter(w for i in items for w in _words(i))
    plain = parcomp.map_reduce_keyed(lambda i: [(w, 1) for w in _words(i)], items, root=None)
    # every distinct word crosses the shuffle at least once, as a 16-byte record plus its
    # bytes: the shuffle per rank is on average at least total / SIZE >= 10 budgets
    total = MPI.COMM_WORLD.allreduce(sum(16 + len(w.encode()) for w in plain))
    budget = max(total // (10 * SIZE), 2 * SIZE * 64)
    got = parcomp.map_reduce_keyed(
        lambda i: [(w, 1) for w in _words(i)], items, root=None, max_shuffle_bytes=budget
    )
    merged = collections.Counter()
    for part in MPI.COMM_WORLD.allgather(got):
        assert not (merged.keys() & part.keys())  # each key on one rank only
        merged.update(part)
    parallel_assert(got == plain, "same keys on the same ranks as without a budget")
    parallel_assert(merged == want, "counts equal collections.Counter")
    parallel_assert(
        total >= 9 * budget * SIZE, f"the shuffle is {total} bytes, the budget {budget}"
    )


@pytest.mark.parametrize("budget", [None, 4096, 2 * 16 * 4])
def test_skewed_integer_keys_finish_and_match_bincount(budget):
    if budget is not None and budget < 2 * 16 * SIZE:
        budget = 2 * 16 * SIZE

    def mapper(i):
        rng = np.random.default_rng(i)
        keys = rng.integers(0, 3000, 20_000)
        keys[: keys.size // 2] = 7  # one key holds half of all pairs
        return keys, np.ones(keys.size, np.int64)

    got = parcomp.map_reduce_keyed(mapper, range(10), max_shuffle_bytes=budget)
    if RANK == 0:
        want = np.bincount(np.concatenate([mapper(i)[0] for i in range(10)]))
        ok = got == {int(k): int(c) for k, c in enumerate(want) if c}
        parallel_assert(ok and got[7] >= 100_000)
    else:
        parallel_assert(got is None)


def test_float_keys_and_values_and_object_keys_within_a_budget():
    got = parcomp.map_reduce_keyed(
        lambda i: [(i % 97 / 4, float(i)), (i % 89 / 4, 0.5)],
        range(500),
        "max",
        max_shuffle_bytes=2 * 16 * SIZE * 3,
    )
    want: dict[float, float] = {}
    for i in range(500):
        for k, v in ((i % 97 / 4, float(i)), (i % 89 / 4, 0.5)):
            want[k] = max(want.get(k, v), v)
    parallel_assert(got == want if RANK == 0 else got is None)
    got = parcomp.map_reduce_keyed(
        lambda i: [((i % 5, "t"), [i])],
        range(60),
        lambda a, b: a + b,
        max_shuffle_bytes=2 * SIZE * 200,
    )
    if RANK == 0:
        ok = {k: sorted(v) for k, v in got.items()} == {
            (r, "t"): [i for i in range(60) if i % 5 == r] for r in range(5)
        }
        parallel_assert(ok, f"{got}")
    else:
        parallel_assert(got is None)


def test_peak_memory_of_the_shuffle_stays_within_the_budget():
    """A shuffle 50x the budget: the peak RSS of the shuffle, above what the rank holds
    before and after it (the result included), is at most 2 B + a constant, while the same
    shuffle without a budget goes above that bound (so the check can fail).

    The combined table is built first, then VmHWM is reset to VmRSS and the shuffle runs
    (``_shuffle``: the part of map_reduce_keyed the budget governs).
    """
    n = 80_000  # distinct string keys per rank: 16 MB of 200-byte records
    budget = 320_000
    lo = RANK * n // 2  # overlapping ranges: every key is sent somewhere
    table = dict.fromkeys((f"{k:0184d}" for k in range(lo, lo + n)), 1)
    op = resolve_op("sum")

    def run(max_bytes):
        _shuffle(dict(table), op, MPI.COMM_WORLD, max_bytes)  # warm: MPI's own buffers
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to VmRSS
        before = _status()["VmRSS"]
        got = _shuffle(table, op, MPI.COMM_WORLD, max_bytes)
        after = _status()
        return got, after["VmHWM"] - max(after["VmRSS"], before)

    got_budget, peak_budget = run(budget)
    got_plain, peak_plain = run(None)
    parallel_assert(got_budget == got_plain)
    total = sum(MPI.COMM_WORLD.allgather(len(got_plain)))
    parallel_assert(total == n + (SIZE - 1) * n // 2, f"{total}")
    # the constant: 2 MiB, plus the result dict's own table (a dict that grows holds its
    # old table and the new one for a moment, whatever the budget)
    allowed = 2 * budget + (2 << 20) + sys.getsizeof(got_budget)
    parallel_assert(peak_plain > allowed, f"without a budget only {peak_plain / 1e6:.2f} MB")
    parallel_assert(
        peak_budget <= allowed,
        f"peak {peak_budget / 1e6:.2f} MB, allowed {allowed / 1e6:.2f} MB with a "
        f"{budget / 1e6:.2f} MB budget (without a budget: {peak_plain / 1e6:.2f} MB)",
    )


def test_budget_errors_on_every_rank_together():
    with pytest.raises(ConfigError, match=rf"too small for one record.*>= {2 * SIZE * 16}, "):
        parcomp.map_reduce_keyed(lambda i: [(i, 1)], range(10), max_shuffle_bytes=16)
    # was: 64 said "use >= 96" (the smallest record), and 96 then failed with "use >= 1068":
    # the hint is the least budget that works for every record, and it works
    words = [f"word-{i}" * (1 + i % 4) for i in range(40)]
    with pytest.raises(ConfigError, match=r"use max_shuffle_bytes >= (\d+)") as info:
        parcomp.map_reduce_keyed(lambda i: [(words[i], 1.0)], range(40), max_shuffle_bytes=64)
    import re

    hint = int(re.search(r">= (\d+)", str(info.value)).group(1))
    counts = parcomp.map_reduce_keyed(
        lambda i: [(words[i], 1.0)], range(40), max_shuffle_bytes=hint
    )
    parallel_assert(sum(counts.values()) == 40.0 if counts is not None else True)
    with pytest.raises(ConfigError, match="too small for one record"):
        parcomp.map_reduce_keyed(
            lambda i: [(words[i], 1.0)], range(40), max_shuffle_bytes=hint - 2 * SIZE
        )
    long = "k" * 5000
    with pytest.raises(
        ConfigError, match=r"the largest record takes 5016; use max_shuffle_bytes >= "
    ):
        parcomp.map_reduce_keyed(
            lambda i: [(long if i == 3 else str(i), 1)],
            range(10),
            max_shuffle_bytes=2 * SIZE * 1000,
        )
    with pytest.raises(ConfigError, match="positive number of bytes"):
        parcomp.map_reduce_keyed(lambda i: [(i, 1)], range(4), max_shuffle_bytes=-5)
    with pytest.raises(ConfigError, match="positive number of bytes"):
        parcomp.map_reduce_keyed(lambda i: [(i, 1)], range(4), max_shuffle_bytes=1.5e6)
    if SIZE > 1:
        with pytest.raises(ConfigError, match="differs between ranks"):
            parcomp.map_reduce_keyed(
                lambda i: [(i, 1)], range(4), max_shuffle_bytes=None if RANK else 10**6
            )
    parallel_assert(True)


@pytest.mark.parametrize("budget", [None, 3000])
@pytest.mark.parametrize("kind", ["int", "float", "str", "object"])
def test_two_hop_shuffle_equals_the_direct_one(kind, budget):
    """The two-hop exchange (used from 64 ranks on) forced at 1-4 ranks: the same keys on
    the same ranks, the same values, the same order of combination."""
    if budget is not None:
        budget = max(budget, 2 * SIZE * 200)
    rng = np.random.default_rng(RANK)
    raw = rng.integers(0, 500, 2000)
    if kind == "int":
        keys = raw.tolist()
    elif kind == "float":
        keys = (raw / 8).tolist()
    elif kind == "str":
        keys = [f"key-{k}-{'z' * int(k % 9)}" for k in raw]
    else:
        keys = [(int(k) % 7, f"t{k}") for k in raw]
    values = rng.random(len(keys)).tolist()
    table = {}
    for k, v in zip(keys, values, strict=True):
        table[k] = table.get(k, 0.0) + v
    op = resolve_op("sum")
    direct = _shuffle(dict(table), op, MPI.COMM_WORLD, budget, hops=False)
    hops = _shuffle(dict(table), op, MPI.COMM_WORLD, budget, hops=True)
    parallel_assert(list(direct.items()) == list(hops.items()), "bitwise and in the same order")
    everything = collections.Counter()
    for part in MPI.COMM_WORLD.allgather(hops):
        everything.update(part.keys())
    parallel_assert(all(c == 1 for c in everything.values()), "each key on one rank")


# Keys that are equal in Python must meet on one rank, whatever their types (found by a
# hostile review: -0.0 and 0.0, (0, 1) and (0.0, 1), frozensets of strings, NumPy
# scalars beside Python numbers were counted apart), and nothing may be rounded or wrap.
EQUAL_KEYS = {
    "-0.0 and 0.0": (lambda x: [(round(x, 1), 1)], [-0.04 if i < 4 else 0.01 for i in range(40)]),
    "int and float in tuples": (
        lambda i: [((i % 2, 1) if i < 6 else (float(i % 2), 1), 1)],
        range(12),
    ),
    "frozensets of strings": (
        lambda i: [(frozenset({"alpha", "beta", "gamma", str(i % 2)}), 1)],
        range(12),
    ),
    "np.float32 beside float": (
        lambda i: [(np.float32(i % 5) if i % 2 else float(i % 5), 1)],
        range(20),
    ),
    "np.int16 beside int": (lambda i: [(np.int16(i % 5) if i % 2 else i % 5, 1)], range(20)),
    "ints past 2**53 beside floats": (
        lambda i: [(2**53 + i, 1)] if i < 2 else [(0.5, 1)],
        range(4),
    ),
    "keys past int64": (lambda i: [(2**64 + i % 3, 1)], range(12)),
    "sums past int64": (lambda i: [("k", 2**62)], range(6)),
    "a lone surrogate": (lambda i: [("\ud800", 1)], range(6)),
}


@pytest.mark.parametrize("budget", [None, 10**6])
@pytest.mark.parametrize("case", sorted(EQUAL_KEYS))
def test_equal_keys_meet_and_nothing_is_rounded(case, budget):
    mapper, items = EQUAL_KEYS[case]
    got = parcomp.map_reduce_keyed(mapper, items, max_shuffle_bytes=budget)
    want = collections.Counter()
    for item in items:
        for k, v in mapper(item):
            want[k] += v
    if RANK == 0:
        ok = got == dict(want) and len(got) == len(want)
        parallel_assert(ok, f"{case}: {got} != {dict(want)}")
    else:
        parallel_assert(got is None)
