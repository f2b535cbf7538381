"""Declared stencils: a kernel states its reach (PURE), and ``run_stencil`` holds arrays to it.

``StencilSpec`` and its checks are PURE; :func:`run_stencil` COMMUNICATES (halo exchanges,
and one agreement the first time a kernel meets a communicator and argument types).

A kernel written for ghost cells reads ``u[i-1]`` next to the block's edge.  If the array
has no ghost cells, or its corner ghosts were not exchanged, the kernel still runs and
returns numbers, wrong ones.  A declaration closes that trap::

    @parcomp.stencil(radius=1, corners=False)          # 5-point: faces only
    def heat(u, out, alpha): ...

    @parcomp.stencil(radius=1, corners=True, reads=("u",), writes=("out",))
    def life(u, out): ...

``run_stencil`` then checks, before any communication, that every field the kernel reads
has ghost cells at least ``radius`` wide on every axis, that the outputs share the
decomposition, that no DistArray sits where a plain parameter is expected, and it
exchanges corners when the kernel needs them (asking for ``corners=False`` then raises).
Each check uses only metadata that all ranks agreed on when the arrays were made, so every
rank raises the same error at the same call: nobody is left waiting in an exchange.
Undeclared ``@parcomp.jit`` kernels work as before, except that arrays without any ghost
cells are refused: a stencil cannot read neighbours there, and a pointwise kernel
declares ``radius=0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from parcomp.runtime.errors import KernelSignatureError, ShapeError
from parcomp.runtime.numba_jit import Kernel, parameter_names
from parcomp.runtime.ranks import mark_world
from parcomp.stencils.reach import field_stores, field_uses, infer_reach

__all__ = ["StencilSpec", "StencilKernel", "stencil"]


@dataclass(frozen=True)
class StencilSpec:
    """What a stencil kernel reads and writes.

    Attributes
    ----------
    radius : int or tuple of int
        How far the kernel reads from a cell, for every axis or per axis.
    corners : bool
        Whether it reads diagonal neighbours (edges and corners of the ghost region).
    reads : tuple of str
        Parameters read with their ghost cells (fields).
    writes : tuple of str
        Parameters whose interior the kernel writes (fields).
    params : tuple of str
        All parameters, in order; those in none of ``reads``, ``writes`` and
        ``pointwise`` are plain parameters (numbers or numpy arrays, never DistArrays).
    pointwise : tuple of str
        Fields read only at the cell being computed (``uold[i, j]``): DistArrays with
        the same decomposition, never exchanged; they may also be written (in place).
    reads_output : bool or None
        Whether the kernel reads a field it writes (an in-place update, ``out += ...``):
        then ``overlap=True`` is refused (it computes some cells twice).  None when the
        source is not available (overlap refused too: it cannot be proven safe).
    """

    radius: int | tuple[int, ...]
    corners: bool
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    params: tuple[str, ...]
    pointwise: tuple[str, ...] = ()
    reads_output: bool | None = False

    def radius_for(self, ndim: int) -> tuple[int, ...]:
        """Radius per axis for an ``ndim``-d field (raises ShapeError on a count mismatch)."""
        if isinstance(self.radius, int):
            return (self.radius,) * ndim
        if len(self.radius) != ndim:
            raise ShapeError(
                f"stencil radius {self.radius} has {len(self.radius)} entries but the fields "
                f"have {ndim} axes"
            )
        return self.radius

    def role(self, name: str) -> str:
        """``"read"``, ``"write"``, ``"read+write"``, ``"pointwise"``,
        ``"pointwise+write"`` or ``"param"``."""
        r, w = name in self.reads, name in self.writes
        if name in self.pointwise:
            return "pointwise+write" if w else "pointwise"
        return "read+write" if r and w else "read" if r else "write" if w else "param"


def make_spec(
    func: Callable[..., Any],
    radius: int | Sequence[int],
    corners: bool,
    reads: Sequence[str] | None,
    writes: Sequence[str] | None,
    pointwise: Sequence[str] = (),
) -> StencilSpec:
    """Validate a declaration against ``func``'s signature (PURE)."""
    name = getattr(func, "__name__", repr(func))
    params = tuple(parameter_names(func))
    if isinstance(radius, bool) or not isinstance(radius, int | tuple | list):
        raise KernelSignatureError(
            f"@parcomp.stencil on {name!r}: radius must be an int or a tuple of ints, got {radius!r}"
        )
    rad = radius if isinstance(radius, int) else tuple(radius)
    values = (rad,) if isinstance(rad, int) else rad
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise KernelSignatureError(
            f"@parcomp.stencil on {name!r}: radius must be >= 0 integers, got {radius!r}"
        )
    if not isinstance(corners, bool):
        raise KernelSignatureError(
            f"@parcomp.stencil on {name!r}: corners must be True or False, got {corners!r}"
        )
    if len(params) < 2 and (reads is None or writes is None):
        raise KernelSignatureError(
            f"@parcomp.stencil on {name!r}: the kernel takes {len(params)} parameter(s); "
            "by default the first is read and the second written, so name them with "
            "reads=(...) and writes=(...)"
        )
    rd = (params[0],) if reads is None else _names(reads, "reads", name)
    wr = (params[1],) if writes is None else _names(writes, "writes", name)
    pw = _names(pointwise, "pointwise", name)
    for label, group in (("reads", rd), ("writes", wr), ("pointwise", pw)):
        unknown = [n for n in group if n not in params]
        if unknown:
            raise KernelSignatureError(
                f"@parcomp.stencil on {name!r}: {label} names {unknown}, which are not "
                f"parameters of the kernel {params}"
            )
    if not wr:
        raise KernelSignatureError(f"@parcomp.stencil on {name!r}: writes=() names no output")
    if set(pw) & set(rd):
        raise KernelSignatureError(
            f"@parcomp.stencil on {name!r}: {sorted(set(pw) & set(rd))} named in both reads= "
            "(read with ghost cells) and pointwise= (read at the cell only); choose one"
        )
    both = sorted(set(rd) & set(wr))
    if both and any(values):
        raise KernelSignatureError(
            f"@parcomp.stencil on {name!r}: {both} both read with a radius of {radius} and "
            "written: updating a field in place while neighbours read it gives wrong "
            "results; write to a second field (or declare radius=0 for a pointwise update)"
        )
    spec = StencilSpec(rad, corners, rd, wr, params, pw)
    reads_output = _check_against_source(func, spec)
    return StencilSpec(rad, corners, rd, wr, params, pw, reads_output)


