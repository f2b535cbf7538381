"""Declared stencils: a kernel states its reach, and ``run_stencil`` holds arrays to it.

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parcomp.runtime import watchdog
from parcomp.runtime.errors import KernelSignatureError, ShapeError
from parcomp.runtime.numba_jit import Kernel, parameter_names
from parcomp.runtime.ranks import mark_world
from parcomp.runtime.watchdog import collective, debug_collectives
from parcomp.stencils.reach import field_stores, field_uses, infer_reach
from parcomp.stencils.stencil_run import (
    CHECKED,
    SAMPLE,
    buffers,
    execute,
    fast_key,
    find,
    remember,
    window,
)

if TYPE_CHECKING:  # pragma: no cover
    from parcomp.grid.array import DistArray

__all__ = ["StencilSpec", "StencilKernel", "stencil", "run_stencil"]


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
            kernel._parcomp_reach = cached
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


def _fail(exc: Exception, comm: Any) -> None:
    """Raise ``exc``, marked as raised by every rank of ``comm`` (it came from agreed data)."""
    from parcomp.runtime.ranks import mark_everywhere

    mark_everywhere(exc, comm)
    raise exc


def _comm_of(kernel: Any, *args: Any, **_kw: Any) -> Any:
    from parcomp.grid.array import DistArray

    for arg in args:
        if isinstance(arg, DistArray):
            return arg.comm
    return None


def run_stencil(
    kernel: Callable[..., Any],
    *args: Any,
    corners: bool | None = None,
    exchange: bool = True,
    overlap: bool = False,
    steps: int | None = None,
    rotate: Mapping[str, str] | None = None,
    tile: int | Sequence[int | None] | None = None,
) -> tuple[Any, ...] | None:
    """Exchange the halos of the fields a kernel reads, then call it on every rank.

    Parameters
    ----------
    kernel : callable
        A :func:`parcomp.stencil` kernel, or an undeclared :func:`parcomp.jit` kernel
        taking ``(src, dst, *params)``.
    *args
        The kernel's arguments in order: DistArrays for its fields (declared ``reads`` and
        ``writes``; for an undeclared kernel the first two), then plain parameters.
        Fields are passed to the kernel as their ``.local`` buffers.
    corners : bool, optional
        Exchange edges and corners too.  Default: the declaration (False if undeclared).
        ``False`` for a kernel declared with ``corners=True`` raises.
    exchange : bool
        Set False if the read fields' ghost cells are already current.
    overlap : bool
        Overlap the halo exchange with computation (declared kernels): start the
        exchange, run the kernel on the cells whose stencil needs no ghost cell, finish
        the exchange, then run it on the boundary strips.  The kernel is called on views
        (it computes every cell at least ``radius`` away from its arrays' edges, as every
        stencil kernel does), so it needs no change, and the result is bitwise the same.
    steps : int, optional
        Do ``steps`` time steps with one halo exchange (declared kernels; see
        :mod:`parcomp.stencils.multistep`): what ``steps`` calls with the fields rotated between
        them (``u, v = v, u``) do, bitwise, on arrays whose halo is at least
        ``steps * radius`` wide.  The steps are also cache-blocked inside the rank.
        Returns the arguments for the next call, rotated ``steps`` times:
        ``u, v, alpha = run_stencil(heat, u, v, alpha, steps=8)``.  With
        ``overlap=True`` the deep exchange overlaps the cells that need no ghost cell.
    rotate : mapping of str to str, optional
        With ``steps``: which array each field is at the next step, as
        ``{"name next step": "name this step"}`` (default: each field read with ghosts
        swaps with the output declared in the same place).
    tile : int or sequence of int, optional
        With ``steps``: cells per tile along each axis (0 or None: that axis is not cut).
        Default: from the L2 cache size.

    Returns
    -------
    tuple or None
        With ``steps``, the arguments rotated ``steps`` times; otherwise None.

    Raises
    ------
    ShapeError
        A read field's halo is narrower than the kernel's radius (or zero for an
        undeclared kernel), or the fields are decomposed differently.
    KernelSignatureError
        Wrong number or kind of arguments, a DistArray where a plain parameter is
        expected, an output that shares memory with an input, ``corners=False`` for a
        kernel that needs corners, or a kernel that Numba cannot compile.

    Notes
    -----
    Collective over the fields' communicator.  Every check uses metadata agreed when the
    arrays were made, so all ranks raise the same error together.  The first call with a
    given kernel and argument types also compiles it (or loads it from the cache) under
    an agreement, so a compile error is raised on every rank and reported once.
    """
    if steps is not None or rotate is not None or tile is not None:
        return _run_steps(kernel, args, corners, exchange, overlap, steps, rotate, tile)
    hits = CHECKED.get((kernel, corners))
    if hits is not None and not overlap and not watchdog._debug:
        # The same kernel on the same arrays (alive, the same objects) and argument kinds
        # as a call already checked and agreed: every check would pass again, so the
        # exchange and the kernel run at once.  This path is kept short on purpose: after
        # a kernel has streamed a large block through the caches, every Python call on
        # the way back costs several times its warm price.
        n = len(args)
        for hit in hits:
            if hit.arity == n:
                hit.calls += 1
                if hit.calls % SAMPLE == 0 and hit.same(*args):
                    _agree_params_again(kernel, args)  # a sample of calls: see SAMPLE
                beat = watchdog._beat
                if beat is None or watchdog._nesting[0]:
                    if (hit.fire if exchange else hit.bare)(*args):
                        return
                    continue
                beat.enter(_NAME)  # under the watchdog: a hang in here is reported
                try:
                    done = (hit.fire if exchange else hit.bare)(*args)
                finally:
                    beat.leave()
                if done:
                    return
    _run_stencil(kernel, args, corners, exchange, overlap)


_NAME = b"run_stencil"


def _run_steps(
    kernel: Any,
    args: tuple[Any, ...],
    corners: bool | None,
    exchange: bool,
    overlap: bool,
    steps: Any,
    rotate: Any,
    tile: Any,
) -> tuple[Any, ...]:
    from parcomp.stencils.multistep import run_steps

    if steps is None:
        _fail(
            KernelSignatureError("run_stencil: rotate= and tile= go with steps="),
            _comm_of(kernel, *args),
        )
    return run_steps(kernel, args, corners, steps, rotate, tile, exchange, overlap)


def _comm_of_call(kernel: Any, args: tuple[Any, ...], *_rest: Any) -> Any:
    return _comm_of(kernel, *args)


@collective("run_stencil", _comm_of_call)
def _run_stencil(
    kernel: Any, args: tuple[Any, ...], corners: bool | None, exchange: bool, overlap: bool
) -> None:
    """:func:`run_stencil` for a call not seen before (or overlapped): check, then run."""
    hit = find(kernel, corners, args)
    if (
        hit is not None
        and not debug_collectives()
        and not (overlap and (hit.spec is None or hit.spec.reads_output is not False))
    ):  # (overlap of an undeclared kernel or one reading its output: raises below)
        execute(kernel, args, hit.reads, hit.spec, hit.corners, exchange, overlap, None)
        return
    read_arrays, spec, want_corners, call_args = check_call(
        kernel, args, corners, overlap, exchange
    )
    execute(kernel, args, read_arrays, spec, want_corners, exchange, overlap, call_args)


def check_call(
    kernel: Any, args: tuple[Any, ...], corners: bool | None, overlap: bool, exchange: bool
) -> tuple[list[Any], StencilSpec | None, bool, tuple[Any, ...]]:
    """Every check of a ``run_stencil`` call, then remember it (COMMUNICATES: agreements).

    Returns the arrays read with ghost cells (each once), the spec, whether corners are
    exchanged and the kernel's arguments for one call on the whole block.
    """

    from parcomp.grid.array import DistArray

    key = fast_key(kernel, args, corners, DistArray)
    spec: StencilSpec | None = getattr(kernel, "spec", None)
    name = getattr(kernel, "__name__", repr(kernel))
    # The communicator the errors below are agreed over (they come from the same code and
    # metadata on every rank, so every rank raises them: printed once, see comm._mark).
    comm = next((a.comm for a in args if isinstance(a, DistArray)), None)
    if spec is None:
        if len(args) < 2:
            _fail(
                KernelSignatureError(
                    f"run_stencil({name}, ...): needs at least a source and a destination DistArray"
                ),
                comm,
            )
        n_params = len(args)
        roles = ["read", "write"] + ["param"] * (n_params - 2)
        names = [f"argument {i + 1}" for i in range(n_params)]
    else:
        if len(args) != len(spec.params):
            _fail(
                KernelSignatureError(
                    f"run_stencil: kernel {name!r} takes {len(spec.params)} argument(s) "
                    f"({', '.join(spec.params)}), got {len(args)}"
                ),
                comm,
            )
        roles = [spec.role(p) for p in spec.params]
        names = list(spec.params)
    fields = [(n, a, r) for n, a, r in zip(names, args, roles, strict=True) if r != "param"]
    for n, a, role in fields:
        if not isinstance(a, DistArray):
            _fail(
                KernelSignatureError(
                    f"run_stencil: kernel {name!r} {role}s {n}, which must be a DistArray, got "
                    f"{type(a).__name__}"
                ),
                comm,
            )
    first = fields[0][1]
    for n, a, r in zip(names, args, roles, strict=True):
        if r == "param" and isinstance(a, DistArray):
            _fail(
                KernelSignatureError(
                    f"run_stencil: {n} of kernel {name!r} is a plain parameter but got a "
                    "DistArray; declare it with @parcomp.stencil(reads=...) or "
                    "writes=... so that its halo is exchanged and checked"
                ),
                comm,
            )
    for n, a, _ in fields[1:]:
        if (a.partition, a.halo) != (first.partition, first.halo) or (
            a._halo_comm is not first._halo_comm
        ):
            _fail(
                ShapeError(
                    f"run_stencil: fields {fields[0][0]} and {n} of kernel {name!r} are "
                    f"decomposed differently: {first.global_shape} grid {first.partition.dims} "
                    f"halo {first.halo} periods {first.partition.periods} vs {a.global_shape} "
                    f"grid {a.partition.dims} halo {a.halo} periods {a.partition.periods}"
                ),
                comm,
            )
    reads = [(n, a) for n, a, r in fields if "read" in r]
    writes = [(n, a) for n, a, r in fields if "write" in r]
    for k, (wn, w) in enumerate(writes):
        for wn2, w2 in writes[k + 1 :]:
            if _overlap(w, w2):
                _fail(
                    KernelSignatureError(
                        f"run_stencil: kernel {name!r} writes {wn} and {wn2} into the same "
                        "memory; give each output its own array"
                    ),
                    comm,
                )
    pointwise = spec is not None and not any(
        (spec.radius,) if isinstance(spec.radius, int) else spec.radius
    )
    for wn, w in writes:
        for rn, r in reads:
            if wn != rn and not pointwise and _overlap(w, r):
                _fail(
                    KernelSignatureError(
                        f"run_stencil: kernel {name!r} writes {wn} into memory it reads as "
                        f"{rn}; src and dst must be different arrays (a stencil reads "
                        "neighbours)"
                    ),
                    comm,
                )
    want_corners = _corners(spec, corners, name, comm, kernel)
    for rn, r in reads:
        _check_reach(spec, name, rn, r, comm, kernel)
    # The kinds of the plain parameters must agree between ranks before anything else
    # collective (the compile agreement) and before this call is remembered: a rank that
    # remembered float64 and one that remembered int64 would next take different paths
    # (one straight to the exchange, one into an agreement): a hang.
    # The values of plain number parameters ride in the same agreement (no extra
    # message): a value computed from a rank's own block (alpha = 0.1 / u.interior.max())
    # differs between ranks, and each rank would step with its own, silently.
    agree_params(kernel, args)
    call_args = buffers(args, window(spec, args), DistArray)
    if isinstance(kernel, Kernel) and not _jit_disabled():
        _agree_compiled(kernel, call_args, comm)
    if overlap and exchange and spec is None:
        _fail(
            KernelSignatureError(
                f"run_stencil(overlap=True) needs a declared kernel (@parcomp.stencil): "
                f"{name!r} does not say how far it reads"
            ),
            comm,
        )
    if overlap and exchange and spec is not None and spec.reads_output is not False:
        _fail(
            KernelSignatureError(
                f"run_stencil(overlap=True): kernel {name!r} "
                + (
                    "reads a field it writes (an in-place update or out += ...)"
                    if spec.reads_output
                    else "has no source parcomp can read to prove it does not read its output"
                )
                + "; overlap computes the cells next to the block's edges twice, so the "
                "result would be wrong. Use overlap=False"
            ),
            comm,
        )
    read_arrays = list({id(r): r for _, r in reads}.values())  # each array once
    remember(key, args, read_arrays, spec, want_corners, DistArray)
    return read_arrays, spec, want_corners, call_args


def _roles(kernel: Any, n: int) -> tuple[list[str], list[str]]:
    """Names and roles of a call's ``n`` arguments (declared or undeclared kernel)."""
    spec = getattr(kernel, "spec", None)
    if spec is None:
        return [f"argument {i + 1}" for i in range(n)], (["read", "write"] + ["param"] * n)[:n]
    return list(spec.params), [spec.role(p) for p in spec.params]


