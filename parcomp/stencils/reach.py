"""What a stencil kernel really reads: offsets found in its source (PURE).

A declaration (:func:`parcomp.stencil`) can be wrong: a 9-point kernel declared with
``corners=False`` reads stale corner ghosts and returns wrong numbers on every rank count.
:func:`infer_reach` reads the kernel's Python source and collects the subscripts of its
field parameters whose every index is a loop variable plus or minus a constant, such as
``u[i - 1, j + 1]``.  From those it knows, for each field, the largest offset per axis and
whether any access is diagonal (two or more axes offset at once: corners needed).

It only reports what it can prove: an index it does not understand (``u[k]`` with ``k``
computed, slices, ``u[0, j]``) is left out, never guessed, so the result is a lower bound
of the kernel's reach; it can refuse a wrong declaration, not approve a right one.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Reach", "field_stores", "infer_reach"]


@dataclass
class Reach:
    """Proven reads of one field: largest offset per axis, and a diagonal read if any."""

    offsets: dict[int, int] = field(default_factory=dict)
    diagonal: str | None = None  # the source text of one diagonal access
    widest: dict[int, str] = field(default_factory=dict)  # axis -> source of its widest read

    def radius(self, axis: int) -> int:
        return self.offsets.get(axis, 0)


def _offset(node: ast.AST, loop_vars: set[str]) -> int | None:
    """``i`` -> 0, ``i + 2`` / ``2 + i`` -> 2, ``i - 1`` -> -1; None if not of that form."""
    if isinstance(node, ast.Name):
        return 0 if node.id in loop_vars else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        left, right = node.left, node.right
        if (
            isinstance(left, ast.Name)
            and left.id in loop_vars
            and isinstance(right, ast.Constant)
            and isinstance(right.value, int)
        ):
            return right.value if isinstance(node.op, ast.Add) else -right.value
        if (
            isinstance(node.op, ast.Add)
            and isinstance(right, ast.Name)
            and right.id in loop_vars
            and isinstance(left, ast.Constant)
            and isinstance(left.value, int)
        ):
            return left.value
    return None


def infer_reach(func: Callable[..., Any], fields: Sequence[str]) -> dict[str, Reach]:
    """Proven reads of each of ``fields`` (parameter names) in ``func``'s source.

    Returns an empty dict when the source is unavailable (built in a string, a lambda on a
    shared line ...): nothing can be proven then.
    """
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return {}
    loop_vars = {
        node.target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
    }
    out = {name: Reach() for name in fields}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in out
            and isinstance(node.ctx, ast.Load)
        ):
            continue
        index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        offsets = [_offset(e, loop_vars) for e in index]
        if any(o is None for o in offsets):
            continue
        reach = out[node.value.id]
        text = ast.unparse(node)
        for axis, o in enumerate(offsets):
            if abs(o) > reach.offsets.get(axis, 0):
                reach.offsets[axis] = abs(o)
                reach.widest[axis] = text
        if sum(1 for o in offsets if o) >= 2 and reach.diagonal is None:
            reach.diagonal = text
    return out


_METADATA = frozenset({"shape", "ndim", "size", "dtype", "itemsize", "strides"})


@dataclass
class Uses:
    """How a kernel's source uses one field (see :func:`field_uses`)."""

    reads: list[tuple[str, tuple[int, ...] | None]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # aliases, calls, slices: not provable

    @property
    def read_at_all(self) -> bool:
        return bool(self.reads or self.other)

    def neighbour_read(self) -> str | None:
        """The source of a read proven to be at a non-zero offset, if any."""
        return next((t for t, offs in self.reads if offs is not None and any(offs)), None)

    def unproven(self) -> str | None:
        """A use that is not ``name[i, j]`` with bare loop variables, if any."""
        bad = next((t for t, offs in self.reads if offs is None or any(offs)), None)
        return bad or (self.other[0] if self.other else None)


def field_uses(func: Callable[..., Any], fields: Sequence[str]) -> dict[str, Uses] | None:
    """Every use of each of ``fields`` in ``func``'s source (None if there is no source).

    * ``reads``: loads, including the target of an augmented assignment (``out[i] += x``
      reads ``out[i]``), with the per-axis offsets when every index is a loop variable
      plus or minus a constant (else None);
    * ``other``: any other use of the name (``w = uold``, ``helper(uold)``, a slice),
      whose reach cannot be proven.  Plain stores (``out[i, j] = x``) and metadata
      (``out.shape``) are not uses.
    """
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    loop_vars = {
        node.target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
    }
    out = {name: Uses() for name in fields}
    handled: set[int] = set()
    aug_targets = {id(n.target) for n in ast.walk(tree) if isinstance(n, ast.AugAssign)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in out and node.attr in _METADATA:
                handled.add(id(node.value))
        if not (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in out
        ):
            continue
        handled.add(id(node.value))
        is_read = isinstance(node.ctx, ast.Load) or id(node) in aug_targets
        if not is_read:
            continue  # a plain store
        index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        offsets = [_offset(e, loop_vars) for e in index]
        text = ast.unparse(node)
        proven = None if any(o is None for o in offsets) else tuple(int(o) for o in offsets)
        out[node.value.id].reads.append((text, proven))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Name)
            and node.id in out
            and isinstance(node.ctx, ast.Load)
            and id(node) not in handled
        ):
            out[node.id].other.append(node.id)
    return out


