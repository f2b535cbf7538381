"""The records of a resumable map's progress (PURE): framed ``(key, pickled value)``
records, checked when read back, and the item ranges a partial covers.

A committed record is hostile until checked: a cut or overlong frame, a key out of range
or repeated, a range outside the items, and a value that no longer unpickles are each a
:class:`~parcomp.runtime.errors.CheckpointSchemaError` naming where.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import numpy as np

from parcomp.runtime.errors import CheckpointSchemaError

__all__ = [
    "dumps",
    "frame",
    "frame_blobs",
    "intervals",
    "loads",
    "mark",
    "unframe",
    "unframe_blobs",
]

_FRAME = struct.Struct("<qQ")  # record key, length of the pickled value


def frame_blobs(blobs: dict[int, bytes]) -> np.ndarray:
    """``(key, pickled value)`` records as one byte array, keys in order (PURE)."""
    out = bytearray()
    for key in sorted(blobs):
        blob = blobs[key]
        out += _FRAME.pack(key, len(blob))
        out += blob
    return np.frombuffer(bytes(out), np.uint8)


def frame(records: dict[int, Any]) -> np.ndarray:
    """``(key, value)`` records pickled and framed (PURE)."""
    return frame_blobs({k: dumps(v) for k, v in records.items()})


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes, where: str, what: str) -> Any:
    """Unpickle a committed record; a record that no longer loads (a class renamed or a
    module gone since it was committed) is a :class:`CheckpointSchemaError`.  The bytes
    come from a checksummed checkpoint in a folder only this user can write, so loading
    them is as safe as the run that wrote them."""
    try:
        return pickle.loads(blob)
    except Exception as exc:
        raise CheckpointSchemaError(
            f"{where}: committed {what} does not load any more ({type(exc).__name__}: {exc}); "
            "resume='ignore' starts over"
        ) from exc


def unframe_blobs(data: np.ndarray, where: str, limit: int = 2**62) -> dict[int, bytes]:
    """The records of :func:`frame_blobs`, still pickled (PURE; a cut or overlong record,
    a key out of ``[0, limit)`` or repeated is a :class:`CheckpointSchemaError`)."""
    raw = np.ascontiguousarray(data, np.uint8).tobytes()
    records: dict[int, bytes] = {}
    pos = 0
    while pos < len(raw):
        if pos + _FRAME.size > len(raw):
            raise CheckpointSchemaError(f"{where}: a progress record is cut short")
        key, length = _FRAME.unpack_from(raw, pos)
        pos += _FRAME.size
        if not 0 <= key < limit or length > len(raw) - pos or key in records:
            raise CheckpointSchemaError(f"{where}: progress record {key} out of range or repeated")
        records[key] = raw[pos : pos + length]
        pos += length
    return records


def unframe(data: np.ndarray, n: int, where: str) -> dict[int, Any]:
    """The records of :func:`frame`, unpickled; keys must be below ``n`` (PURE)."""
    return {
        k: loads(b, where, f"record {k}") for k, b in unframe_blobs(data, where, limit=n).items()
    }


def intervals(mask: np.ndarray) -> list[tuple[int, int]]:
    """The ``[lo, hi)`` runs of True in a boolean mask (PURE)."""
    padded = np.concatenate(([False], np.asarray(mask, bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def mark(mask: np.ndarray, ranges: Any, where: str) -> None:
    """Set ``mask`` over committed ``[lo, hi)`` ranges, checked (a hostile list is refused)."""
    if not isinstance(ranges, list):
        raise CheckpointSchemaError(f"{where}: committed item ranges are not a list")
    for pair in ranges:
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            or not 0 <= pair[0] < pair[1] <= len(mask)
        ):
            raise CheckpointSchemaError(f"{where}: committed item range {pair!r} is out of range")
        mask[pair[0] : pair[1]] = True
