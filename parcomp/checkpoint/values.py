"""What a checkpoint may hold: names, JSON-able values, values every rank must share.

PURE, except :func:`check_same` and :func:`save_state`, which COMMUNICATE (agreements
over the checkpointer's communicator; digests as int64 buffers, no pickles).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from parcomp.arrays.array import DistArray
from parcomp.checkpoint.manifest import MAX_DEPTH, MAX_STEP
from parcomp.checkpoint.writer import mpio_available
from parcomp.runtime.agree import agreed
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.wire import allgather_ints

__all__ = [
    "check_same",
    "check_name",
    "jsonable",
    "save_state",
    "check_options",
    "check_required",
]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_same(values: dict[str, Any], comm: Any) -> None:
    """Raise ConfigError on every rank if any of ``values`` differs between ranks (collective).

    ``values`` maps what it is ("step", "scalars", "rng") to its JSON-able value; one
    digest per entry travels, nothing else.  A checkpoint holds one step, one set of
    scalars and one state per generator for the whole job: rank 0's would silently stand
    for every rank's.
    """
    mine = [
        hashlib.sha256(json.dumps(v, sort_keys=True, allow_nan=True).encode()).hexdigest()
        for v in values.values()
    ]

    # the first 8 bytes of each digest, as int64: one Allgather of a typed buffer
    everyone = allgather_ints(
        comm, [int.from_bytes(bytes.fromhex(d[:16]), "big", signed=True) for d in mine]
    )
    for k, key in enumerate(values):
        differ = [r for r in range(len(everyone)) if everyone[r, k] != everyone[0, k]]
        if not differ:
            continue
        advice = {
            "step": "every rank must save the same step",
            "scalars": "scalars are one value for the whole job; save per-rank values with "
            "local= (per-rank arrays)",
            "rng": "only one state per generator is saved: give every rank the same generator "
            "(and derive per-rank streams from it, e.g. with SeedSequence.spawn), or save "
            "per-rank state with local= (per-rank arrays)",
        }[key]
        raise mark_everywhere(
            ConfigError(
                f"checkpoint {key} differ between ranks: ranks {differ} differ from rank 0; {advice}"
            ),
            comm,
        )


def check_name(kind: str, name: Any) -> None:
    if (
        not isinstance(name, str)
        or not name
        or not set(name) <= _NAME_CHARS
        or name.startswith(".")
    ):
        raise ConfigError(f"{kind} name {name!r}: use letters, digits, '_', '-' or '.' (not first)")


def jsonable(value: Any, where: str, level: int = 0, wide: bool = False) -> Any:
    """``value`` as JSON the manifest parser will accept back, or :class:`ConfigError`.

    The same bounds as :class:`~parcomp.checkpoint.manifest.Manifest` reads with, checked
    before anything is written: integers of at most 64 bits (they are stored as HDF5
    attributes too), text that is valid UTF-8, non-empty keys, nesting at most
    ``MAX_DEPTH - 2`` levels (the manifest's own two come on top).  Non-finite floats are
    encoded as ``{"__float__": "nan"}`` and decoded back on restore.  ``wide`` allows
    integers of any size (generator states: PCG64's is 128 bits; not stored as attributes).
    """

    if level > MAX_DEPTH - 2:
        raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH - 2} levels")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{where}: {value!r:.40} is not valid UTF-8 text") from None
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not wide and not -(2**63) <= value < 2**64:
            raise ConfigError(f"{where}: integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return {"__float__": repr(value)}
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v, where, level + 1, wide) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = jsonable(str(k), where, level + 1)
            if not key:
                raise ConfigError(f"{where}: an empty key cannot be stored")
            out[key] = jsonable(v, where, level + 1, wide)
        return out
    raise ConfigError(
        f"{where}: {type(value).__name__} cannot be stored (use numbers, strings, lists, dicts or arrays)"
    )


def save_state(
    step: Any, arrays: Any, scalars: Any, rng: Any, meta: Any, comm: Any
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Validate a save's arguments on every rank and agree on them (collective).

    Returns ``(step, arrays, state)``, ``state`` holding the JSON parts (``scalars``,
    ``meta``, ``rng`` as NumPy's state dicts).  Raises :class:`ConfigError` on every rank
    for a bad argument on any rank, or a step, scalar or generator state that differs
    between ranks.
    """

    arrays = dict(arrays or {})
    with agreed(comm, catch=(ConfigError, AttributeError), wrap=lambda e: ConfigError(f"rng: {e}")):
        if (
            isinstance(step, bool)
            or not isinstance(step, int | np.integer)
            or not 0 <= step <= MAX_STEP
        ):
            raise ConfigError(f"step must be an integer from 0 to {MAX_STEP}, got {step!r}")
        for name, arr in arrays.items():
            check_name("array", name)
            if not isinstance(arr, DistArray):
                raise ConfigError(f"array {name!r} must be a DistArray, got {type(arr).__name__}")
        for name in rng or {}:
            check_name("rng", name)
        state = {
            "scalars": jsonable(dict(scalars or {}), "scalars"),
            "meta": jsonable(dict(meta or {}), "meta"),
            "rng": {
                k: jsonable(g.bit_generator.state, f"rng {k!r}", wide=True)
                for k, g in (rng or {}).items()
            },
        }
    check_same({"step": int(step), "scalars": state["scalars"], "rng": state["rng"]}, comm)
    return int(step), arrays, state


def check_options(
    every: Any,
    every_seconds: Any,
    keep: Any,
    flush_every: Any,
    local_directory: Any,
    asynchronous: bool,
    mpio: bool,
) -> None:
    """Raise :class:`ConfigError` for a bad :class:`~parcomp.Checkpointer` option (PURE,
    but for asking h5py whether it has MPI)."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ConfigError(f"every must be a positive integer, got {every!r}")
    if every_seconds is not None and not every_seconds > 0:
        raise ConfigError(f"every_seconds must be positive, got {every_seconds!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep must be a positive integer, got {keep!r}")
    if flush_every is not None and (
        isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1
    ):
        raise ConfigError(f"flush_every must be a positive integer or None, got {flush_every!r}")
    if local_directory is not None and asynchronous:
        raise ConfigError(
            "asynchronous applies to the shared directory alone; with local_directory the "
            "node-local write is synchronous (it goes to fast storage) and the flush to "
            "the shared directory is always asynchronous"
        )
    if mpio:
        if local_directory is not None or asynchronous:
            raise ConfigError(
                "mpio writes one shared file collectively: it cannot be combined with "
                "local_directory (per-node shards) or asynchronous (a collective write in a "
                "background thread)"
            )
        if not mpio_available():
            raise ConfigError(
                "mpio=True needs h5py built with MPI (parallel HDF5); this h5py is serial "
                "(the PyPI wheel is). Leave mpio off: one shard per rank is the default"
            )


def check_required(restored: Any, require: Any, comm: Any) -> None:
    """Raise :class:`ConfigError` on every rank if ``restored`` lacks the scalars
    ``require`` names with these values (local: every rank restored the same manifest)."""
    wrong = {
        k: restored.scalars.get(k, "<missing>")
        for k, v in require.items()
        if restored.scalars.get(k, object()) != jsonable(v, "require")
    }
    if wrong:
        raise mark_everywhere(
            ConfigError(
                f"checkpoint {restored.path} belongs to another run: it has "
                f"{wrong}, this run asks for "
                f"{ {k: require[k] for k in wrong} }; resume with the same parameters "
                "or use another checkpoint directory"
            ),
            comm,
        )
