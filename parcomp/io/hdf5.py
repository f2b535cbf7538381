"""DistArrays to HDF5 files, in parallel, without a gather.

COMMUNICATES: :func:`save_hdf5` is collective over the arrays'
communicator.  The path checks and the plan are local; every outcome is agreed, so an
error is raised on every rank together and no rank is left in a collective.

Writing (:func:`save_hdf5`, :meth:`DistArray.to_hdf5`) has two back ends, as checkpoints:

* **parallel HDF5** (an MPI-enabled h5py, e.g. the ``.venv-mpio`` build): one file, each
  rank writing its block with one collective hyperslab write;
* **serial h5py** (the default wheel): each rank writes its block into its own part file,
  in a folder ``<file>.parts-<id>`` next to the file; rank 0 writes the file itself with
  one HDF5 *virtual dataset* per array that maps the parts into the global array.  Readers
  (h5py, h5dump, xarray through h5netcdf, ParaView) see one global dataset and never need
  to know.

Either way the file is written under a temporary name, fsynced and renamed over the
target: a reader sees the old file or the new one, never half of one, and a failure
leaves the old file and no temporary behind.

Reading (:func:`load_hdf5`, :meth:`DistArray.from_hdf5`) is :mod:`parcomp.io.load`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from parcomp._renamed import moved_names
from parcomp.grid.layout import Decomposed, is_decomposed
from parcomp.io.load import block_region
from parcomp.io.parts import write_part_dataset
from parcomp.io.slabs import fsync_path
from parcomp.runtime.agree import agreed, raise_if_any
from parcomp.runtime.errors import ConfigError, HDF5Error, ShapeError
from parcomp.runtime.watchdog import collective
from parcomp.runtime.wire import bcast_json

__all__ = [
    "save_hdf5",
    "mpio_available",
    "dataset_sha256",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_PARTS = ".parts-"


def mpio_available() -> bool:
    """Whether h5py was built with MPI (parallel HDF5)."""
    import h5py

    return bool(h5py.get_config().mpi)


def _comm_of(arrays: Any, *_a: Any, **_k: Any) -> Any:
    """The arrays' communicator for the debug check (None, the default, if not DistArrays:
    the call then raises its own clear error)."""
    if isinstance(arrays, Mapping):
        arrays = list(arrays.values())
    try:
        return next((a.comm for a in arrays if hasattr(a, "comm")), None)
    except TypeError:
        return None


# ------------------------------------------------------------------------------ writing
@collective("save_hdf5", lambda path, arrays, **_k: _comm_of(arrays))
def save_hdf5(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Decomposed],
    *,
    attrs: Mapping[str, Any] | None = None,
    mpio: bool | None = None,
) -> Path:
    """Write DistArrays into one HDF5 file, one global dataset each, without a gather.

    Parameters
    ----------
    path : path-like
        The file to write (replaced atomically if it exists).
    arrays : mapping of str to DistArray
        Dataset names (letters, digits, ``_ . -``; not starting with a digit) and arrays,
        all on the same communicator.
    attrs : mapping, optional
        Numbers and strings stored as attributes of the file.
    mpio : bool, optional
        Use parallel HDF5 (one file written collectively).  Default: when h5py has MPI.
        With serial h5py, each rank writes a part file (see the module docstring).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ShapeError, ConfigError
        Bad names, arrays on different communicators, a target that is a directory.
    HDF5Error
        The file could not be written (no space, read-only folder ...): raised on every
        rank; the old file, if any, is untouched and nothing temporary is left.

    Notes
    -----
    Collective over the arrays' communicator.
    """

    items = _check_arrays(arrays)
    first = items[0][1]
    comm = first.comm
    target = Path(os.path.abspath(os.fspath(path)))
    use_mpio = mpio_available() if mpio is None else bool(mpio)
    error: BaseException | None = None
    if use_mpio and not mpio_available():
        error = ConfigError(
            "save_hdf5(mpio=True): this h5py has no MPI support (use the parallel h5py "
            "build, or mpio=False for part files and a virtual dataset)"
        )
    clean_attrs = {}
    try:
        clean_attrs = _check_attrs(attrs)
    except (TypeError, ValueError) as exc:
        error = error or exc
    if error is None and comm.Get_rank() == 0:
        error = _check_target(target)
    raise_if_any(error, comm)
    # rank 0's pid and a random id, the same on every rank (one collective file with mpio):
    # a later write sweeps the temporary if that process is gone
    pid, nonce = bcast_json(
        comm, [temp_owner(), uuid.uuid4().hex[:12]] if comm.Get_rank() == 0 else None
    )
    tmp = target.with_name(f".{target.name}.tmp-{pid}-{nonce}")
    if comm.Get_rank() == 0:
        sweep_temporaries(target)
    parts = target.with_name(f"{target.name}{_PARTS}{nonce}")
    try:
        if use_mpio:
            _write_mpio(tmp, items, clean_attrs, comm)
        else:
            _write_parts(tmp, parts, target, items, clean_attrs, comm)
    except BaseException as exc:
        if comm.Get_rank() == 0:
            _remove(tmp)
            _remove(parts)
        if getattr(exc, "parcomp_agreed", False):
            # every rank failed here together: wait for rank 0's cleanup, or the first
            # rank to end the job (exit status, fail-fast abort) kills it half done and
            # leaves the new parts folder behind (seen in CI on a full disk)
            comm.Barrier()
        raise
    with agreed(comm, catch=HDF5Error):
        if comm.Get_rank() == 0:
            try:
                _commit(tmp, target)
            except OSError as exc:
                _remove(tmp)
                _remove(parts)
                raise HDF5Error(f"save_hdf5: could not publish {target}: {exc}") from None
            _remove_old_parts(target, keep=parts.name)
    return target


def _check_arrays(arrays: Any) -> list[tuple[str, Decomposed]]:
    if not isinstance(arrays, Mapping) or not arrays:
        raise ShapeError("save_hdf5 needs a non-empty mapping of names to DistArrays")
    items = list(arrays.items())
    first = items[0][1]
    for name, a in items:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"save_hdf5: dataset name {name!r} must be letters, digits, '_', '.', '-' "
                "(not starting with a digit or '.'), at most 128 characters"
            )
        if not is_decomposed(a):  # a DistArray (it has a layout)
            raise ShapeError(f"save_hdf5: {name!r} is a {type(a).__name__}, not a DistArray")
        if a.comm is not first.comm and a.layout.halo_comm is not first.layout.halo_comm:
            raise ShapeError(f"save_hdf5: {name!r} is on another communicator than the others")
    return items


def _check_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attrs or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"attribute names must be non-empty strings, got {key!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, bool | int | float | str):
            raise ConfigError(
                f"attribute {key!r}: numbers and strings only, got {type(value).__name__}"
            )
        out[key] = value
    return out


def _check_target(target: Path) -> BaseException | None:
    folder = target.parent
    if not folder.is_dir():
        return HDF5Error(f"save_hdf5: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        return HDF5Error(f"save_hdf5: folder {folder} is not writable")
    try:
        info = target.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return HDF5Error(f"save_hdf5: cannot inspect {target}: {exc}")
    if not stat.S_ISREG(info.st_mode):
        return HDF5Error(
            f"save_hdf5: {target} exists and is not a regular file; it is not replaced"
        )
    return None


def _write_mpio(tmp: Path, items: list[tuple[str, Decomposed]], attrs: dict, comm: Any) -> None:
    """One file, written collectively; errors agreed (HDF5 raises on every rank)."""
    import h5py

    with agreed(
        comm,
        catch=(OSError, ValueError, RuntimeError),
        wrap=lambda exc: HDF5Error(f"save_hdf5: writing {tmp.name} failed: {exc}"),
    ):
        with h5py.File(tmp, "w", driver="mpio", comm=comm) as fh:
            fh.attrs.update({"creator": "parcomp", **attrs})
            for name, a in items:
                dset = fh.create_dataset(name, shape=a.global_shape, dtype=a.dtype)
                with dset.collective:
                    dset.write_direct(a.local, a.layout.interior, block_region(a))
    if comm.Get_rank() == 0:
        os.chmod(tmp, 0o644 & ~_umask())
        _fsync(tmp)


def _write_parts(
    tmp: Path,
    parts: Path,
    target: Path,
    items: list[tuple[str, Decomposed]],
    attrs: dict,
    comm: Any,
) -> None:
    """Part files and a virtual-dataset file; errors agreed at each stage."""
    import h5py

    rank, size = comm.Get_rank(), comm.Get_size()
    with agreed(
        comm, catch=OSError, wrap=lambda e: HDF5Error(f"save_hdf5: cannot create {parts}: {e}")
    ):
        if rank == 0:
            parts.mkdir(mode=0o755)
    part = parts / f"rank-{rank:05d}.h5"
    failed = (OSError, ValueError, RuntimeError, TypeError)
    with agreed(
        comm, catch=failed, wrap=lambda e: HDF5Error(f"save_hdf5: writing {part} failed: {e}")
    ):
        with h5py.File(part, "w") as fh:
            fh.attrs.update({"creator": "parcomp", "rank": rank, "nprocs": size})
            for name, a in items:  # placement and slab checksums with the block
                write_part_dataset(fh, name, a, rank, size)
        _fsync(part)
    ranges = _all_ranges(items[0][1])
    with agreed(
        comm,
        catch=failed,
        wrap=lambda e: HDF5Error(f"save_hdf5: writing {target.name} failed: {e}"),
    ):
        if rank == 0:
            _fsync(parts)
            with h5py.File(tmp, "w") as fh:
                fh.attrs.update({"creator": "parcomp", "parts": parts.name, **attrs})
                for name, a in items:
                    layout = h5py.VirtualLayout(shape=a.global_shape, dtype=a.dtype)
                    for r, bounds in enumerate(ranges):
                        shape = tuple(hi - lo for lo, hi in bounds)
                        source = h5py.VirtualSource(
                            f"./{parts.name}/rank-{r:05d}.h5", name, shape=shape
                        )
                        layout[tuple(slice(lo, hi) for lo, hi in bounds)] = source
                    fh.create_virtual_dataset(name, layout)
            _fsync(tmp)


def _all_ranges(a: Decomposed) -> list[list[tuple[int, int]]]:
    """Every rank's global index range (from the partition: the same on every rank)."""
    return [list(a.partition.local_range(r)) for r in range(a.partition.size)]


