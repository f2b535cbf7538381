"""Helpers shared by the unit and MPI tests."""

from __future__ import annotations

import itertools
import os

import numpy as np


def expected_buffer(partition, rank, halo, corners, G, fill):
    """What a rank's local buffer holds after a halo exchange, computed from the global array G.

    Ghost cells outside a non-periodic domain, and (without ``corners``) edge/corner ghosts,
    keep ``fill``.
    """
    shape = partition.local_shape(rank)
    out = np.full([n + 2 * h for n, h in zip(shape, halo, strict=True)], fill, dtype=G.dtype)
    for k in itertools.product(*(range(s) for s in out.shape)):
        g, ok, outside = [], True, 0
        for axis, (kk, h, (start, _)) in enumerate(
            zip(k, halo, partition.local_range(rank), strict=True)
        ):
            gi = start - h + kk
            if not h <= kk < h + shape[axis]:
                outside += 1
            if not 0 <= gi < partition.global_shape[axis]:
                if partition.periods[axis]:
                    gi %= partition.global_shape[axis]
                else:
                    ok = False
            g.append(gi)
        if ok and (outside <= 1 or corners):
            out[k] = G[tuple(g)]
    return out


def reference_tree_sum(values, leaf):
    """Independent reference for the deterministic reduction: leaves of ``leaf`` values summed
    in order, then pairs split at the largest power of two (recursively)."""
    import functools
    import operator

    leaves = [
        functools.reduce(operator.add, values[i : i + leaf]) for i in range(0, len(values), leaf)
    ]

    def node(lo, hi):
        if hi - lo == 1:
            return leaves[lo]
        mid = lo + 2 ** ((hi - lo - 1).bit_length() - 1)
        return node(lo, mid) + node(mid, hi)

    return node(0, len(leaves))


def rank_pids(marker: str) -> list[int]:
    """PIDs of the rank processes of the job whose command line holds ``marker`` (the
    ranks only: not mpiexec, not the ``parcomp run`` supervisor)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
        except OSError:
            continue
        if b"parcomp.launch.runner" in cmd[:3] and any(marker.encode() in p for p in cmd):
            pids.append(int(entry))
    return pids
