"""The plane-selection plan (parcomp.arrays.select.plane_plan), delivered in NumPy: for every
rank count 1-8, shape, axis and index, every cell of the plane arrives once and what a
rank sends is what its peer expects."""

import numpy as np
import pytest

from parcomp.arrays.select import plane_plan
from parcomp.grid.partition import Partition
from parcomp.runtime.errors import RankCountError


@pytest.mark.parametrize("shape", [(6, 5, 4), (3, 8, 7), (9, 2, 3)])
def test_every_cell_of_the_plane_arrives_once(shape):
    checked = 0
    for size in range(1, 9):
        try:
            src = Partition.create(shape, size)
        except RankCountError:
            continue
        for axis in range(3):
            rest = tuple(n for k, n in enumerate(shape) if k != axis)
            try:
                dst = Partition.create(rest, size)
            except RankCountError:
                continue
            for index in (0, shape[axis] // 2, shape[axis] - 1):
                seen = np.zeros(rest, int)
                sent = {}
                plans = [plane_plan(src, axis, index, dst, r) for r in range(size)]
                for r, (sends, _) in enumerate(plans):
                    for q, block in sends:
                        sent[(r, q)] = block
                for r, (_, receives) in enumerate(plans):
                    for s, block in receives:
                        assert sent[(s, r)] == block
                        seen[tuple(slice(lo, hi) for lo, hi in block)] += 1
                assert (seen == 1).all(), (size, shape, axis, index)
                assert len(sent) == sum(len(p[1]) for p in plans)
                checked += 1
    assert checked > 20
