"""Reading HDF5 datasets into decomposed arrays: the first half of :func:`parcomp.load_hdf5`
and :meth:`DistArray.from_hdf5` (COMMUNICATES: collective over the arrays' communicator;
every outcome agreed).

Any HDF5 file with an N-d numeric dataset, written by parcomp or not, is read onto any rank
count and process grid, each rank reading only its own hyperslab.  The file is hostile
until checked (:func:`open_dataset`): a regular file, a dataset (not a group), numeric,
bounded shape (:data:`MAX_ELEMENTS`); a virtual dataset whose source files are missing
is refused (HDF5 would return fill values, silently); parcomp's own part-file outputs are
read part by part, confined and checksummed (:mod:`parcomp.io.parts`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from parcomp.grid.layout import Decomposed
from parcomp.io.cf import CFPlan, cf_plan
from parcomp.io.parts import PartSource, check_output_sources, read_region
from parcomp.runtime.agree import agreed, raise_if_differ
from parcomp.runtime.errors import DTypeError, HDF5Error, ShapeError
from parcomp.runtime.ranks import resolve_comm
from parcomp.runtime.watchdog import collective


def block_region(a: Decomposed) -> tuple[slice, ...]:
    """This rank's block of ``a`` as a global index (PURE)."""
    return tuple(slice(lo, hi) for lo, hi in a.local_range)


__all__ = ["Dataset", "MAX_ELEMENTS", "block_region", "open_dataset", "read_into"]

#: Largest dataset (elements) :func:`load_hdf5` accepts: 2**48, far beyond any machine.
MAX_ELEMENTS = 2**48


# ------------------------------------------------------------------------------ reading
def _load_comm(path: Any, name: Any, *, comm: Any = None, **_k: Any) -> Any:

    return resolve_comm(comm)


class Dataset(NamedTuple):
    """A dataset every rank opened and agreed on (:func:`open_dataset`)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    plan: CFPlan
    parts: Any


@collective("load_hdf5", _load_comm)
def open_dataset(
    path: str | os.PathLike[str],
    name: str,
    *,
    comm: Any = None,
    dtype: Any = None,
    global_shape: Sequence[int] | None = None,
    decode: bool = True,
) -> Dataset:
    """Check dataset ``name`` of ``path`` on every rank; its shape, dtype and decoding.

    The first half of :meth:`parcomp.DistArray.from_hdf5` (see there for the arguments
    and errors); :func:`read_into` is the second.

    Notes
    -----
    Collective over ``comm``.  Every rank checks the file; the shape and dtype every rank
    saw are compared, so a rank that sees another file (node-local paths) raises
    everywhere instead of reading a different array.
    """
    comm = resolve_comm(comm)
    where = Path(os.fspath(path))
    with agreed(
        comm,  # h5py raises RuntimeError or OSError for some damaged metadata
        catch=(HDF5Error, ShapeError, DTypeError, RuntimeError, OSError, KeyError, ValueError),
        wrap=lambda e: HDF5Error(f"load_hdf5: {name!r} in {where} is damaged: {e}"),
    ):
        meta = _inspect(where, name, dtype, global_shape, bool(decode))
    raise_if_differ(
        [list(meta[0]), meta[1], meta[2].describe()],
        comm,
        lambda ranks, first, other: (
            f"load_hdf5: rank(s) {ranks} see dataset {name!r} of {path} as {other}, rank 0 "
            f"as {first}: the file differs between ranks (a node-local path?)"
        ),
    )
    shape, dt, plan, parts = meta
    return Dataset(tuple(shape), np.dtype(dt), plan, parts)


@collective("load_hdf5", lambda path, name, arr, found: arr.layout.comm)
def read_into(path: str | os.PathLike[str], name: str, arr: Decomposed, found: Dataset) -> None:
    """Read each rank's block of an opened dataset into ``arr`` (collective, agreed)."""
    arr.attrs = dict(found.plan.attrs)
    with agreed(arr.layout.comm, catch=HDF5Error):
        _read_block(Path(os.fspath(path)), name, arr, found.plan, found.parts)


