"""The pure restore plan, executed by hand in NumPy for every rank: every new block gets
exactly the saved cells, with either transport, for every saved and new rank count."""

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from parcomp.checkpoint.format import shard_name
from parcomp.checkpoint.perrank import default_range
from parcomp.checkpoint.plan import coord_span, restore_plan
from parcomp.grid.partition import Partition, block_range
from parcomp.io.slabs import slab_bounds
from parcomp.runtime.errors import CheckpointError, RankCountError


@dataclass(frozen=True)
class Block:
    file: str
    start: tuple
    shape: tuple
    slab_rows: int


def saved_blocks(global_shape, nprocs, slab_rows=2):
    part = Partition.create(global_shape, nprocs)
    out = []
    for r in range(nprocs):
        rng = part.local_range(r)
        out.append(
            Block(
                shard_name(r, nprocs),
                tuple(a for a, _ in rng),
                tuple(b - a for a, b in rng),
                slab_rows,
            )
        )
    return out


def deliver(plan, G, blocks, new):
    """Every reader reads its pieces from the saved blocks (as NumPy slices of G) and
    delivers them; returns each destination's buffer and a count of writes per cell."""
    by_file = {b.file: b for b in blocks}
    out = [np.full(new.local_shape(r), -1.0) for r in range(new.size)]
    hits = [np.zeros(new.local_shape(r), int) for r in range(new.size)]
    for reader in range(new.size):
        for p in plan.read_by(reader):
            b = by_file[p.file]
            saved = G[tuple(slice(s, s + k) for s, k in zip(b.start, b.shape, strict=True))]
            # the slabs read cover the region's rows
            bounds = slab_bounds(b.shape[0], b.slab_rows)
            rows = {i for s in p.slabs for i in range(*bounds[s])}
            assert set(range(*p.region[0])) <= rows
            data = saved[tuple(slice(a, c) for a, c in p.region)]
            dst = tuple(slice(a, a + n) for a, n in zip(p.at, p.shape, strict=True))
            out[p.dest][dst] = data
            hits[p.dest][dst] += 1
    return out, hits


SHAPES = [(7,), (5, 3), (4, 1, 6), (1, 9)]


def _splits(shape, size):
    try:
        Partition.create(shape, size)
    except RankCountError:  # more ranks than cells along every axis choice
        return False
    return True


CASES = [
    (shape, saved, size)
    for shape in SHAPES
    for saved in range(1, 9)
    for size in range(1, 9)
    if _splits(shape, saved) and _splits(shape, size)
]


@pytest.mark.parametrize(("global_shape", "saved", "size"), CASES)
@pytest.mark.parametrize("transport", ["direct", "alltoallv"])
def test_every_cell_delivered_once(global_shape, saved, size, transport):
    blocks = saved_blocks(global_shape, saved)
    new = Partition.create(global_shape, size)
    G = np.arange(np.prod(global_shape), dtype=float).reshape(global_shape)
    readers = None
    if transport == "alltoallv":
        readers = {b.file: (7 * i + 3) % size for i, b in enumerate(blocks)}
    plan = restore_plan({"u": blocks}, {"u": new}, readers)
    out, hits = deliver(plan, G, blocks, new)
    for r in range(size):
        assert np.array_equal(out[r], G[new.local_slices(r)])
        assert (hits[r] == 1).all()
    assert plan.crosses == any(p.reader != p.dest for p in plan.pieces)
    if readers is None:
        assert not plan.crosses
    # each (source, dest) message is the same list seen from both ends
    for s, d in itertools.product(range(size), repeat=2):
        assert plan.sent(s, d) == [p for p in plan.read_by(s) if p.dest == d and s != d]


def test_coord_span_matches_block_range():
    for n in range(1, 12):
        for parts in range(1, n + 1):
            owner = [
                next(c for c in range(parts) if i in range(*block_range(n, parts, c)))
                for i in range(n)
            ]
            for lo in range(n):
                for hi in range(lo + 1, n + 1):
                    got = list(coord_span(n, parts, lo, hi))
                    assert got == sorted(set(owner[lo:hi]))
            assert list(coord_span(n, parts, 3, 3)) == []


@pytest.mark.parametrize("saved", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("transport", ["direct", "alltoallv"])
def test_per_rank_pieces_concatenate_in_order(saved, size, transport):
    rng = np.random.default_rng(saved * 10 + size)
    lengths = [int(n) for n in rng.integers(0, 7, saved)]
    total = sum(lengths)
    tail = (2,)
    whole = np.arange(total * 2, dtype=float).reshape(total, 2)
    files = [shard_name(r, saved) for r in range(saved)]
    spec = {
        "tail": list(tail),
        "pieces": [
            {"file": f, "length": n, "slab_rows": 2} for f, n in zip(files, lengths, strict=True)
        ],
    }
    ranges = [block_range(total, size, r) for r in range(size)]
    readers = None if transport == "direct" else {f: i % size for i, f in enumerate(files)}
    plan = restore_plan({}, {}, readers, {"p": spec}, {"p": ranges})
    bases = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    out = [np.full((b - a, 2), -1.0) for a, b in ranges]
    for reader in range(size):
        for p in plan.read_by(reader):
            piece = whole[bases[p.index] : bases[p.index + 1]]
            data = piece[tuple(slice(a, b) for a, b in p.region)]
            out[p.dest][p.at[0] : p.at[0] + p.shape[0]] = data
    for r, (a, b) in enumerate(ranges):
        assert np.array_equal(out[r], whole[a:b])


def test_missing_reader_and_mismatched_counts_raise():
    blocks = saved_blocks((6, 4), 2)
    new = Partition.create((6, 4), 3)
    with pytest.raises(CheckpointError, match="no reader"):
        restore_plan({"u": blocks}, {"u": new}, {blocks[0].file: 0})
    with pytest.raises(CheckpointError, match="different rank counts"):
        restore_plan(
            {"u": blocks}, {"u": new}, None, {"p": {"tail": [], "pieces": []}}, {"p": [(0, 0)]}
        )
    with pytest.raises(CheckpointError, match="hold 12 elements"):
        restore_plan({"u": blocks[:1]}, {"u": new})


def test_default_range_own_piece_on_same_count_else_balanced():
    lengths = [2, 0, 5, 3]
    assert [default_range(lengths, r, 4) for r in range(4)] == [(0, 2), (2, 2), (2, 7), (7, 10)]
    assert [default_range(lengths, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