def _commit(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    _fsync(target.parent)


def temp_owner() -> str:
    """``<pid>-<host>`` for a temporary's name: which process on which node writes it (the
    host as 8 hex digits of its name's CRC-32, so the name stays short and plain)."""
    import socket
    import zlib

    return f"{os.getpid()}-{zlib.crc32(socket.gethostname().encode()):08x}"


def sweep_temporaries(target: Path) -> int:
    """Remove the temporaries of earlier writes of ``target`` that a kill left behind
    (``.<name>.tmp-<pid>-<host>[-...]`` in its folder); how many.  Local (rank 0).

    Only regular files (never a link) owned by this user, and only when the name's pid is
    no live process on this same host, or the file has not been touched for an hour: a
    live writer's temporary is its lease.  A pid of another host (a shared file system
    seen from several nodes) proves nothing here, so its temporary waits for the hour, as
    do names without an owner.
    """
    prefix = f".{target.name}.tmp-"
    host = temp_owner().split("-")[1]
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            continue
        fields = entry.name[len(prefix) :].split("-")
        pid = int(fields[0]) if fields[0].isdigit() else None
        here = len(fields) > 1 and fields[1] == host
        stale = now - info.st_mtime > 3600
        if pid is not None and here and pid != os.getpid() and not _alive(pid):
            stale = True
        if stale:
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_old_parts(target: Path, keep: str) -> None:
    """Part folders of earlier versions of ``target`` (after the new one is published).

    Deleted in a background thread (freeing a large file's blocks takes tens of
    milliseconds); not a daemon, so the interpreter finishes it before exiting.
    """
    import threading

    prefix = f"{target.name}{_PARTS}"
    old = [
        entry
        for entry in target.parent.iterdir()
        if entry.name.startswith(prefix) and entry.name != keep and entry.is_dir()
    ]
    if old:
        threading.Thread(
            target=lambda: [_remove(e) for e in old], name="parcomp-remove-parts"
        ).start()


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync(path: Path) -> None:

    fsync_path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dataset_sha256(path: str | os.PathLike[str], *names: str, rows: int = 256) -> str:
    """SHA-256 of datasets' values, one after the other, as C-order little-endian bytes,
    read ``rows`` rows at a time (local, bounded memory): the same digest as hashing the
    gathered arrays, so runs on different rank counts compare without anyone holding a
    whole field."""
    import hashlib

    import h5py

    digest = hashlib.sha256()
    with h5py.File(path, "r") as fh:
        for name in names:
            dset = fh[name]
            little = dset.dtype.newbyteorder("<")
            if not dset.shape:
                digest.update(np.ascontiguousarray(dset[()], dtype=little).tobytes())
                continue
            for a in range(0, dset.shape[0], rows):
                digest.update(np.ascontiguousarray(dset[a : a + rows], dtype=little).tobytes())
    return digest.hexdigest()


#: 0.2 names: load_hdf5 makes a DistArray, so it lives with DistArray now.
__getattr__ = moved_names(__name__, {"load_hdf5": "parcomp.load_hdf5"})