def _check_against_source(func: Callable[..., Any], spec: StencilSpec) -> bool | None:
    """Refuse a declaration that the kernel's own source contradicts (see parcomp.stencils.reach);
    return whether the kernel reads a field it writes (None: no source to tell)."""
    name = getattr(func, "__name__", repr(func))
    uses = field_uses(func, (*spec.pointwise, *spec.writes))
    if uses is None:
        if spec.pointwise:
            raise KernelSignatureError(
                f"@parcomp.stencil on {name!r}: pointwise={spec.pointwise} cannot be checked "
                "without the kernel's source (defined in a string?); declare those fields "
                "in reads=(...) instead"
            )
        reads_output: bool | None = None
    else:
        for field in spec.pointwise:
            bad = uses[field].unproven()
            if bad is not None:
                raise KernelSignatureError(
                    f"@parcomp.stencil on {name!r}: {field} is declared pointwise (read only "
                    f"at the cell computed, never exchanged), but the kernel uses {bad}, "
                    "which parcomp cannot prove is that cell (a neighbour would read stale "
                    f"ghost cells). Index it as {field}[i, j] with the loop variables, or "
                    "declare it in reads=(...)"
                )
        for field in spec.writes:
            if field in spec.pointwise or field in spec.reads:
                continue
            bad = uses[field].neighbour_read()
            if bad is not None:
                raise KernelSignatureError(
                    f"@parcomp.stencil on {name!r}: it writes {field} and reads {bad}, a "
                    "neighbour of the cell it computes: the result would depend on the order "
                    "of the loop and on the rank count (a neighbour's cells are never "
                    "exchanged into an output). Read the previous values from a separate field"
                )
        reads_output = any(uses[f].read_at_all for f in spec.writes)
    _refuse_stores_into_reads(func, spec)
    for reach in infer_reach(func, spec.reads).values():
        if reach.diagonal is not None and not spec.corners:
            raise KernelSignatureError(
                f"@parcomp.stencil on {name!r}: the kernel reads {reach.diagonal}, a diagonal "
                "neighbour, but is declared corners=False: its corner ghost cells would be "
                "stale and the results wrong. Declare corners=True"
            )
        for axis, offset in reach.offsets.items():
            declared = (
                spec.radius
                if isinstance(spec.radius, int)
                else (spec.radius[axis] if axis < len(spec.radius) else 0)
            )
            if offset > declared:
                raise KernelSignatureError(
                    f"@parcomp.stencil on {name!r}: the kernel reads {reach.widest[axis]}, "
                    f"{offset} cell(s) away on axis {axis}, but is declared with radius "
                    f"{spec.radius}. Declare the radius it reads"
                )
    return reads_output


