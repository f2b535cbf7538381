"""The checks of a multi-step or overlapped stencil call, and its plan: deep halos,
cache-blocked (skewed) time steps, the exchange overlapped.

:func:`check_steps` COMMUNICATES (agreements, the first time a call is seen) and returns a
:class:`~parcomp.stencils.plan.StencilPlan` built from the PURE pieces of
:mod:`parcomp.stencils.plan` (:func:`step_regions`, :func:`schedule`, :func:`overlap_plan`,
:func:`rotation`, :func:`default_tile`); :mod:`parcomp.stencils.run` runs it.

``run_stencil(kernel, *args, steps=k)`` does what ``k`` calls of ``run_stencil`` with the
fields rotated between them do (``u, v = v, u`` for a two-level scheme), bitwise, with
one halo exchange instead of ``k``:

* **Deep halo.**  Arrays with a halo at least ``k * r`` wide (``r`` the kernel's radius)
  are exchanged once.  Step ``s`` (1..k) then computes the interior *and* the ``(k - s) * r``
  ghost cells next to every neighbour: a region that shrinks by ``r`` per step, so that
  step ``k`` computes exactly the interior from values that are all current.  The cells
  next to a non-periodic domain boundary (a wall) are never computed: their ghost cells
  keep the boundary condition, and the exchange also carries the neighbours' copies of
  those wall ghost cells (``walls=True``: the corners beside a wall have no diagonal
  neighbour to send them).  Every step after the first reads diagonal neighbours of the
  first step's cells, so the exchange includes corners whenever ``k > 1``.
* **Skewed tiles.**  Inside the rank the region is cut into tiles (``tile`` cells per
  axis), and each tile is advanced all ``k`` steps before the next one, while it is in
  cache.  Tile ``j`` computes at step ``s`` the cells ``[c_j - (s-1) r, c_{j+1} - (s-1) r)``
  along each tiled axis (a parallelogram in space-time).  Taken in lexicographic order,
  every value a tile reads was computed by an earlier tile or an earlier step of its own,
  and no tile overwrites a value a later tile still needs (a level is overwritten ``2``
  steps later, ``(s-1) r`` cells further back), so the arrays are updated in place with
  no scratch copy and no cell computed twice.  The kernel is called on views, as with
  ``overlap=True``: it computes every cell at least ``r`` away from its arrays' edges.

* **Overlap** (``overlap=True``): the exchange is started, the cells that depend on no
  ghost cell and are not being sent are computed meanwhile (:func:`overlap_plan`), and
  the rest once it has finished.  One step with ``overlap=True`` (``steps=None``) is this
  plan with ``k = 1``: there is one overlap algorithm.

Assumption (the same as for ``overlap=True``): a kernel computes each cell from the cells
within its radius only, the same way wherever the cell is (no use of the array's shape
or of the loop index beyond indexing).  ``PARCOMP_DEBUG_COLLECTIVES=1`` checks it: the
first multi-step call of a kernel also runs it on a small periodic grid held by the rank
alone, ``k`` single steps against the tiled multi-step plan, and raises if they differ
(a kernel writing outside its region, or depending on where its view starts).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from parcomp.arrays.array import DistArray
from parcomp.runtime.agree import agreed, alike, raise_if_differ
from parcomp.runtime.errors import KernelSignatureError, ShapeError
from parcomp.runtime.numba_jit import Kernel
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.watchdog import debug_collectives
from parcomp.stencils.check import _jit_disabled, check_call
from parcomp.stencils.plan import (
    StencilPlan,
    _period,
    _unit,
    cache_bytes,
    default_tile,
    overlap_plan,
    rotated,
    rotation,
    schedule,
    step_regions,
)

__all__ = ["check_steps"]


def _comm_of_call(kernel: Any, args: tuple[Any, ...], *_rest: Any) -> Any:
    return next((a.comm for a in args if isinstance(a, DistArray)), None)


def check_steps(
    kernel: Any,
    args: tuple[Any, ...],
    corners: bool | None,
    steps: Any,
    rotate: Mapping[str, str] | None,
    tile: Any,
    exchange: bool,
    overlap: bool = False,
) -> StencilPlan:
    """Check a call with ``steps`` (or ``steps=None`` with ``overlap=True``: one step,
    overlapped) and return its plan (COMMUNICATES: agreements).  Every rotation of the
    arguments the steps make is checked as one call (:func:`check_call`)."""
    import numpy as np

    name = getattr(kernel, "__name__", repr(kernel))
    comm = _comm_of_call(kernel, args)
    spec = getattr(kernel, "spec", None)
    single = steps is None  # one step, overlapped
    if spec is None:
        raise mark_everywhere(
            KernelSignatureError(
                f"run_stencil(overlap=True) needs a declared kernel (@parcomp.stencil): "
                f"{name!r} does not say how far it reads"
                if single
                else f"run_stencil(steps=...): kernel {name!r} is not declared; several steps "
                "per exchange need to know how far it reads. Declare it with "
                "@parcomp.stencil(radius=...)"
            ),
            comm,
        )
    if single:
        steps = 1
    if isinstance(steps, bool | np.bool_) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise mark_everywhere(
            KernelSignatureError(f"run_stencil: steps must be an int >= 1, got {steps!r}"), comm
        )
    steps = int(steps)
    # Every rank must step alike: a rank doing fewer steps would leave the others in
    # the next exchange (agreed here, when the call is planned; the plan is then
    # remembered by the arrays' identities, the same on every rank)
    raise_if_differ(
        [steps, sorted(rotate.items()) if isinstance(rotate, Mapping) else repr(rotate)],
        comm,
        lambda ranks, first, other: (
            f"run_stencil: steps/rotate differ between ranks: rank(s) {ranks} ask for "
            f"{other}, rank 0 for {first}; every rank must do the same steps"
        ),
    )
    if spec.reads_output is not False:
        why = (
            "reads a field it writes (an in-place update or out += ...)"
            if spec.reads_output
            else "has no source parcomp can read to prove it does not read its output"
        )
        raise mark_everywhere(
            KernelSignatureError(
                f"run_stencil(overlap=True): kernel {name!r} {why}; overlap computes the "
                "cells next to the block's edges twice, so the result would be wrong. Use "
                "overlap=False"
                if single
                else f"run_stencil(steps=...): kernel {name!r} {why}; several steps per "
                "exchange compute cells of an output beyond the block before their "
                "neighbours are current. Use steps=None"
            ),
            comm,
        )
    if single:
        perm = tuple(range(len(args)))
    else:
        with alike(comm, catch=(KernelSignatureError, ShapeError)):
            perm = rotation(spec, rotate, name)
    # Every rotation of the arguments is a call k single steps would make: check each
    # like one (fields, decomposition, kinds, compilation, agreed between ranks).
    variants: list[tuple[Any, ...]] = []
    for s in range(steps):
        variant = rotated(args, perm, s)
        # by identity: ``in`` would compare DistArrays element-wise (equal values made
        # a copy look like the same array, and it was then never exchanged)
        if any(all(x is y for x, y in zip(variant, v, strict=True)) for v in variants):
            break
        variants.append(variant)
    read_sets = []
    for variant in variants:
        want_corners = check_call(kernel, variant, corners).corners
        # read with ghosts, or at the cell only: beyond the block both are read
        read_sets.append(
            [
                a
                for p, a in zip(spec.params, variant, strict=True)
                if p in spec.reads or p in spec.pointwise
            ]
        )
    first = next(a for a in args if isinstance(a, DistArray))
    ndim = first.ndim
    radius = spec.radius_for(ndim)
    # deep along the axes with neighbours; an axis with walls at both ends of every
    # block (one rank along it, not periodic) needs only the radius
    part = first.partition
    need = tuple(
        steps * r if part.dims[ax] > 1 or part.periods[ax] else r for ax, r in enumerate(radius)
    )
    short = [ax for ax in range(ndim) if first.halo[ax] < need[ax]]
    if short:
        raise mark_everywhere(
            ShapeError(
                f"run_stencil(steps={steps}): kernel {name!r} reads {radius} cells around "
                f"each cell, so {steps} steps per exchange need ghost cells {need} wide, "
                f"but the fields have halo {first.halo} (too narrow on axis {short}). "
                f"Make the arrays with halo={need if len(set(need)) > 1 else need[0]}"
            ),
            comm,
        )
    part, rank = first.partition, first.rank
    lower = [part.neighbor(rank, _unit(ndim, ax, -1)) is not None for ax in range(ndim)]
    upper = [part.neighbor(rank, _unit(ndim, ax, 1)) is not None for ax in range(ndim)]
    regions = step_regions(first.local_shape, first.halo, radius, lower, upper, steps)
    fields = [a for a in args if isinstance(a, DistArray)]
    itemsize = sum(a.dtype.itemsize for a in fields)
    with alike(comm, catch=(KernelSignatureError, ShapeError)):
        tiles = _tiles(tile, first, itemsize, radius, steps)
    whole = tuple(ax > 0 and tiles[ax] is None for ax in range(ndim))
    if overlap and exchange:
        calls, after = overlap_plan(regions, tuple(radius), lower, upper, tiles, whole, first.halo)
    else:
        calls, after = schedule(regions, tuple(radius), tiles, whole), ()
    # the wall ghost cells a whole-axis view lets the kernel overwrite: restored
    bands = []
    for ax in range(1, ndim):
        h, n, r = first.halo[ax], first.local_shape[ax], radius[ax]
        if not whole[ax] or h <= r:
            continue
        if not lower[ax]:
            bands.append((ax, slice(r, h)))
        if not upper[ax]:
            bands.append((ax, slice(h + n, h + n + h - r)))
    # Which arrays must be current beyond the block before the first step: those read
    # at step 1 and, when a wall exists anywhere, every array read at a later step
    # (the ghost cells beside a wall, in a neighbour's columns, come only from it).
    has_walls = not all(part.periods)
    exchanged: dict[int, Any] = {}
    for reads in read_sets if has_walls else read_sets[:1]:
        for a in reads:
            exchanged.setdefault(id(a), a)
    if any(radius) and steps > 1:
        deep_corners = True
    else:
        deep_corners = bool(want_corners)
    _agree_views(kernel, args, perm, steps, comm)
    if debug_collectives():
        _verify_locally(kernel, spec, args, perm, steps, radius, name, comm)
    overlapped = bool(overlap and exchange)
    exchange = exchange and bool(exchanged) and any(radius)
    positions = {id(a): i for i, a in reversed(list(enumerate(args)))}
    return StencilPlan(
        name=name,
        steps=steps,
        single=single,
        perm=perm,
        is_field=tuple(isinstance(a, DistArray) for a in args),
        calls=tuple(calls),
        after=tuple(after),
        overlapped=overlapped and exchange,
        bands=tuple(
            (tuple(slice(None) if a != ax else sl for a in range(1, ndim)), ax) for ax, sl in bands
        ),
        write_pos=tuple(spec.params.index(p) for p in spec.writes),
        exchanged=tuple(sorted(positions[k] for k in exchanged)) if exchange else (),
        corners=deep_corners,
        walls=True,
    )


def _tiles(
    tile: Any, first: Any, itemsize: int, radius: Sequence[int], steps: int
) -> tuple[int | None, ...]:
    ndim = first.ndim
    if tile is None:
        buffer = first.local.shape
        return default_tile(buffer, itemsize, radius, steps, cache_bytes() // 2)
    try:
        values = (tile,) * ndim if isinstance(tile, numbers.Number) else tuple(tile)
    except TypeError:
        values = ()
    if len(values) != ndim or any(
        v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0)
        for v in values
    ):
        raise ShapeError(
            f"run_stencil: tile must be an int >= 0 or {ndim} of them (0 or None: that axis "
            f"is not cut), got {tile!r}"
        )
    return tuple(None if v is None or v == 0 else int(v) for v in values)


def _agree_views(
    kernel: Any,
    args: tuple[Any, ...],
    perm: tuple[int, ...],
    steps: int,
    comm: Any,
) -> None:
    """Compile the kernel for the layouts of the views it will get, under an agreement.

    A view cut on an axis other than the first is not C-contiguous (Numba's layout 'A'),
    a type the whole-buffer call did not compile.  Which ranks cut their views that way
    differs (walls, tiles), so every rank compiles the 'A' version here, together: a
    compile error is raised on every rank, not on the ranks with walls.
    """
    import numpy as np

    if not isinstance(kernel, Kernel):
        return
    if _jit_disabled():
        return
    with agreed(comm, catch=KernelSignatureError):
        seen = set()
        for s in range(min(steps, _period(perm))):
            variant = rotated(args, perm, s)
            probe = []
            for a in variant:
                if isinstance(a, DistArray):
                    b = a.local
                    cut = (slice(None),) * (b.ndim - 1) + (slice(0, max(b.shape[-1] - 1, 0)),)
                    view = b[cut] if b.ndim > 1 and b.shape[-1] > 1 else b
                    probe.append(view)
                else:
                    probe.append(a)
            key = tuple(
                (p.dtype.str, p.ndim, p.flags.c_contiguous)
                if isinstance(p, np.ndarray)
                else type(p)
                for p in probe
            )
            if key not in seen:
                seen.add(key)
                kernel.ensure_compiled(tuple(probe))


def _verify_locally(
    kernel: Any,
    spec: Any,
    args: tuple[Any, ...],
    perm: tuple[int, ...],
    steps: int,
    radius: Sequence[int],
    name: str,
    comm: Any,
) -> None:
    """Debug mode: ``k`` single steps against the tiled multi-step plan on a small periodic
    grid the rank holds alone (no communication but the agreement on the outcome)."""
    import numpy as np

    ndim = len(radius)
    halo = tuple(steps * r for r in radius)
    interior = tuple(2 * steps * r + 5 for r in radius)
    shape = tuple(n + 2 * h for n, h in zip(interior, halo, strict=True))
    rng = np.random.default_rng(20261130)

    def field(dtype: Any) -> Any:
        dt = np.dtype(dtype)
        if dt.kind in "iub":
            return rng.integers(0, 2, size=shape).astype(dt)
        if dt.kind == "c":
            return (rng.uniform(0.5, 1.5, shape) + 1j * rng.uniform(0.5, 1.5, shape)).astype(dt)
        return rng.uniform(0.5, 1.5, shape).astype(dt)

    start = [field(a.dtype) if isinstance(a, DistArray) else a for a in args]
    isf = [isinstance(a, DistArray) for a in args]

    def wrap(buf: Any) -> None:  # periodic ghost cells, axis by axis (corners included)
        for ax, h in enumerate(halo):
            if h == 0:
                continue
            n = interior[ax]
            src_lo = [slice(None)] * ndim
            dst_lo = [slice(None)] * ndim
            src_lo[ax], dst_lo[ax] = slice(n, n + h), slice(0, h)
            buf[tuple(dst_lo)] = buf[tuple(src_lo)]
            src_hi = [slice(None)] * ndim
            dst_hi = [slice(None)] * ndim
            src_hi[ax], dst_hi[ax] = slice(h, 2 * h), slice(n + h, n + 2 * h)
            buf[tuple(dst_hi)] = buf[tuple(src_hi)]

    d = getattr(kernel, "dispatcher", kernel)
    with agreed(comm, catch=Exception):  # a crash of the check too: raised on every rank
        ref = [b.copy() if f else b for b, f in zip(start, isf, strict=True)]
        win = tuple(slice(h - r, h + n + r) for h, n, r in zip(halo, interior, radius, strict=True))
        cur = list(ref)
        for _ in range(steps):
            for b, f in zip(cur, isf, strict=True):
                if f:
                    wrap(b)
            d(*[b[win] if f else b for b, f in zip(cur, isf, strict=True)])
            cur = list(rotated(tuple(cur), perm, 1))
        regions = step_regions(interior, halo, radius, [True] * ndim, [True] * ndim, steps)
        inner = tuple(slice(h, h + n) for h, n in zip(halo, interior, strict=True))
        plans = (  # tiles along axis 0 with whole other axes (the default), and every axis cut
            ((radius[0] + 1,) + (None,) * (ndim - 1), (False,) + (True,) * (ndim - 1)),
            (tuple(r + 1 for r in radius), None),
        )
        bad: list[str] = []
        for tiles, whole in plans:
            mine = [b.copy() if f else b for b, f in zip(start, isf, strict=True)]
            for b, f in zip(mine, isf, strict=True):
                if f:
                    wrap(b)
            per_step = [rotated(tuple(mine), perm, s) for s in range(steps)]
            for s, view in schedule(regions, tuple(radius), tiles, whole):
                d(*[b[view] if f else b for b, f in zip(per_step[s], isf, strict=True)])
            final = rotated(tuple(mine), perm, steps)
            bad += [
                spec.params[i]
                for i, (x, y, f) in enumerate(zip(final, cur, isf, strict=True))
                if f
                and spec.params[i] not in bad
                and not np.array_equal(x[inner], y[inner], equal_nan=x.dtype.kind in "fc")
            ]
        if bad:
            raise KernelSignatureError(
                f"run_stencil(steps={steps}): kernel {name!r} gives other values in {bad} "
                f"when its {steps} steps are tiled than in {steps} single steps (checked on a "
                "small periodic grid, PARCOMP_DEBUG_COLLECTIVES=1). It writes outside the "
                f"cells {tuple(radius)} away from its arrays' edges, or its result depends on "
                "where its view starts (the array's shape or the loop index). Fix the kernel, "
                "or use steps=None"
            )
