"""The pure halo plan, executed by hand in NumPy for every rank: ghosts get the right cells."""

import itertools

import numpy as np
import pytest

from parcomp.grid.halo import check_halo, direction_index, halo_plan
from parcomp.grid.partition import Partition
from parcomp.runtime.errors import ShapeError
from tests.helpers import expected_buffer

UNTOUCHED = -1.0


def simulate(partition, halo, corners, G):
    """Build every rank's buffer from G, then deliver every planned message."""
    buffers, plans = [], []
    for r in range(partition.size):
        shape = partition.local_shape(r)
        buf = np.full([n + 2 * h for n, h in zip(shape, halo, strict=True)], UNTOUCHED)
        interior = tuple(slice(h, h + n) for h, n in zip(halo, shape, strict=True))
        buf[interior] = G[partition.local_slices(r)]
        buffers.append(buf)
        plans.append(halo_plan(partition, r, halo, corners))
    sent = {}
    for r, plan in enumerate(plans):
        for m in plan:
            key = (r, m.neighbor, m.send_tag)
            assert key not in sent, "two messages with the same (source, dest, tag)"
            sent[key] = buffers[r][m.send].copy()
    for r, plan in enumerate(plans):
        for m in plan:
            data = sent.pop((m.neighbor, r, m.recv_tag))
            buffers[r][m.recv] = data
    assert not sent, "every message is received"
    return buffers


def expected(partition, halo, corners, G, r):
    return expected_buffer(partition, r, halo, corners, G, UNTOUCHED)


CASES = [
    ((9,), 1),
    ((9,), 2),
    ((9,), 3),
    ((4,), 4),
    ((6, 5), 1),
    ((6, 5), 2),
    ((6, 5), 3),
    ((6, 5), 4),
    ((7, 7), 6),
    ((4, 5, 6), 1),
    ((4, 5, 6), 2),
    ((4, 5, 6), 4),
    ((4, 4, 4), 8),
]


@pytest.mark.parametrize(("shape", "size"), CASES)
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("corners", [False, True])
@pytest.mark.parametrize("width", [1, 2])
def test_plan_fills_ghosts_exactly(shape, size, periodic, corners, width):
    partition = Partition.create(shape, size, periods=periodic)
    halo = tuple(
        min(width, min(partition.global_shape[a] // partition.dims[a], width))
        for a in range(len(shape))
    )
    halo = check_halo(partition, halo)
    G = np.arange(np.prod(shape), dtype=float).reshape(shape)
    buffers = simulate(partition, halo, corners, G)
    for r in range(size):
        np.testing.assert_array_equal(
            buffers[r], expected(partition, halo, corners, G, r), err_msg=f"rank {r}"
        )


def test_mixed_periodicity_and_zero_halo_axis():
    partition = Partition.create((6, 8), 4, periods=(True, False))
    halo = (1, 0)
    G = np.arange(48, dtype=float).reshape(6, 8)
    buffers = simulate(partition, halo, True, G)
    for r in range(4):
        np.testing.assert_array_equal(buffers[r], expected(partition, halo, True, G, r))
        assert all(m.offset[1] == 0 for m in halo_plan(partition, r, halo, True))


def test_message_counts():
    p = Partition.create((12, 12, 12), 8, periods=True)
    assert len(halo_plan(p, 0, (1, 1, 1), corners=False)) == 6
    assert len(halo_plan(p, 0, (1, 1, 1), corners=True)) == 26
    p = Partition.create((12, 12), 4)
    assert len(halo_plan(p, 0, (1, 1), corners=False)) == 2
    assert len(halo_plan(p, 0, (1, 1), corners=True)) == 3


def test_direction_index_unique():
    offsets = list(itertools.product((-1, 0, 1), repeat=3))
    assert sorted(direction_index(o) for o in offsets) == list(range(27))


def test_halo_too_wide():
    p = Partition.create((8,), 4)
    with pytest.raises(
        ShapeError, match="halo width 3 on axis 0 is wider than the smallest block \\(2 cells\\)"
    ):
        check_halo(p, (3,))
    with pytest.raises(ShapeError, match="has 2 entries"):
        check_halo(p, (1, 1))
    with pytest.raises(ShapeError, match=">= 0"):
        check_halo(p, (-1,))
