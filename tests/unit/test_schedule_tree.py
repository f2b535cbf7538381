"""Pure parts of map/reduce: items, chunks, schedules, the deterministic tree, key hashing."""

import itertools
import math

import numpy as np
import pytest

from parcomp.mapreduce.schedule import (
    as_items,
    chunk_size,
    leaf_size,
    node_chunk_range,
    static_chunks,
)
from parcomp.mapreduce.shuffle import owner_of_keys
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.reduce import OPS, resolve_op, tree_cover, tree_evaluate, tree_subtree
from tests.helpers import reference_tree_sum


def test_as_items_kinds():
    assert as_items(range(5)).n == 5
    assert list(as_items(range(2, 8)).slice(1, 3)) == [3, 4]
    assert as_items([1, 2]).get(1) == 2
    assert as_items(np.zeros((4, 2))).n == 4
    gen = as_items(x * 2 for x in range(3))
    assert gen.n == 3 and gen.get(2) == 4
    for bad in ("abc", 5, np.float64(1.0)):
        with pytest.raises(ConfigError, match="items must"):
            as_items(bad)


@pytest.mark.parametrize("n", [0, 1, 7, 100, 1001])
@pytest.mark.parametrize("size", range(1, 9))
@pytest.mark.parametrize("schedule", ["block", "cyclic"])
def test_static_chunks_cover_every_item_once(n, size, schedule):
    chunk = chunk_size(n, size, schedule, None, False)
    nchunks = -(-n // chunk) if n else 0
    seen = [k for r in range(size) for k in static_chunks(nchunks, size, r, schedule)]
    assert sorted(seen) == list(range(nchunks))


def test_chunk_rules():
    assert chunk_size(100, 4, "block", None, False) == 25
    assert chunk_size(100, 4, "cyclic", None, False) == 1
    assert chunk_size(10000, 2, "dynamic", None, False) == 312
    assert chunk_size(100, 3, "dynamic", 7, False) == 7
    # deterministic leaves depend on n only
    assert {
        chunk_size(10_000, s, sch, None, True) for s in range(1, 9) for sch in ("block", "dynamic")
    } == {leaf_size(10_000)}
    with pytest.raises(
        ConfigError, match="unknown schedule 'fast'; expected one of block, cyclic, dynamic"
    ):
        chunk_size(10, 2, "fast", None, False)
    with pytest.raises(ConfigError, match="chunksize must be a positive integer"):
        chunk_size(10, 2, "block", 0, False)


@pytest.mark.parametrize("sizes", [[1], [2, 2], [3, 1, 4], [1, 1, 1, 1, 1]])
@pytest.mark.parametrize("nchunks", [0, 1, 5, 64])
def test_node_chunk_ranges_tile(sizes, nchunks):
    ranges = [node_chunk_range(nchunks, sizes, j) for j in range(len(sizes))]
    assert ranges[0][0] == 0 and ranges[-1][1] == nchunks
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


SUM = resolve_op("sum")


@pytest.mark.parametrize("n", [1, 2, 3, 17, 100, 256])
@pytest.mark.parametrize("owners", [1, 2, 3, 4, 7])
def test_tree_is_partition_independent(n, owners):
    rng = np.random.default_rng(n * 31 + owners)
    leaves = list(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n))
    want = reference_tree_sum(leaves, 1)
    for trial in range(5):
        who = (
            rng.integers(0, owners, n) if trial else np.arange(n) * owners // n
        )  # scattered, then blocks
        nodes = {}
        for r in range(owners):
            mine = {k: leaves[k] for k in range(n) if who[k] == r}
            cover = tree_cover([k in mine for k in range(n)])
            covered = sorted(k for lo, hi in cover for k in range(lo, hi))
            assert covered == sorted(mine)
            assert len(cover) <= 2 * max(1, math.ceil(math.log2(n + 1))) * max(1, len(mine))
            nodes.update({(lo, hi): tree_subtree(mine, lo, hi, SUM) for lo, hi in cover})
        got = tree_evaluate(nodes, n, SUM)
        assert got == want  # bitwise, whatever the split


def test_tree_cover_is_small_for_blocks():
    flags = [False] * 100 + [True] * 300 + [False] * 112
    assert len(tree_cover(flags)) <= 2 * 9


def test_ops():
    assert set(OPS) >= {
        "sum",
        "prod",
        "min",
        "max",
        "land",
        "lor",
        "band",
        "bor",
        "minloc",
        "maxloc",
    }
    assert resolve_op("minloc").combine((1.0, 5), (1.0, 3)) == (1.0, 3)  # ties: smaller index
    assert resolve_op("maxloc").combine((2.0, 5), (1.0, 3)) == (2.0, 5)
    assert np.array_equal(resolve_op("max").combine(np.array([1, 5]), np.array([3, 2])), [3, 5])
    assert resolve_op(lambda a, b: a + b).builtin is False
    with pytest.raises(ConfigError, match="unknown reduction 'avg'; expected one of sum"):
        resolve_op("avg")
    with pytest.raises(ConfigError, match="or a callable"):
        resolve_op(3)


def test_key_owners_are_fixed_and_spread():
    keys = np.arange(10_000)
    a, b = owner_of_keys(keys, 4), owner_of_keys(keys.copy(), 4)
    assert np.array_equal(a, b) and set(a.tolist()) == {0, 1, 2, 3}
    assert np.bincount(a).min() > 2300  # roughly even
    words = ["alpha", "beta", "gamma"]
    assert owner_of_keys(words, 5).tolist() == [zlib_crc(w) % 5 for w in words]


def zlib_crc(word):
    import zlib

    return zlib.crc32(word.encode())
