"""Reading checkpoints back, on any rank count, verifying every byte.

``list_checkpoints`` and ``inspect_checkpoint`` are local; ``load_latest`` COMMUNICATES.

Restore re-decomposes each array for the current rank count: each rank works out which
saved blocks overlap its new block (from the manifest), reads the slabs of those shards
that cover the overlap, checks each slab's checksum and
copies the overlap into place.  The ranks then agree; if anything failed (a file missing,
truncated, bit-flipped, a bad manifest), every rank falls back to the next older checkpoint
with a warning.  Nothing is unpickled: manifests are JSON, data are typed HDF5 datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint.format import (
    MANIFEST,
    check_regular,
    checksum,
    overlap,
    parse_step,
    read_manifest,
    slab_bounds,
    slab_checksums,
    step_dir_name,
)
from parcomp.checkpoint.manifest import ALLOWED_BIT_GENERATORS, ArraySpec, Manifest, ShardSpec
from parcomp.checkpoint.perrank import local_ranges, read_local
from parcomp.comm import get_logger
from parcomp.errors import CheckpointError, CheckpointSchemaError, ParcompError

__all__ = ["list_checkpoints", "inspect_checkpoint", "load_latest", "open_block", "Restored"]


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Committed-looking checkpoint directories, newest first (not yet validated)."""
    if not directory.is_dir():
        return []
    found = [
        (s, p)
        for p in directory.iterdir()
        if (s := parse_step(p.name)) is not None and p.is_dir() and not p.is_symlink()
    ]
    return sorted(found, reverse=True)


