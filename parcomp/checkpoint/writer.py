"""Writing a checkpoint's files: shards, the master file, the manifest; publish, prune.

Local: the pieces the commit protocol (:mod:`parcomp.checkpoint.transaction`) calls.

* :func:`reserve_space` and :class:`ReservedIO`: a rank's bytes are reserved
  (``posix_fallocate``) and the HDF5 file is written into the reservation itself, so a
  full disk is an ordinary ``OSError``, never a crash inside HDF5;
* :func:`write_shard`: a rank's blocks slab by slab, a checksum per slab, its layout in
  the dataset's attributes (compared with the manifest on restore), then fsync;
* :func:`write_master` and :func:`build_manifest` (rank 0); :func:`publish` writes the
  manifest last (temp name, fsync, replace), renames the folder to ``step-N`` and fsyncs
  the parent: the commit;
* :func:`prune`: checkpoints beyond the newest ``keep`` and stale temp folders, deleted
  in the background only after a newer commit.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint.format import (
    FORMAT,
    MANIFEST,
    MASTER,
    SCHEMA_VERSION,
    parse_step,
    private_file,
    shard_name,
    step_dir_name,
    write_json_atomic,
)
from parcomp.checkpoint.manifest import manifest_digest
from parcomp.checkpoint.perrank import write_local
from parcomp.io.slabs import checksum, fsync_path, slab_bounds, slab_rows

__all__ = [
    "write_shard",
    "write_master",
    "Snapshot",
    "estimate_shard_bytes",
    "reserve_space",
    "manifest_arrays",
    "build_manifest",
    "publish",
    "prune",
    "mpio_available",
    "write_single_file",
    "add_scalars",
]


class Snapshot:
    """What one rank contributes to a checkpoint: its blocks and their layout.

    With ``copy`` (asynchronous saves) the blocks are copied so that compute may go on;
    otherwise they are views of the interiors, written slab by slab without a full copy.
    """

    def __init__(
        self, arrays: dict[str, Any], copy: bool, per_rank: dict[str, np.ndarray] | None = None
    ) -> None:
        #: This rank's per-rank arrays (``local=``), copied too when ``copy``.
        self.per_rank: dict[str, np.ndarray] = {
            k: np.array(v, copy=True) if copy else v for k, v in (per_rank or {}).items()
        }
        self.blocks: dict[str, np.ndarray] = {}
        self.layout: dict[str, dict[str, Any]] = {}
        for name, arr in arrays.items():
            block = arr.interior
            self.blocks[name] = np.array(block, copy=True) if copy else block
            part = arr.partition
            self.layout[name] = {
                "global_shape": list(part.global_shape),
                "dtype": arr.dtype.str,
                "dims": list(part.dims),
                "periods": list(part.periods),
                "halo": list(arr.halo),
                "start": [a for a, _ in arr.local_range],
                "shape": list(arr.local_shape),
            }


def layout_attrs(lay: dict[str, Any]) -> dict[str, Any]:
    """The decomposition, stored on each saved dataset too: readers compare it with the
    manifest, so a manifest rewritten with another halo, grid or periodicity is caught."""
    return {
        "halo": np.array(lay["halo"], np.int64),
        "dims": np.array(lay["dims"], np.int64),
        "periods": np.array(lay["periods"], np.int8),
    }


def estimate_shard_bytes(snap: Snapshot) -> int:
    """Upper bound of a shard file's size: the data, HDF5 metadata, and a margin."""
    data = sum(block.nbytes for block in snap.blocks.values())
    return int(data * 1.01) + 32 * 1024 + 16 * 1024 * len(snap.blocks)


