"""CF decoding of packed and masked variables, as xarray and netCDF readers do (PURE).

A netCDF variable is often stored packed: int16 with ``scale_factor`` and ``add_offset``
(``value = stored * scale_factor + add_offset``), missing cells marked by ``_FillValue``
or ``missing_value``, sometimes ``_Unsigned = "true"`` on a signed type.  Read raw, such
a variable gives the stored integers: a mean of 312.03 where the data says 3.12.
:func:`cf_plan` reads those attributes once into a :class:`CFPlan`, and :meth:`CFPlan.decode`
turns a raw block into values, following xarray's default decoding (``mask_and_scale``)
so that the result is bitwise what ``xarray.open_dataset(...)[name].values`` gives:

* the result type is xarray's ``_choose_float_dtype``: the type of ``scale_factor`` /
  ``add_offset`` when both are float32 or both float64 (float64 for 32-bit integers),
  float64 when only an offset is given, float32 for masked integers of up to 16 bits,
  float64 for wider ones;
* ``_FillValue`` and ``missing_value`` cells become NaN (compared in stored units);
* CF's ``valid_min`` / ``valid_max`` / ``valid_range`` (stored units) mask too, as the
  CF conventions and netCDF4-python do (xarray leaves them alone: a file that has them
  differs from xarray there, on purpose);
* ``units``, ``long_name``, ``standard_name`` and the other descriptive attributes are
  kept (:attr:`CFPlan.attrs`); the packing attributes are consumed.

``decode=False`` in :func:`parcomp.load_hdf5` gives the stored values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parcomp.runtime.errors import DTypeError

__all__ = ["CFPlan", "cf_plan", "DESCRIPTIVE"]

#: Attributes kept with a decoded variable (the rest are encoding, or HDF5 bookkeeping).
DESCRIPTIVE = ("units", "long_name", "standard_name", "calendar", "comment", "description")
_PACKING = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned")
_VALID = ("valid_min", "valid_max", "valid_range")


@dataclass(frozen=True)
class CFPlan:
    """How to turn a stored block into values (see the module docstring)."""

    stored: np.dtype
    dtype: np.dtype
    unsigned: np.dtype | None = None
    fills: tuple[float, ...] = ()
    scale: Any = None
    offset: Any = None
    valid: tuple[float | None, float | None] = (None, None)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> bool:
        """Nothing to do: the stored values are the values."""
        return (
            self.unsigned is None
            and not self.fills
            and self.scale is None
            and self.offset is None
            and self.valid == (None, None)
            and self.dtype == self.stored
        )

    def describe(self) -> list[Any]:
        """A JSON-able summary, compared between ranks."""
        return [
            self.stored.str,
            self.dtype.str,
            None if self.unsigned is None else self.unsigned.str,
            [repr(f) for f in self.fills],
            repr(self.scale),
            repr(self.offset),
            [repr(v) for v in self.valid],
        ]

    def decode(self, raw: np.ndarray, out: np.ndarray) -> None:
        """Write the values of stored block ``raw`` into ``out`` (of :attr:`dtype`)."""
        data = raw.view(self.unsigned) if self.unsigned is not None else raw
        mask = None
        if self.fills:
            mask = np.zeros(data.shape, bool)
            for fv in self.fills:
                mask |= data == fv
        lo, hi = self.valid
        if lo is not None or hi is not None:
            mask = np.zeros(data.shape, bool) if mask is None else mask
            if lo is not None:
                mask |= data < lo
            if hi is not None:
                mask |= data > hi
            if data.dtype.kind == "f":
                mask &= ~np.isnan(data)
        out[...] = data  # the cast to the decoded type
        if self.scale is not None:
            out *= self.scale
        if self.offset is not None:
            out += self.offset
        if mask is not None:
            out[mask] = np.nan


def _scalar(value: Any) -> Any:
    """An attribute as a numpy scalar (h5py gives netCDF attributes as 1-element arrays)."""
    arr = np.asarray(value)
    if arr.dtype.kind in "SUO":
        return value
    return arr.reshape(-1)[0] if arr.size == 1 else arr


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    arr = np.asarray(value)
    if arr.dtype.kind == "S" and arr.size == 1:
        return bytes(arr.reshape(-1)[0]).decode("utf-8", "replace")
    return str(value)


def _float_dtype(stored: np.dtype, scale: Any, offset: Any) -> np.dtype:
    """xarray's ``_choose_float_dtype``."""
    if scale is not None or offset is not None:
        st = np.dtype(type(scale)) if scale is not None else None
        ot = np.dtype(type(offset)) if offset is not None else None
        if st is not None and ot is not None and st == ot and st in (np.float32, np.float64):
            if stored.itemsize == 4 and stored.kind in "iu":
                return np.dtype(np.float64)
            return st
        if offset is not None:
            return np.dtype(np.float64)
        return st if st is not None and st.kind == "f" else np.dtype(np.float64)
    if stored.kind == "f" and stored.itemsize <= 4:
        return np.dtype(np.float32)
    if stored.kind in "iu" and stored.itemsize <= 2:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _promote(dtype: np.dtype) -> np.dtype:
    """The type that holds NaN for ``dtype`` (NumPy/xarray ``maybe_promote``): floats stay,
    integers of up to 16 bits go to float32, wider ones to float64."""
    if dtype.kind == "f":
        return dtype
    return np.dtype(np.float32) if dtype.itemsize <= 2 else np.dtype(np.float64)


