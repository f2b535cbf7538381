"""What a checkpoint may hold: names, JSON-able values, values every rank must share.

PURE, except :func:`check_same`, which COMMUNICATES (one allgather of digests).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from parcomp.comm import mark_everywhere
from parcomp.errors import ConfigError

__all__ = ["check_same", "check_name", "jsonable"]

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
    everyone = comm.allgather(mine)
    for k, key in enumerate(values):
        differ = [r for r, d in enumerate(everyone) if d[k] != everyone[0][k]]
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


def jsonable(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return {"__float__": repr(value)}
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v, where) for k, v in value.items()}
    raise ConfigError(
        f"{where}: {type(value).__name__} cannot be stored (use numbers, strings, lists, dicts or arrays)"
    )