@collective("run_stencil", _comm_of_call)
def _agree_params_again(kernel: Any, args: tuple[Any, ...]) -> None:
    """:func:`agree_params` as a parcomp collective of its own (from the fast path)."""
    agree_params(kernel, args)


def agree_params(kernel: Any, args: tuple[Any, ...]) -> None:
    """The plain parameters' kinds and values agreed between ranks (one checked
    Allreduce), for a sample of the calls that the fast paths run unchecked.

    Notes
    -----
    Collective over the fields' communicator.
    """
    import numpy as np

    from parcomp.grid.array import DistArray
    from parcomp.runtime.agree import raise_if_differ

    names, roles = _roles(kernel, len(args))
    comm = next((a.comm for a in args if isinstance(a, DistArray)), None)
    name = getattr(kernel, "__name__", repr(kernel))
    kinds = [
        [n, kind_of(a), _value_of(a)]
        for n, a, r in zip(names, args, roles, strict=False)
        if r == "param" and not isinstance(a, np.ndarray)
    ]
    raise_if_differ(
        kinds,
        comm,
        lambda ranks, first, other: _differ_message(name, ranks, first, other),
        KernelSignatureError,
    )


def _value_of(a: Any) -> str | None:
    """A plain number parameter's value as text the same on every rank that has it
    (``repr`` of the Python number; NaN compares equal to NaN), else None."""
    import numpy as np

    if isinstance(a, bool | int | float | complex | np.bool_ | np.number):
        return repr(a.item() if isinstance(a, np.generic) else a)
    return None