def inspect_checkpoint(folder: Path, verify_data: bool = True) -> tuple[bool, str]:
    """Validate one checkpoint in this process alone: ``(valid, one-line description)``.

    The same checks as a restore (:func:`read_manifest`, then :func:`open_block` and the
    slab checksums of every block), so ``parcomp inspect`` and a restore always agree on
    which checkpoint is valid.
    """
    import h5py

    try:
        manifest = read_manifest(folder)
        if verify_data:
            for name, spec in manifest.arrays.items():
                for shard in spec.shards:
                    with h5py.File(folder / shard.file, "r") as fh:
                        dset = open_block(fh, folder, manifest, spec, shard)
                        data = dset[_block_selection(shard)(0, shard.shape[0])]
                    if tuple(slab_checksums(data, shard.slab_rows)) != shard.slab_checksums:
                        raise CheckpointError(f"{shard.file}: array {name!r} fails its checksum")
            for name, spec in manifest.local.items():  # per-rank data, one piece at a time
                base = 0
                for piece in spec["pieces"]:
                    read_local(folder, manifest, {name: (base, base + piece["length"])}, only=name)
                    base += piece["length"]
        arrays = ", ".join(f"{n}{s.global_shape}:{s.dtype}" for n, s in manifest.arrays.items())
        return (
            True,
            f"step {manifest.step}, {manifest.nprocs} ranks, arrays [{arrays}], scalars {sorted(manifest.scalars)}",
        )
    except (ParcompError, OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        return False, f"INVALID: {exc}"


def open_block(fh: Any, folder: Path, manifest: Manifest, spec: ArraySpec, shard: ShardSpec) -> Any:
    """The dataset of ``shard``'s block in the open file ``fh``, checked before any read.

    It must be a plain dataset stored in this file (no soft or external link, no virtual
    dataset, no external raw storage: all could point outside the checkpoint), with the
    manifest's dtype and shape.  What the writer recorded inside the file must be the
    manifest's too: the block's placement (``global_start``, ``global_shape``), the
    decomposition (``halo``, ``dims``, ``periods``) and the file's ``step``, ``nprocs`` and
    ``rank``.  So a swapped or edited placement, halo or periodicity is detected even in a
    manifest rewritten consistently, checksum included.
    """
    import h5py

    where = f"{folder / shard.file}: array {spec.name!r}"
    group = fh.get("arrays", getlink=True)
    if not isinstance(group, h5py.HardLink):
        raise CheckpointSchemaError(f"{where}: /arrays is a {type(group).__name__}, not a group")
    link = fh["arrays"].get(spec.name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise CheckpointSchemaError(
            f"{where}: the dataset is a {type(link).__name__ if link is not None else 'missing link'}"
            " (links to other files are refused)"
        )
    dset = fh["arrays"][spec.name]
    if not isinstance(dset, h5py.Dataset) or dset.is_virtual or dset.external:
        raise CheckpointSchemaError(
            f"{where}: not a plain dataset (virtual datasets and external storage are refused)"
        )
    expected = spec.global_shape if shard.file_start is not None else shard.shape
    if tuple(dset.shape) != tuple(expected) or dset.dtype != spec.dtype:
        raise CheckpointError(
            f"{where}: dataset is {dset.dtype}{dset.shape}, the manifest says "
            f"{spec.dtype}{tuple(expected)}"
        )
    # What the file records must match the manifest.  Schema 2 files record all of it;
    # files of schema 1 (written before) lack the layout attributes, so those are compared
    # whenever present: a manifest downgraded to schema 1 cannot dodge the comparison.
    _same(where, "step", fh.attrs.get("step"), manifest.step)
    _same(where, "nprocs", fh.attrs.get("nprocs"), manifest.nprocs)
    if shard.file_start is None:
        _same(where, "rank", fh.attrs.get("rank"), shard.rank)
    for key, want in (
        ("halo", spec.halo),
        ("dims", spec.dims),
        ("periods", tuple(int(p) for p in spec.periods)),
    ):
        if key not in dset.attrs and manifest.version < 2:
            continue
        try:
            got = tuple(int(v) for v in dset.attrs.get(key))
        except (TypeError, ValueError):
            got = None
        _same(where, key, got, want)
    if shard.file_start is None:
        try:
            start = tuple(int(v) for v in dset.attrs.get("global_start", ()))
            whole = tuple(int(v) for v in dset.attrs.get("global_shape", ()))
        except (TypeError, ValueError):
            start = whole = ()
        if start != shard.start or whole != spec.global_shape:
            raise CheckpointSchemaError(
                f"{where}: the shard says it holds the block at {list(start)} of "
                f"{list(whole)}, the manifest places it at {list(shard.start)} of "
                f"{list(spec.global_shape)} (placement altered)"
            )
    return dset


def _same(where: str, key: str, got: Any, want: Any) -> None:
    try:
        value = got if got is None or isinstance(got, tuple) else int(got)
    except (TypeError, ValueError):
        value = None
    if value is None or value != want:
        raise CheckpointSchemaError(
            f"{where}: the file records {key} = {got}, the manifest says {want} (altered)"
        )


class Restored:
    """A checkpoint restored on this rank: step, arrays (re-decomposed), scalars, RNGs, meta."""

    def __init__(self, path: Path, manifest: Manifest, arrays: dict[str, Any]) -> None:
        self.path = path
        self.step: int = manifest.step
        self.saved_nprocs: int = manifest.nprocs
        self.scalars: dict[str, Any] = manifest.scalars
        self.meta: dict[str, Any] = manifest.meta
        self.rng_states: dict[str, Any] = manifest.rng
        self.arrays: dict[str, Any] = arrays
        #: Shards of a node-local checkpoint that were read from their partner copy.
        self.rebuilt: list[str] = []
        #: This rank's share of the per-rank data saved with ``local=``.
        self.local: dict[str, np.ndarray] = {}

    def generator(self, name: str) -> np.random.Generator:
        """The NumPy Generator saved under ``name``, in the exact state it had."""
        try:
            state = self.rng_states[name]
        except KeyError:
            raise CheckpointError(
                f"no RNG {name!r} in checkpoint {self.path}; it has {sorted(self.rng_states)}"
            ) from None
        if state.get("bit_generator") not in ALLOWED_BIT_GENERATORS:  # validated at parse
            raise CheckpointSchemaError(f"RNG {name!r}: bit generator not allowed")
        bit_generator = getattr(np.random, state["bit_generator"])()
        bit_generator.state = state
        return np.random.Generator(bit_generator)

    def __repr__(self) -> str:
        return f"Restored(step={self.step}, path={self.path}, arrays={sorted(self.arrays)}, scalars={sorted(self.scalars)})"


def _read_array(folder: Path, manifest: Manifest, spec: ArraySpec, target: Any) -> None:
    """Fill ``target.interior`` from the shards overlapping it, verifying every slab read."""
    import h5py

    mine = target.local_range
    for shard in spec.shards:
        region = overlap(shard.start, shard.shape, mine)
        if region is None:
            continue
        rows = shard.slab_rows
        first = region[0].start - shard.start[0]
        last = region[0].stop - shard.start[0]
        bounds = slab_bounds(shard.shape[0], rows)
        slabs = [(i, a, b) for i, (a, b) in enumerate(bounds) if a < last and b > first]
        inner = tuple(
            slice(r.start - s, r.stop - s) for r, s in zip(region[1:], shard.start[1:], strict=True)
        )
        check_regular(folder / shard.file)
        with h5py.File(folder / shard.file, "r") as fh:
            dset = open_block(fh, folder, manifest, spec, shard)
            block = _block_selection(shard)
            whole_rows = all(
                r.start == 0 and r.stop == n for r, n in zip(inner, shard.shape[1:], strict=True)
            )
            rest = tuple(
                slice(r.start - m[0], r.stop - m[0])
                for r, m in zip(region[1:], mine[1:], strict=True)
            )
            for i, a, b in slabs:
                lo, hi = max(a, first), min(b, last)
                off = shard.start[0] - mine[0][0]
                dst = (slice(off + lo, off + hi), *rest)
                direct = whole_rows and (lo, hi) == (a, b)
                if direct:  # the whole slab belongs here: read it straight into place
                    sel = tuple(
                        slice(h + d.start, h + d.stop)
                        for h, d in zip(target.halo, dst, strict=True)
                    )
                    dset.read_direct(target.local, source_sel=block(a, b), dest_sel=sel)
                    data = target.interior[dst]
                else:
                    data = dset[block(a, b)]
                if checksum(data) != shard.slab_checksums[i]:
                    raise CheckpointError(
                        f"{folder / shard.file}: slab {i} of array {spec.name!r} fails its checksum (corrupted)"
                    )
                if not direct:
                    target.interior[dst] = data[(slice(lo - a, hi - a), *inner)]


def _block_selection(shard: ShardSpec) -> Any:
    """``block(a, b)``: the dataset selection of rows a:b of a saved block, all its columns."""
    start = shard.file_start or (0,) * len(shard.shape)
    rest = tuple(slice(f, f + n) for f, n in zip(start[1:], shard.shape[1:], strict=True))

    def block(a: int, b: int) -> tuple[slice, ...]:
        return (slice(start[0] + a, start[0] + b), *rest)

    return block


def _make_targets(
    manifest: Manifest, comm: Any, overrides: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Create every restored array first (collective), before any rank reads (local)."""
    from parcomp.array import DistArray

    arrays: dict[str, Any] = {}
    size = comm.Get_size()
    for name, spec in manifest.arrays.items():
        opts: dict[str, Any] = {"halo": spec.halo, "periods": spec.periods}
        if size == manifest.nprocs:
            opts["dims"] = spec.dims
        opts.update(overrides.get(name, {}))
        arrays[name] = DistArray(spec.global_shape, spec.dtype, comm=comm, **opts)
    return arrays


def load_latest(
    directory: Path,
    comm: Any,
    overrides: dict[str, dict[str, Any]] | None = None,
    local: Any = None,
    redeal: Any = None,
) -> Restored | None:
    """Restore the newest valid checkpoint in ``directory`` on this communicator, or None.

    Parameters
    ----------
    local : parcomp.checkpoint.local.LocalTier, optional
        Also consider the node-local tier; for the same step it is tried first.

    Notes
    -----
    Collective over ``comm``.  A damaged checkpoint is skipped, with a warning, for the
    next older one; None means no valid checkpoint exists.
    """
    log = get_logger("parcomp.checkpoint")
    rank = comm.Get_rank()
    shared = comm.bcast(
        [(s, str(p)) for s, p in list_checkpoints(directory)] if rank == 0 else None, root=0
    )
    candidates: list[tuple[int, int, str | None]] = [(s, 1, p) for s, p in shared]
    if local is not None:
        from parcomp.checkpoint.local import local_steps

        candidates += [(s, 0, None) for s in local_steps(local)]
    candidates.sort(key=lambda c: (-c[0], c[1]))
    for step, tier, candidate in candidates:
        if tier == 0:
            from parcomp.checkpoint.local import restore_local

            manifest, arrays, error, rebuilt = restore_local(
                local, step, lambda m: _make_targets(m, comm, overrides or {})
            )
            if error is None:
                path = local.folder / step_dir_name(step)
                if rank == 0:
                    log.info(
                        "restored step %d from the node-local tier %s (saved on %d ranks)",
                        step,
                        local.root,
                        manifest.nprocs,
                    )
                restored = Restored(path, manifest, arrays)
                restored.rebuilt = rebuilt
                return restored
            if rank == 0:
                log.warning(
                    "node-local checkpoint of step %d cannot be restored, trying older or "
                    "flushed ones: %s",
                    step,
                    error,
                )
            continue
        path = Path(candidate)
        restored, error = _try_shared(path, comm, overrides or {}, redeal)
        if restored is not None:
            return restored
        if rank == 0:
            log.warning("checkpoint %s is damaged, falling back to an older one: %s", path, error)
    return None


def _try_shared(
    path: Path, comm: Any, overrides: dict[str, dict[str, Any]], redeal: Any = None
) -> tuple[Restored | None, str | None]:
    """Restore one checkpoint of the shared directory (collective): ``(restored, error)``."""
    log = get_logger("parcomp.checkpoint")
    rank = comm.Get_rank()
    manifest, error = _agree_manifest(path, comm)
    arrays: dict[str, Any] = {}
    local_error = None
    if error is None:
        # Collective part first: every rank makes the same arrays in the same order.
        # Only then the local reads, whose failure on one rank must not leave the
        # others inside a DistArray constructor while it waits in the agreement below.
        try:
            arrays = _make_targets(manifest, comm, overrides)
        except (ParcompError, KeyError, TypeError, ValueError) as exc:  # the same on every rank
            error = f"the manifest describes an array parcomp cannot build: {exc}"
    per_rank: dict[str, Any] = {}
    ranges = local_ranges(manifest, comm, redeal) if error is None and manifest.local else {}
    if error is None:
        try:
            for name, spec in manifest.arrays.items():
                _read_array(path, manifest, spec, arrays[name])
            per_rank = read_local(path, manifest, ranges) if manifest.local else {}
        except (ParcompError, OSError, RuntimeError, KeyError, ValueError) as exc:
            if _is_mpi_error(exc):
                raise
            local_error = f"rank {rank}: {exc}"
        errors = [e for e in comm.allgather(local_error) if e]
        error = "; ".join(errors) if errors else None
    if error is not None:
        return None, error
    if rank == 0:
        log.info(
            "restored step %d from %s (saved on %d ranks)",
            manifest.step,
            path,
            manifest.nprocs,
        )
    restored = Restored(path, manifest, arrays)
    restored.local = per_rank
    return restored, None


def _agree_manifest(path: Path, comm: Any) -> tuple[Manifest | None, str | None]:
    """Rank 0 reads and checks the manifest and its files; every rank parses the same bytes.

    Only the manifest's bytes travel (``Bcast`` of a byte buffer) and the verdict as a
    short string: nothing read from disk is unpickled.  Parsing is deterministic, so every
    rank holds the same :class:`Manifest` or the same error.  Collective over ``comm``.
    """
    raw, error, parsed = b"", None, None
    if comm.Get_rank() == 0:
        try:
            parsed = read_manifest(path)
            raw = parsed.raw
        except (ParcompError, OSError) as exc:
            error = str(exc)
    error = comm.bcast(error, root=0)
    if error is not None:
        return None, error
    size = np.array([len(raw)], np.int64)
    comm.Bcast(size, root=0)
    buf = (
        np.frombuffer(raw, np.uint8).copy()
        if comm.Get_rank() == 0
        else np.empty(int(size[0]), np.uint8)
    )
    comm.Bcast(buf, root=0)
    if parsed is not None:  # rank 0 parsed these very bytes already
        return parsed, None
    try:
        return Manifest.parse(buf.tobytes(), str(path / MANIFEST), parse_step(path.name)), None
    except CheckpointSchemaError as exc:  # cannot happen after rank 0 parsed it; same everywhere
        return None, str(exc)


def _is_mpi_error(exc: BaseException) -> bool:
    """An MPI error (a failed peer under ULFM) must propagate, not look like bad data."""
    from mpi4py import MPI

    return isinstance(exc, MPI.Exception)