def _refuse_stores_into_reads(func: Callable[..., Any], spec: StencilSpec) -> None:
    """A field read with ghost cells (radius > 0) that the kernel also stores into gives
    answers that depend on the loop order and the rank count: refuse it."""
    values = (spec.radius,) if isinstance(spec.radius, int) else spec.radius
    if not any(values):
        return  # radius=0: every field is read at its own cell; in-place stores are fine
    guarded = [f for f in spec.reads if f not in spec.writes and f not in spec.pointwise]
    stores = field_stores(func, guarded) or {}
    for field in guarded:
        if field in stores:
            name = getattr(func, "__name__", repr(func))
            raise KernelSignatureError(
                f"@parcomp.stencil on {name!r}: {field} is read with its neighbours (radius "
                f"{spec.radius}) but the kernel also stores into it ({stores[field]!r}): a "
                "neighbour would read the new value or the old one depending on the loop "
                "order and on where the block ends, so the answer would depend on the rank "
                "count. Write the new values into a separate output field (parcomp follows "
                "every name bound to the field or a view of it anywhere in the kernel: if "
                "that name is rebound to another array, give the other array its own name)"
            )


def _undeclared_reach(kernel: Any) -> dict[str, Any]:
    """What an undeclared kernel's source proves about its first parameter (cached)."""
    cached = getattr(kernel, "_parcomp_reach", None)
    if cached is None:
        func = getattr(kernel, "py_func", kernel)
        try:
            first = parameter_names(func)[:1]
        except (TypeError, ValueError):
            first = []
        cached = infer_reach(func, first) if first else {}
        try:
            kernel._parcomp_reach = cached  # noqa: SLF001 - our cache on the kernel object
        except AttributeError:
            pass
    return cached


def _names(value: Sequence[str], label: str, kernel: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    out = tuple(value)
    if not all(isinstance(v, str) for v in out) or len(set(out)) != len(out):
        raise KernelSignatureError(
            f"@parcomp.stencil on {kernel!r}: {label} must be distinct parameter names, got {value!r}"
        )
    return out


class StencilKernel(Kernel):
    """A :class:`~parcomp.Kernel` with a :class:`StencilSpec` (made by :func:`stencil`)."""

    def __init__(self, py_func: Callable[..., Any], options: dict[str, Any], spec: StencilSpec):
        super().__init__(py_func, options)
        self.spec = spec

    def __repr__(self) -> str:
        return f"<parcomp.StencilKernel {self.py_func.__qualname__} {self.spec}>"


def stencil(
    func: Callable[..., Any] | None = None,
    *,
    radius: int | Sequence[int] = 1,
    corners: bool = False,
    reads: Sequence[str] | None = None,
    writes: Sequence[str] | None = None,
    pointwise: Sequence[str] = (),
    **options: Any,
) -> Any:
    """Declare a stencil kernel and compile it like :func:`parcomp.jit`.

    Parameters
    ----------
    func : callable, optional
        The kernel, when used without parentheses (``radius=1``, no corners).
    radius : int or sequence of int, default 1
        How many cells away the kernel reads, for every axis or per axis.
    corners : bool, default False
        Whether it reads diagonal neighbours (9-point, 27-point stencils): then
        :func:`run_stencil` exchanges edges and corners too.
    reads : sequence of str, optional
        Parameters read with ghost cells (default: the first parameter).
    writes : sequence of str, optional
        Parameters whose interior is written (default: the second parameter).
    pointwise : sequence of str, optional
        Fields read only at the cell being computed (the old time level of a wave
        equation): DistArrays decomposed like the others, never exchanged.  A field
        named here may also be in ``writes`` (updated in place).
    **options
        Passed to ``numba.njit`` (``cache`` defaults to True).

    Returns
    -------
    StencilKernel
        Callable like the function; :func:`run_stencil` reads its ``spec``.

    Raises
    ------
    KernelSignatureError
        If the declaration does not fit the function's parameters.
    """

    def wrap(f: Callable[..., Any]) -> StencilKernel:
        if not callable(f):
            raise KernelSignatureError(f"@parcomp.stencil needs a function, got {f!r}")
        inner = f.py_func if isinstance(f, Kernel) else f
        opts = {**f.options, **options} if isinstance(f, Kernel) else options
        try:
            spec = make_spec(inner, radius, corners, reads, writes, pointwise)
        except KernelSignatureError as exc:
            # the same source and declaration on every rank: the same error everywhere,
            # printed once (no communicator exists yet at import: marked for the job)
            raise mark_world(exc) from None
        return StencilKernel(inner, opts, spec)

    return wrap if func is None else wrap(func)
