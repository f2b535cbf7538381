"""The reverse halo exchange of particle deposits, delivered in NumPy for every rank: each
ghost-layer value lands, added, in the cell it stands for (periodic wrap), once."""

import itertools
import math

import numpy as np
import pytest

from parcomp.grid.halo import halo_plan
from parcomp.grid.partition import Partition


def grids(shape, size):
    for dims in itertools.product(range(1, size + 1), repeat=len(shape)):
        if math.prod(dims) == size and all(d <= n for d, n in zip(dims, shape, strict=True)):
            yield dims


def reverse_deliver(partition, buffers):
    """What parcomp.particles.deposit.reverse_halo_add does, for all ranks at once."""
    halo = (1,) * partition.ndim
    plans = [halo_plan(partition, r, halo, corners=True) for r in range(partition.size)]
    sent = {}
    for r, plan in enumerate(plans):
        for m in plan:
            key = (r, m.neighbor, m.send_tag)
            assert key not in sent
            sent[key] = buffers[r][m.recv].copy()
    out = [b.copy() for b in buffers]
    for r, plan in enumerate(plans):
        for m in plan:
            out[r][m.send] += sent.pop((m.neighbor, r, m.recv_tag))
    assert not sent
    return out


@pytest.mark.parametrize("shape", [(9,), (6, 5), (4, 5, 3)], ids=str)
@pytest.mark.parametrize("size", range(1, 9))
@pytest.mark.parametrize("periodic", [False, True])
def test_every_ghost_value_is_added_into_its_owner(shape, size, periodic):
    for dims in grids(shape, size):
        p = Partition(shape, dims, (periodic,) * len(shape))
        rng = np.random.default_rng(size)
        buffers, want = [], np.zeros(shape)
        for r in range(size):
            n = p.local_shape(r)
            buf = rng.integers(1, 100, [k + 2 for k in n]).astype(float)
            start = [a for a, _ in p.local_range(r)]
            for idx in np.ndindex(*buf.shape):
                g = [i - 1 + s for i, s in zip(idx, start, strict=True)]
                inside = all(0 <= gi < ni for gi, ni in zip(g, shape, strict=True))
                if not inside and not periodic:
                    buf[idx] = 0.0  # beyond a wall: deposits never land there (folded)
                    continue
                want[tuple(gi % ni for gi, ni in zip(g, shape, strict=True))] += buf[idx]
            buffers.append(buf)
        out = reverse_deliver(p, buffers)
        got = np.zeros(shape)
        for r in range(size):
            interior = tuple(slice(1, k + 1) for k in p.local_shape(r))
            got[p.local_slices(r)] = out[r][interior]
        assert np.array_equal(got, want), (dims, periodic)
