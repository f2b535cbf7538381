"""What a resumable map is: the fingerprint of a call, compared before its progress is
resumed (PURE).

A progress record of ``map``/``map_reduce``/``map_reduce_keyed`` (committed through the
checkpoint engine) carries :func:`call_identity` of the call that made it.  A rerun
resumes only the very same call: :func:`differences` names every field that differs
(the items, the mapper's name or code, the reducer, ``deterministic``, the kind of map),
so a progress folder of another call is refused with a message saying what changed.
Records read back are hostile until :func:`parse_identity` has checked them (types,
bounds, known fields only), as manifests are.

How progress is committed and resumed: :mod:`parcomp.mapreduce.resume`.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import types
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
    "layout",
)
_KINDS = ("map", "map_reduce", "map_reduce_keyed")
_MAX_TEXT = 512


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def items_identity(items: Any) -> str:
    """``"<count>:<digest>"`` of the work items (PURE): a range by its bounds, an ndarray
    by its dtype, shape and bytes (object arrays by their values), any other iterable by
    its values (:func:`_value_bytes`: numbers, strings, containers and arrays by content,
    other objects by their attributes or pickle).  A generator must be passed already
    listed (:func:`parcomp.mapreduce.schedule.as_items` does), or it would be empty here."""
    if isinstance(items, range):
        return f"{len(items)}:range:{items.start}:{items.stop}:{items.step}"
    if isinstance(items, np.ndarray):
        return f"{len(items)}:{_digest(_value_bytes(items, 0))}"
    try:
        values = list(items)
    except TypeError:
        return f"0:opaque:{type(items).__name__}"
    return f"{len(values)}:{_digest(type(items).__name__.encode() + _value_bytes(values, 0))}"


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return True
    if isinstance(value, np.generic):
        return True
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return False


def function_identity(fn: Callable[..., Any] | None, _depth: int = 0) -> tuple[str, str]:
    """``(qualified name, code digest)`` of a mapper or reducer (PURE).

    The digest covers the bytecode and constants of the function and of the functions it
    defines, and the values bound to it: its default arguments, the variables it closes
    over, a ``functools.partial``'s arguments, a bound method's object, a callable
    object's attributes (with its class's ``__call__``), a Numba dispatcher's or
    ``np.vectorize``'s Python function; values by content (:func:`_value_bytes`).  Module
    globals the function reads are not covered.  A builtin with nothing bound has the
    digest ``"-"``.
    """
    if fn is None:
        return "-", "-"
    if isinstance(fn, str):
        return fn, "-"
    bound: list[Any] = []
    func: Any = fn
    for _ in range(16):  # unwrap the layers around the Python function
        if hasattr(func, "py_func"):  # a Numba dispatcher
            func = func.py_func
        elif isinstance(func, functools.partial):
            bound += [func.args, sorted(func.keywords.items())]
            func = func.func
        elif isinstance(func, types.MethodType):
            bound.append(("self", func.__self__))
            func = func.__func__
        elif isinstance(func, np.vectorize):
            bound.append(("vectorize", func.otypes, func.excluded))
            func = func.pyfunc
        else:
            break
    code = getattr(func, "__code__", None)
    if code is None and not isinstance(func, types.BuiltinFunctionType | type) and callable(func):
        call = type(func).__call__  # a callable object: its class's code
        bound.append(("object", func))
        code = getattr(call, "__code__", None)
        name = f"{type(func).__module__}.{type(func).__qualname__}"
    else:
        module = getattr(func, "__module__", None) or "?"
        name = f"{module}.{getattr(func, '__qualname__', type(func).__name__)}"
    if code is not None and hasattr(func, "__code__"):
        cells = [c.cell_contents for c in (getattr(func, "__closure__", None) or ()) if _filled(c)]
        bound += [getattr(func, "__defaults__", None), getattr(func, "__kwdefaults__", None), cells]
    if code is None and not bound:
        return name[:_MAX_TEXT], "-"
    if _depth > 4:  # a function closing over itself, or a deep chain of them
        return name[:_MAX_TEXT], "deep"
    data = (_code_bytes(code) if code is not None else b"-") + b"\x01" + _value_bytes(bound, _depth)
    return name[:_MAX_TEXT], _digest(data)


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _value_bytes(value: Any, depth: int) -> bytes:
    """Bytes that change when a value does (PURE): plain values by ``repr``; lists, tuples,
    dicts and sets by their elements (sets sorted: their order differs between processes);
    arrays by dtype, shape and bytes; functions by :func:`function_identity`; other objects
    by their attributes (``vars``), else their pickle, else their type only."""
    if depth > 8:
        return b"deep"
    kind = type(value).__qualname__.encode()
    if _plain(value) and not isinstance(value, tuple):
        return repr(value).encode()
    if isinstance(value, np.ndarray):
        head = f"{value.dtype.str}{value.shape}".encode()
        if value.dtype.hasobject:
            return head + _value_bytes(value.tolist(), depth + 1)
        return head + _digest(np.ascontiguousarray(value).tobytes()).encode()
    if isinstance(value, list | tuple):
        return kind + b"[" + b",".join(_value_bytes(v, depth + 1) for v in value) + b"]"
    if isinstance(value, dict):
        pairs = sorted(
            (_value_bytes(k, depth + 1), _value_bytes(v, depth + 1)) for k, v in value.items()
        )
        return kind + b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"
    if isinstance(value, set | frozenset):
        return kind + b"{" + b",".join(sorted(_value_bytes(v, depth + 1) for v in value)) + b"}"
    if callable(value) and (
        hasattr(value, "__code__")
        or hasattr(value, "py_func")
        or isinstance(value, functools.partial)
    ):
        return "|".join(function_identity(value, depth + 1)).encode()
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict) and attrs:
        return kind + b"(" + _value_bytes(attrs, depth + 1) + b")"
    try:
        return kind + _digest(pickle.dumps(value, protocol=4)).encode()
    except Exception:  # noqa: BLE001 - not picklable: its type is all there is to go by
        return b"<" + type(value).__module__.encode() + b"." + kind + b">"


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
    layout: str = "-",
) -> dict[str, str]:
    """The identity of a map call (PURE): every field a short text (see the module).
    ``layout`` is what else fixes the committed units (the leaf size of a deterministic
    reduction, the group size of an ensemble)."""
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
        "layout": str(layout)[:_MAX_TEXT],
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
        "layout": "the layout of the work (leaves, groups)",
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