def reserve_space(folder: Path, rank: int | str, nbytes: int) -> Path:
    """Reserve ``nbytes`` of disk in ``folder`` (``posix_fallocate``) and return the placeholder.

    HDF5 cannot fail cleanly when the disk fills: with h5py 3.16 an ENOSPC at file close
    ends in a segmentation fault (seen here on a full tmpfs, with the default driver and
    with a Python file object alike).  So every rank first reserves the space its shard
    needs, which fails with an ordinary ``OSError`` that the ranks agree on, and then
    writes the shard into this very file (:class:`ReservedIO`): the space is never
    released for another process to take in between.
    """
    path = folder / (f".reserve-{rank:05d}" if isinstance(rank, int) else f".reserve-{rank}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(1, nbytes))
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


class ReservedIO(io.RawIOBase):
    """A file object over a preallocated file, for h5py's ``fileobj`` driver.

    HDF5 cannot survive an I/O error: with h5py 3.16, closing a file after a failed write
    (ENOSPC, EDQUOT, EIO) crashes the process with a segmentation fault (seen here on a
    full tmpfs).  So HDF5 never sees one:

    * the shard is written into the very file whose space was reserved
      (``posix_fallocate``), never released first, so no other process can take it;
    * HDF5's requests to shrink the file are only recorded (the real ``ftruncate`` comes
      after HDF5 has closed it);
    * should a write or a growth fail anyway (the estimate was short, the file system
      does not honour the reservation), the object moves everything it holds into
      memory and goes on there; HDF5 finishes and closes normally, and :meth:`finish`
      then raises the ``OSError``, deletes the file and leaves the earlier checkpoints
      alone.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.allocated = os.fstat(self.fd).st_size
        self.pos = 0
        self.eof = 0
        self.memory: bytearray | None = None
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _spill(self, exc: OSError) -> None:
        self.error = exc
        self.memory = bytearray(os.pread(self.fd, self.eof, 0)) if self.eof else bytearray()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.memory is not None:
            data = bytes(self.memory[self.pos : self.pos + len(view)])
        else:
            data = os.pread(self.fd, len(view), self.pos)
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        end = self.pos + len(view)
        if self.memory is None:
            try:
                if end > self.allocated:
                    os.posix_fallocate(self.fd, self.allocated, end - self.allocated)
                    self.allocated = end
                written = os.pwrite(self.fd, view, self.pos)
                if written != len(view):
                    raise OSError(errno.ENOSPC, "short write")
            except OSError as exc:
                self._spill(exc)
        if self.memory is not None:
            if len(self.memory) < end:
                self.memory.extend(bytes(end - len(self.memory)))
            self.memory[self.pos : end] = view
        self.pos = end
        self.eof = max(self.eof, end)
        return len(view)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.eof}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def truncate(self, size: int | None = None) -> int:
        self.eof = self.pos if size is None else size
        return self.eof

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        """After HDF5 closed it: trim to the real size, fsync; or raise the I/O error."""
        try:
            if self.error is not None:
                raise OSError(
                    self.error.errno, f"writing {self.path.name} failed: {self.error.strerror}"
                )
            os.ftruncate(self.fd, self.eof)
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1
            if self.error is not None:
                self.path.unlink(missing_ok=True)

    def close(self) -> None:  # h5py closes the object it was given; the fd is ours to close
        pass


def write_shard(
    folder: Path, rank: int, size: int, step: int, snap: Snapshot, reserved: Path | None = None
) -> dict[str, Any]:
    """Write this rank's shard into ``folder``; return its record for the manifest.

    With ``reserved`` (from :func:`reserve_space`), the shard is written into that file,
    through :class:`ReservedIO`, and renamed; an I/O error is then a clean ``OSError``.
    """
    import h5py

    name = shard_name(rank, size)
    path = folder / name
    record: dict[str, Any] = {"file": name, "arrays": {}}
    target = ReservedIO(reserved) if reserved is not None else path
    try:
        _fill_shard(h5py.File(target, "w"), rank, size, step, snap, record)
    finally:
        if isinstance(target, ReservedIO):
            target.finish()
    if reserved is not None:
        # created 0600 and fsynced by ReservedIO.finish; the rename is made durable by the
        # fsync of the folder when the manifest is written into it (publish)
        os.replace(reserved, path)
    else:
        private_file(path)
        fsync_path(path)
    record["bytes"] = path.stat().st_size
    return record


def _fill_shard(
    fh: Any, rank: int, size: int, step: int, snap: Snapshot, record: dict[str, Any]
) -> None:
    with fh:
        fh.attrs.update(
            {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "rank": rank,
                "nprocs": size,
                "step": step,
            }
        )
        group = fh.create_group("arrays")
        for array_name, block in snap.blocks.items():
            rows = slab_rows(block.shape, block.itemsize)
            chunks = (min(rows, block.shape[0]), *block.shape[1:]) if block.ndim else None
            dset = group.create_dataset(
                array_name, shape=block.shape, dtype=block.dtype, chunks=chunks
            )
            sums = _write_slabs(dset, block, rows)
            lay = snap.layout[array_name]
            dset.attrs.update(
                {
                    "global_start": lay["start"],
                    "global_shape": lay["global_shape"],
                    "slab_rows": rows,
                    **layout_attrs(lay),
                }
            )
            dset.attrs["slab_checksums"] = np.array(sums, dtype="S")
            record["arrays"][array_name] = {
                "start": lay["start"],
                "shape": lay["shape"],
                "slab_rows": rows,
                "slab_checksums": sums,
            }
        _write_per_rank(fh, snap, record, rank)


def _write_slabs(dset: Any, block: np.ndarray, rows: int) -> list[str]:
    """Write ``block`` slab by slab (no full copy); each slab's checksum is computed in a
    helper thread while HDF5 writes it (the Numba kernel releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="parcomp-checksum") as pool:
        futures = []
        for a, b in slab_bounds(block.shape[0], rows):
            futures.append(pool.submit(checksum, block[a:b]))
            if b > a:
                dset[a:b] = block[a:b]
        return [f.result() for f in futures]


def _write_per_rank(fh: Any, snap: Snapshot, record: dict[str, Any], rank: int) -> None:
    if snap.per_rank:
        record["local"] = write_local(fh.create_group("local"), snap.per_rank, rank)


def write_master(
    folder: Path, step: int, size: int, arrays: dict[str, dict[str, Any]], scalars: dict[str, Any]
) -> None:
    import h5py

    path = folder / MASTER
    # Reserved first and written into the reservation, as the shards (see ReservedIO).
    reserved = reserve_space(folder, "master", 64 * 1024 + 512 * size * max(1, len(arrays)))
    target = ReservedIO(reserved)
    try:
        _fill_master(h5py.File(target, "w"), step, size, arrays, scalars)
    finally:
        target.finish()  # fsynced; created 0600; the folder is fsynced at publish
    os.replace(reserved, path)


def _fill_master(
    fh: Any, step: int, size: int, arrays: dict[str, dict[str, Any]], scalars: dict[str, Any]
) -> None:
    import h5py

    with fh:
        fh.attrs.update(
            {"format": FORMAT, "schema_version": SCHEMA_VERSION, "step": step, "nprocs": size}
        )
        group = fh.create_group("arrays")
        for name, spec in arrays.items():
            layout = h5py.VirtualLayout(
                shape=tuple(spec["global_shape"]), dtype=np.dtype(spec["dtype"])
            )
            for shard in spec["shards"]:
                source = h5py.VirtualSource(
                    f"./{shard['file']}", f"/arrays/{name}", shape=tuple(shard["shape"])
                )
                region = tuple(
                    slice(s, s + n) for s, n in zip(shard["start"], shard["shape"], strict=True)
                )
                layout[region] = source
            dset = group.create_virtual_dataset(name, layout)
            dset.attrs["description"] = (
                "global array; a view of the shard files (HDF5 virtual dataset)"
            )
        sc = fh.create_group("scalars")
        for key, value in scalars.items():
            if isinstance(value, bool | int | float | str):
                sc.attrs[key] = value


def manifest_arrays(
    layouts: dict[str, dict[str, Any]], records: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The manifest's ``arrays`` section: each array's layout and its shards' records."""
    arrays: dict[str, dict[str, Any]] = {}
    for name, lay in layouts.items():
        arrays[name] = {k: lay[k] for k in ("global_shape", "dtype", "dims", "periods", "halo")}
        arrays[name]["shards"] = [
            {"rank": r, "file": rec["file"], **rec["arrays"][name]} for r, rec in enumerate(records)
        ]
    return arrays


def build_manifest(
    step: int,
    size: int,
    arrays: dict[str, dict[str, Any]],
    files: list[dict[str, Any]],
    scalars: dict[str, Any],
    rng: dict[str, Any],
    meta: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The manifest of a checkpoint (see :mod:`parcomp.checkpoint.format`), with its checksum."""

    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "step": step,
        "nprocs": size,
        "created_unix": time.time(),
        "arrays": arrays,
        "files": files,
        "scalars": scalars,
        "rng": rng,
        "meta": meta,
        **extra,
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    return manifest


def publish(directory: Path, tmp: Path, step: int, manifest: dict[str, Any]) -> Path:
    """Write the manifest into ``tmp`` and rename it to ``directory/step-N``: the commit."""
    write_json_atomic(tmp / MANIFEST, manifest)
    for path in [tmp, *tmp.iterdir()]:  # follow the umask, but never world-writable
        mode = path.stat().st_mode
        if mode & 0o002:
            os.chmod(path, (mode & 0o7777) & ~0o002)
    final = directory / step_dir_name(step)
    old = None
    if final.exists():  # the same step saved again (after a restart): swap, then drop the old
        old = directory / f".old-{final.name}-{os.urandom(4).hex()}"
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_path(directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def prune(directory: Path, keep: int, current: Path) -> threading.Thread:
    """Delete checkpoints beyond the newest ``keep`` and stale temp folders, in the background.

    What to delete is decided now (so a later save's temp folder is never touched); the
    deleting, which took a quarter of a save's time here, happens in a thread joined
    before the next commit (see ``Checkpointer``).
    """
    steps = sorted((s, p) for p in directory.iterdir() if (s := parse_step(p.name)) is not None)
    doomed = [p for _, p in (steps[:-keep] if keep > 0 else []) if p != current]
    doomed += [
        p
        for p in directory.iterdir()
        if p.name.startswith((".tmp-step-", ".old-step-")) and p.is_dir()
    ]
    thread = threading.Thread(target=_delete, args=(doomed,), daemon=True, name="parcomp-prune")
    thread.start()
    return thread


def _delete(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def mpio_available() -> bool:
    """Whether h5py was built with MPI (parallel HDF5): the single-file writer needs it."""
    import h5py

    return bool(h5py.get_config().mpi)


def write_single_file(folder: Path, comm: Any, step: int, snap: Snapshot) -> dict[str, Any]:
    """Collective (mpio) write of every rank's blocks into one ``master.h5``; this rank's record.

    Each array is one contiguous global dataset ``/arrays/<name>``; every rank writes its
    block with one collective hyperslab write and checksums its slabs as in a shard, so
    restore verifies the same way (the record's ``file_start`` says where the block is).
    """
    import h5py

    rank, size = comm.Get_rank(), comm.Get_size()
    path = folder / MASTER
    record: dict[str, Any] = {"file": MASTER, "arrays": {}}
    with h5py.File(path, "w", driver="mpio", comm=comm) as fh:
        fh.attrs.update(
            {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "step": step,
                "nprocs": size,
                "layout": "single file, written collectively (mpio)",
            }
        )
        group = fh.create_group("arrays")
        for name, block in snap.blocks.items():
            lay = snap.layout[name]
            dset = group.create_dataset(
                name, shape=tuple(lay["global_shape"]), dtype=np.dtype(lay["dtype"])
            )
            region = tuple(slice(s, s + n) for s, n in zip(lay["start"], lay["shape"], strict=True))
            data = np.ascontiguousarray(block)
            dset.attrs.update(layout_attrs(lay))
            with dset.collective:
                dset[region] = data
            rows = slab_rows(block.shape, block.itemsize)
            sums = [checksum(data[a:b]) for a, b in slab_bounds(block.shape[0], rows)]
            record["arrays"][name] = {
                "start": lay["start"],
                "shape": lay["shape"],
                "file_start": lay["start"],
                "slab_rows": rows,
                "slab_checksums": sums,
            }
        fh.create_group("scalars")
    comm.Barrier()  # every rank closed the file before rank 0 reopens it
    if rank == 0:
        private_file(path)
        fsync_path(path)
    return record


def add_scalars(path: Path, scalars: dict[str, Any]) -> None:
    """Rank 0, after a single-file write: numbers and strings as ``/scalars`` attributes."""
    import h5py

    with h5py.File(path, "r+") as fh:
        for key, value in scalars.items():
            if isinstance(value, bool | int | float | str):
                fh["scalars"].attrs[key] = value
    fsync_path(path)