def cf_plan(stored: np.dtype, attrs: Mapping[str, Any], where: str = "") -> CFPlan:
    """Read a variable's CF attributes into a :class:`CFPlan` (PURE).

    Parameters
    ----------
    stored : numpy.dtype
        The dataset's stored type.
    attrs : mapping
        Its attributes (h5py's ``dset.attrs``).
    where : str
        The dataset, for messages.

    Raises
    ------
    DTypeError
        A packing attribute that is not a number (a string ``scale_factor``).
    """
    keep = {k: _text(attrs[k]) for k in DESCRIPTIVE if k in attrs}
    unsigned = None
    raw_unsigned = attrs.get("_Unsigned")
    if raw_unsigned is not None and stored.kind in "iu":
        flag = _text(raw_unsigned).strip().lower()
        if flag == "true" and stored.kind == "i":
            unsigned = np.dtype(f"u{stored.itemsize}")
        elif flag == "false" and stored.kind == "u":
            unsigned = np.dtype(f"i{stored.itemsize}")
    data_type = unsigned if unsigned is not None else stored

    def number(key: str) -> Any:
        if key not in attrs:
            return None
        value = _scalar(attrs[key])
        if np.asarray(value).dtype.kind not in "biuf":
            raise DTypeError(f"load_hdf5: {where}: attribute {key} = {value!r} is not a number")
        return value

    scale, offset = number("scale_factor"), number("add_offset")
    # fill values as numpy scalars of the attribute's own type, compared as xarray does
    # (float32 data against a float64 1e20 compares in float64); _Unsigned converts
    # _FillValue only, as xarray does (a signed missing_value then matches nothing)
    fills: list[Any] = []
    raw_fill = False
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            raw_fill = True
            values = np.atleast_1d(np.asarray(attrs[key]))
            if values.dtype.kind not in "biuf":
                raise DTypeError(f"load_hdf5: {where}: attribute {key} is not numeric")
            if unsigned is not None and key == "_FillValue":
                values = values.astype(stored).view(unsigned)
            for v in values:
                if not (v.dtype.kind == "f" and np.isnan(v)) and not any(v == f for f in fills):
                    fills.append(v)
    lo = hi = None
    if "valid_range" in attrs:
        vr = np.asarray(attrs["valid_range"]).reshape(-1)
        if vr.size == 2 and vr.dtype.kind in "biuf":
            lo, hi = vr.tolist()
    if "valid_min" in attrs:
        lo = float(np.asarray(number("valid_min")))
    if "valid_max" in attrs:
        hi = float(np.asarray(number("valid_max")))
    if scale is None and offset is None and not fills and lo is None and hi is None:
        return CFPlan(stored, data_type, unsigned, attrs=keep)
    # xarray's order: masking first (to a float type when there are fill values: the
    # packing's type, else NumPy's promotion for NaN), then scaling, which picks its own
    # type only when the variable has no _FillValue/missing_value at all
    dtype = data_type
    packed = scale is not None or offset is not None
    if fills:
        dtype = _float_dtype(data_type, scale, offset) if packed else _promote(data_type)
    if packed and not raw_fill:
        dtype = _float_dtype(dtype, scale, offset)
    if (lo is not None or hi is not None) and dtype.kind != "f":
        dtype = _promote(dtype)  # NaN for values outside valid_range needs a float
    return CFPlan(stored, np.dtype(dtype), unsigned, tuple(fills), scale, offset, (lo, hi), keep)
