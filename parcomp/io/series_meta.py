"""A series file's metadata and layout (the ``/meta`` of ``parcomp-series-1``): written by
:class:`~parcomp.io.series.Series`, read back on resume, checked strictly (PURE but for
reading the file)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.io.hdf5 import (
    _NAME,
    _PARTS,
)
from parcomp.io.slabs import checksum
from parcomp.runtime.errors import ConfigError, HDF5Error

__all__ = ["FORMAT", "MAX_RECORDS", "parse_meta"]

FORMAT = "parcomp-series-1"
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
