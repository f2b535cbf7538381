"""Per-rank data in checkpoints: arrays whose length differs between ranks.

``default_range`` is PURE; :func:`check_local` and :func:`local_ranges` COMMUNICATE
(agreements over the checkpointer's communicator); writing is local.  Reading is the restore engine's
(:mod:`parcomp.checkpoint.restore`: the pieces are part of its pure plan).

Particle lists, per-rank RNG states and other data owned by one rank do not fit a
DistArray.  ``Checkpointer.save(..., local={"p": array})`` stores each rank's array
(any length along axis 0; the same dtype and trailing shape on every rank) in the rank's
shard as ``/local/<name>``, checksummed by slabs like the arrays.  On restore the
concatenation of all pieces in saved-rank order is dealt out again:

* on the same rank count, every rank gets back exactly its own piece;
* on another rank count, contiguous balanced blocks of the concatenation, in order;
* or as a callback decides: ``redeal(lengths, rank, size) -> (start, stop)``, a range of
  the concatenation (``lengths`` are the saved pieces' lengths).

Each rank's range is planned with the arrays (:mod:`parcomp.checkpoint.plan`): only the
slabs of the pieces it overlaps are read, each verified, by the rank itself (shared
directory) or by a rank on the node holding the shard (node-local tier).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from parcomp.checkpoint.manifest import ALLOWED_DTYPES, MAX_NDIM
from parcomp.grid.partition import block_range
from parcomp.io.slabs import checksum, slab_bounds, slab_rows
from parcomp.runtime.agree import agreed, raise_if_differ
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.wire import allgather_ints

__all__ = [
    "check_local",
    "write_local",
    "local_section",
    "default_range",
    "local_ranges",
    "Redeal",
]

Redeal = Callable[[list[int], int, int], tuple[int, int]]


def check_local(
    local: Mapping[str, Any] | None, comm: Any, check_name: Callable[..., None]
) -> dict:
    """Validate ``local=`` on every rank and agree that names, dtypes and trailing shapes
    match between ranks (only the lengths may differ).  Collective over ``comm``."""

    out: dict[str, np.ndarray] = {}
    with agreed(comm, catch=ConfigError):
        for name, value in (local or {}).items():
            check_name("local array", name)
            if not isinstance(value, np.ndarray) or not 1 <= value.ndim <= MAX_NDIM:
                raise ConfigError(
                    f"local array {name!r} must be a numpy array with 1 to {MAX_NDIM} axes, got "
                    f"{type(value).__name__}{getattr(value, 'shape', '')}"
                )
            if value.dtype.str not in ALLOWED_DTYPES:
                raise ConfigError(f"local array {name!r}: dtype {value.dtype} is not plain numeric")
            out[name] = value
    raise_if_differ(
        sorted((n, a.dtype.str, a.shape[1:]) for n, a in out.items()),
        comm,
        lambda differ, mine, theirs: (
            f"local= arrays differ between ranks in names, dtypes or "
            f"trailing shapes (only the length may differ): rank 0 has {mine}, rank {differ[0]} "
            f"has {theirs}"
        ),
    )
    return out


def write_local(
    group: Any, pieces: Mapping[str, np.ndarray], rank: int = 0
) -> dict[str, dict[str, Any]]:
    """Write this rank's pieces into the shard's ``/local`` group; their manifest records.

    Each piece records its owner inside the shard (``rank``: the saving rank, which is
    also its index among the array's pieces, and ``length``), cross-checked against the
    manifest on every read, as array shards record their placement: pieces swapped between
    ranks in a consistently forged manifest are refused, not restored to the wrong rank.
    """

    records = {}
    for name, piece in pieces.items():
        rows = slab_rows(piece.shape, piece.itemsize)
        chunks = (min(rows, piece.shape[0]), *piece.shape[1:]) if piece.size else None
        dset = group.create_dataset(name, shape=piece.shape, dtype=piece.dtype, chunks=chunks)
        sums = []
        for a, b in slab_bounds(piece.shape[0], rows):
            slab = np.ascontiguousarray(piece[a:b])
            sums.append(checksum(slab))
            if b > a:
                dset[a:b] = slab
        dset.attrs["slab_rows"] = rows
        dset.attrs["rank"] = rank
        dset.attrs["piece"] = rank
        dset.attrs["length"] = int(piece.shape[0])
        records[name] = {"length": int(piece.shape[0]), "slab_rows": rows, "slab_checksums": sums}
    return records


def local_section(
    pieces: Mapping[str, np.ndarray], records: Sequence[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The manifest's ``local`` section from every rank's shard record (rank 0)."""
    return {
        name: {
            "dtype": piece.dtype.str,
            "tail": list(piece.shape[1:]),
            "pieces": [
                {"rank": r, "file": rec["file"], **rec["local"][name]}
                for r, rec in enumerate(records)
            ],
        }
        for name, piece in pieces.items()
    }


def default_range(lengths: Sequence[int], rank: int, size: int) -> tuple[int, int]:
    """Own piece on the saved rank count, else a balanced contiguous block (PURE)."""

    if size == len(lengths):
        start = sum(lengths[:rank])
        return start, start + lengths[rank]
    return block_range(sum(lengths), size, rank)


def local_ranges(
    manifest: Any, comm: Any, redeal: Redeal | None
) -> dict[str, list[tuple[int, int]]]:
    """Every rank's range of every per-rank array's concatenation, from ``redeal`` (or
    :func:`~parcomp.checkpoint.perrank.default_range`), checked on the rank that computed
    it and agreed (collective: a bad callback raises on every rank)."""

    rank, size = comm.Get_rank(), comm.Get_size()
    mine: list[int] = []
    with agreed(comm, catch=Exception):
        for name, spec in manifest.local.items():
            lengths = [p["length"] for p in spec["pieces"]]
            got = (redeal or default_range)(list(lengths), rank, size)
            total = sum(lengths)
            if (
                not isinstance(got, tuple | list)
                or len(got) != 2
                or any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in got)
                or not 0 <= got[0] <= got[1] <= total
            ):
                raise ConfigError(
                    f"redeal for local array {name!r} gave {got!r} on rank {rank}; expected "
                    f"(start, stop) integers with 0 <= start <= stop <= {total}"
                )
            mine += [int(got[0]), int(got[1])]
    every = allgather_ints(comm, mine)
    return {
        name: [(int(row[2 * i]), int(row[2 * i + 1])) for row in every]
        for i, name in enumerate(manifest.local)
    }