def _differ_message(name: str, ranks: list[int], first: Any, other: Any) -> str:
    """The error for plain parameters that differ between ranks (kinds or values)."""
    kinds = [(f[0], f[1], o[1]) for f, o in zip(first, other, strict=False) if f[1] != o[1]]
    if kinds or len(first) != len(other):
        return (
            f"run_stencil: kernel {name!r} gets plain parameters of other kinds on rank(s) "
            f"{ranks} ({[o[:2] for o in other]}) than on rank 0 ({[f[:2] for f in first]}); "
            "pass the same kinds of numbers on every rank"
        )
    values = "; ".join(
        f"{f[0]}: {f[2]} on rank 0, {o[2]} on rank {ranks[0]}"
        for f, o in zip(first, other, strict=True)
        if f[2] != o[2]
    )
    return (
        f"run_stencil: kernel {name!r} gets other parameter values on rank(s) {ranks} than on "
        f"rank 0 ({values}); each rank would step with its own value. Compute them from "
        "global data (a reduction such as u.max(), not u.interior.max()) so that every "
        "rank steps alike"
    )


def _jit_disabled() -> bool:
    from numba.core import config

    return bool(config.DISABLE_JIT)


def _overlap(a: DistArray, b: DistArray) -> bool:
    import numpy as np

    # bounds first (cheap); the exact test only when the bounds overlap
    return bool(np.may_share_memory(a.local, b.local) and np.shares_memory(a.local, b.local))


