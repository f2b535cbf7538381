"""Reading a checkpoint's saved blocks, every slab verified before use (local; no MPI).

:class:`BlockFiles` opens a checkpoint's files, matches each dataset against the manifest
(:func:`~parcomp.checkpoint.reader.open_block`) and reads the slabs a restore piece needs,
each checked against its checksum.  The restore engine
(:mod:`parcomp.checkpoint.restore`) and ``parcomp inspect``
(:mod:`parcomp.checkpoint.inspect`) read through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint.format import check_regular
from parcomp.checkpoint.manifest import Manifest
from parcomp.checkpoint.plan import Piece
from parcomp.checkpoint.reader import _attrs, _same, open_block
from parcomp.io.slabs import checksum, slab_bounds
from parcomp.runtime.errors import CheckpointError, CheckpointSchemaError, ParcompError

__all__ = ["READ_ERRORS", "BlockFiles", "is_mpi_error"]

#: What reading a damaged checkpoint may raise (besides ParcompError): turned into a
#: failure of that file, agreed, and the checkpoint skipped.
READ_ERRORS = (ParcompError, OSError, RuntimeError, KeyError, ValueError, TypeError)


def is_mpi_error(exc: BaseException) -> bool:
    """An MPI error (a failed peer under ULFM) must propagate, not look like bad data."""
    from mpi4py import MPI

    return isinstance(exc, MPI.Exception)


class BlockFiles:
    """The saved blocks of one checkpoint folder, opened and checked once each (local).

    Reads the slabs a :class:`~parcomp.checkpoint.plan.Piece` needs and verifies each
    against the manifest's checksum before any byte of it is used.
    """

    def __init__(self, folder: Path, manifest: Manifest, spare_core: bool = False) -> None:
        self.folder = folder
        self.manifest = manifest
        #: Verify in a helper thread while the next slab is read (a core must be free).
        self.spare_core = spare_core
        self._files: dict[str, Any] = {}
        self._datasets: dict[tuple[str, str, int], tuple[Any, tuple[int, ...]]] = {}
        self._slabs: dict[tuple[str, str, int, int], np.ndarray] = {}

    def _file(self, name: str) -> Any:
        import h5py

        if name not in self._files:
            check_regular(self.folder / name, self.manifest.files.get(name))
            self._files[name] = h5py.File(self.folder / name, "r")
        return self._files[name]

    def dataset(self, piece: Piece) -> tuple[Any, tuple[int, ...], tuple[int, ...], int, tuple]:
        """``(dataset, origin in it, block shape, slab rows, slab checksums)`` of the
        piece's saved block."""
        if piece.kind == "array":
            spec = self.manifest.arrays[piece.name]
            shard = spec.shards[piece.index]
            key = (piece.kind, piece.name, piece.index)
            if key not in self._datasets:
                fh = self._file(shard.file)
                dset = open_block(fh, self.folder, self.manifest, spec, shard)
                self._datasets[key] = (dset, shard.file_start or (0,) * len(shard.shape))
            dset, origin = self._datasets[key]
            return dset, origin, shard.shape, shard.slab_rows, shard.slab_checksums
        spec = self.manifest.local[piece.name]
        entry = spec["pieces"][piece.index]
        shape = (entry["length"], *spec["tail"])
        key = (piece.kind, piece.name, piece.index)
        if key not in self._datasets:
            self._datasets[key] = (
                _local_dataset(
                    self._file(entry["file"]), self.folder, piece.name, spec, entry, self.manifest
                ),
                (0,) * len(shape),
            )
        dset, origin = self._datasets[key]
        return dset, origin, shape, entry["slab_rows"], tuple(entry["slab_checksums"])

    def _slab(self, piece: Piece, i: int) -> np.ndarray:
        key = (piece.kind, piece.name, piece.index, i)
        if key not in self._slabs:
            dset, origin, shape, rows, sums = self.dataset(piece)
            a, b = slab_bounds(shape[0], rows)[i]
            sel = (slice(origin[0] + a, origin[0] + b),) + tuple(
                slice(o, o + n) for o, n in zip(origin[1:], shape[1:], strict=True)
            )
            data = dset[sel]
            if checksum(data) != sums[i]:
                what = "array" if piece.kind == "array" else "local array"
                raise CheckpointError(
                    f"{self.folder / piece.file}: slab {i} of {what} {piece.name!r} fails its "
                    "checksum (corrupted)"
                )
            self._slabs = {k: v for k, v in self._slabs.items() if k[:3] == key[:3]}
            self._slabs[key] = data
        return self._slabs[key]

    def read(self, piece: Piece) -> np.ndarray:
        """The piece's region, from verified slabs."""
        _, _, shape, rows, _ = self.dataset(piece)
        (lo, hi), rest = piece.region[0], piece.region[1:]
        if piece.count == 0:
            self._slab(piece, 0)  # an empty block: its one checksum is still checked
        parts = []
        for i in piece.slabs:
            a, b = slab_bounds(shape[0], rows)[i]
            data = self._slab(piece, i)
            parts.append(data[(slice(max(lo, a) - a, min(hi, b) - a), *(slice(*r) for r in rest))])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read_into(self, piece: Piece, target: Any) -> None:
        """Read an array piece straight into ``target`` (its DistArray), slab by slab.

        A slab wholly inside the region and spanning the block's full width goes straight
        from the file into the target's buffer (``read_direct``) and is verified there,
        its checksum computed in a helper thread while the next slab is read when this
        machine has a core to spare (the Numba kernel releases the GIL), else right away
        while the slab is in cache; others are read, verified and copied.
        """
        from concurrent.futures import ThreadPoolExecutor
        from contextlib import nullcontext

        dset, origin, shape, rows, sums = self.dataset(piece)
        (lo, hi), rest = piece.region[0], piece.region[1:]
        whole_rows = all(r == (0, n) for r, n in zip(rest, shape[1:], strict=True))
        cols = tuple(slice(a, a + n) for a, n in zip(piece.at[1:], piece.shape[1:], strict=True))
        pending: list[tuple[int, Any]] = []
        threads = ThreadPoolExecutor(1, "parcomp-verify") if self.spare_core else nullcontext()
        with threads as pool:
            for i in piece.slabs:
                a, b = slab_bounds(shape[0], rows)[i]
                r0, r1 = max(lo, a), min(hi, b)
                dst = (slice(piece.at[0] + r0 - lo, piece.at[0] + r1 - lo), *cols)
                if whole_rows and (r0, r1) == (a, b) and b > a:
                    sel = tuple(
                        slice(h + d.start, h + d.stop)
                        for h, d in zip(target.halo, dst, strict=True)
                    )
                    src = (slice(origin[0] + a, origin[0] + b),) + tuple(
                        slice(o, o + n) for o, n in zip(origin[1:], shape[1:], strict=True)
                    )
                    dset.read_direct(target.local, source_sel=src, dest_sel=sel)
                    view = target.interior[dst]
                    pending.append((i, pool.submit(checksum, view) if pool else checksum(view)))
                    continue
                data = self._slab(piece, i)
                target.interior[dst] = data[(slice(r0 - a, r1 - a), *(slice(*r) for r in rest))]
        bad = [
            i for i, got in pending if (got if isinstance(got, str) else got.result()) != sums[i]
        ]
        if bad:
            raise CheckpointError(
                f"{self.folder / piece.file}: slab {bad[0]} of array {piece.name!r} "
                "fails its checksum (corrupted)"
            )

    def forget(self) -> None:
        """Drop the verified slabs kept for the current block."""
        self._slabs = {}

    def close(self) -> None:
        """Close every open file."""
        for fh in self._files.values():
            try:
                fh.close()
            except (OSError, RuntimeError):
                pass
        self._files, self._datasets, self._slabs = {}, {}, {}