def _inspect(
    path: Path, name: str, dtype: Any, global_shape: Sequence[int] | None, decode: bool = True
) -> tuple[tuple[int, ...], str, CFPlan, Any]:
    """Check the file and dataset; ``(shape, dtype.str, CF plan, parts)`` of the values
    (local: this rank's view); ``parts`` is ``(folder, sources)`` for parcomp's own
    part-file outputs, else None."""
    import h5py

    if not isinstance(name, str) or not name or "\x00" in name:
        raise HDF5Error(f"load_hdf5: dataset name must be a non-empty string, got {name!r}")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise HDF5Error(f"load_hdf5: {path} does not exist") from None
    except OSError as exc:
        raise HDF5Error(f"load_hdf5: cannot inspect {path}: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise HDF5Error(f"load_hdf5: {path} is not a regular file")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise HDF5Error(f"load_hdf5: {path} is not a readable HDF5 file: {exc}") from None
    with fh:
        obj = fh.get(name)
        if obj is None:
            listing = ", ".join(sorted(fh.keys())[:20]) or "nothing"
            raise HDF5Error(f"load_hdf5: {path} has no dataset {name!r} (top level: {listing})")
        if not isinstance(obj, h5py.Dataset):
            raise HDF5Error(
                f"load_hdf5: {name!r} in {path} is a {type(obj).__name__}, not a dataset"
            )
        shape = tuple(int(n) for n in obj.shape or ())
        dt = obj.dtype
        if dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
            raise DTypeError(f"load_hdf5: {name!r} in {path} has dtype {dt}, not a numeric one")
        if (
            not shape
            or any(n <= 0 for n in shape)
            or int(np.prod(shape, dtype=object)) > MAX_ELEMENTS
        ):
            raise ShapeError(
                f"load_hdf5: {name!r} in {path} has shape {shape}: a DistArray needs at "
                f"least one axis, every axis non-empty, at most {MAX_ELEMENTS} elements"
            )
        plan = cf_plan(dt, obj.attrs, f"{name!r} in {path}")
        if not decode:
            plan = CFPlan(dt, dt, attrs=plan.attrs)
        if dtype is not None and np.dtype(dtype) != plan.dtype:
            raise DTypeError(
                f"load_hdf5: {name!r} in {path} is {plan.dtype}"
                + (f" (stored as {dt}, CF-decoded)" if plan.dtype != dt else "")
                + f", {np.dtype(dtype)} was asked for"
            )
        if global_shape is not None and tuple(global_shape) != shape:
            raise ShapeError(
                f"load_hdf5: {name!r} in {path} has shape {shape}, {tuple(global_shape)} was "
                "asked for"
            )
        sources: tuple[Any, list[PartSource]] | None = None
        if obj.is_virtual:
            parts = fh.attrs.get("parts")
            if fh.attrs.get("creator") in ("parcomp", b"parcomp") and parts is not None:
                # parcomp's own output: its parts are read confined and checked, never
                # through HDF5's virtual-dataset machinery (parcomp.io.parts)
                sources = (parts, check_output_sources(path, name, obj, parts))
            else:
                _check_sources(path, name, obj)
    return shape, plan.dtype.str, plan, sources


def _check_sources(path: Path, name: str, dset: Any) -> None:
    """The sources of another program's virtual dataset: files inside the file's own
    folder (no absolute path, no ``..``, no link), present.  A missing source would read
    as fill values; one outside the folder could be anything (a file stripped of parcomp's
    ``creator`` attribute must not escape the confinement of parcomp's own outputs)."""
    missing = []
    folder = os.path.realpath(path.parent)
    for vs in dset.virtual_sources():
        source = vs.file_name
        if source == ".":
            continue  # the same file
        parts = Path(source).parts
        inside = os.path.realpath(path.parent / source)
        if os.path.isabs(source) or ".." in parts or not inside.startswith(folder + os.sep):
            raise HDF5Error(
                f"load_hdf5: {name!r} in {path} is a virtual dataset with a source outside "
                f"its folder ({source!r}): refused (copy the sources next to the file)"
            )
        try:
            info = os.lstat(path.parent / source)
        except OSError:
            missing.append(source)
            continue
        if not stat.S_ISREG(info.st_mode):
            raise HDF5Error(
                f"load_hdf5: {name!r} in {path}: virtual source {source!r} is not a regular "
                "file (a link?): refused"
            )
    if missing:
        raise HDF5Error(
            f"load_hdf5: {name!r} in {path} is a virtual dataset whose source file(s) "
            f"{sorted(set(missing))[:5]} are missing; reading it would give fill values. "
            "Copy the part folder along with the file"
        )


def _read_block(
    path: Path, name: str, arr: Decomposed, plan: CFPlan | None = None, parts: Any = None
) -> None:
    import h5py

    if arr.interior.size == 0:
        return
    if parts is not None:  # parcomp's own parts: confined, placement and checksums checked
        stored = plan.stored if plan is not None else arr.dtype
        if plan is None or plan.identity:
            read_region(path, name, parts[0], parts[1], arr.local_range, arr.interior)
        else:
            raw = np.empty(arr.interior.shape, stored)
            read_region(path, name, parts[0], parts[1], arr.local_range, raw)
            plan.decode(raw, arr.interior)
        return
    try:
        with h5py.File(path, "r") as fh:
            if plan is None or plan.identity:
                fh[name].read_direct(arr.local, block_region(arr), arr.layout.interior)
            else:  # stored values into a scratch block, then decoded into the array
                raw = np.empty(arr.interior.shape, plan.stored)
                fh[name].read_direct(raw, block_region(arr))
                plan.decode(raw, arr.interior)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise HDF5Error(f"load_hdf5: reading {name!r} from {path} failed: {exc}") from None
