"""What a resumable map is: the fingerprint of a call, compared before its progress is
resumed (PURE; issue 27, item 2 — work in progress on this branch).

A progress record of ``map``/``map_reduce``/``map_reduce_keyed`` (committed through the
checkpoint engine) carries :func:`call_identity` of the call that made it.  A rerun
resumes only the very same call: :func:`differences` names every field that differs
(the items, the mapper's name or code, the reducer, ``deterministic``, the kind of map),
so a progress folder of another call is refused with a message saying what changed.
Records read back are hostile until :func:`parse_identity` has checked them (types,
bounds, known fields only), as manifests are.

Plan for the rest of issue 27 (not built yet):

* commits in *rounds*: every rank runs chunks until ``every_items`` items or
  ``every_seconds`` have passed on rank 0's clock (agreed at the round's end with one
  flag), then one collective ``Checkpointer.save(step=round, local={"results": framed
  records}, scalars={"identity": ...})`` — the checkpoint engine's transaction, no second
  protocol; a preemption flag ends the round early, commits, exits 75;
* ``map``: framed ``(item index, pickled result)`` records per rank; on resume every rank
  reads the whole concatenation (``restore(redeal=lambda lengths, r, p: (0, sum(lengths)))``)
  and skips committed chunks (static and dynamic schedules filter the chunk stream);
* ``map_reduce(deterministic=True)``: the committed chunk leaves of the fixed tree (chunks
  do not depend on the rank count), so the resumed value is bitwise the uninterrupted one;
  non-deterministic: the folded partials with the chunk ranges they cover;
* ``map_reduce_keyed``: the combined per-rank tables before the shuffle;
* ``ranks_per_task=k``: ``comm.Split`` into groups of k (the remainder ranks form a
  smaller last group, said in the docs), group leaders take items from the node counter,
  ``fn(item, comm=group)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from parcomp.runtime.errors import CheckpointSchemaError

__all__ = ["IDENTITY_FIELDS", "call_identity", "differences", "parse_identity"]

#: The fields of an identity, each a short text.
IDENTITY_FIELDS = (
    "kind",
    "items",
    "mapper",
    "mapper_code",
    "reducer",
    "deterministic",
)
_KINDS = ("map", "map_reduce", "map_reduce_keyed")
_MAX_TEXT = 512


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def items_identity(items: Any) -> str:
    """``"<count>:<digest>"`` of the work items (PURE): a range by its bounds, an ndarray
    by its dtype, shape and bytes, a sequence of plain values (numbers, strings, bytes,
    None, tuples of them) by their ``repr``; anything else by its count and type only,
    said in the text (``"<count>:opaque:<type>"``), so a change of such items is not seen."""
    if isinstance(items, range):
        return f"{len(items)}:range:{items.start}:{items.stop}:{items.step}"
    if isinstance(items, np.ndarray):
        head = f"{items.dtype.str}{items.shape}".encode()
        return f"{len(items)}:{_digest(head + np.ascontiguousarray(items).tobytes())}"
    try:
        values = list(items)
    except TypeError:
        return f"0:opaque:{type(items).__name__}"
    if all(_plain(v) for v in values):
        return f"{len(values)}:{_digest(repr(values).encode())}"
    return f"{len(values)}:opaque:{type(items).__name__}"


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return True
    if isinstance(value, np.generic):
        return True
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return False


def function_identity(fn: Callable[..., Any] | None) -> tuple[str, str]:
    """``(qualified name, code digest)`` of a mapper or reducer (PURE).  The digest covers
    the bytecode and constants of the function and of the functions it defines (a Numba
    dispatcher by its Python function); a callable without code (a builtin, a
    ``functools.partial``) has the digest ``"-"``."""
    if fn is None:
        return "-", "-"
    if isinstance(fn, str):
        return fn, "-"
    func = getattr(fn, "py_func", fn)
    func = getattr(func, "func", func)  # functools.partial
    module = getattr(func, "__module__", None) or "?"
    name = f"{module}.{getattr(func, '__qualname__', type(func).__name__)}"
    code = getattr(func, "__code__", None)
    if code is None:
        return name[:_MAX_TEXT], "-"
    return name[:_MAX_TEXT], _digest(_code_bytes(code))


def _code_bytes(code: Any) -> bytes:
    parts = [code.co_code]
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            parts.append(_code_bytes(const))
        else:
            parts.append(repr(const).encode())
    parts.append(repr(code.co_names).encode())
    return b"\x00".join(parts)


def call_identity(
    kind: str,
    items: Any,
    mapper: Callable[..., Any],
    reducer: Any = None,
    deterministic: bool = False,
) -> dict[str, str]:
    """The identity of a map call (PURE): every field a short text (see the module)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    name, code = function_identity(mapper)
    reducer_name, reducer_code = function_identity(reducer)
    return {
        "kind": kind,
        "items": items_identity(items),
        "mapper": name,
        "mapper_code": code,
        "reducer": f"{reducer_name}:{reducer_code}",
        "deterministic": "yes" if deterministic else "no",
    }


def differences(saved: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """What differs between a committed identity and this call's, in words (PURE)."""
    words = {
        "kind": "the kind of map",
        "items": "the work items (count or contents)",
        "mapper": "the mapper",
        "mapper_code": "the mapper's code",
        "reducer": "the reducer",
        "deterministic": "deterministic=",
    }
    return [
        f"{words[f]}: {saved.get(f)!r} then, {now.get(f)!r} now"
        for f in IDENTITY_FIELDS
        if saved.get(f) != now.get(f)
    ]


def parse_identity(value: Any, where: str) -> dict[str, str]:
    """A committed identity checked (PURE): a mapping of exactly the known fields to texts
    of at most 512 characters, ``kind`` and ``deterministic`` among their values.

    Raises
    ------
    CheckpointSchemaError
        Anything else, naming ``where``.
    """
    if not isinstance(value, Mapping):
        raise CheckpointSchemaError(f"{where}: progress identity is not a mapping")
    keys = set(value)
    if keys != set(IDENTITY_FIELDS):
        missing = sorted(set(IDENTITY_FIELDS) - keys, key=str)
        extra = sorted(map(str, keys - set(IDENTITY_FIELDS)))
        raise CheckpointSchemaError(
            f"{where}: progress identity fields wrong (missing {missing}, unknown {extra[:5]})"
        )
    out = {}
    for field in IDENTITY_FIELDS:
        text = value[field]
        if not isinstance(text, str) or len(text) > _MAX_TEXT or "\x00" in text:
            raise CheckpointSchemaError(f"{where}: progress identity {field!r} is not a short text")
        out[field] = text
    if out["kind"] not in _KINDS:
        raise CheckpointSchemaError(f"{where}: progress identity kind {out['kind']!r} unknown")
    if out["deterministic"] not in ("yes", "no"):
        raise CheckpointSchemaError(f"{where}: progress identity deterministic is not yes/no")
    return out
