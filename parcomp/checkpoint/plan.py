"""The restore plan: which rank reads which part of which saved block, and for whom.

PURE: no MPI, no I/O, no numpy.  A function of the saved layout (the manifest's blocks),
the new decomposition (a :class:`~parcomp.grid.partition.Partition` per array, each rank's
range of every per-rank array) and, optionally, who reads each file.  Every rank computes
the same plan from the same agreed inputs, so no rank has to tell another what it sends:
both ends derive it.

A plan is a tuple of :class:`Piece`\\ s.  A piece is one region of one saved block (a shard
of a global array, or a rank's per-rank piece) that one destination rank needs.  Its
reader reads the slabs covering it (verifying each slab's checksum) and either writes it
into place (reader == destination) or sends it.  Two transports execute a plan
(:mod:`parcomp.checkpoint.restore`):

* **direct** (``readers=None``): every rank reads its own pieces straight from the files,
  as hyperslabs.  For a shared file system, where every rank sees every file.
* **Alltoallv** (``readers`` given): each file is read by one chosen rank (on the node that
  holds it, for the node-local tier), which sends each destination its regions in one
  ``Alltoallv``.  Sizes and order come from the plan on both ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from parcomp.runtime.errors import CheckpointError

__all__ = ["Piece", "RestorePlan", "restore_plan", "coord_span"]

Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Piece:
    """One region of one saved block, needed by one rank.

    Attributes
    ----------
    kind : str
        ``"array"`` (a shard of a global array) or ``"local"`` (a rank's per-rank piece).
    name : str
        The array's name.
    index : int
        Which saved block: the shard's index in the array's shards, or the saving rank.
    file : str
        The file holding the block.
    reader, dest : int
        The rank that reads it, and the rank that needs it.
    region : tuple of (int, int)
        The region, per axis, relative to the saved block's origin.
    at : tuple of int
        Where the region's origin goes in the destination's buffer (its array's interior,
        or its per-rank result).
    slabs : tuple of int
        The block's slabs (row ranges with a checksum each) the region touches: the reader
        reads and verifies all of them.
    """

    kind: str
    name: str
    index: int
    file: str
    reader: int
    dest: int
    region: Ranges
    at: tuple[int, ...]
    slabs: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """The region's extent per axis."""
        return tuple(b - a for a, b in self.region)

    @property
    def count(self) -> int:
        """Elements in the region."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class RestorePlan:
    """Every piece of a restore, in one order that every rank derives identically."""

    pieces: tuple[Piece, ...]
    size: int

    @property
    def crosses(self) -> bool:
        """Whether some piece is read by another rank than the one that needs it."""
        return any(p.reader != p.dest for p in self.pieces)

    def read_by(self, rank: int) -> list[Piece]:
        """The pieces ``rank`` reads, in plan order."""
        return [p for p in self.pieces if p.reader == rank]

    def sent(self, source: int, dest: int) -> list[Piece]:
        """What ``source`` sends ``dest`` (empty when they are the same rank), in plan order."""
        if source == dest:
            return []
        return [p for p in self.pieces if p.reader == source and p.dest == dest]

    def files_read_by(self, rank: int) -> list[str]:
        """The files ``rank`` opens."""
        return sorted({p.file for p in self.pieces if p.reader == rank})


def coord_span(n: int, parts: int, lo: int, hi: int) -> range:
    """Block numbers (of :func:`~parcomp.grid.partition.block_range`'s split of ``n`` into
    ``parts``) that the index range ``[lo, hi)`` meets."""
    if hi <= lo:
        return range(0)
    base, extra = divmod(n, parts)
    big = extra * (base + 1)

    def block(i: int) -> int:
        return i // (base + 1) if i < big else extra + (i - big) // max(base, 1)

    return range(block(lo), block(hi - 1) + 1)


def _slabs(lo: int, hi: int, rows: int) -> tuple[int, ...]:
    if hi <= lo:  # an empty block still has its one (empty) slab to verify
        return (0,)
    return tuple(range(lo // rows, (hi - 1) // rows + 1))


def _array_pieces(
    name: str, shards: Sequence[Any], partition: Any, readers: Mapping[str, int] | None
) -> list[Piece]:
    import itertools

    out = []
    for index, shard in enumerate(shards):
        if math.prod(shard.shape) == 0:
            continue
        spans = [
            coord_span(n, d, s, s + k)
            for n, d, s, k in zip(
                partition.global_shape, partition.dims, shard.start, shard.shape, strict=True
            )
        ]
        for coords in itertools.product(*spans):
            dest = partition.rank_of(coords)
            mine = partition.local_range(dest)
            region, at = [], []
            for s, k, (lo, hi) in zip(shard.start, shard.shape, mine, strict=True):
                a, b = max(s, lo), min(s + k, hi)
                region.append((a - s, b - s))
                at.append(a - lo)
            if any(b <= a for a, b in region):
                continue
            reader = dest if readers is None else readers[shard.file]
            out.append(
                Piece(
                    "array",
                    name,
                    index,
                    shard.file,
                    reader,
                    dest,
                    tuple(region),
                    tuple(at),
                    _slabs(region[0][0], region[0][1], shard.slab_rows),
                )
            )
    return out


def _local_pieces(
    name: str,
    pieces: Sequence[Mapping[str, Any]],
    tail: Sequence[int],
    ranges: Sequence[tuple[int, int]],
    readers: Mapping[str, int] | None,
) -> list[Piece]:
    out = []
    full = tuple((0, int(t)) for t in tail)
    for dest, (start, stop) in enumerate(ranges):
        base = 0
        for saved, entry in enumerate(pieces):
            n = int(entry["length"])
            lo, hi = max(start, base), min(stop, base + n)
            if lo < hi:
                out.append(
                    Piece(
                        "local",
                        name,
                        saved,
                        entry["file"],
                        dest if readers is None else readers[entry["file"]],
                        dest,
                        ((lo - base, hi - base), *full),
                        (lo - start,) + (0,) * len(full),
                        _slabs(lo - base, hi - base, int(entry["slab_rows"])),
                    )
                )
            base += n
    return out


def restore_plan(
    arrays: Mapping[str, Sequence[Any]],
    partitions: Mapping[str, Any],
    readers: Mapping[str, int] | None = None,
    local: Mapping[str, Mapping[str, Any]] | None = None,
    local_ranges: Mapping[str, Sequence[tuple[int, int]]] | None = None,
) -> RestorePlan:
    """Plan a restore (PURE).

    Parameters
    ----------
    arrays : mapping of str to sequence of shard specs
        Per array, its saved blocks: objects with ``file``, ``start``, ``shape`` and
        ``slab_rows`` (the manifest's :class:`~parcomp.checkpoint.manifest.ShardSpec`).
    partitions : mapping of str to Partition
        Per array, the new decomposition; all on the same rank count.
    readers : mapping of str to int, optional
        The rank that reads each file (Alltoallv transport); None: every rank reads what
        it needs itself (direct transport).
    local : mapping, optional
        Per-rank data: the manifest's ``local`` section (``pieces`` with ``file``,
        ``length``, ``slab_rows``; ``tail``).
    local_ranges : mapping of str to sequence of (int, int), optional
        Per per-rank array, every new rank's range of the concatenation of the pieces.

    Returns
    -------
    RestorePlan
        Every piece, arrays first (manifest order, shard order, destination order), then
        per-rank data; the destination regions tile every new block exactly once.

    Raises
    ------
    CheckpointError
        If the saved blocks do not tile an array, a file has no reader, or the rank counts
        of the inputs disagree.
    """
    sizes = {p.size for p in partitions.values()} | {len(r) for r in (local_ranges or {}).values()}
    if len(sizes) > 1:
        raise CheckpointError(f"restore plan: inputs for different rank counts {sorted(sizes)}")
    size = sizes.pop() if sizes else 1
    pieces: list[Piece] = []
    try:
        for name, shards in arrays.items():
            partition = partitions[name]
            covered = sum(math.prod(s.shape) for s in shards)
            if covered != math.prod(partition.global_shape):
                raise CheckpointError(
                    f"array {name!r}: the saved blocks hold {covered} elements, the array "
                    f"{math.prod(partition.global_shape)}"
                )
            pieces += _array_pieces(name, shards, partition, readers)
        for name, spec in (local or {}).items():
            ranges = (local_ranges or {})[name]
            pieces += _local_pieces(name, spec["pieces"], spec["tail"], ranges, readers)
    except KeyError as exc:
        raise CheckpointError(f"restore plan: no reader or partition for {exc}") from None
    return RestorePlan(tuple(pieces), size)
