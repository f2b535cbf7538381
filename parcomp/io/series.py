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

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.grid.layout import Decomposed, is_decomposed
from parcomp.io.hdf5 import (
    _NAME,
    _check_target,
    _remove,
)
from parcomp.io.series_file import SeriesFile
from parcomp.io.series_meta import (
    _AXES,
    FORMAT,
    _from_variable,
    _read_meta,
)
from parcomp.runtime.agree import agreed, raise_if_any, raise_if_differ
from parcomp.runtime.errors import ConfigError, DTypeError, HDF5Error, ShapeError
from parcomp.runtime.log import get_logger
from parcomp.runtime.watchdog import collective
from parcomp.runtime.wire import bcast_json

__all__ = ["Series", "FORMAT"]

#: Background writers per series file in this process: a new Series of the same file (an
#: in-job recovery builds one while the old object's threads may still run) waits for
#: them, so an old commit can never rename over a newer one.
_WRITERS: dict[str, list[Any]] = {}


class Series(SeriesFile):
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
        with agreed(comm, catch=HDF5Error):
            if comm.Get_rank() == 0:
                state = self._open_state(resume_at, overwrite)
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
            if not is_decomposed(a):
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

        with agreed(self.comm, catch=(ShapeError, ConfigError, DTypeError, TypeError, ValueError)):
            arrays, values = self._check_append(step, time, fields, scalars)

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
            if not is_decomposed(a):
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

    # ------------------------------------------------------------------ the commit


#: Where a part file keeps each field's record checksums (one per record, in order).
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