def _local_dataset(
    fh: Any, folder: Path, name: str, spec: Any, entry: Any, manifest: Manifest | None = None
) -> Any:
    """The per-rank piece ``entry`` of local array ``name``, checked before any read: a
    plain dataset of the manifest's dtype and shape, in a shard whose own ``step``,
    ``nprocs`` and ``rank`` are the manifest's, and which records (when written by a
    parcomp that records it) the same owner rank, piece index and length."""
    import h5py

    link = fh.get("local", getlink=True)
    group = fh["local"] if isinstance(link, h5py.HardLink) else None
    dset = group.get(name) if group is not None else None
    if (
        not isinstance(dset, h5py.Dataset)
        or not isinstance(group.get(name, getlink=True), h5py.HardLink)
        or dset.is_virtual
        or dset.external
        or dset.dtype != np.dtype(spec["dtype"])
        or tuple(dset.shape) != (entry["length"], *spec["tail"])
    ):
        raise CheckpointSchemaError(
            f"{folder / entry['file']}: local array {name!r} is not the plain "
            f"{spec['dtype']} dataset of {entry['length']} rows the manifest describes"
        )
    where = f"{folder / entry['file']}: local array {name!r}"
    if manifest is not None:
        file_attrs = _attrs(fh, ("step", "nprocs", "rank"))
        _same(where, "step", file_attrs["step"], manifest.step)
        _same(where, "nprocs", file_attrs["nprocs"], manifest.nprocs)
    else:
        file_attrs = _attrs(fh, ("rank",))
    # the shard's own rank is that of the piece: a piece of another rank's shard is not
    # this piece, whatever a (consistently forged) manifest says
    _same(where, "rank", file_attrs["rank"], int(entry["rank"]))
    owner = _attrs(dset, ("rank", "piece", "length"))
    for key, want in (
        ("rank", int(entry["rank"])),
        ("piece", int(entry["rank"])),
        ("length", int(entry["length"])),
    ):
        if owner[key] is not None:  # shards written before this was recorded lack them
            _same(where, key, owner[key], want)
    return dset
