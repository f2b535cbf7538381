"""The part files behind a parcomp output file: written checksummed, read confined.

Local (each rank opens and checks the parts it reads; the callers agree on errors).

``save_hdf5`` with serial h5py writes one part file per rank into ``<name>.parts-<id>/``
and a small file whose datasets are HDF5 virtual datasets over the parts.  HDF5 itself
would follow a virtual dataset's sources anywhere (absolute paths, ``../``, symbolic
links) and read whatever it finds there, with success.  So parcomp reads its own output
files part by part, not through HDF5's virtual-dataset machinery:

* **Confinement**: every source of the virtual dataset must be ``./<parts>/rank-NNNNN.h5``
  with ``<parts>`` the folder the file names in its ``parts`` attribute (one path
  component, no ``..``), rank ``NNNNN`` below the file's ``nprocs``, the dataset of the
  same name; the folder is opened with ``O_NOFOLLOW | O_DIRECTORY`` and each part with
  ``O_NOFOLLOW`` relative to it, and must be a regular file owned by this user
  (``fstat``): a symbolic link, a FIFO or another user's file is refused, and nothing
  outside the folder is ever opened.  HDF5 then reads the part from that descriptor.
* **Integrity**: each part dataset records its placement (``rank``, ``nprocs``, the
  process grid ``dims``, ``global_start``, ``global_shape``) and a Fletcher-64 checksum
  per slab of rows (``slab_rows``, ``slab_checksums``), as checkpoint shards do.  The
  reader compares the placement with the virtual dataset's mapping and verifies every
  slab it reads: a renamed dataset, a part of another rank, a flipped bit or a truncated
  part is an ``HDF5Error``, never data.
* **One pass**: HDF5 gives the part dataset's byte offset (contiguous, unfiltered: what
  parcomp writes); the part's pages are mapped read-only and each slab is copied into
  the result and summed in the same loop, so the check costs no second pass over
  memory.  A part cut short *while* it is mapped (another process truncating it during
  the read) ends the reading rank with SIGBUS, and the job with it: never data.

Files written by other programs (no ``creator = parcomp``) are read as before; parts
written by an older parcomp (no checksums) are read confined, without the checksum check.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.io.slabs import checksum, copy_checksum, slab_bounds, slab_rows
from parcomp.runtime.errors import HDF5Error

__all__ = [
    "PartSource",
    "check_output_sources",
    "check_parts_folder",
    "open_part",
    "read_region",
    "write_part_dataset",
]

_PART = re.compile(r"^\./([^/]+)/rank-(\d{5})\.h5$")


@dataclass(frozen=True)
class PartSource:
    """One part of a virtual dataset: whose file, where its block sits."""

    rank: int
    start: tuple[int, ...]
    shape: tuple[int, ...]


def write_part_dataset(fh: Any, name: str, a: Any, rank: int, size: int) -> None:
    """Write ``a``'s block as dataset ``name`` of part file ``fh``, with its placement and
    a checksum per slab of rows (the checkpoint shards' format)."""

    block = a.interior
    dset = fh.create_dataset(name, shape=a.local_shape, dtype=a.dtype)
    rows = slab_rows(a.local_shape, a.dtype.itemsize)
    bounds = slab_bounds(a.local_shape[0], rows)
    if block.size and block.ndim == 2 and block.dtype.itemsize == 8 and block.strides[1] == 8:
        # each slab gathered from between the halo columns and summed in one pass, then
        # written contiguous (HDF5 would gather it again, and the sums read it a third time)
        staging = np.empty((min(rows, block.shape[0]), block.shape[1]), block.dtype)
        sums = []
        for lo, hi in bounds:
            sums.append(copy_checksum(block[lo:hi], staging[: hi - lo]))
            dset.write_direct(staging, np.s_[: hi - lo], np.s_[lo:hi])
    else:
        if block.size:
            if a.local.flags.c_contiguous:
                dset.write_direct(a.local, a.layout.interior)
            else:  # a buffer HDF5 cannot read in place (a user's strided or F-order one)
                dset.write_direct(np.ascontiguousarray(block))
        sums = [checksum(block[lo:hi]) for lo, hi in bounds]
    dset.attrs["global_start"] = [lo for lo, _ in a.local_range]
    dset.attrs["global_shape"] = list(a.global_shape)
    dset.attrs["rank"] = rank
    dset.attrs["nprocs"] = size
    dset.attrs["dims"] = list(a.partition.dims)
    dset.attrs["slab_rows"] = rows
    dset.attrs["slab_checksums"] = np.array(sums, dtype="S")


def check_output_sources(path: Path, name: str, dset: Any, parts: Any) -> list[PartSource]:
    """The parts of parcomp's virtual dataset ``name`` of ``path``, checked: every source
    is a part file of the file's own parts folder, the blocks tile the dataset.  Raises
    :class:`HDF5Error` otherwise (local)."""
    where = f"load_hdf5: {name!r} in {path}"
    folder = parts.decode() if isinstance(parts, bytes) else str(parts)
    if not folder or "/" in folder or folder in (".", "..") or "\x00" in folder:
        raise HDF5Error(f"{where}: its parts folder {folder!r} is not a plain folder name")
    check_parts_folder(path, folder, where)
    shape = tuple(int(n) for n in dset.shape)
    out = []
    covered = 0
    for vs in dset.virtual_sources():
        m = _PART.match(vs.file_name)
        if m is None or m.group(1) != folder or vs.dset_name.lstrip("/") != name:
            raise HDF5Error(
                f"{where}: a virtual source is {vs.file_name!r}:{vs.dset_name!r}; a parcomp "
                f"file reads only ./{folder}/rank-NNNNN.h5:{name} (refused: it points "
                "outside the file's own parts)"
            )
        lo, hi = vs.vspace.get_select_bounds()
        start = tuple(int(v) for v in lo)
        extent = tuple(int(b) - int(a) + 1 for a, b in zip(lo, hi, strict=True))
        if any(s < 0 or s + e > n for s, e, n in zip(start, extent, shape, strict=True)):
            raise HDF5Error(f"{where}: a part's block {start}+{extent} leaves {shape}")
        covered += int(np.prod(extent))
        out.append(PartSource(int(m.group(2)), start, extent))
    if covered != int(np.prod(shape)) or len({s.rank for s in out}) != len(out):
        raise HDF5Error(f"{where}: its parts do not tile the dataset {shape} once")
    return out


def check_parts_folder(path: Path, folder: str, where: str) -> None:
    """``path``'s parts folder ``folder`` must be a plain folder name, exist beside it and
    be a real folder, not a link (else :class:`HDF5Error`)."""
    if not folder or "/" in folder or folder in (".", "..") or "\x00" in folder:
        raise HDF5Error(f"{where}: its parts folder {folder!r} is not a plain folder name")
    try:
        info = os.lstat(path.parent / folder)
    except FileNotFoundError:
        raise HDF5Error(
            f"{where} is a virtual dataset whose source files ({folder}/) are missing; "
            "reading it would give fill values. Copy the part folder along with the file"
        ) from None
    except OSError as exc:
        raise HDF5Error(f"{where}: cannot inspect its parts folder {folder}: {exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise HDF5Error(
            f"{where}: its parts folder {folder} is "
            + ("a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder")
            + " (refused: parcomp reads only the file's own parts)"
        )


def open_part(parts_dir: Path, rank: int, where: str) -> Any:
    """A read-only file object for ``parts_dir/rank-NNNNN.h5``: no link followed, a
    regular file owned by this user (else HDF5Error)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        dirfd = os.open(parts_dir, flags | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise HDF5Error(
            f"{where}: cannot open its parts folder {parts_dir} without following a link: "
            f"{exc.strerror}"
        ) from None
    try:
        name = f"rank-{rank:05d}.h5"
        try:
            fd = os.open(name, flags | getattr(os, "O_NONBLOCK", 0), dir_fd=dirfd)
        except OSError as exc:
            raise HDF5Error(
                f"{where}: part {parts_dir / name} cannot be opened as a plain file "
                f"(no link followed): {exc.strerror}"
            ) from None
    finally:
        os.close(dirfd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise HDF5Error(
            f"{where}: part {parts_dir / name} is not a regular file of this user (refused)"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _fast_path(fobj: Any) -> Any:
    """What h5py opens for a checked part: ``/proc/self/fd/N`` (the same open file, by its
    descriptor: no path is resolved again, and HDF5's own POSIX driver reads it, several
    times faster than a Python file object), or the file object without ``/proc``."""
    path = f"/proc/self/fd/{fobj.fileno()}"
    return path if os.path.exists(path) else fobj


def read_region(
    path: Path,
    name: str,
    parts: Any,
    sources: list[PartSource],
    region: tuple[tuple[int, int], ...],
    out: np.ndarray,
) -> None:
    """Fill ``out`` (of the region's shape, the stored dtype) with the global ``region``
    of dataset ``name``, reading each overlapping part confined and verified (local).
    ``out`` may be a strided view (a DistArray's interior, between its halo)."""
    import h5py

    where = f"load_hdf5: {name!r} in {path}"
    folder = path.parent / (parts.decode() if isinstance(parts, bytes) else str(parts))
    for src in sources:
        lo = [max(r0, s) for (r0, _), s in zip(region, src.start, strict=True)]
        hi = [min(r1, s + e) for (_, r1), s, e in zip(region, src.start, src.shape, strict=True)]
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            continue
        fobj = open_part(folder, src.rank, where)
        try:
            with h5py.File(_fast_path(fobj), "r") as fh:
                link = fh.get(name, getlink=True)
                dset = fh.get(name) if isinstance(link, h5py.HardLink) else None
                if (
                    not isinstance(dset, h5py.Dataset)
                    or dset.is_virtual
                    or dset.external
                    or tuple(dset.shape) != src.shape
                    or dset.dtype != out.dtype
                ):
                    raise HDF5Error(
                        f"{where}: part rank-{src.rank:05d}.h5 has no plain dataset {name!r} of "
                        f"{out.dtype} {src.shape} (renamed, replaced or truncated?)"
                    )
                _check_placement(dset, src, where)
                sums = dset.attrs.get("slab_checksums")
                local = tuple(
                    slice(a - s, b - s) for a, b, s in zip(lo, hi, src.start, strict=True)
                )
                dest = tuple(
                    slice(a - r0, b - r0) for a, b, (r0, _) in zip(lo, hi, region, strict=True)
                )
                if sums is None:  # an older parcomp's part: confined, not checksummed
                    out[dest] = dset[local]
                    continue
                rows = int(dset.attrs["slab_rows"])
                if rows < 1:  # slab_bounds of a negative count covers no row: nothing checked
                    raise HDF5Error(
                        f"{where}: part rank-{src.rank:05d}.h5 says slab_rows={rows} (damaged)"
                    )
                bounds = slab_bounds(src.shape[0], rows)
                if len(sums) != len(bounds):
                    raise HDF5Error(f"{where}: part rank-{src.rank:05d}.h5 lists bad checksums")
                wanted = [
                    (i, span)
                    for i, span in enumerate(bounds)
                    if span[1] > local[0].start and span[0] < local[0].stop
                ]
                offset = _contiguous_offset(dset)
                if offset is None:  # not parcomp's layout: HDF5 reads each slab
                    digests = _read_slabs_hdf5(dset, wanted, local, dest, out)
                else:
                    digests = _read_slabs_mapped(fobj, offset, src.shape, wanted, local, dest, out)
                for i, digest in digests:
                    if digest != bytes(sums[i]).decode():
                        raise HDF5Error(
                            f"{where}: slab {i} of part rank-{src.rank:05d}.h5 fails its "
                            "checksum (corrupted)"
                        )
        except HDF5Error:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            # (h5py raises RuntimeError for some damaged metadata: a link it cannot check)
            raise HDF5Error(f"{where}: reading part rank-{src.rank:05d}.h5 failed: {exc}") from None
        finally:
            fobj.close()


def _contiguous_offset(dset: Any) -> int | None:
    """Where a plain dataset's bytes start in its file (contiguous layout, no filters,
    native byte order: the part files parcomp writes), else None."""
    import h5py

    try:
        plist = dset.id.get_create_plist()
        if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters():
            return None
        if not dset.dtype.isnative:
            return None
        offset = dset.id.get_offset()
    except (AttributeError, OSError, ValueError, RuntimeError):
        return None
    return None if offset is None else int(offset)


Spans = list[tuple[int, tuple[int, int]]]


def _place(
    slab: np.ndarray, span: tuple[int, int], local: tuple[slice, ...], dest: tuple[slice, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where the rows of ``slab`` (rows ``span`` of the part) that lie within ``local`` go
    in ``out``: ``(out index, slab index)``."""
    a, b = span
    r0, r1 = max(a, local[0].start), min(b, local[0].stop)
    d0 = dest[0].start + (r0 - local[0].start)
    return (slice(d0, d0 + (r1 - r0)), *dest[1:]), (slice(r0 - a, r1 - a), *local[1:])


def _read_slabs_hdf5(
    dset: Any, wanted: Spans, local: tuple[slice, ...], dest: tuple[slice, ...], out: np.ndarray
) -> list[tuple[int, str]]:
    """Each wanted slab read by HDF5, summed, and its rows within ``local`` copied to
    ``out``; the slabs' checksums (the caller compares them)."""
    digests = []
    for i, (a, b) in wanted:
        slab = dset[a:b]
        digests.append((i, checksum(slab)))
        into, part = _place(slab, (a, b), local, dest)
        out[into] = slab[part]
    return digests


def _read_slabs_mapped(
    fobj: Any,
    offset: int,
    shape: tuple[int, ...],
    wanted: Spans,
    local: tuple[slice, ...],
    dest: tuple[slice, ...],
    out: np.ndarray,
) -> list[tuple[int, str]]:
    """As :func:`_read_slabs_hdf5`, for a contiguous dataset at byte ``offset`` of the open
    part: the file's pages are mapped read-only and each slab is copied to ``out`` and
    summed in the same pass (one pass over memory, as a plain read; reading and then
    verifying made two, and cost a third more)."""
    if not wanted:
        return []
    row_bytes = out.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    first, last = wanted[0][1][0], wanted[-1][1][1]
    start, end = offset + first * row_bytes, offset + last * row_bytes
    if end == start:
        return [(i, checksum(np.empty((0, *shape[1:]), out.dtype))) for i, _ in wanted]
    if os.fstat(fobj.fileno()).st_size < end:
        return [(i, "truncated") for i, _ in wanted]
    base = start - start % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    pages = mmap.mmap(fobj.fileno(), end - base, flags=flags, prot=mmap.PROT_READ, offset=base)
    digests = []
    try:
        rows = np.frombuffer(pages, out.dtype, (last - first) * row_bytes // out.dtype.itemsize,
                             start - base).reshape((last - first, *shape[1:]))  # fmt: skip
        for i, (a, b) in wanted:
            slab = rows[a - first : b - first]
            into, part = _place(slab, (a, b), local, dest)
            target = out[into]
            fused = (
                slab.ndim == 2
                and out.dtype.itemsize == 8
                and target.shape == slab.shape
                and target.strides[1] == 8
            )
            if fused:  # each word read once from the shared pages: copied and summed
                digests.append((i, copy_checksum(slab, target)))
            else:
                # into private memory first, then summed and placed from that copy: summing
                # the shared pages and copying them again would let a byte changed in
                # between (another process writing the part) through under the old sum
                private = np.array(slab)
                digests.append((i, checksum(private)))
                target[...] = private[part]
        del rows, slab, target
    finally:
        try:
            pages.close()
        except BufferError:  # a view still held by a traceback: unmapped when collected
            pass
    return digests


def _check_placement(dset: Any, src: PartSource, where: str) -> None:
    """The part's own record of where its block sits must be the virtual dataset's."""
    attrs = dset.attrs
    try:
        start = tuple(int(v) for v in attrs["global_start"])
    except (KeyError, TypeError, ValueError):
        raise HDF5Error(
            f"{where}: part rank-{src.rank:05d}.h5 does not record its placement"
        ) from None
    rank = attrs.get("rank")
    if start != src.start or (rank is not None and int(rank) != src.rank):
        raise HDF5Error(
            f"{where}: part rank-{src.rank:05d}.h5 says it holds rank {rank}'s block at "
            f"{list(start)}, the file maps rank {src.rank}'s block at {list(src.start)} "
            "(a part of another rank, or moved)"
        )