def _corners(
    spec: StencilSpec | None, corners: bool | None, name: str, comm: Any, kernel: Any = None
) -> bool:
    if spec is None:
        diagonal = next((r.diagonal for r in _undeclared_reach_values(kernel) if r.diagonal), None)
        if diagonal is not None and not corners:
            _fail(
                KernelSignatureError(
                    f"run_stencil: kernel {name!r} reads {diagonal}, a diagonal neighbour, "
                    "but corners were not asked for: its corner ghost cells would be stale. "
                    "Pass corners=True, or declare it with @parcomp.stencil(corners=True)"
                ),
                comm,
            )
        return bool(corners)
    if corners is False and spec.corners:
        _fail(
            KernelSignatureError(
                f"run_stencil: kernel {name!r} is declared with corners=True (it reads "
                "diagonal neighbours), but corners=False was asked: its edge and corner "
                "ghost cells would be stale. Leave corners unset"
            ),
            comm,
        )
    return spec.corners or bool(corners)


def _undeclared_reach_values(kernel: Any) -> list[Any]:
    return list(_undeclared_reach(kernel).values()) if kernel is not None else []


def _check_reach(
    spec: StencilSpec | None, name: str, field: str, arr: Any, comm: Any, kernel: Any = None
) -> None:
    if spec is None:
        for reach in _undeclared_reach_values(kernel):
            short = [a for a, o in reach.offsets.items() if a < arr.ndim and o > arr.halo[a]]
            if short:
                _fail(
                    ShapeError(
                        f"run_stencil: kernel {name!r} reads {reach.widest[short[0]]}, "
                        f"{reach.offsets[short[0]]} cell(s) away on axis {short[0]}, but "
                        f"{field} has halo {arr.halo}; make the arrays with a wider halo"
                    ),
                    comm,
                )
        if not any(arr.halo):
            _fail(
                ShapeError(
                    f"run_stencil: {field} of kernel {name!r} has no ghost cells (halo "
                    f"{arr.halo}); a stencil reads neighbours across the block's edges. Make "
                    "the arrays with halo=1 (or the kernel's radius), or declare a pointwise "
                    "kernel with @parcomp.stencil(radius=0)"
                ),
                comm,
            )
        return
    try:
        radius = spec.radius_for(arr.ndim)
    except ShapeError as exc:
        _fail(ShapeError(f"run_stencil: kernel {name!r}: {exc}"), comm)
    short = [axis for axis, (r, h) in enumerate(zip(radius, arr.halo, strict=True)) if h < r]
    if short:
        _fail(
            ShapeError(
                f"run_stencil: kernel {name!r} reads {radius} cells around each cell, but "
                f"{field} has halo {arr.halo} (too narrow on axis {short}); make the arrays "
                f"with halo={tuple(radius) if len(set(radius)) > 1 else radius[0]} or wider"
            ),
            comm,
        )


