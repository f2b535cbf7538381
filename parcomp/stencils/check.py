"""The checks of a stencil call: arity, roles, halos, decompositions, parameters, compilation.

:func:`check_call` runs them in order and returns what the runner needs (the fields read,
the spec, whether corners are exchanged, the arguments passed to the kernel).  Every check
but the last two uses metadata all ranks agreed on when the arrays were made, so every
rank raises the same error at the same call (``raise mark_everywhere(...)``, no message);
plain parameters and compiled argument types are agreed with one reduction each
(:func:`agree_params`, :func:`_agree_compiled`).  COMMUNICATES: those two agreements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parcomp.arrays.array import DistArray
from parcomp.runtime.agree import raise_if_differ
from parcomp.runtime.cache import cache_on
from parcomp.runtime.errors import KernelSignatureError, ShapeError
from parcomp.runtime.numba_jit import Kernel
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.watchdog import collective
from parcomp.stencils.plan import StencilPlan, single_plan
from parcomp.stencils.spec import StencilSpec, _undeclared_reach


def _comm_of(kernel: Any, *args: Any, **_kw: Any) -> Any:

    for arg in args:
        if isinstance(arg, DistArray):
            return arg.comm
    return None


def _comm_of_call(kernel: Any, args: tuple[Any, ...], *_rest: Any) -> Any:
    return _comm_of(kernel, *args)


def check_call(kernel: Any, args: tuple[Any, ...], corners: bool | None) -> StencilPlan:
    """Every check of a ``run_stencil`` call (COMMUNICATES: agreements); its plan of one
    step.  Overlap and several steps are checked on top of this by
    :func:`parcomp.stencils.check_steps.check_steps`.
    """

    spec: StencilSpec | None = getattr(kernel, "spec", None)
    name = getattr(kernel, "__name__", repr(kernel))
    # The communicator the errors below are agreed over (they come from the same code and
    # metadata on every rank, so every rank raises them: printed once, see comm._mark).
    comm = next((a.comm for a in args if isinstance(a, DistArray)), None)
    if spec is None:
        if len(args) < 2:
            raise mark_everywhere(
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
            raise mark_everywhere(
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
            raise mark_everywhere(
                KernelSignatureError(
                    f"run_stencil: kernel {name!r} {role}s {n}, which must be a DistArray, got "
                    f"{type(a).__name__}"
                ),
                comm,
            )
    first = fields[0][1]
    for n, a, r in zip(names, args, roles, strict=True):
        if r == "param" and isinstance(a, DistArray):
            raise mark_everywhere(
                KernelSignatureError(
                    f"run_stencil: {n} of kernel {name!r} is a plain parameter but got a "
                    "DistArray; declare it with @parcomp.stencil(reads=...) or "
                    "writes=... so that its halo is exchanged and checked"
                ),
                comm,
            )
    for n, a, _ in fields[1:]:
        if (a.partition, a.halo) != (first.partition, first.halo) or (
            a.layout.halo_comm is not first.layout.halo_comm
        ):
            raise mark_everywhere(
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
                raise mark_everywhere(
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
                raise mark_everywhere(
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
    win = window(spec, args)
    if isinstance(kernel, Kernel) and not _jit_disabled():
        _agree_compiled(kernel, buffers(args, win), comm)
    positions = {id(a): i for i, a in reversed(list(enumerate(args)))}
    exchanged = sorted({positions[id(r)] for _, r in reads})  # each array once
    write_pos = [i for i, r in enumerate(roles) if "write" in r]
    is_field = [isinstance(a, DistArray) for a in args]
    return single_plan(name, is_field, win, write_pos, exchanged, want_corners)


def window(spec: Any, args: tuple[Any, ...]) -> tuple[slice, ...] | None:
    """The part of the buffers a declared kernel gets when the halo is wider than its
    radius: the interior plus ``radius`` ghost cells (PURE).  A kernel computes every cell
    ``radius`` away from its arrays' edges; on the whole buffer it would also compute the
    outer ghost cells of its output, which on a wall hold the boundary condition.  None
    when the halo equals the radius (the whole buffer is that window) or undeclared."""

    if spec is None:
        return None
    first = next((a for a in args if isinstance(a, DistArray)), None)
    if first is None:
        return None
    r = spec.radius_for(first.ndim)
    if all(h == rd for h, rd in zip(first.halo, r, strict=True)):
        return None
    n = first.local_shape
    return tuple(slice(h - rd, h + nd + rd) for h, nd, rd in zip(first.halo, n, r, strict=True))


def buffers(args: tuple[Any, ...], win: tuple[slice, ...] | None) -> tuple[Any, ...]:
    """The kernel's arguments: each DistArray's buffer (or its window), others as given."""
    if win is None:
        return tuple(a.local if isinstance(a, DistArray) else a for a in args)
    return tuple(a.local[win] if isinstance(a, DistArray) else a for a in args)


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

    # bounds first (cheap); the exact test only when the bounds overlap
    return bool(np.may_share_memory(a.local, b.local) and np.shares_memory(a.local, b.local))


def _corners(
    spec: StencilSpec | None, corners: bool | None, name: str, comm: Any, kernel: Any = None
) -> bool:
    if spec is None:
        diagonal = next((r.diagonal for r in _undeclared_reach_values(kernel) if r.diagonal), None)
        if diagonal is not None and not corners:
            raise mark_everywhere(
                KernelSignatureError(
                    f"run_stencil: kernel {name!r} reads {diagonal}, a diagonal neighbour, "
                    "but corners were not asked for: its corner ghost cells would be stale. "
                    "Pass corners=True, or declare it with @parcomp.stencil(corners=True)"
                ),
                comm,
            )
        return bool(corners)
    if corners is False and spec.corners:
        raise mark_everywhere(
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
                raise mark_everywhere(
                    ShapeError(
                        f"run_stencil: kernel {name!r} reads {reach.widest[short[0]]}, "
                        f"{reach.offsets[short[0]]} cell(s) away on axis {short[0]}, but "
                        f"{field} has halo {arr.halo}; make the arrays with a wider halo"
                    ),
                    comm,
                )
        if not any(arr.halo):
            raise mark_everywhere(
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
        raise mark_everywhere(ShapeError(f"run_stencil: kernel {name!r}: {exc}"), comm) from exc
    short = [axis for axis, (r, h) in enumerate(zip(radius, arr.halo, strict=True)) if h < r]
    if short:
        raise mark_everywhere(
            ShapeError(
                f"run_stencil: kernel {name!r} reads {radius} cells around each cell, but "
                f"{field} has halo {arr.halo} (too narrow on axis {short}); make the arrays "
                f"with halo={tuple(radius) if len(set(radius)) > 1 else radius[0]} or wider"
            ),
            comm,
        )


def _agree_compiled(kernel: Kernel, call_args: tuple[Any, ...], comm: Any) -> None:
    """Compile ``kernel`` for these types once per communicator, under an agreement."""

    # a BoundedCache on the communicator: every rank sees the same keys in the same order,
    # so every rank keeps and drops the same ones (a dropped key costs one more agreement)
    seen = cache_on(comm, "stencil.compiled", 256)
    # Whether to enter the agreement below must be the same decision on every rank, so it
    # is keyed on what every rank shares (dtype and dimensions), not on layout flags: a
    # plain array parameter can be C- and F-contiguous on a rank whose block is one cell
    # thick and not on the others, and a key with flags would send some ranks into the
    # allgather and not the rest.
    key = (kernel, _agreed_kinds(call_args))
    if seen.get(key):
        return
    try:
        kernel.argument_types(call_args)
    except KernelSignatureError as exc:
        mark_everywhere(exc, comm)
        raise
    kernel.compile_for_job(call_args, comm)  # one rank compiles; the others load it
    seen.put(key, True)


def _agreed_kinds(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Per argument, what must be the same on every rank: dtype and dimensions, or the
    kind of number as Numba types it (``0.1`` and ``np.float64(0.1)`` are both float64)."""

    return tuple((a.dtype.str, a.ndim) if isinstance(a, np.ndarray) else kind_of(a) for a in args)


def kind_of(value: Any) -> str:
    """The Numba-level kind of a plain parameter, as text the same on every rank."""

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
