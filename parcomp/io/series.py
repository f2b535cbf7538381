"""Time series of DistArrays and scalars: one HDF5 file per run that xarray, netCDF tools,
h5py and ParaView (through an XDMF sidecar) open, written in parallel without a gather.

COMMUNICATES: :class:`Series` construction and :meth:`Series.append` are collective over
the fields' communicator.

Layout (``series.h5`` and, next to it, ``series.h5.parts-<id>/`` folders):

* every rank appends its block of each field to its own part file (one record per
  append, chunks of one record and a tile of about 256 KiB: a map at one time reads
  whole chunks, a point's history one small chunk per record);
* rank 0 then rewrites the small ``series.h5`` under a temporary name and renames it:
  ``time`` (unlimited, a dimension scale with CF ``units``), ``step``, the coordinates
  ``x``, ``y`` (``z``) as dimension scales with ``units``/``long_name``/``axis``, each
  field as a virtual dataset ``(time, x, y)`` mapped onto the parts, each scalar as a
  ``(time,)`` dataset.  That rename is the commit of a record: a reader, or a run killed
  at any moment, sees whole records only.  The XDMF sidecar ``series.xmf`` is replaced
  the same way.
* A restarted run opens the series with ``resume_at=<restored step>``: records after that
  step are dropped (the run computes them again), the coordinates and fields must match
  (a series of another run is refused), and new records go to new part folders, so a
  resume on another rank count works too.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.grid.layout import Decomposed
from parcomp.io.hdf5 import (
    _NAME,
    _PARTS,
    _check_target,
    _fsync,
    _remove,
    sweep_temporaries,
    temp_owner,
)
from parcomp.io.parts import check_parts_folder, open_part
from parcomp.io.slabs import checksum
from parcomp.runtime.agree import raise_if_any, raise_if_differ
from parcomp.runtime.errors import ConfigError, DTypeError, HDF5Error, ShapeError
from parcomp.runtime.log import get_logger
from parcomp.runtime.watchdog import collective
from parcomp.runtime.wire import bcast_json

__all__ = ["Series", "FORMAT"]

FORMAT = "parcomp-series-1"
#: Background writers per series file in this process: a new Series of the same file (an
#: in-job recovery builds one while the old object's threads may still run) waits for
#: them, so an old commit can never rename over a newer one.
_WRITERS: dict[str, list[Any]] = {}
_TILE_BYTES = 256 * 1024
_AXES = ("x", "y", "z")


def _tile(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """A chunk of one record and about 256 KiB of the block (PURE)."""
    tile = list(shape)
    axis = 0
    while int(np.prod(tile)) * itemsize > _TILE_BYTES and any(t > 1 for t in tile):
        if tile[axis] > 1:
            tile[axis] = (tile[axis] + 1) // 2
        axis = (axis + 1) % len(tile)
    return (1, *(max(1, t) for t in tile))


def _attr_text(value: Any) -> str:
    """An HDF5/xarray attribute as text (bytes decoded, one-element arrays unwrapped)."""
    arr = np.asarray(value)
    if arr.ndim and arr.size == 1:
        value = arr.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _from_variable(
    like: Any,
    fields: Any,
    dims: Sequence[str] | None,
    coords: Mapping[str, Any] | None,
    units: Mapping[str, str] | None,
    long_names: Mapping[str, str] | None,
) -> tuple[Any, Any, Any, Any]:
    """Axis names, coordinates, units and long names from an xarray variable or an
    h5py dataset (its attached dimension scales); explicit arguments win (local)."""
    names: list[str] = []
    values: dict[str, Any] = {}
    axis_attrs: dict[str, Mapping[str, Any]] = {}
    if hasattr(like, "dims") and hasattr(like, "coords") and hasattr(like, "attrs"):
        names = [str(d) for d in like.dims]  # xarray
        for d in names:
            if d in like.coords:
                values[d] = np.asarray(like.coords[d].values)
                axis_attrs[d] = like.coords[d].attrs
        var_attrs = dict(like.attrs)
    elif hasattr(like, "dims") and hasattr(like, "attrs") and hasattr(like, "file"):
        for i, dim in enumerate(like.dims):  # h5py: labels, else the first scale's name
            scales = list(dim.values())
            label = dim.label or (scales[0].name.rsplit("/", 1)[-1] if scales else "")
            if not label:
                raise ConfigError(
                    f"Series(like=...): axis {i} of {like.name} has no dimension scale or label"
                )
            names.append(label)
            if scales:
                values[label] = np.asarray(scales[0][()])
                axis_attrs[label] = scales[0].attrs
        var_attrs = dict(like.attrs)
    else:
        raise ConfigError(
            f"Series(like=...) takes an xarray.DataArray or an h5py.Dataset, got "
            f"{type(like).__name__}"
        )

    dims = list(dims) if dims is not None else names
    new_coords = {d: v for d, v in values.items() if d in dims}
    new_coords.update(coords or {})
    new_units = {d: _attr_text(a["units"]) for d, a in axis_attrs.items() if "units" in a}
    new_long = {d: _attr_text(a["long_name"]) for d, a in axis_attrs.items() if "long_name" in a}
    if isinstance(fields, Mapping) and len(fields) == 1:
        (only,) = fields
        if "units" in var_attrs:
            new_units[only] = _attr_text(var_attrs["units"])
        if "long_name" in var_attrs:
            new_long[only] = _attr_text(var_attrs["long_name"])
    new_units.update(units or {})
    new_long.update(long_names or {})
    return dims, new_coords, new_units, new_long


class Series:
    """Append DistArrays and scalars every few steps to one HDF5 time series.

    Parameters
    ----------
    path : path-like
        The series file (``.h5``); part folders and ``<stem>.xmf`` go next to it.
    fields : mapping of str to DistArray
        The fields recorded, all decomposed alike; they fix the names, dtypes and shape.
    every : int
        :meth:`due` is true every ``every`` steps.
    dims : sequence of str, optional
        Axis names (default ``x``, ``y``, ``z``).
    coords : mapping, optional
        Axis name to a 1-D array of coordinate values (default: the cell index).
    units, long_names : mapping, optional
        CF ``units`` and ``long_name`` of fields, scalars and axes (and ``time``).  A
        field's default is its own ``attrs`` (what :func:`parcomp.load_hdf5` read).
    like : xarray.DataArray or h5py.Dataset, optional
        A variable to take the axis names, coordinate values and the axes' ``units`` /
        ``long_name`` from (an xarray variable's dims and coords, or an HDF5/netCDF
        dataset's attached dimension scales), and, when the series records one field,
        that field's ``units`` / ``long_name``.  ``dims``, ``coords``, ``units`` and
        ``long_names`` given explicitly win.
    scalars : sequence of str
        Names of scalar time series recorded with each append.
    title : str
        The file's ``title`` attribute.
    resume_at : int, optional
        Continue the series in ``path`` after a restart from this step: records after
        it are dropped.  Without it an existing file is refused unless ``overwrite``.
    overwrite : bool
        Replace an existing series (a new run).
    asynchronous : bool
        Write each record in a background thread from a copy of the blocks, overlapping
        the solver; the record is committed by the next :meth:`append` or :meth:`close`
        (call it, or use the series as a context manager).

    Raises
    ------
    HDF5Error
        An existing file without ``resume_at`` or ``overwrite``; a file to resume that is
        not a parcomp series or belongs to another run (other fields, shapes, dtypes,
        coordinates or axis names); an unwritable folder.
    ShapeError, ConfigError
        Fields decomposed differently, bad names or coordinates.

    Notes
    -----
    Collective over the fields' communicator, as is :meth:`append`.
    """

    @collective("Series", lambda self, path, fields, **_k: next(iter(fields.values())).comm)
    def __init__(
        self,
        path: str | os.PathLike[str],
        fields: Mapping[str, Decomposed],
        *,
        every: int = 1,
        dims: Sequence[str] | None = None,
        coords: Mapping[str, Any] | None = None,
        units: Mapping[str, str] | None = None,
        long_names: Mapping[str, str] | None = None,
        scalars: Sequence[str] = (),
        title: str = "",
        resume_at: int | None = None,
        overwrite: bool = False,
        asynchronous: bool = False,
        like: Any = None,
    ) -> None:

        self.path = Path(os.path.abspath(os.fspath(path)))
        self.xdmf = self.path.with_suffix(".xmf")
        for thread in _WRITERS.pop(str(self.path), []):
            thread.join()
        error: BaseException | None = None
        try:
            if like is not None:
                dims, coords, units, long_names = _from_variable(
                    like, fields, dims, coords, units, long_names
                )
            self._setup(fields, every, dims, coords, units, long_names, scalars, title)
        except (ShapeError, ConfigError, DTypeError, TypeError, ValueError) as exc:
            error = exc
        first = next(iter(fields.values()), None) if isinstance(fields, Mapping) else None
        comm = getattr(first, "comm", None)
        if comm is None:
            raise ShapeError("Series needs a non-empty mapping of names to DistArrays")
        raise_if_any(error, comm)
        self.comm = comm
        state: dict[str, Any] = {}
        if comm.Get_rank() == 0:
            try:
                state = self._open_state(resume_at, overwrite)
            except HDF5Error as exc:
                error = exc
        raise_if_any(error, comm)
        state = bcast_json(comm, state if comm.Get_rank() == 0 else None)
        self._segments: list[dict[str, Any]] = state["segments"]
        self.steps: list[int] = state["steps"]
        self.times: list[float] = state["times"]
        self._scalar_values: dict[str, list[float]] = state["scalars"]
        self._stale: list[str] = state["stale"]
        self._current: dict[str, Any] | None = None  # this run's segment, made on first append
        self.asynchronous = bool(asynchronous)
        self._pending: _Pending | None = None
        self._committing: tuple[Any, list[BaseException], int] | None = None
        self._staging: dict[str, np.ndarray] = {}
        self._swept = False

    # ------------------------------------------------------------------ set-up
    def _setup(
        self,
        fields: Any,
        every: int,
        dims: Sequence[str] | None,
        coords: Mapping[str, Any] | None,
        units: Mapping[str, str] | None,
        long_names: Mapping[str, str] | None,
        scalars: Sequence[str],
        title: str,
    ) -> None:

        if not isinstance(fields, Mapping) or not fields:
            raise ShapeError("Series needs a non-empty mapping of names to DistArrays")
        first = next(iter(fields.values()))
        for name, a in fields.items():
            if not isinstance(a, Decomposed):
                raise ShapeError(f"Series: field {name!r} is a {type(a).__name__}")
            if (a.partition, a.comm) != (first.partition, first.comm):
                raise ShapeError(f"Series: field {name!r} is decomposed unlike the others")
        ndim = first.ndim
        self.dims = tuple(dims) if dims is not None else _AXES[:ndim] if ndim <= 3 else ()
        if len(self.dims) != ndim:
            raise ConfigError(f"Series: dims={dims!r} must name the {ndim} axes")
        names = [*fields, *scalars, *self.dims, "time", "step"]
        bad = [n for n in names if not isinstance(n, str) or not _NAME.match(n)]
        if bad or len(set(names)) != len(names):
            raise ConfigError(
                f"Series: names {names} must be distinct, letters/digits/_.- (bad: {bad})"
            )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"Series: every must be a positive integer, got {every!r}")
        self.every = every
        self.fields = {n: (a.dtype.str, a.global_shape) for n, a in fields.items()}
        self.scalars = tuple(scalars)
        # a field's own attributes (what load_hdf5 read from its variable) by default
        own = {n: getattr(a, "attrs", {}) or {} for n, a in fields.items()}
        self.units = {n: str(v["units"]) for n, v in own.items() if "units" in v}
        self.units.update(units or {})
        self.long_names = {n: str(v["long_name"]) for n, v in own.items() if "long_name" in v}
        self.long_names.update(long_names or {})
        self.title = str(title)
        self.coords: dict[str, list[float]] = {}
        for axis, (dim, n) in enumerate(zip(self.dims, first.global_shape, strict=True)):
            values = (coords or {}).get(dim)
            arr = np.arange(n, dtype=np.float64) if values is None else np.asarray(values, float)
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ConfigError(
                    f"Series: coordinate {dim!r} (axis {axis}) needs {n} finite values, got "
                    f"shape {arr.shape}"
                )
            self.coords[dim] = arr.tolist()
        self._template = first

    def _identity(self) -> dict[str, Any]:
        """What makes two runs' series the same series (checked on resume)."""
        import hashlib

        coords = json.dumps(self.coords, sort_keys=True).encode()
        return {
            "fields": {n: [dt, list(shape)] for n, (dt, shape) in self.fields.items()},
            "dims": list(self.dims),
            "scalars": list(self.scalars),
            "coords_sha256": hashlib.sha256(coords).hexdigest(),
        }

    def _open_state(self, resume_at: int | None, overwrite: bool) -> dict[str, Any]:
        """Rank 0: the records and segments to continue from (or none)."""
        fresh = {"segments": [], "steps": [], "times": [], "scalars": {s: [] for s in self.scalars}}
        problem = _check_target(self.path)
        if problem is not None:
            raise HDF5Error(str(problem).replace("save_hdf5", "Series"))
        exists = self.path.exists()
        if not exists:
            return {**fresh, "stale": []}
        if resume_at is None:
            if not overwrite:
                raise HDF5Error(
                    f"Series: {self.path} exists; pass resume_at=<step> to continue it after "
                    "a restart, or overwrite=True to start a new one"
                )
            return {**fresh, "stale": self._part_folders()}
        meta = _read_meta(self.path)
        mine = self._identity()
        theirs = meta.get("identity")
        if theirs != json.loads(json.dumps(mine)):
            diff = [k for k in mine if (theirs or {}).get(k) != json.loads(json.dumps(mine[k]))]
            raise HDF5Error(
                f"Series: {self.path} is a series of another run: its {', '.join(diff) or 'format'} "
                "differ from this one's; resume with the same fields, shape and coordinates, "
                "or write a new file"
            )
        steps = meta["steps"]
        keep = sum(1 for s in steps if s <= resume_at)
        segments, left = [], keep
        for seg in meta["segments"]:
            count = min(seg["count"], left)
            if count > 0:
                segments.append({**seg, "count": count})
            left -= count
        good = self._check_parts(segments)
        if good < keep:  # a damaged record: it and the later ones are dropped, not carried
            get_logger("parcomp.io.series").warning(
                "Series: record %d of %s fails its checksum; it and the %d record(s) after "
                "it up to step %d are dropped (not carried forward)",
                good,
                self.path,
                keep - good - 1,
                resume_at,
            )
            keep = good
            segments, left = [], keep
            for seg in meta["segments"]:
                count = min(seg["count"], left)
                if count > 0:
                    segments.append({**seg, "count": count})
                left -= count
        used = {seg["parts"] for seg in segments}
        return {
            "segments": segments,
            "steps": steps[:keep],
            "times": meta["times"][:keep],
            "scalars": {s: meta["scalars"][s][:keep] for s in self.scalars},
            "stale": [p for p in self._part_folders() if p not in used],
        }

    def _check_parts(self, segments: list[dict[str, Any]]) -> int:
        """Rank 0, on resume: every part file the kept records live in opens and holds
        them.  A virtual dataset reads fill values where a source cannot be opened, so a
        part damaged by a kill would otherwise turn committed records into zeros."""
        import h5py

        good = sum(seg["count"] for seg in segments)
        for seg in segments:
            # confined as load_hdf5's parts: the folder and each part are opened without
            # following a link, and must be a folder and regular files of this user
            check_parts_folder(self.path, seg["parts"], "Series")
            for r, bounds in enumerate(seg["ranges"]):
                if any(lo == hi for lo, hi in bounds):
                    continue  # an empty block has no records to hold
                part = self.path.parent / seg["parts"] / f"rank-{r:05d}.h5"
                try:
                    fobj = open_part(self.path.parent / seg["parts"], r, f"Series: {self.path}")
                    with fobj, h5py.File(fobj, "r") as fh:
                        short = [
                            n
                            for n in self.fields
                            if not isinstance(fh.get(n), h5py.Dataset)
                            or fh[n].shape[0] < seg["count"]
                        ]
                        owner = fh.attrs.get("rank")
                        if owner is not None and int(owner) != r:
                            intact = 0  # another rank's part, whole (checksums and all)
                        else:
                            intact = seg["count"] if short else _intact(fh, self.fields, seg)
                except OSError as exc:
                    raise HDF5Error(
                        f"Series: {part} (records {seg['first']}..{seg['first'] + seg['count'] - 1}"
                        f" of {self.path.name}) cannot be read: {exc}"
                    ) from None
                if short:
                    raise HDF5Error(
                        f"Series: {part} lacks committed records of {short}; the series is "
                        "damaged (a part file replaced or truncated?)"
                    )
                good = min(good, seg["first"] + intact)
        return good

    def _part_folders(self) -> list[str]:
        prefix = f"{self.path.name}{_PARTS}"
        return [p.name for p in self.path.parent.iterdir() if p.name.startswith(prefix)]

    # ------------------------------------------------------------------ appending
    def due(self, step: int) -> bool:
        """Whether ``step`` is one to record (every ``every`` steps)."""
        return step % self.every == 0

    def missing(self, step: int) -> bool:
        """Whether ``step`` is due and not recorded yet: after a restart from a checkpoint
        of ``step``, its record may not have been committed before the failure (the
        append comes after the checkpoint, or was still in flight), so the resumed run
        appends it from the restored state.  Local; the same on every rank."""
        last = self._pending.step if self._pending is not None else None
        return self.due(step) and step not in self.steps and step != last

    @property
    def records(self) -> int:
        """Records in the series (committed)."""
        return len(self.steps)

    @collective("Series.append", lambda self, *a, **k: self.comm)
    def append(
        self,
        step: int,
        time: float,
        fields: Mapping[str, Decomposed] | None = None,
        scalars: Mapping[str, float] | None = None,
    ) -> None:
        """Record ``fields`` and ``scalars`` at ``step`` and ``time``.

        Collective.  Steps must increase.  Synchronous (default): the record is
        committed (visible to readers) when this returns on every rank.  With
        ``asynchronous=True``: the blocks are copied and written by a background thread,
        and the record is committed by the next :meth:`append` or by :meth:`close`.  A
        failure raises :class:`HDF5Error` on every rank and leaves the series as it was.
        """

        error: BaseException | None = None
        arrays: dict[str, Any] = {}
        values: dict[str, float] = {}
        try:
            arrays, values = self._check_append(step, time, fields, scalars)
        except (ShapeError, ConfigError, DTypeError, TypeError, ValueError) as exc:
            error = exc
        raise_if_any(error, self.comm)

        # a step or time computed per rank would leave the ranks' bookkeeping different,
        # and a later missing()/append decision different: refused on every rank now
        raise_if_differ(
            [int(step), float(time).hex()],
            self.comm,
            lambda ranks, first, other: (
                f"Series.append: rank(s) {ranks} append step/time {other}, rank 0 {first}"
            ),
        )
        self._finish_pending()  # the previous record (asynchronous mode)
        if self._current is None:
            self._start_segment()
        seg = self._current
        assert seg is not None
        blocks = self._stage(arrays)
        pending = _Pending(seg, seg["count"], int(step), float(time), values, blocks)
        if self.asynchronous:
            pending.start(self._write_part)
            _track(self.path, pending.thread)
            self._pending = pending
        else:
            pending.run(self._write_part)
            self._pending = pending
            self._finish_pending()

    @collective("Series.close", lambda self, *a, **k: self.comm)
    def close(self) -> None:
        """Commit the record still being written (asynchronous mode).  Collective."""

        self._finish_pending()
        raise_if_any(self._join_commit() if self.comm.Get_rank() == 0 else None, self.comm)

    def _start_commit(self) -> None:
        """Rank 0, asynchronous mode: commit the records so far in a thread, from a copy of
        the bookkeeping (the main thread goes on appending)."""
        import copy
        import threading

        snap = copy.copy(self)
        snap.steps, snap.times = list(self.steps), list(self.times)
        snap._scalar_values = {k: list(v) for k, v in self._scalar_values.items()}  # noqa: SLF001 - a snapshot copy of this Series
        snap._segments = copy.deepcopy(self._segments)  # noqa: SLF001 - a snapshot copy of this Series
        box: list[BaseException] = []

        def run() -> None:
            try:
                snap._commit()  # noqa: SLF001 - a snapshot copy of this Series
            except (OSError, ValueError, RuntimeError) as exc:
                box.append(exc)

        thread = threading.Thread(target=run, name="parcomp-series-commit", daemon=False)
        thread.start()
        _track(self.path, thread)
        self._committing = (thread, box, snap.steps[-1])

    def _join_commit(self) -> BaseException | None:
        """Wait for the background commit, if any; its error as an HDF5Error."""
        if self._committing is None:
            return None
        thread, box, step = self._committing
        self._committing = None
        thread.join()
        return HDF5Error(f"Series: committing step {step} failed: {box[0]}") if box else None

    def __enter__(self) -> Series:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()

    def _stage(self, arrays: dict[str, Any]) -> dict[str, tuple[np.ndarray, Any]]:
        """Per field, (buffer, selection) to write: the array itself when synchronous, a
        copy of its block when the write runs in the background (the solver goes on
        changing the array)."""
        if not self.asynchronous:
            return {n: (a.local, a.layout.interior) for n, a in arrays.items()}
        staged = {}
        for name, a in arrays.items():
            buf = self._staging.get(name)
            if buf is None or buf.shape != a.local_shape:
                buf = self._staging[name] = np.empty(a.local_shape, a.dtype)
            np.copyto(buf, a.interior)
            staged[name] = (buf, ...)
        return staged

    def _finish_pending(self) -> None:
        """Wait for the pending write, agree on it, and commit its record (collective)."""

        pending, self._pending = self._pending, None
        if pending is None:
            return
        error = pending.wait()
        if error is not None:
            error = HDF5Error(f"Series.append: writing step {pending.step} failed: {error}")
        rank0 = self.comm.Get_rank() == 0
        if rank0 and error is None:
            error = self._join_commit()  # the previous record's (asynchronous mode)
        raise_if_any(error, self.comm)
        seg, step = pending.seg, pending.step
        self._add(seg, step, pending.time, pending.values if rank0 else None)
        if rank0 and self.asynchronous:
            self._start_commit()  # rank 0 alone, no MPI: its error comes at the next call
        elif rank0:
            try:
                self._commit()
            except (OSError, ValueError, RuntimeError) as exc:
                error = HDF5Error(f"Series.append: committing step {step} failed: {exc}")
        try:
            raise_if_any(error, self.comm)
        except BaseException:
            self._drop(seg)  # the record was not committed: as if never appended
            raise
        if self._stale and rank0:
            for name in self._stale:
                _remove(self.path.parent / name)
        self._stale = []

    def _add(self, seg: dict[str, Any], step: int, time: float, values: Any) -> None:
        seg["count"] += 1
        self.steps.append(int(step))
        self.times.append(float(time))
        for name in self.scalars:
            self._scalar_values[name].append(float(values[name]) if values else 0.0)

    def _drop(self, seg: dict[str, Any]) -> None:
        seg["count"] -= 1
        self.steps.pop()
        self.times.pop()
        for name in self.scalars:
            self._scalar_values[name].pop()

    def _check_append(
        self, step: Any, time: Any, fields: Mapping[str, Any] | None, scalars: Any
    ) -> tuple[dict[str, Any], dict[str, float]]:

        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise ConfigError(f"Series.append: step must be an integer, got {step!r}")
        last = (
            self._pending.step
            if self._pending is not None
            else (self.steps[-1] if self.steps else None)
        )
        if last is not None and step <= last:
            raise ConfigError(f"Series.append: step {step} is not after the last record's {last}")
        if not np.isfinite(float(time)):
            raise ConfigError(f"Series.append: time must be finite, got {time!r}")
        arrays = dict(fields) if fields is not None else {}
        if fields is None:
            raise ConfigError("Series.append: pass the fields to record, e.g. fields={'u': u}")
        if set(arrays) != set(self.fields):
            raise ConfigError(
                f"Series.append: fields {sorted(arrays)} differ from the series' {sorted(self.fields)}"
            )
        for name, a in arrays.items():
            want = self._template.partition
            if not isinstance(a, Decomposed):
                raise ShapeError(
                    f"Series.append: field {name!r} is a {type(a).__name__}, the series holds "
                    f"a DistArray of shape {want.global_shape}"
                )
            if a.partition != want:
                raise ShapeError(
                    f"Series.append: field {name!r} is not decomposed as the series: shape "
                    f"{a.global_shape} over grid {a.partition.dims} (periods "
                    f"{a.partition.periods}), the series holds shape {want.global_shape} over "
                    f"grid {want.dims} (periods {want.periods})"
                )
            if a.dtype.str != self.fields[name][0]:
                raise DTypeError(
                    f"Series.append: field {name!r} is {a.dtype}, the series holds "
                    f"{np.dtype(self.fields[name][0])}"
                )
        values = dict(scalars or {})
        if set(values) != set(self.scalars):
            raise ConfigError(
                f"Series.append: scalars {sorted(values)} differ from the series' {sorted(self.scalars)}"
            )
        return arrays, {k: float(v) for k, v in values.items()}

    def _start_segment(self) -> None:
        """This run's part folder (after a resume: a new one, whatever the rank count)."""

        comm = self.comm
        nonce = bcast_json(comm, uuid.uuid4().hex[:12] if comm.Get_rank() == 0 else None)
        parts = f"{self.path.name}{_PARTS}{nonce}"
        error: BaseException | None = None
        if comm.Get_rank() == 0:
            try:
                (self.path.parent / parts).mkdir(mode=0o755)
            except OSError as exc:
                error = HDF5Error(f"Series: cannot create {parts}: {exc}")
        raise_if_any(error, comm)
        t = self._template
        ranges = [[list(b) for b in t.partition.local_range(r)] for r in range(t.partition.size)]
        seg = {
            "parts": parts,
            "nprocs": comm.Get_size(),
            "ranges": ranges,
            "first": self.records,
            "count": 0,
        }
        self._segments.append(seg)
        self._current = seg

    def _write_part(
        self, seg: dict[str, Any], index: int, blocks: dict[str, tuple[np.ndarray, Any]]
    ) -> None:
        """This rank's blocks as record ``index`` of its part file, then fsync (local;
        may run in a background thread: h5py releases the GIL while HDF5 writes)."""
        import h5py

        rank = self.comm.Get_rank()
        path = self.path.parent / seg["parts"] / f"rank-{rank:05d}.h5"
        shape = self._template.local_shape
        with h5py.File(path, "a") as fh:
            for name, (buf, sel) in blocks.items():
                dtype = np.dtype(self.fields[name][0])
                dset = fh.get(name)
                if dset is None:
                    dset = fh.create_dataset(
                        name,
                        shape=(0, *shape),
                        maxshape=(None, *shape),
                        dtype=dtype,
                        chunks=_tile(shape, dtype.itemsize) if all(shape) else None,
                    )
                dset.resize(index + 1, axis=0)
                if all(shape):
                    dest = (index, *(slice(None),) * len(shape))
                    if sel is ...:
                        dset.write_direct(buf, None, dest)
                    else:
                        dset.write_direct(buf, sel, dest)
                # the record's checksum, checked on resume (a flipped bit, another rank's
                # part: the damaged records are dropped, never carried forward)
                sums = fh.get(f"{_SUMS}/{name}")
                if sums is None:
                    sums = fh.create_dataset(
                        f"{_SUMS}/{name}", shape=(0,), maxshape=(None,), dtype="S64", chunks=(64,)
                    )
                    fh.attrs["rank"] = rank
                sums.resize(index + 1, axis=0)
                block = buf if sel is ... else buf[sel]
                sums[index] = checksum(np.asarray(block)).encode()
        _fsync(path)

    # ------------------------------------------------------------------ the commit
    def _commit(self) -> None:
        """Rank 0: rewrite the series file and the XDMF sidecar, each by temp + rename."""
        import h5py

        tmp = self.path.with_name(f".{self.path.name}.tmp-{temp_owner()}")
        if not self._swept:  # a killed earlier run's temporaries, once per series
            sweep_temporaries(self.path)
            sweep_temporaries(self.xdmf)
            self._swept = True
        n = self.records
        try:
            with h5py.File(tmp, "w") as fh:
                fh.attrs.update(
                    {
                        "Conventions": "CF-1.8",
                        "title": self.title,
                        "creator": "parcomp",
                        "format": FORMAT,
                        # what a resume needs besides the step, time and scalar datasets
                        "parcomp_series": json.dumps(
                            {"identity": self._identity(), "segments": self._segments}
                        ),
                    }
                )
                time = fh.create_dataset(
                    "time", data=np.array(self.times, np.float64), maxshape=(None,), chunks=True
                )
                self._cf(time, "time", "time", axis="T")
                time.attrs["standard_name"] = "time"
                time.make_scale("time")
                scales = [time]
                for dim in self.dims:
                    c = fh.create_dataset(dim, data=np.array(self.coords[dim], np.float64))
                    self._cf(c, dim, f"{dim} coordinate", axis=dim.upper()[:1])
                    c.make_scale(dim)
                    scales.append(c)
                step = fh.create_dataset("step", data=np.array(self.steps, np.int64))
                step.attrs["long_name"] = "time step"
                step.dims[0].attach_scale(time)
                for name in self.scalars:
                    d = fh.create_dataset(
                        name, data=np.array(self._scalar_values[name], np.float64)
                    )
                    self._cf(d, name, name)
                    d.dims[0].attach_scale(time)
                for name, (dt, shape) in self.fields.items():
                    d = self._virtual(fh, name, np.dtype(dt), tuple(shape), n)
                    self._cf(d, name, name)
                    for axis, scale in enumerate(scales):
                        d.dims[axis].attach_scale(scale)
            _fsync(tmp)
            os.replace(tmp, self.path)
            self._write_xdmf()
            _fsync(self.path.parent)
        except BaseException:
            _remove(tmp)
            raise

    def _cf(self, dset: Any, name: str, default_long: str, axis: str | None = None) -> None:
        dset.attrs["long_name"] = self.long_names.get(name, default_long)
        if name in self.units or name == "time":
            dset.attrs["units"] = self.units.get(name, "1")
        if axis is not None:
            dset.attrs["axis"] = axis

    def _virtual(self, fh: Any, name: str, dtype: np.dtype, shape: tuple, n: int) -> Any:
        import h5py

        layout = h5py.VirtualLayout(shape=(n, *shape), dtype=dtype)
        for seg in self._segments:
            if seg["count"] == 0:
                continue
            first, count = seg["first"], seg["count"]
            for r, bounds in enumerate(seg["ranges"]):
                local = tuple(hi - lo for lo, hi in bounds)
                if 0 in local:
                    continue
                source = h5py.VirtualSource(
                    f"./{seg['parts']}/rank-{r:05d}.h5", name, shape=(count, *local)
                )
                region = (slice(first, first + count), *(slice(lo, hi) for lo, hi in bounds))
                layout[region] = source[0:count]
        return fh.create_virtual_dataset(name, layout, fillvalue=None)

    def _write_xdmf(self) -> None:
        """The XDMF sidecar: a temporal collection of rectilinear grids (ParaView, VisIt)."""
        ndim = len(self.dims)
        if ndim not in (2, 3) or not self.steps:
            return
        shape = next(iter(self.fields.values()))[1]
        dims_text = " ".join(str(n) for n in shape)
        h5 = self.path.name
        geo = "VXVY" if ndim == 2 else "VXVYVZ"
        topo = "2DRectMesh" if ndim == 2 else "3DRectMesh"
        geometry = "".join(
            f'<DataItem Dimensions="{len(self.coords[d])}" NumberType="Float" Precision="8" '
            f'Format="HDF">{h5}:/{d}</DataItem>'
            for d in reversed(self.dims)  # XDMF lists the fastest axis first
        )
        grids = []
        for k, t in enumerate(self.times):
            attrs = []
            for name, (dt, shp) in self.fields.items():
                dtype = np.dtype(dt)
                kind = "Float" if dtype.kind == "f" else "Int" if dtype.kind == "i" else "UInt"
                full = " ".join(str(v) for v in (self.records, *shp))
                start = " ".join(["0"] * (ndim + 1))
                attrs.append(
                    f'<Attribute Name="{name}" AttributeType="Scalar" Center="Node">'
                    f'<DataItem ItemType="HyperSlab" Dimensions="{dims_text}" Type="HyperSlab">'
                    f'<DataItem Dimensions="3 {ndim + 1}" Format="XML">{k} {start[2:]} '
                    f"{' '.join(['1'] * (ndim + 1))} 1 {dims_text}</DataItem>"
                    f'<DataItem Dimensions="{full}" NumberType="{kind}" '
                    f'Precision="{dtype.itemsize}" Format="HDF">{h5}:/{name}</DataItem>'
                    "</DataItem></Attribute>"
                )
            grids.append(
                f'<Grid Name="step {self.steps[k]}" GridType="Uniform"><Time Value="{t!r}"/>'
                f'<Topology TopologyType="{topo}" Dimensions="{dims_text}"/>'
                f'<Geometry GeometryType="{geo}">{geometry}</Geometry>{"".join(attrs)}</Grid>'
            )
        text = (
            '<?xml version="1.0" ?>\n<Xdmf Version="3.0"><Domain>'
            '<Grid Name="series" GridType="Collection" CollectionType="Temporal">'
            + "\n".join(grids)
            + "</Grid></Domain></Xdmf>\n"
        )
        tmp = self.xdmf.with_name(f".{self.xdmf.name}.tmp-{temp_owner()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.xdmf)


#: Where a part file keeps each field's record checksums (one per record, in order).
_SUMS = "_parcomp_sums"


def _intact(fh: Any, fields: Any, seg: dict[str, Any]) -> int:
    """How many leading records of ``seg`` in part ``fh`` pass their checksums (records of a
    part written before checksums were recorded count as intact)."""

    count = seg["count"]
    for name in fields:
        sums = fh.get(f"{_SUMS}/{name}")
        if sums is None:
            continue
        known = min(count, sums.shape[0])
        dset = fh[name]
        for k in range(known):
            if checksum(dset[k]) != bytes(sums[k]).decode(errors="replace"):
                count = k
                break
    return count


def _read_meta(path: Path) -> dict[str, Any]:
    """The bookkeeping of an existing series file (hostile until checked)."""
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise HDF5Error(f"Series: {path} is not a readable HDF5 file: {exc}") from None
    with fh:
        if fh.attrs.get("format") != FORMAT:
            raise HDF5Error(f"Series: {path} is not a parcomp series (no format {FORMAT!r})")
        try:
            raw = fh.attrs.get("parcomp_series")
            meta = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
            names = meta["identity"]["scalars"] if isinstance(meta, dict) else None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("identity.scalars must be a list of names")
            columns: dict[str, Any] = {}
            for n in ("step", "time", *names):
                c = fh.get(n)
                if not isinstance(c, h5py.Dataset) or c.ndim != 1 or c.shape[0] > MAX_RECORDS:
                    raise ValueError(f"{n!r} must be a 1-d dataset of at most {MAX_RECORDS}")
                if c.dtype.kind not in "iuf":
                    raise ValueError(f"{n!r} must be numeric, is {c.dtype}")
                columns[n] = c[...]
        except (ValueError, TypeError, KeyError, OSError, json.JSONDecodeError) as exc:
            raise HDF5Error(f"Series: {path} has damaged bookkeeping: {exc}") from None
    try:
        return parse_meta(path.name, meta, columns)
    except (ValueError, TypeError, KeyError) as exc:
        raise HDF5Error(f"Series: {path} has damaged bookkeeping: {exc}") from None


#: Records a series file may claim (far beyond any run: refuses absurd sizes early).
MAX_RECORDS = 10**8


def parse_meta(file_name: str, meta: Any, columns: Mapping[str, Any]) -> dict[str, Any]:
    """Check a series' bookkeeping: typed and bounded (PURE).

    ``meta`` is the decoded ``parcomp_series`` attribute, ``columns`` the ``step``,
    ``time`` and scalar datasets' values.  Returns ``{"identity", "segments", "steps",
    "times", "scalars"}`` or raises ValueError/TypeError/KeyError naming the problem.
    """
    if not isinstance(meta, dict) or not isinstance(meta.get("identity"), dict):
        raise ValueError("no identity")
    ident = meta["identity"]
    fields = ident.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ValueError("identity.fields must name at least one field")
    shape: list[int] | None = None
    for name, spec in fields.items():
        if not _NAME.match(name) or not isinstance(spec, list) or len(spec) != 2:
            raise ValueError(f"field {name!r}: [dtype, shape] expected")
        dt = np.dtype(str(spec[0]))
        if dt.kind not in "biufc" or dt.fields is not None:
            raise ValueError(f"field {name!r}: dtype {dt} is not numeric")
        dims = spec[1]
        if (
            not isinstance(dims, list)
            or not 1 <= len(dims) <= 8
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**40 for d in dims
            )
        ):
            raise ValueError(f"field {name!r}: shape {dims!r} is not 1-8 positive integers")
        if shape is not None and dims != shape:
            raise ValueError("fields of different shapes")
        shape = dims
    assert shape is not None
    axes = ident.get("dims")
    if (
        not isinstance(axes, list)
        or len(axes) != len(shape)
        or not all(isinstance(a, str) and _NAME.match(a) for a in axes)
    ):
        raise ValueError(f"identity.dims {axes!r} must name the {len(shape)} axes")
    if not isinstance(ident.get("coords_sha256"), str):
        raise ValueError("identity.coords_sha256 missing")
    steps = [int(v) for v in np.asarray(columns["step"]).tolist()]
    times = [float(v) for v in np.asarray(columns["time"]).tolist()]
    if len(times) != len(steps) or any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError("steps and times disagree in length, or steps do not increase")
    if not all(np.isfinite(times)):
        raise ValueError("times must be finite")
    scalars = {n: [float(v) for v in np.asarray(columns[n]).tolist()] for n in ident["scalars"]}
    if any(len(v) != len(steps) for v in scalars.values()):
        raise ValueError("a scalar series and the steps disagree in length")
    segments = meta.get("segments")
    if not isinstance(segments, list) or len(segments) > 10_000:
        raise ValueError("segments must be a list")
    pattern = re.compile(rf"^{re.escape(file_name)}{re.escape(_PARTS)}[0-9a-f]{{12}}$")
    first = 0
    clean = []
    for seg in segments:
        if not isinstance(seg, dict):
            raise ValueError("a segment is not an object")
        parts, nprocs, count = seg.get("parts"), seg.get("nprocs"), seg.get("count")
        if not isinstance(parts, str) or not pattern.match(parts):
            raise ValueError(f"part folder {parts!r} is not this file's")
        if not isinstance(nprocs, int) or isinstance(nprocs, bool) or not 1 <= nprocs <= 2**24:
            raise ValueError(f"segment nprocs {nprocs!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"segment count {count!r}")
        if seg.get("first") != first:
            raise ValueError(f"segment first {seg.get('first')!r}, expected {first}")
        ranges = seg.get("ranges")
        if not isinstance(ranges, list) or len(ranges) != nprocs:
            raise ValueError("segment ranges must list every rank's block")
        for block in ranges:
            if not isinstance(block, list) or len(block) != len(shape):
                raise ValueError("a block range has the wrong number of axes")
            for bounds, n in zip(block, shape, strict=True):
                if (
                    not isinstance(bounds, list)
                    or len(bounds) != 2
                    or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                    or not 0 <= bounds[0] <= bounds[1] <= n
                ):
                    raise ValueError(f"block bounds {bounds!r} outside the shape {shape}")
        first += count
        clean.append(
            {
                "parts": parts,
                "nprocs": nprocs,
                "ranges": ranges,
                "first": seg["first"],
                "count": count,
            }
        )
    if first != len(steps):
        raise ValueError("segments do not add up to the records")
    return {
        "identity": ident,
        "segments": clean,
        "steps": steps,
        "times": times,
        "scalars": scalars,
    }


def _track(path: Path, thread: Any) -> None:
    threads = [t for t in _WRITERS.get(str(path), []) if t.is_alive()]
    _WRITERS[str(path)] = [*threads, thread]


class _Pending:
    """A record being written to this rank's part file (possibly in a thread)."""

    def __init__(
        self,
        seg: dict[str, Any],
        index: int,
        step: int,
        time: float,
        values: dict[str, float],
        blocks: dict[str, Any],
    ) -> None:
        self.seg, self.index, self.step, self.time = seg, index, step, time
        self.values, self.blocks = values, blocks
        self.error: BaseException | None = None
        self.thread: Any = None

    def run(self, write: Any) -> None:
        try:
            write(self.seg, self.index, self.blocks)
        except (OSError, ValueError, RuntimeError) as exc:
            self.error = exc

    def start(self, write: Any) -> None:
        import threading

        self.thread = threading.Thread(
            target=self.run, args=(write,), name="parcomp-series-write", daemon=False
        )
        self.thread.start()

    def wait(self) -> BaseException | None:
        if self.thread is not None:
            self.thread.join()
        return self.error
