"""Per-rank data in checkpoints: arrays whose length differs between ranks.

``plan_reads`` and ``default_range`` are PURE; :func:`check_local` and :func:`read_local`
COMMUNICATE (agreements over the checkpointer's communicator); writing is local.

Particle lists, per-rank RNG states and other data owned by one rank do not fit a
DistArray.  ``Checkpointer.save(..., local={"p": array})`` stores each rank's array
(any length along axis 0; the same dtype and trailing shape on every rank) in the rank's
shard as ``/local/<name>``, checksummed by slabs like the arrays.  On restore the
concatenation of all pieces in saved-rank order is dealt out again:

* on the same rank count, every rank gets back exactly its own piece;
* on another rank count, contiguous balanced blocks of the concatenation, in order;
* or as a callback decides: ``redeal(lengths, rank, size) -> (start, stop)``, a range of
  the concatenation (``lengths`` are the saved pieces' lengths).

Each rank reads only the slabs of the pieces its range overlaps, straight from the shard
files, and verifies every slab it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.errors import CheckpointError, ConfigError

__all__ = [
    "check_local",
    "write_local",
    "local_section",
    "default_range",
    "plan_reads",
    "read_local",
]

Redeal = Callable[[list[int], int, int], tuple[int, int]]


def check_local(
    local: Mapping[str, Any] | None, comm: Any, check_name: Callable[..., None]
) -> dict:
    """Validate ``local=`` on every rank and agree that names, dtypes and trailing shapes
    match between ranks (only the lengths may differ).  Collective over ``comm``."""
    from parcomp.checkpoint.manifest import ALLOWED_DTYPES
    from parcomp.comm import raise_if_any, raise_if_differ

    out: dict[str, np.ndarray] = {}
    error: BaseException | None = None
    try:
        for name, value in (local or {}).items():
            check_name("local array", name)
            if not isinstance(value, np.ndarray) or value.ndim < 1:
                raise ConfigError(
                    f"local array {name!r} must be a numpy array with at least one axis, got "
                    f"{type(value).__name__}"
                )
            if value.dtype.str not in ALLOWED_DTYPES:
                raise ConfigError(f"local array {name!r}: dtype {value.dtype} is not plain numeric")
            out[name] = value
    except ConfigError as exc:
        error = exc
    raise_if_any(error, comm)
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


def write_local(group: Any, pieces: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Write this rank's pieces into the shard's ``/local`` group; their manifest records."""
    from parcomp.checkpoint.format import checksum, slab_bounds, slab_rows

    records = {}
    for name, piece in pieces.items():
        rows = slab_rows(piece.shape, piece.itemsize)
        chunks = (min(rows, piece.shape[0]), *piece.shape[1:]) if piece.shape[0] else None
        dset = group.create_dataset(name, shape=piece.shape, dtype=piece.dtype, chunks=chunks)
        sums = []
        for a, b in slab_bounds(piece.shape[0], rows):
            slab = np.ascontiguousarray(piece[a:b])
            sums.append(checksum(slab))
            if b > a:
                dset[a:b] = slab
        dset.attrs["slab_rows"] = rows
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
    from parcomp.partition import block_range

    if size == len(lengths):
        start = sum(lengths[:rank])
        return start, start + lengths[rank]
    return block_range(sum(lengths), size, rank)


def plan_reads(lengths: Sequence[int], start: int, stop: int) -> list[tuple[int, int, int, int]]:
    """Which rows of which saved piece fill ``[start, stop)`` of the concatenation (PURE).

    Returns ``(piece, first_row, last_row, offset_in_result)`` per piece overlapped.
    """
    reads, base = [], 0
    for piece, n in enumerate(lengths):
        lo, hi = max(start, base), min(stop, base + n)
        if lo < hi:
            reads.append((piece, lo - base, hi - base, lo - start))
        base += n
    return reads


def local_ranges(manifest: Any, comm: Any, redeal: Redeal | None) -> dict[str, tuple[int, int]]:
    """Every per-rank array's range of the concatenation for this rank, from ``redeal``
    (or :func:`default_range`), checked and agreed (collective: a callback that fails or
    returns a bad range raises on every rank)."""
    from parcomp.comm import raise_if_any

    rank, size = comm.Get_rank(), comm.Get_size()
    ranges: dict[str, tuple[int, int]] = {}
    error: BaseException | None = None
    try:
        for name, spec in manifest.local.items():
            lengths = [p["length"] for p in spec["pieces"]]
            got = (redeal or default_range)(list(lengths), rank, size)
            start, stop = got
            total = sum(lengths)
            if (
                any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in got)
                or not 0 <= start <= stop <= total
            ):
                raise ConfigError(
                    f"redeal for local array {name!r} gave {got!r} on rank {rank}; expected "
                    f"(start, stop) integers with 0 <= start <= stop <= {total}"
                )
            ranges[name] = (int(start), int(stop))
    except Exception as exc:  # noqa: BLE001 - the user's callback: raised on every rank below
        error = exc
    raise_if_any(error, comm)
    return ranges


def read_local(
    folder: Path, manifest: Any, ranges: Mapping[str, tuple[int, int]], only: str | None = None
) -> dict[str, np.ndarray]:
    """This rank's share of every per-rank array (or of ``only``), each slab verified."""
    import h5py

    from parcomp.checkpoint.format import check_regular, checksum, slab_bounds

    out: dict[str, np.ndarray] = {}
    for name, spec in manifest.local.items():
        if only is not None and name != only:
            continue
        lengths = [p["length"] for p in spec["pieces"]]
        start, stop = ranges[name]
        dtype = np.dtype(spec["dtype"])
        result = np.empty((stop - start, *spec["tail"]), dtype)
        for piece, first, last, offset in plan_reads(lengths, start, stop):
            entry = spec["pieces"][piece]
            check_regular(folder / entry["file"])
            with h5py.File(folder / entry["file"], "r") as fh:
                link = fh.get("local", getlink=True)
                dset = fh["local"].get(name) if isinstance(link, h5py.HardLink) else None
                if (
                    not isinstance(dset, h5py.Dataset)
                    or not isinstance(fh["local"].get(name, getlink=True), h5py.HardLink)
                    or dset.is_virtual
                    or dset.external
                    or dset.dtype != dtype
                    or tuple(dset.shape) != (entry["length"], *spec["tail"])
                ):
                    raise CheckpointError(
                        f"{folder / entry['file']}: local array {name!r} is not the plain "
                        f"{dtype} dataset of {entry['length']} rows the manifest describes"
                    )
                for i, (a, b) in enumerate(slab_bounds(entry["length"], entry["slab_rows"])):
                    if b <= first or a >= last:
                        continue
                    slab = dset[a:b]
                    if checksum(slab) != entry["slab_checksums"][i]:
                        raise CheckpointError(
                            f"{folder / entry['file']}: slab {i} of local array {name!r} "
                            "fails its checksum (corrupted)"
                        )
                    lo, hi = max(a, first), min(b, last)
                    result[offset + lo - first : offset + hi - first] = slab[lo - a : hi - a]
        out[name] = result
    return out
