"""The files of a series: each rank's part files (one per segment, every record checksummed),
and the master file rank 0 commits (virtual datasets over the parts, CF attributes, the
``/meta`` group) with its XDMF sidecar, published by an atomic rename.  A mixin of
:class:`~parcomp.io.series.Series` (its state is Series'); local to each rank."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import numpy as np

from parcomp.io.hdf5 import (
    _PARTS,
    _fsync,
    _remove,
    sweep_temporaries,
    temp_owner,
)
from parcomp.io.parts import check_parts_folder, open_part
from parcomp.io.series_meta import _SUMS, FORMAT, _intact, _tile
from parcomp.io.slabs import checksum
from parcomp.runtime.agree import agreed
from parcomp.runtime.errors import HDF5Error
from parcomp.runtime.wire import bcast_json

__all__ = ["SeriesFile"]


class SeriesFile:
    """How a :class:`~parcomp.io.series.Series` writes and checks its files (local)."""

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

    def _start_segment(self) -> None:
        """This run's part folder (after a resume: a new one, whatever the rank count)."""

        comm = self.comm
        nonce = bcast_json(comm, uuid.uuid4().hex[:12] if comm.Get_rank() == 0 else None)
        parts = f"{self.path.name}{_PARTS}{nonce}"
        with agreed(
            comm, catch=OSError, wrap=lambda e: HDF5Error(f"Series: cannot create {parts}: {e}")
        ):
            if comm.Get_rank() == 0:
                (self.path.parent / parts).mkdir(mode=0o755)
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
