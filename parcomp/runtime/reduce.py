"""Reductions: built-in and custom operators, combining partials across ranks, and a
deterministic (rank-count independent) reduction tree.

``resolve_op``, ``fold`` and the tree functions are PURE; ``allreduce`` and
``combine_partials`` COMMUNICATE (collectives).

Built-in operators (by name): ``sum``, ``prod``, ``min``, ``max``, ``land``, ``lor``,
``lxor``, ``band``, ``bor``, ``bxor``, ``minloc``, ``maxloc``.  They work on Python and
NumPy scalars and elementwise on NumPy arrays.  ``minloc``/``maxloc`` reduce
``(value, index)`` pairs; ties go to the smaller index.  Any associative Python callable
``f(a, b)`` is a custom operator, a ``@parcomp.jit`` / Numba function included.

Deterministic mode
------------------
Floating-point addition is not associative, so a plain reduction's last bits depend on
how items were split over ranks.  ``deterministic=True`` fixes the reduction *tree over
items*: items are cut into leaves whose size depends only on the number of items; each leaf
is folded in item order; leaves are combined by a fixed binary tree (:func:`tree_cover`,
:func:`tree_evaluate`).  Each rank sends only the O(log leaves) largest subtrees it computed
entirely, so the cost over a plain reduction is one ``allgather`` of a few partials per
rank plus the tree's combines; the result is bitwise identical for any rank count and any
schedule.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.runtime.callid import allreduce_scalar, reduce_checked
from parcomp.runtime.errors import ConfigError, DTypeError, ShapeError
from parcomp.runtime.ranks import resolve_comm
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = [
    "OPS",
    "ReduceOp",
    "resolve_op",
    "fold",
    "fold_many",
    "allreduce",
    "combine_partials",
    "tree_cover",
    "tree_evaluate",
]


def _loc(better: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def pick(a: Any, b: Any) -> Any:
        (va, ia), (vb, ib) = a, b
        if better(vb, va) or (vb == va and ib < ia):
            return b
        return a

    return pick


def _elementwise(scalar: Callable[[Any, Any], Any], ufunc: Any) -> Callable[[Any, Any], Any]:
    def combine(a: Any, b: Any) -> Any:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return ufunc(a, b)
        return scalar(a, b)

    return combine


@dataclass(frozen=True)
class ReduceOp:
    """A reduction operator.

    Attributes
    ----------
    name : str
        Built-in name, or the callable's name.
    combine : callable
        ``combine(a, b)``, associative.
    ufunc : numpy ufunc or None
        In-place elementwise version for arrays (``ufunc(acc, v, out=acc)``).
    mpi_name : str or None
        Name of the equivalent MPI operator (``"SUM"`` ...), for buffer reductions.
    builtin : bool
        Whether this is one of :data:`OPS`.
    """

    name: str
    combine: Callable[[Any, Any], Any]
    ufunc: Any = None
    mpi_name: str | None = None
    builtin: bool = True
    scalar: Callable[[Any, Any], Any] | None = None


_BUILTINS = {
    "sum": ReduceOp("sum", _elementwise(operator.add, np.add), np.add, "SUM", scalar=operator.add),
    "prod": ReduceOp(
        "prod", _elementwise(operator.mul, np.multiply), np.multiply, "PROD", scalar=operator.mul
    ),
    "min": ReduceOp("min", _elementwise(min, np.minimum), np.minimum, "MIN", scalar=min),
    "max": ReduceOp("max", _elementwise(max, np.maximum), np.maximum, "MAX", scalar=max),
    "land": ReduceOp(
        "land", _elementwise(lambda a, b: bool(a and b), np.logical_and), np.logical_and, "LAND"
    ),
    "lor": ReduceOp(
        "lor", _elementwise(lambda a, b: bool(a or b), np.logical_or), np.logical_or, "LOR"
    ),
    "lxor": ReduceOp(
        "lxor",
        _elementwise(lambda a, b: bool(a) != bool(b), np.logical_xor),
        np.logical_xor,
        "LXOR",
    ),
    "band": ReduceOp("band", _elementwise(operator.and_, np.bitwise_and), np.bitwise_and, "BAND"),
    "bor": ReduceOp("bor", _elementwise(operator.or_, np.bitwise_or), np.bitwise_or, "BOR"),
    "bxor": ReduceOp("bxor", _elementwise(operator.xor, np.bitwise_xor), np.bitwise_xor, "BXOR"),
    "minloc": ReduceOp("minloc", _loc(lambda x, y: x < y)),
    "maxloc": ReduceOp("maxloc", _loc(lambda x, y: x > y)),
}

#: Names of the built-in operators.
OPS = tuple(_BUILTINS)


def resolve_op(op: str | Callable[[Any, Any], Any] | ReduceOp) -> ReduceOp:
    """Turn a name, a callable or a :class:`ReduceOp` into a :class:`ReduceOp`."""
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        try:
            return _BUILTINS[op]
        except KeyError:
            raise ConfigError(
                f"unknown reduction {op!r}; expected one of {', '.join(OPS)} or a callable"
            ) from None
    if callable(op):
        return ReduceOp(getattr(op, "__name__", repr(op)), op, builtin=False)
    raise ConfigError(f"reduce must be one of {', '.join(OPS)} or a callable f(a, b), got {op!r}")


def fold(op: ReduceOp, acc: Any, value: Any, owned: bool) -> tuple[Any, bool]:
    """``op(acc, value)``; returns the new accumulator and whether this fold owns it.

    Arrays are never modified unless owned (a fresh result of an earlier fold), so a
    mapper may return views of its own data; after the first combine, array folds are in
    place (no allocation per item).
    """
    if op.ufunc is not None and isinstance(acc, np.ndarray):
        if owned:
            try:
                op.ufunc(acc, value, out=acc)
                return acc, True
            except (TypeError, ValueError, np.exceptions.UFuncTypeError):
                pass  # e.g. int accumulator meeting floats: fall back to a new array
        result = op.ufunc(acc, value)
        return result, isinstance(result, np.ndarray)
    return op.combine(acc, value), False


def fold_many(op: ReduceOp, values: list[Any]) -> tuple[Any, bool]:
    """Fold a non-empty list in order; returns ``(value, owned)`` like :func:`fold`."""
    first = values[0]
    if op.scalar is not None and isinstance(first, int | float | complex | np.generic):
        try:
            return functools.reduce(op.scalar, values), False
        except TypeError:
            pass
    acc, owned = first, False
    for value in values[1:]:
        acc, owned = fold(op, acc, value, owned)
    return acc, owned


@collective("allreduce", lambda value, op="sum", comm=None, out=None: comm)
def allreduce(
    value: Any, op: str = "sum", comm: MPI.Comm | None = None, out: np.ndarray | None = None
) -> Any:
    """Reduce a numeric scalar or array elementwise over all ranks; every rank gets the result.

    Parameters
    ----------
    value : scalar or numpy.ndarray
        This rank's contribution (numeric dtype; same shape and dtype on every rank).
    op : str
        A built-in operator with an MPI equivalent (not ``minloc``/``maxloc``).
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: parcomp's default communicator).
    out : numpy.ndarray, optional
        Array to receive the result (same shape and dtype; reuse it to avoid allocating).

    Returns
    -------
    numpy scalar or numpy.ndarray
        The reduced value, of ``value``'s dtype.

    Notes
    -----
    Collective over `comm`: call on all ranks.  Uses buffer ``Allreduce``; nothing is
    pickled.  Floating-point sums depend on the rank count in their last bits; use
    ``parcomp.map_reduce(..., deterministic=True)`` where that matters.
    """
    from mpi4py import MPI

    if out is None and type(value) is np.float64 and isinstance(op, str) and op in _SCALAR_OPS:
        # the common case (a float sum, min or max of a whole array): one checked word
        return allreduce_scalar(resolve_comm(comm), value, getattr(MPI, _SCALAR_OPS[op]))
    spec = resolve_op(op)
    if spec.mpi_name is None:
        raise ConfigError(f"allreduce needs an operator with an MPI equivalent, got {op!r}")
    comm = resolve_comm(comm)
    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        raise DTypeError(f"allreduce needs a numeric value, got dtype {array.dtype}")
    send = np.ascontiguousarray(array).reshape(array.shape)  # keeps 0-d as 0-d
    if out is None:
        out = np.empty_like(send)
    elif out.shape != send.shape or out.dtype != send.dtype or not out.flags.c_contiguous:
        raise ShapeError(
            f"out= must be a C-contiguous {send.dtype} array of shape {send.shape}, got {out.dtype} {out.shape}"
        )
    reduce_checked(comm, send, getattr(MPI, spec.mpi_name), out)  # carries the call's identity
    return out[()] if out.ndim == 0 else out


_SCALAR_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}
_BUFFER_THRESHOLD = 4096  # bytes: above this, numeric arrays go through buffer Allreduce


def _describe(value: Any) -> tuple:
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return ("array", value.shape, value.dtype.str)
    return ("object",)


def combine_partials(
    partial: Any,
    has_value: bool,
    op: ReduceOp,
    comm: Any,
    root: int | None = None,
    failure: Any = None,
    owned: bool = False,
    out: np.ndarray | None = None,
) -> tuple[Any, bool, list[Any]]:
    """Combine each rank's partial result; return ``(value, any_value, failures)``.

    Large numeric arrays with a built-in operator go through buffer ``Allreduce`` (or
    ``Reduce`` to ``root``); everything else is gathered and folded in rank order.
    ``failure`` (a small picklable record or None) travels in the same first collective, so
    agreeing on errors costs nothing extra.

    Notes
    -----
    Collective over `comm`.  Ranks without a value (``has_value`` false) contribute nothing.
    On the buffer path the result goes into ``out`` when given, into ``partial`` itself when
    it is ``owned`` (an accumulator made by parcomp), else into a new array.
    """
    from mpi4py import MPI

    meta = (failure, has_value, _describe(partial) if has_value else None)
    metas = comm.allgather(meta)
    failures = [m[0] for m in metas]
    if any(f is not None for f in failures):
        return None, False, failures
    holders = [m[2] for m in metas if m[1]]
    if not holders:
        return None, False, failures
    first = holders[0]
    buffer_path = (
        op.mpi_name is not None
        and len(holders) == len(metas)
        and first[0] == "array"
        and all(h == first for h in holders)
        and np.prod(first[1]) * np.dtype(first[2]).itemsize >= _BUFFER_THRESHOLD
    )
    if buffer_path:
        send = np.ascontiguousarray(partial)
        mpi_op = getattr(MPI, op.mpi_name)
        if out is not None and (
            out.shape != send.shape or out.dtype != send.dtype or not out.flags.c_contiguous
        ):
            raise ShapeError(
                f"out= must be a C-contiguous {send.dtype} array of shape {send.shape}, got {out.dtype} {out.shape}"
            )
        if root is None:
            if out is None and owned and send is partial:  # our own accumulator: no copy
                return reduce_checked(comm, send, mpi_op, send), True, failures
            result = np.empty_like(send) if out is None else out
            reduce_checked(comm, send, mpi_op, result)  # carries the call's identity
            return result, True, failures
        result = (np.empty_like(send) if out is None else out) if comm.Get_rank() == root else None
        comm.Reduce(send, result, op=mpi_op, root=root)
        return result, True, failures
    if any(m[1] and m[2][0] == "array" for m in metas) and any(
        m[1] and m[2] != first for m in metas
    ):
        shapes = sorted({str(m[2][1:]) for m in metas if m[1]})
        raise ShapeError(
            f"partial results differ in shape/dtype between ranks: {', '.join(shapes)}"
        )
    values = (
        comm.allgather(partial if has_value else None)
        if root is None
        else comm.gather(partial if has_value else None, root=root)
    )
    if values is None:
        return None, True, failures
    acc, owned, started = None, False, False
    for has, value in zip((m[1] for m in metas), values, strict=True):
        if not has:
            continue
        if not started:
            acc, owned = value, False
            started = True
        else:
            acc, owned = fold(op, acc, value, owned)
    return acc, True, failures


# ------------------------------------------------------------------------- deterministic tree
def _split(lo: int, hi: int) -> int:
    """Split point of tree node [lo, hi): the left child holds the largest power of two < size."""
    size = hi - lo
    return lo + (1 << ((size - 1).bit_length() - 1))


def tree_cover(owned: Sequence[bool] | np.ndarray) -> list[tuple[int, int]]:
    """The maximal tree nodes ``[lo, hi)`` whose leaves are all owned (in tree order)."""
    flags = np.asarray(owned, dtype=bool)
    prefix = np.concatenate(([0], np.cumsum(flags)))
    out: list[tuple[int, int]] = []

    def visit(lo: int, hi: int) -> None:
        count = int(prefix[hi] - prefix[lo])
        if count == 0:
            return
        if count == hi - lo:
            out.append((lo, hi))
            return
        mid = _split(lo, hi)
        visit(lo, mid)
        visit(mid, hi)

    if len(flags):
        visit(0, len(flags))
    return out


def tree_subtree(values: dict[int, Any], lo: int, hi: int, op: ReduceOp) -> Any:
    """Value of node [lo, hi) from leaf values (all leaves in it present)."""
    if hi - lo == 1:
        return values[lo]
    mid = _split(lo, hi)
    return op.combine(tree_subtree(values, lo, mid, op), tree_subtree(values, mid, hi, op))


def tree_evaluate(nodes: dict[tuple[int, int], Any], n: int, op: ReduceOp) -> Any:
    """Value of the whole tree over ``n`` leaves from the covering nodes' values."""

    def value(lo: int, hi: int) -> Any:
        found = nodes.get((lo, hi))
        if found is not None or (lo, hi) in nodes:
            return found
        if hi - lo == 1:
            raise KeyError(f"leaf {lo} has no value")
        mid = _split(lo, hi)
        return op.combine(value(lo, mid), value(mid, hi))

    return value(0, n)
