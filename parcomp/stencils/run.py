"""``run_stencil``: the stencil engine's entry, its one cache of runners and its fast path.

The engine's stages: :mod:`~parcomp.stencils.spec` (the declaration) ->
:mod:`~parcomp.stencils.check` and :mod:`~parcomp.stencils.check_steps` (every check and
agreement of a call; they return a :class:`~parcomp.stencils.plan.StencilPlan` and never
touch a cache) -> :mod:`~parcomp.stencils.plan` (PURE) -> here.  One step is the plan with
``steps == 1``; ``overlap=True`` and ``steps=k`` run the same executor
(:meth:`Runner.run`).

A checked call is kept as a :class:`Runner`, found through :data:`RUNNERS` (keyed by the
kernel and the call's options) and kept by a bounded cache on its communicator (each
runner holding its arrays weakly, so a new array at a dead one's address is checked
again).  A call that repeats one (the same
arrays, the same kinds of parameters) skips the checks; a plan of one call runs through
functions generated for exactly that call (:func:`_specialise`): the exchange and the
compiled kernel, nothing else.  COMMUNICATES: halo exchanges; agreements the first time
a call is seen, and on a sample of the calls after (:data:`~parcomp.stencils.plan.SAMPLE`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from parcomp.arrays.array import DistArray
from parcomp.arrays.exchange import group_exchange
from parcomp.arrays.fused import settle
from parcomp.runtime import watchdog
from parcomp.runtime.cache import cache_on
from parcomp.runtime.errors import KernelSignatureError
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.watchdog import collective, debug_collectives
from parcomp.stencils.check import (
    _agree_params_again,
    _comm_of,
    _comm_of_call,
    agree_params,
    check_call,
)
from parcomp.stencils.check_steps import check_steps
from parcomp.stencils.plan import StencilPlan, rotated

__all__ = ["run_stencil", "Runner", "RUNNERS", "RUNNERS_MAX"]


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
        :mod:`parcomp.stencils.check_steps`): what ``steps`` calls with the fields rotated between
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
    settle()  # inside parcomp.fused(): the recorded updates before the exchange reads
    if steps is not None or rotate is not None or tile is not None or (overlap and exchange):
        return _run_planned(kernel, args, corners, exchange, overlap, steps, rotate, tile)
    hits = RUNNERS.get((kernel, corners))
    if hits is not None and not watchdog._debug:  # noqa: SLF001 - the fast path reads the watchdog's state: a call costs more than the check
        # The same kernel on the same arrays (alive, the same objects) and argument kinds
        # as a call already checked and agreed: every check would pass again, so the
        # exchange and the kernel run at once.  This path is kept short on purpose: after
        # a kernel has streamed a large block through the caches, every Python call on
        # the way back costs several times its warm price.
        n = len(args)
        for hit in hits:
            if hit.arity == n:
                hit.calls += 1
                if hit.calls % hit.sample == 0 and hit.same(*args):
                    _agree_params_again(kernel, args)  # a sample of calls: see SAMPLE
                beat = watchdog._beat  # noqa: SLF001 - as above
                if beat is None or watchdog._nesting[0]:  # noqa: SLF001 - as above
                    if (hit.fire if exchange else hit.bare)(*args):
                        return None
                    continue
                beat.enter(_NAME)  # under the watchdog: a hang in here is reported
                try:
                    done = (hit.fire if exchange else hit.bare)(*args)
                finally:
                    beat.leave()
                if done:
                    return None
    _run_stencil(kernel, args, corners, exchange)
    return None


_NAME = b"run_stencil"


@collective("run_stencil", _comm_of_call)
def _run_stencil(kernel: Any, args: tuple[Any, ...], corners: bool | None, exchange: bool) -> None:
    """One step of a call not seen before (or under debug collectives): check, then run."""
    key = (kernel, corners)
    hit = None if debug_collectives() else _find(key, args)
    if hit is None:
        hit = _remember(key, Runner(kernel, check_call(kernel, args, corners), args))
    hit.run(args, exchange)


@collective("run_stencil", _comm_of_call)
def _run_planned(
    kernel: Any,
    args: tuple[Any, ...],
    corners: bool | None,
    exchange: bool,
    overlap: bool,
    steps: Any,
    rotate: Any,
    tile: Any,
) -> tuple[Any, ...] | None:
    """``steps=k``, or one step overlapped: the plan of :func:`check_steps`, remembered."""
    if steps is None and (rotate is not None or tile is not None):
        raise mark_everywhere(
            KernelSignatureError("run_stencil: rotate= and tile= go with steps="),
            _comm_of(kernel, *args),
        )
    key: Any = (kernel, corners, steps, _freeze(rotate), _freeze(tile), exchange, overlap)
    try:
        hash(key)
    except TypeError:  # an unhashable tile or rotate: refused by the checks
        key = None
    hit = None if key is None or debug_collectives() else _find(key, args)
    if hit is not None:
        hit.calls += 1
        if hit.calls % hit.sample == 0:  # a sample of calls re-agrees the parameters
            agree_params(kernel, args)
        return hit.run(args, exchange)
    plan = check_steps(kernel, args, corners, steps, rotate, tile, exchange, overlap)
    runner = Runner(kernel, plan, args)
    if key is not None:
        _remember(key, runner)
    return runner.run(args, exchange)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted(value.items()))
    if isinstance(value, list):
        return tuple(value)
    return value


# ------------------------------------------------------------------------ the one cache
#: Checked calls, for lookup: per key (the kernel and the call's options,
#: ``(kernel, corners)`` for one step), most recent first (a loop that swaps two arrays
#: each step has two).  *Which* calls are kept is decided per communicator, by a
#: :class:`~parcomp.runtime.cache.BoundedCache` on the fields' communicator (at most
#: ``_PER_KEY`` per key and :data:`RUNNERS_MAX` in all): every rank of a communicator makes
#: the same calls on it, so every rank keeps and drops the same ones.  One process-wide
#: bound dropped a world call's runner on the ranks that also ran calls on a
#: sub-communicator only: those ranks went into the checks' agreement while the others
#: took the fast path into the exchange (a hang).
RUNNERS: dict[Any, list[Runner]] = {}
RUNNERS_MAX = 256
_PER_KEY = 8


def _find(key: Any, args: tuple[Any, ...]) -> Runner | None:
    """The remembered call these arguments repeat, if any (local, no communication)."""
    hits = RUNNERS.get(key)
    if hits is not None:
        n = len(args)
        for hit in hits:
            if hit.arity == n and hit.same(*args):
                return hit
    return None


def _remember(key: Any, runner: Runner) -> Runner:
    kept = cache_on(runner.comm, "stencil runners", RUNNERS_MAX, _forget)
    hits = RUNNERS.setdefault(key, [])
    hits.insert(0, runner)
    runner.key = key
    kept.put(id(runner), runner)
    for old in [h for h in hits if h.comm is runner.comm][_PER_KEY:]:
        kept.pop(id(old))  # -> _forget
    return runner


def _forget(runner: Runner) -> None:
    """Drop ``runner`` from the lookup (its communicator's cache let it go)."""
    hits = RUNNERS.get(runner.key)
    if hits is not None and runner in hits:
        hits.remove(runner)
        if not hits:
            del RUNNERS[runner.key]


# ---------------------------------------------------------------------------- the runner
class Runner:
    """A checked call: its :class:`StencilPlan`, its arrays (weakly) and functions made for
    exactly this call's shape (:func:`_specialise`):

    * ``same(*args)``: the same arrays (alive, the same objects) and argument kinds;
    * ``fire(*args)`` (a plan of one call): if ``same(*args)`` (else False), the halo
      exchange (if any neighbour) and the kernel's compiled dispatcher on the buffers;
      ``bare(*args)`` the same without the exchange (``exchange=False``).
    """

    __slots__ = (
        "arity",
        "bare",
        "calls",
        "comm",
        "dispatcher",
        "fire",
        "kernel",
        "key",
        "plan",
        "reads",
        "same",
        "sample",
    )

    def __init__(self, kernel: Any, plan: StencilPlan, args: tuple[Any, ...]) -> None:
        self.plan = plan
        self.arity = len(args)
        self.comm = next(a.comm for a in args if isinstance(a, DistArray))
        self.key: Any = None
        self.calls = 0  # fast calls since it was checked: a sample of them is re-agreed
        self.sample = plan.sample
        self.kernel = kernel
        self.dispatcher = getattr(kernel, "dispatcher", kernel)
        # the arrays exchanged, held through weak references (not kept alive here)
        self.reads = [weakref.ref(args[i]) for i in plan.exchanged]
        self.same, self.fire, self.bare = _specialise(kernel, plan, args)

    def _group(self) -> Any:
        return group_exchange([r() for r in self.reads], self.plan.corners, walls=self.plan.walls)

    def run(self, args: tuple[Any, ...], exchange: bool = True) -> tuple[Any, ...] | None:
        """Exchange (or overlap) and call, as planned; the arguments of the next call
        (rotated ``steps`` times), or None for ``steps=None``."""
        plan = self.plan
        if plan.plain:
            if exchange and self.reads:
                # every field read with ghosts in one exchange: one message per neighbour
                self._group().exchange()
            view = plan.calls[0][1]
            d = self.kernel
            if view is None:
                d(*(a.local if f else a for a, f in zip(args, plan.is_field, strict=True)))
            else:
                d(*(a.local[view] if f else a for a, f in zip(args, plan.is_field, strict=True)))
            return None
        _sweep_plan(plan, self.dispatcher, args, self._group() if self.reads else None)
        return None if plan.single else rotated(args, plan.perm, plan.steps)


def _sweep_plan(plan: StencilPlan, d: Any, args: tuple[Any, ...], ex: Any) -> None:
    """Run a plan's calls around its exchange ``ex`` (None: no exchange)."""
    period = plan.period
    isf = plan.is_field
    per_step = [
        tuple(a.local if f else a for a, f in zip(rotated(args, plan.perm, s), isf, strict=True))
        for s in range(min(period, plan.steps))
    ]
    # the wall ghost cells of every array written, as they are now (the boundary
    # condition), put back after each call that may have overwritten them (taken once the
    # exchange has filled them: beside a neighbour's block they hold its copy of its wall
    # ghost cells)
    saved: dict[int, list[Any]] = {}

    def snapshot() -> None:
        saved.clear()
        if plan.bands:
            for bufs in per_step:
                for pos in plan.write_pos:
                    b = bufs[pos]
                    if id(b) not in saved:
                        saved[id(b)] = [
                            (b[(slice(None), *rest)].copy(), rest, ax) for rest, ax in plan.bands
                        ]

    def sweep(calls: Any) -> None:
        if not saved:
            for s, view in calls:
                bufs = per_step[s % period]
                d(*[b[view] if f else b for b, f in zip(bufs, isf, strict=True)])
            return
        for s, view in calls:
            bufs = per_step[s % period]
            d(*[b[view] if f else b for b, f in zip(bufs, isf, strict=True)])
            for pos in plan.write_pos:
                b = bufs[pos]
                for band, rest, ax in saved[id(b)]:
                    # only within the call's view along the other axes: during an
                    # overlapped exchange the ghost cells beyond it are being received (a
                    # neighbour's copy of its wall band), not ours to put back
                    dst = list(view)
                    dst[ax] = rest[ax - 1]
                    src = list(view)
                    src[ax] = slice(None)
                    b[tuple(dst)] = band[tuple(src)]

    if ex is None:
        snapshot()
        sweep(plan.calls)
        sweep(plan.after)
        return
    if not plan.overlapped:
        ex.exchange()
        snapshot()
        sweep(plan.calls)
        return
    # During the exchange the first phase computes rows of the block only, so it restores
    # wall ghost cells of the block's rows only: none the exchange writes.
    snapshot()
    ex.start()
    try:
        sweep(plan.calls)  # the cells that need no ghost cell, during the exchange
    finally:
        ex.wait()
    snapshot()
    sweep(plan.after)


def _alike(cls: type) -> tuple[type, ...]:
    """Classes Numba types alike (``float`` and ``np.float64`` ...): a call remembered with
    one matches the other, as the agreement between ranks compares them alike."""
    import numpy as np

    for group in (
        (float, np.float64),
        (int, np.int64),
        (bool, np.bool_),
        (complex, np.complex128),
    ):
        if cls in group:
            return group
    return (cls,)


def _kind(a: Any) -> Any:
    import numpy as np

    if isinstance(a, DistArray):
        return None
    if isinstance(a, np.ndarray):
        return (type(a), a.dtype, a.ndim)
    return type(a)


def _specialise(kernel: Any, plan: StencilPlan, args: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """Generate ``same``, ``fire`` and ``bare`` for this call's argument kinds (see
    :class:`Runner`); ``fire`` and ``bare`` only for a plan of one call (else None).

    The arrays are held by weak reference (a new array at a dead one's address is not the
    same); the exchange object too (it belongs to the array or to its group cache).
    """
    names = [f"a{i}" for i in range(len(args))]
    win = plan.calls[0][1] if plan.plain else None
    env: dict[str, Any] = {"w": win}
    same, call = [], []
    for i, (name, a) in enumerate(zip(names, args, strict=True)):
        kind = _kind(a)
        if kind is None:
            env[f"r{i}"] = weakref.ref(a)
            same.append(f"r{i}() is {name}")
            call.append(f"{name}.local" if win is None else f"{name}.local[w]")
        elif isinstance(kind, tuple):
            env[f"t{i}"], env[f"d{i}"], env[f"n{i}"] = kind
            same.append(
                f"{name}.__class__ is t{i} and {name}.dtype == d{i} and {name}.ndim == n{i}"
            )
            call.append(name)
        else:
            env[f"t{i}"] = _alike(kind)
            same.append(f"{name}.__class__ in t{i}")
            call.append(name)
    sig = ", ".join(names)
    test = " and ".join(same) or "True"
    lines = [f"def same({sig}):", f"    return {test}"]
    if not plan.plain:
        exec("\n".join(lines), env)  # generated from names and kinds only
        return env["same"], None, None
    reads = [args[i] for i in plan.exchanged]
    ex = group_exchange(reads, plan.corners) if reads else None
    dispatcher = getattr(kernel, "_dispatcher", None)
    env["k"] = dispatcher if dispatcher is not None else kernel
    body = [f"    if not ({test}):", "        return False"]
    if ex is not None and ex.plan:
        env["x"] = weakref.ref(ex)
        read_refs = [weakref.ref(r) for r in reads]
        corners = plan.corners
        # the exchange belongs to the array (or its group cache): rebuilt if it went away
        env["g"] = lambda: group_exchange([r() for r in read_refs], corners)
        body.append("    (x() or g()).exchange()")
    body += [f"    k({', '.join(call)})", "    return True"]
    lines += [f"def fire({sig}):", *body, f"def bare({sig}):", *body[:2], *body[-2:]]
    exec("\n".join(lines), env)  # generated from names and kinds only
    return env["same"], env["fire"], env["bare"]