def _agree_compiled(kernel: Kernel, call_args: tuple[Any, ...], comm: Any) -> None:
    """Compile ``kernel`` for these types once per communicator, under an agreement."""
    from parcomp.runtime.subcomm import comm_cache

    seen = comm_cache(comm).setdefault("stencil.compiled", set())
    # Whether to enter the agreement below must be the same decision on every rank, so it
    # is keyed on what every rank shares (dtype and dimensions), not on layout flags: a
    # plain array parameter can be C- and F-contiguous on a rank whose block is one cell
    # thick and not on the others, and a key with flags would send some ranks into the
    # allgather and not the rest.
    key = (kernel, _agreed_kinds(call_args))
    if key in seen:
        return
    try:
        kernel.argument_types(call_args)
    except KernelSignatureError as exc:
        _fail(exc, comm)
    kernel.compile_for_job(call_args, comm)  # one rank compiles; the others load it
    seen.add(key)


def _agreed_kinds(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Per argument, what must be the same on every rank: dtype and dimensions, or the
    kind of number as Numba types it (``0.1`` and ``np.float64(0.1)`` are both float64)."""
    import numpy as np

    return tuple((a.dtype.str, a.ndim) if isinstance(a, np.ndarray) else kind_of(a) for a in args)


def kind_of(value: Any) -> str:
    """The Numba-level kind of a plain parameter, as text the same on every rank."""
    import numpy as np

    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        # a Python int is what Numba types as int64: the same kind as np.int64
        return np.dtype(value.dtype).str if isinstance(value, np.integer) else "<i8"
    if isinstance(value, float | np.floating):
        return np.dtype(value.dtype).str if isinstance(value, np.floating) else "<f8"
    if isinstance(value, complex | np.complexfloating):
        return np.dtype(value.dtype).str if isinstance(value, np.complexfloating) else "<c16"
    return f"{type(value).__module__}.{type(value).__qualname__}"
