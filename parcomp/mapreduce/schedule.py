"""Work items and schedules for map/reduce.

PURE: no MPI.  Items are numbered ``0..n-1`` and cut into *chunks* of consecutive items;
schedules decide which rank runs which chunk.

* ``block``  -- rank r runs one contiguous run of chunks (default: one chunk per rank);
* ``cyclic`` -- chunk k goes to rank ``k % size`` (default chunk: 1 item);
* ``dynamic`` -- ranks take the next chunk from a shared counter as they finish
  (self-scheduling, no master rank); the default chunk gives each rank ~16 chunks.

With ``deterministic=True`` the chunks are the leaves of the reduction tree, so their size
depends only on ``n`` (:func:`leaf_size`), never on the rank count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from parcomp.grid.partition import block_range
from parcomp.runtime.errors import ConfigError

__all__ = [
    "SCHEDULES",
    "Items",
    "as_items",
    "chunk_size",
    "leaf_size",
    "static_chunks",
    "node_chunk_range",
]

SCHEDULES = ("block", "cyclic", "dynamic")

#: Number of leaves of the deterministic reduction tree (at most).
DETERMINISTIC_LEAVES = 256


@dataclass(frozen=True)
class Items:
    """``n`` work items and a way to fetch item ``i``."""

    n: int
    get: Callable[[int], Any]
    source: Any

    def slice(self, start: int, stop: int) -> Any:
        """Items ``start..stop-1`` as an iterable (a view for ranges, sequences, arrays)."""
        return self.source[start:stop]


def as_items(items: Any) -> Items:
    """Wrap a range, sequence, ndarray (items along axis 0) or any finite iterable.

    Other iterables are materialised into a list: every rank must produce the same items
    in the same order (as with any SPMD program).
    """
    if isinstance(items, range | Sequence) and not isinstance(items, str | bytes):
        return Items(len(items), items.__getitem__, items)
    if isinstance(items, np.ndarray):
        if items.ndim == 0:
            raise ConfigError("items must have at least one dimension, got a 0-d array")
        return Items(items.shape[0], items.__getitem__, items)
    if isinstance(items, str | bytes):
        raise ConfigError(
            f"items must be a range, sequence, ndarray or iterable of work items, got {type(items).__name__}"
        )
    if isinstance(items, set | frozenset):
        raise ConfigError(
            f"items is a {type(items).__name__}: its order differs between ranks (each Python "
            "process salts string hashes differently), so ranks would split different work; "
            "pass sorted(items)"
        )
    if isinstance(items, Iterable):
        listed = list(items)
        return Items(len(listed), listed.__getitem__, listed)
    raise ConfigError(
        f"items must be a range, sequence, ndarray, DistArray or iterable, got {type(items).__name__}"
    )


_PLAIN_ITEM = (str, int, float, bytes, bool)


def items_fingerprint(items: Items) -> str:
    """The item count and, when they print the same in every process, the first and last
    items: enough for the ranks to notice that they were given different work (PURE)."""
    import hashlib

    n = items.n
    sample = [items.get(i) for i in [*range(min(n, 32)), *range(max(32, n - 32), n)]]
    if isinstance(items.source, range):
        text = repr(items.source)
    elif all(type(x) in _PLAIN_ITEM for x in sample):
        text = repr(sample)
    else:
        text = ""
    return f"{n}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def leaf_size(n: int) -> int:
    """Items per leaf of the deterministic tree: depends on ``n`` only."""
    return max(1, math.ceil(n / DETERMINISTIC_LEAVES))


def chunk_size(n: int, size: int, schedule: str, chunksize: int | None, deterministic: bool) -> int:
    """Items per chunk for a schedule (``chunksize`` overrides, except in deterministic mode
    where it must not depend on ``size``: then an explicit ``chunksize`` is kept as is)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if chunksize is not None:
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigError(f"chunksize must be a positive integer, got {chunksize!r}")
        return chunksize
    if n == 0:
        return 1
    if deterministic:
        return leaf_size(n)
    if schedule == "block":
        return max(1, math.ceil(n / size))
    if schedule == "cyclic":
        return 1
    return max(1, n // (size * 16))


def static_chunks(nchunks: int, size: int, rank: int, schedule: str) -> range:
    """Chunk numbers a rank runs under a static schedule."""
    if schedule == "block":
        start, stop = block_range(nchunks, size, rank)
        return range(start, stop)
    if schedule == "cyclic":
        return range(rank, nchunks, size)
    raise ConfigError(f"{schedule!r} is not a static schedule")


def node_chunk_range(nchunks: int, node_sizes: Sequence[int], node: int) -> tuple[int, int]:
    """Chunks ``[start, stop)`` that node ``node`` schedules dynamically among its ranks.

    Nodes get contiguous shares proportional to their rank counts, so a job spanning nodes
    needs no counter across the network; within a node, ranks self-schedule.
    """
    total = sum(node_sizes)
    before = sum(node_sizes[:node])
    start = nchunks * before // total
    stop = nchunks * (before + node_sizes[node]) // total
    return start, stop