#: Methods of an array that return a view of it (an alias for stores).
_VIEWS = frozenset(
    {"reshape", "ravel", "view", "transpose", "swapaxes", "squeeze", "diagonal", "T", "real",
     "imag", "flat", "base"}
)  # fmt: skip
#: Methods that write into the array they are called on.
_WRITERS = frozenset(
    {"fill", "sort", "put", "itemset", "resize", "setfield", "partition", "byteswap",
     "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__"}
)  # fmt: skip
#: NumPy functions that write into their first argument.
_WRITE_FIRST = frozenset({"copyto", "put", "place", "putmask", "fill_diagonal", "put_along_axis"})


def _root(value: ast.AST, alias: dict[str, str], binding: bool = False) -> str | None:
    """The field a value is (a view of), if any: ``u``, ``u[1:]``, ``u.T``, ``u.reshape(-1)``,
    ``(w := u)``, ``u if c else v`` (either branch).  With ``binding`` (the value bound to
    a name), an element ``u[i, j]`` (no slice in the index) is a number, not a view."""
    while True:
        if binding and isinstance(value, ast.Subscript):
            index = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
            if not any(isinstance(e, ast.Slice) for e in index):
                return None  # c = u[i, j]: a copy of one element
            value = value.value
        elif isinstance(value, ast.Subscript | ast.Attribute | ast.Starred):
            value = value.value
        elif (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr in _VIEWS
        ):
            value = value.func.value
        elif isinstance(value, ast.NamedExpr):
            value = value.value
        elif isinstance(value, ast.IfExp):
            return _root(value.body, alias, binding) or _root(value.orelse, alias, binding)
        else:
            break
    return alias.get(value.id) if isinstance(value, ast.Name) else None


def _aliases(tree: ast.AST, fields: Sequence[str]) -> dict[str, str]:
    """Names bound to a field or a view of it (``w = u``, ``w = u[1:-1]``, ``w = u.T``,
    ``w = u.reshape(-1)``, ``a, b = u, v``, ``(w := u)``, ``w = u if c else v``, ``for row
    in u``): alias -> field.  Followed through chains of such bindings.  Flow-insensitive:
    a name bound to a field anywhere in the kernel is taken as the field everywhere (a
    refusal, never a miss: rename the other variable)."""
    alias = {name: name for name in fields}
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            pairs: list[tuple[ast.AST, ast.AST]] = []
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        pairs.extend(zip(target.elts, node.value.elts, strict=False))
                    else:
                        pairs.append((target, node.value))
            elif isinstance(node, ast.NamedExpr):
                pairs.append((node.target, node.value))
            elif isinstance(node, ast.For | ast.comprehension):
                pairs.append((node.target, node.iter))  # for row in u: row is a view of u
            for target, value in pairs:
                if isinstance(target, ast.Name) and target.id not in alias:
                    origin = _root(value, alias, binding=True)
                    if origin is not None:
                        alias[target.id] = origin
                        changed = True
    return alias


def field_stores(func: Callable[..., Any], fields: Sequence[str]) -> dict[str, str] | None:
    """The first store into each of ``fields`` found in ``func``'s source (None: no source).

    A store is a subscript assignment (``u[i, j] = x``), an augmented assignment of a
    subscript or of the whole array (``u[i] += x``, ``u *= 0.5``), a ``del``, a writing
    method (``u.fill(0)``, ``u.sort()``), a NumPy function writing its first argument
    (``np.copyto(u, x)``) or an ``out=`` argument, on the field's own name or on a name
    bound to it or a view of it (see :func:`_aliases`).  Returns field -> the source of
    that store, for the fields stored into only.
    """
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    alias = _aliases(tree, fields)
    found: dict[str, str] = {}

    def note(value: ast.AST, node: ast.AST) -> None:
        origin = _root(value, alias)
        if origin is not None:
            found.setdefault(origin, ast.unparse(node).splitlines()[0])

    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.AugAssign):
            note(node.target, node)  # u[i] += x, u *= 0.5, w += 1 (w a view of u)
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.Call):
            func_ = node.func
            if isinstance(func_, ast.Attribute) and func_.attr in _WRITERS:
                note(func_.value, node)
            if isinstance(func_, ast.Attribute | ast.Name) and node.args:
                fname = func_.attr if isinstance(func_, ast.Attribute) else func_.id
                if fname in _WRITE_FIRST:
                    note(node.args[0], node)
            for kw in node.keywords:
                if kw.arg == "out":
                    for value in kw.value.elts if isinstance(kw.value, ast.Tuple) else [kw.value]:
                        note(value, node)
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Tuple | ast.List):
                targets.extend(target.elts)
                continue
            if isinstance(target, ast.Subscript | ast.Attribute):
                note(target, node)
    return found
